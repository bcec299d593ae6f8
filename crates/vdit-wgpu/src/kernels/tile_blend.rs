//! Assembling a video from overlapping tiles decoded one at a time: each tile's frames, weighted
//! per pixel, are added into the whole video where they lie. Pixels no earlier tile reached start
//! from zero (the video needs no clearing), and pixels no later tile reaches are clamped to
//! [-1, 1] once their sum is complete, so only the video and one tile are ever held.

use super::{folded_grid, require_distinct, to_u32};
use crate::error::{shape_err, Result};
use crate::param_block::ParamBytes;
use crate::profiler::Cost;
use crate::recorder::{Dispatch, Recorder};
use crate::shader::Defines;
use crate::tensor::{DType, Tensor};

/// Where a tile lies in the video, and which of its pixels other tiles share.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TilePlacement {
    /// The video frame, row and column of the tile's frame 0, pixel (0, 0).
    pub frame: usize,
    pub row: usize,
    pub col: usize,
    /// Tile pixels (r, q) with r >= fresh[0] and q >= fresh[1] are written first by this tile:
    /// their sum starts from 0, not from the video.
    pub fresh: [usize; 2],
    /// Tile pixels with r < done[0] and q < done[1] get their last term from this tile: the sum
    /// is clamped to [-1, 1].
    pub done: [usize; 2],
}

crate::param_block! {
    struct Params {
        n: u32,
        tile_frames: u32,
        tile_h: u32,
        tile_w: u32,
        frames: u32,
        height: u32,
        width: u32,
        f0: u32,
        y0: u32,
        x0: u32,
        fresh_r: u32,
        fresh_q: u32,
        done_r: u32,
        done_q: u32,
        _pad: [u32; 2],
    }
}

/// The define sets of `tile_blend.wgsl`: one (f32 tiles, weights and video).
pub fn variants() -> Vec<Defines> {
    vec![Defines::new()]
}

/// Records `video[c, frame + t, row + r, col + q] (+)= weights[r, q] * tile[c, t, r, q]` for the
/// tile [C, T, th, tw], its weights [th, tw] and the video [C, F, H, W], all f32, with the
/// `fresh` and `done` regions of `at`.
pub fn blend_tile(
    rec: &mut Recorder,
    tile: &Tensor,
    weights: &Tensor,
    video: &Tensor,
    at: &TilePlacement,
) -> Result<()> {
    let op = "blend_tile";
    let (&[c, t, th, tw], &[vc, f, h, w]) = (tile.shape(), video.shape()) else {
        return Err(shape_err(
            op,
            format!("tile must be [C, T, h, w] and video [C, F, H, W], got {tile:?} and {video:?}"),
        ));
    };
    if vc != c || at.frame + t > f || at.row + th > h || at.col + tw > w {
        return Err(shape_err(
            op,
            format!(
                "tile {tile:?} placed at frame {}, row {}, column {} does not fit video {video:?}",
                at.frame, at.row, at.col
            ),
        ));
    }
    if weights.shape() != [th, tw] {
        return Err(shape_err(
            op,
            format!("weights must be [{th}, {tw}], got {weights:?}"),
        ));
    }
    if [tile, weights, video]
        .iter()
        .any(|x| x.dtype() != DType::F32)
    {
        return Err(shape_err(
            op,
            format!("tile, weights and video must be f32, got {tile:?}, {weights:?}, {video:?}"),
        ));
    }
    require_distinct(op, tile, video)?;
    require_distinct(op, weights, video)?;
    let n = tile.numel();
    to_u32(op, video.numel())?;
    let clip = |v: usize, max: usize| to_u32(op, v.min(max));
    let params = Params {
        n: to_u32(op, n)?,
        tile_frames: to_u32(op, t)?,
        tile_h: to_u32(op, th)?,
        tile_w: to_u32(op, tw)?,
        frames: to_u32(op, f)?,
        height: to_u32(op, h)?,
        width: to_u32(op, w)?,
        f0: to_u32(op, at.frame)?,
        y0: to_u32(op, at.row)?,
        x0: to_u32(op, at.col)?,
        fresh_r: clip(at.fresh[0], th)?,
        fresh_q: clip(at.fresh[1], tw)?,
        done_r: clip(at.done[0], th)?,
        done_q: clip(at.done[1], tw)?,
        _pad: [0; 2],
    };
    rec.dispatch(Dispatch {
        shader: &TILE_BLEND,
        entry: "main",
        defines: Defines::new(),
        constants: vec![],
        params: ParamBytes::of(&params),
        tensors: &[tile, weights, video],
        workgroups: folded_grid(rec.gpu(), n.div_ceil(256)),
        label: format!("blend_tile {c}x{t}x{th}x{tw}").into(),
        // Read the tile and the weights, read and write the video.
        cost: Cost::new(2.0 * n as f64, 4.0 * (3 * n + th * tw) as f64),
    })
}

/// CPU reference of [`blend_tile`]: `video` [C, F, H, W] after the tile is added.
pub fn blend_tile_reference(
    tile: &[f32],
    [c, t, th, tw]: [usize; 4],
    weights: &[f32],
    video: &[f32],
    [_, f, h, w]: [usize; 4],
    at: &TilePlacement,
) -> Vec<f64> {
    let mut out: Vec<f64> = video.iter().map(|&v| v as f64).collect();
    for ch in 0..c {
        for tt in 0..t {
            for r in 0..th {
                for q in 0..tw {
                    let o = ((ch * f + at.frame + tt) * h + at.row + r) * w + at.col + q;
                    let term =
                        weights[r * tw + q] as f64 * tile[((ch * t + tt) * th + r) * tw + q] as f64;
                    let fresh = r >= at.fresh[0] && q >= at.fresh[1];
                    let mut v = if fresh { term } else { out[o] + term };
                    if r < at.done[0] && q < at.done[1] {
                        v = v.clamp(-1.0, 1.0);
                    }
                    out[o] = v;
                }
            }
        }
    }
    out
}

/// `shaders/tile_blend.wgsl`.
pub static TILE_BLEND: crate::shader::ShaderFile = crate::shader_file!("tile_blend", variants);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    fn check(tile_shape: [usize; 4], video_shape: [usize; 4], at: TilePlacement) {
        let gpu = test_gpu();
        let seed = seed();
        let mut rng = Rng::new(seed);
        let [_, _, th, tw] = tile_shape;
        let [_, f, h, w] = video_shape;
        // Values around 1 so that some sums are clamped.
        let tile = rng.vec_uniform(tile_shape.iter().product(), 1.5);
        let weights = rng.vec_uniform(th * tw, 1.0);
        let mut before = rng.vec_uniform(video_shape.iter().product(), 1.0);
        // The fresh pixels must not be read: NaN there.
        for (ch, tt, r, q) in (0..tile_shape[0])
            .flat_map(|c| (0..tile_shape[1]).map(move |t| (c, t)))
            .flat_map(|(c, t)| (0..th).map(move |r| (c, t, r)))
            .flat_map(|(c, t, r)| (0..tw).map(move |q| (c, t, r, q)))
        {
            if r >= at.fresh[0] && q >= at.fresh[1] {
                before[((ch * f + at.frame + tt) * h + at.row + r) * w + at.col + q] = f32::NAN;
            }
        }
        let x = Tensor::from_f32(gpu, &tile_shape, &tile, DType::F32).unwrap();
        let wt = Tensor::from_f32(gpu, &[th, tw], &weights, DType::F32).unwrap();
        let y = Tensor::from_f32(gpu, &video_shape, &before, DType::F32).unwrap();
        let mut rec = Recorder::new(gpu);
        blend_tile(&mut rec, &x, &wt, &y, &at).unwrap();
        rec.run().unwrap();
        let want = blend_tile_reference(&tile, tile_shape, &weights, &before, video_shape, &at);
        let got = y.to_vec_f32(gpu).unwrap();
        let case = format!("blend_tile {tile_shape:?} into {video_shape:?} at {at:?}");
        assert_close(&case, seed, &got, &want, 1e-6);
        // Outside the tile nothing changes, bit for bit.
        for (i, (&g, &b)) in got.iter().zip(&before).enumerate() {
            let q = i % w;
            let r = i / w % h;
            let fr = i / (w * h) % f;
            let inside = (at.frame..at.frame + tile_shape[1]).contains(&fr)
                && (at.row..at.row + th).contains(&r)
                && (at.col..at.col + tw).contains(&q);
            assert!(
                inside || g.to_bits() == b.to_bits(),
                "{case}: element {i} changed"
            );
        }
    }

    #[test]
    fn blend_tile_matches_reference() {
        // Interior tile: shared top rows and left columns, its own block done.
        let at = TilePlacement {
            frame: 1,
            row: 5,
            col: 7,
            fresh: [3, 4],
            done: [6, 9],
        };
        check([3, 2, 9, 13], [3, 4, 17, 23], at);
        // The first tile: everything fresh; the last: everything done.
        let first = TilePlacement {
            frame: 0,
            row: 0,
            col: 0,
            fresh: [0, 0],
            done: [5, 6],
        };
        check([3, 4, 8, 11], [3, 4, 19, 11], first);
        let last = TilePlacement {
            frame: 0,
            row: 11,
            col: 0,
            fresh: [4, 0],
            done: [8, 11],
        };
        check([3, 4, 8, 11], [3, 4, 19, 11], last);
    }

    #[test]
    fn blend_tile_with_a_folded_grid() {
        let at = TilePlacement {
            frame: 2,
            row: 1,
            col: 2,
            fresh: [2, 2],
            done: [5, 5],
        };
        crate::kernels::with_fold_limit(3, || check([3, 1, 20, 21], [3, 3, 24, 30], at));
    }

    #[test]
    fn blend_tile_rejects_a_tile_outside_the_video() {
        let gpu = test_gpu();
        let x = Tensor::empty(gpu, &[3, 2, 4, 5], DType::F32).unwrap();
        let wt = Tensor::empty(gpu, &[4, 5], DType::F32).unwrap();
        let y = Tensor::empty(gpu, &[3, 2, 8, 8], DType::F32).unwrap();
        let mut rec = Recorder::new(gpu);
        let at = TilePlacement {
            frame: 0,
            row: 4,
            col: 4,
            fresh: [0, 0],
            done: [4, 5],
        };
        let err = blend_tile(&mut rec, &x, &wt, &y, &at).unwrap_err();
        assert!(err.to_string().contains("does not fit"), "{err}");
        let bad = Tensor::empty(gpu, &[5, 4], DType::F32).unwrap();
        let at = TilePlacement {
            row: 0,
            col: 0,
            ..at
        };
        let err = blend_tile(&mut rec, &x, &bad, &y, &at).unwrap_err();
        assert!(err.to_string().contains("weights must be [4, 5]"), "{err}");
    }
}
