//! Spatial tiling of the decode, as diffusers' `AutoencoderKLWan.tiled_decode` does it: the
//! latent is cut into overlapping square tiles, each tile decodes the whole clip on its own (its
//! own causal histories), and the tiles' frames are blended into the video, the later tile (below,
//! to the right) fading in linearly across each overlap. Only one tile's activations exist at a
//! time, so the decoder's memory no longer grows with the frame size.
//!
//! diffusers blends in place, tile after tile: each tile is first blended with the tile above,
//! then with the tile to its left, and that left tile was already blended with the tile above
//! it. The result is a weighted sum of the tiles with fixed weights per pixel, computed here in
//! closed form, so that each tile can be added into the video as soon as it is decoded.

use std::fmt;
use std::ops::Range;
use std::str::FromStr;

use vdit_wgpu::kernels::tile_blend::TilePlacement;

/// Square tiles of `tile` x `tile` latent pixels, one every `tile - overlap` pixels in each
/// direction; neighbours share `overlap` latent pixels, across which they are blended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VaeTiling {
    pub tile: usize,
    pub overlap: usize,
}

impl Default for VaeTiling {
    /// diffusers' defaults: 256-pixel tiles every 192 pixels.
    fn default() -> Self {
        Self {
            tile: 32,
            overlap: 8,
        }
    }
}

impl VaeTiling {
    /// A checked tiling.
    pub fn new(tile: usize, overlap: usize) -> Result<Self, String> {
        let t = Self { tile, overlap };
        t.validate()?;
        Ok(t)
    }

    /// A tile of at least one latent pixel, and an overlap of at most half of it: wider overlaps
    /// would cover pixels with three tiles in a row, which the two-tile ramps do not blend.
    pub fn validate(&self) -> Result<(), String> {
        let Self { tile, overlap } = *self;
        if tile == 0 {
            return Err("the tile size must be at least 1 latent pixel".into());
        }
        if overlap >= tile {
            return Err(format!(
                "the overlap ({overlap}) must be smaller than the tile ({tile})"
            ));
        }
        if 2 * overlap > tile {
            return Err(format!(
                "the overlap ({overlap}) may be at most half the tile ({tile}), so that no pixel \
                 lies in three tiles of a row"
            ));
        }
        Ok(())
    }

    /// Latent pixels from one tile to the next.
    pub fn stride(&self) -> usize {
        self.tile - self.overlap
    }

    /// Whether a latent of `height` x `width` is cut at all: as in diffusers, only when it is
    /// larger than one tile in some direction.
    pub fn splits(&self, height: usize, width: usize) -> bool {
        height > self.tile || width > self.tile
    }
}

impl FromStr for VaeTiling {
    type Err = String;

    /// `SIZE` or `SIZE,OVERLAP` in latent pixels; `SIZE` alone overlaps by a quarter of it.
    fn from_str(s: &str) -> Result<Self, String> {
        let number = |p: &str| {
            p.trim().parse::<usize>().map_err(|_| {
                format!("'{s}' is not SIZE or SIZE,OVERLAP (latent pixels, e.g. 32,8)")
            })
        };
        let (tile, overlap) = match s.split_once(',') {
            Some((t, o)) => (number(t)?, number(o)?),
            None => {
                let t = number(s)?;
                (t, t / 4)
            }
        };
        Self::new(tile, overlap)
    }
}

impl fmt::Display for VaeTiling {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{},{}", self.tile, self.overlap)
    }
}

/// A tile's extent along one axis, in output pixels unless said otherwise.
#[derive(Clone, Debug, PartialEq)]
struct Span {
    /// The latent pixels it decodes.
    latent: Range<usize>,
    start: usize,
    len: usize,
    /// The leading pixels that are this tile's in diffusers' final crop; the rest lie in the
    /// next tile's part.
    own: usize,
    /// The blend with the previous tile: this tile's weight rises as p / ramp_in over its first
    /// ramp_in pixels (0: none). The previous tile covers exactly these pixels too.
    ramp_in: usize,
    /// The next tile's ramp_in (0 for the last tile).
    ramp_out: usize,
}

/// The later tile's weight at `p` pixels into a blend of `extent` pixels (1 past it).
fn ramp(p: usize, extent: usize) -> f64 {
    if p < extent {
        p as f64 / extent as f64
    } else {
        1.0
    }
}

impl Span {
    /// This tile's weight at its pixel `p`: rising from the previous tile over `ramp_in`, then
    /// falling to the next one past `own`. `twice`: the ramps applied twice (b -> b^2, 1 - b ->
    /// 1 - b^2), as diffusers' in-place blends do horizontally in the rows a tile shares with
    /// the next tile row.
    fn weight(&self, p: usize, twice: bool) -> f64 {
        let up = |b: f64| if twice { b * b } else { b };
        if p < self.own {
            up(ramp(p, self.ramp_in))
        } else {
            1.0 - up(ramp(p - self.own, self.ramp_out))
        }
    }
}

/// The tiles along an axis of `n` latent pixels, `scale` output pixels each: one starting at
/// every multiple of the stride below `n`, cut at the edge (the last ones may be narrower than
/// the overlap).
fn spans(n: usize, tiling: VaeTiling, scale: usize) -> Vec<Span> {
    let stride = tiling.stride();
    let starts: Vec<usize> = (0..n).step_by(stride).collect();
    let len = |s: usize| tiling.tile.min(n - s);
    // diffusers blends over min(both tiles, the overlap); the earlier tile is never the smaller.
    let blend = |s: usize| tiling.overlap.min(len(s)) * scale;
    starts
        .iter()
        .enumerate()
        .map(|(k, &s)| {
            let next = starts.get(k + 1).copied();
            Span {
                latent: s..s + len(s),
                start: s * scale,
                len: len(s) * scale,
                own: if next.is_some() { stride } else { len(s) } * scale,
                ramp_in: if k == 0 { 0 } else { blend(s) },
                ramp_out: next.map_or(0, blend),
            }
        })
        .collect()
}

/// One tile: the latent window it decodes and how its frames go into the video.
pub(crate) struct Tile {
    pub rows: Range<usize>,
    pub cols: Range<usize>,
    /// Where its output lands (frame 0; the decode sets the frame of each chunk).
    pub placement: TilePlacement,
    /// Its weight per output pixel, [8 rows.len(), 8 cols.len()] row-major.
    pub weights: Vec<f32>,
}

/// The tiles of a latent of `height` x `width` with `scale` output pixels per latent pixel, in
/// the order they must be decoded (row by row: each tile's placement assumes the earlier ones
/// are in the video).
pub(crate) fn plan(tiling: VaeTiling, height: usize, width: usize, scale: usize) -> Vec<Tile> {
    let (rows, cols) = (spans(height, tiling, scale), spans(width, tiling, scale));
    let mut tiles = Vec::with_capacity(rows.len() * cols.len());
    for v in &rows {
        for h in &cols {
            let mut weights = Vec::with_capacity(v.len * h.len);
            for r in 0..v.len {
                // Rows the next tile row shares: there the horizontal ramps act twice.
                let shared_below = r >= v.own;
                let wv = v.weight(r, false);
                weights.extend((0..h.len).map(|q| (wv * h.weight(q, shared_below)) as f32));
            }
            tiles.push(Tile {
                rows: v.latent.clone(),
                cols: h.latent.clone(),
                placement: TilePlacement {
                    frame: 0,
                    row: v.start,
                    col: h.start,
                    fresh: [v.ramp_in, h.ramp_in],
                    done: [v.own, h.own],
                },
                weights,
            });
        }
    }
    tiles
}

/// diffusers' `tiled_decode` blending, step by step as it is written (a reference for tests):
/// `tiles[i][j]` is tile (i, j)'s decoded output [planes, heights[i], widths[j]] (output
/// pixels); each is blended in place with the blended tile above (`blend_v`) and then with the
/// blended tile to its left (`blend_h`), and the first `stride` rows and columns of each are
/// kept. Returns [planes, sum of kept rows, sum of kept columns], unclamped.
#[cfg(test)]
pub(crate) fn reference_blend(
    mut tiles: Vec<Vec<Vec<f64>>>,
    heights: &[usize],
    widths: &[usize],
    planes: usize,
    stride: usize,
    extent: usize,
) -> Vec<f64> {
    let at = |h: usize, w: usize, p: usize, y: usize, x: usize| (p * h + y) * w + x;
    for i in 0..heights.len() {
        for j in 0..widths.len() {
            let (h, w) = (heights[i], widths[j]);
            if i > 0 {
                let ha = heights[i - 1];
                let e = extent.min(ha).min(h);
                for y in 0..e {
                    let t = y as f64 / e as f64;
                    for p in 0..planes {
                        for x in 0..w {
                            let a = tiles[i - 1][j][at(ha, w, p, ha - e + y, x)];
                            let b = &mut tiles[i][j][at(h, w, p, y, x)];
                            *b = a * (1.0 - t) + *b * t;
                        }
                    }
                }
            }
            if j > 0 {
                let wa = widths[j - 1];
                let e = extent.min(wa).min(w);
                for x in 0..e {
                    let t = x as f64 / e as f64;
                    for p in 0..planes {
                        for y in 0..h {
                            let a = tiles[i][j - 1][at(h, wa, p, y, wa - e + x)];
                            let b = &mut tiles[i][j][at(h, w, p, y, x)];
                            *b = a * (1.0 - t) + *b * t;
                        }
                    }
                }
            }
        }
    }
    let kept_h: Vec<usize> = heights.iter().map(|&h| h.min(stride)).collect();
    let kept_w: Vec<usize> = widths.iter().map(|&w| w.min(stride)).collect();
    let (out_h, out_w) = (kept_h.iter().sum::<usize>(), kept_w.iter().sum::<usize>());
    let mut out = vec![0.0; planes * out_h * out_w];
    for (i, &kh) in kept_h.iter().enumerate() {
        for (j, &kw) in kept_w.iter().enumerate() {
            let (h, w) = (heights[i], widths[j]);
            for p in 0..planes {
                for y in 0..kh {
                    for x in 0..kw {
                        out[at(out_h, out_w, p, i * stride + y, j * stride + x)] =
                            tiles[i][j][at(h, w, p, y, x)];
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use vdit_wgpu::testing::{seed, Rng};

    #[test]
    fn tiling_values_are_checked() {
        assert_eq!("32,8".parse::<VaeTiling>(), Ok(VaeTiling::default()));
        assert_eq!("32".parse::<VaeTiling>(), Ok(VaeTiling::default()));
        assert_eq!(
            " 5 , 0".parse::<VaeTiling>(),
            Ok(VaeTiling::new(5, 0).unwrap())
        );
        for (text, message) in [
            ("0", "at least 1"),
            ("8,8", "smaller than the tile"),
            ("8,5", "at most half"),
            ("8x2", "SIZE,OVERLAP"),
            ("-4", "SIZE,OVERLAP"),
        ] {
            let err = text.parse::<VaeTiling>().unwrap_err();
            assert!(err.contains(message), "{text}: {err}");
        }
        assert_eq!(VaeTiling::default().to_string(), "32,8");
        assert!(!VaeTiling::default().splits(32, 32));
        assert!(VaeTiling::default().splits(30, 33));
    }

    #[test]
    fn tiles_follow_diffusers_grid() {
        // 60 x 104 latent (480 x 832), 256-pixel tiles every 192: 3 x 5 tiles.
        let rows = spans(60, VaeTiling::default(), 8);
        let starts: Vec<_> = rows.iter().map(|s| (s.latent.clone(), s.own)).collect();
        assert_eq!(starts, [(0..32, 192), (24..56, 192), (48..60, 96)]);
        assert_eq!(rows[2].ramp_in, 64);
        assert_eq!(spans(104, VaeTiling::default(), 8).len(), 5);
    }

    /// The closed-form weights against diffusers' in-place blends, on random tiles of many
    /// grids (small last tiles, overlaps of zero and of half the tile, one scale of 1).
    #[test]
    fn weights_equal_diffusers_in_place_blending() {
        let seed = seed();
        let mut rng = Rng::new(seed);
        let pick = |rng: &mut Rng, n: usize| (rng.next_u64() % n as u64) as usize;
        for case in 0..200 {
            let tile = 1 + pick(&mut rng, 6);
            let tiling = VaeTiling::new(tile, pick(&mut rng, tile / 2 + 1)).unwrap();
            let scale = [1, 2, 8][pick(&mut rng, 3)];
            let (h, w) = (1 + pick(&mut rng, 14), 1 + pick(&mut rng, 14));
            let planes = 2;
            let tiles = plan(tiling, h, w, scale);
            let (rows, cols) = (spans(h, tiling, scale), spans(w, tiling, scale));
            let heights: Vec<usize> = rows.iter().map(|s| s.len).collect();
            let widths: Vec<usize> = cols.iter().map(|s| s.len).collect();
            let (oh, ow) = (h * scale, w * scale);
            let mut sum = vec![0.0; planes * oh * ow];
            let mut decoded = vec![Vec::new(); rows.len()];
            for (k, t) in tiles.iter().enumerate() {
                let (th, tw) = (t.rows.len() * scale, t.cols.len() * scale);
                let values: Vec<f64> = (0..planes * th * tw)
                    .map(|_| pick(&mut rng, 2001) as f64 / 1000.0 - 1.0)
                    .collect();
                for p in 0..planes {
                    for r in 0..th {
                        for q in 0..tw {
                            let o = (p * oh + t.placement.row + r) * ow + t.placement.col + q;
                            sum[o] += t.weights[r * tw + q] as f64 * values[(p * th + r) * tw + q];
                        }
                    }
                }
                decoded[k / cols.len()].push(values);
            }
            let want = reference_blend(
                decoded,
                &heights,
                &widths,
                planes,
                tiling.stride() * scale,
                tiling.overlap * scale,
            );
            let worst = sum
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max);
            assert!(
                worst < 1e-6,
                "case {case}: tiling {tiling} of {h}x{w} at scale {scale}: error {worst:e} \
                 (replay with VDIT_TEST_SEED={seed})"
            );
        }
    }

    /// Each pixel's weights sum to 1; `fresh` and `done` mark the first and last tile of each
    /// pixel in decode order.
    #[test]
    fn every_pixel_is_started_once_and_finished_once() {
        for (tiling, h, w) in [
            (VaeTiling::default(), 60, 104),
            (VaeTiling::new(4, 2).unwrap(), 5, 7),
            (VaeTiling::new(3, 0).unwrap(), 7, 4),
        ] {
            let (oh, ow) = (8 * h, 8 * w);
            let mut total = vec![0.0f64; oh * ow];
            let mut started = vec![0; oh * ow];
            let mut finished = vec![0; oh * ow];
            let mut seen = vec![false; oh * ow];
            for t in plan(tiling, h, w, 8) {
                let (th, tw) = (t.rows.len() * 8, t.cols.len() * 8);
                let at = t.placement;
                for r in 0..th {
                    for q in 0..tw {
                        let o = (at.row + r) * ow + at.col + q;
                        let fresh = r >= at.fresh[0] && q >= at.fresh[1];
                        assert_eq!(fresh, !seen[o], "{tiling} {h}x{w}: pixel {o}");
                        assert!(
                            finished[o] == 0,
                            "{tiling} {h}x{w}: pixel {o} after its end"
                        );
                        seen[o] = true;
                        started[o] += usize::from(fresh);
                        finished[o] += usize::from(r < at.done[0] && q < at.done[1]);
                        total[o] += t.weights[r * tw + q] as f64;
                    }
                }
            }
            assert!(started.iter().chain(&finished).all(|&n| n == 1));
            assert!(total.iter().all(|s| (s - 1.0).abs() < 1e-6));
        }
    }
}
