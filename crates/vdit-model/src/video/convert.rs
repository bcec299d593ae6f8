//! From the VAE's output layout to RGB8 frames.
//!
//! The VAE decodes to f32 `[3, T, H, W]` (channel-major, values in [-1, 1]); video writers take
//! frames of `H * W * 3` bytes, row-major with interleaved R, G, B.

/// One value in [-1, 1] to a byte: `round((x + 1) / 2 * 255)`, clamped to 0..=255 (NaN gives 0).
#[inline]
pub fn unit_to_u8(x: f32) -> u8 {
    // `as` saturates and maps NaN to 0.
    ((x + 1.0) * 127.5).round() as u8
}

/// Writes frame `t` of a `[3, frames, height, width]` tensor into `out` (`height * width * 3`).
///
/// # Panics
/// If `data` is not `3 * frames * height * width` long, `t >= frames`, or `out` has the wrong length.
pub fn vae_frame_to_rgb8(
    data: &[f32],
    frames: usize,
    height: usize,
    width: usize,
    t: usize,
    out: &mut [u8],
) {
    let plane = height * width;
    assert_eq!(
        data.len(),
        3 * frames * plane,
        "VAE output of {} values is not [3, {frames}, {height}, {width}]",
        data.len()
    );
    assert!(t < frames, "frame {t} of {frames}");
    assert_eq!(out.len(), plane * 3, "RGB8 frame buffer length");
    let channel = |c: usize| &data[(c * frames + t) * plane..][..plane];
    let (r, g, b) = (channel(0), channel(1), channel(2));
    for (i, px) in out.chunks_exact_mut(3).enumerate() {
        px[0] = unit_to_u8(r[i]);
        px[1] = unit_to_u8(g[i]);
        px[2] = unit_to_u8(b[i]);
    }
}

/// All frames of a `[3, frames, height, width]` tensor as `frames * height * width * 3` bytes.
///
/// # Panics
/// If `data` is not `3 * frames * height * width` long.
pub fn vae_to_rgb8(data: &[f32], frames: usize, height: usize, width: usize) -> Vec<u8> {
    let frame_len = height * width * 3;
    let mut out = vec![0u8; frames * frame_len];
    if frame_len == 0 {
        return out;
    }
    for (t, frame) in out.chunks_exact_mut(frame_len).enumerate() {
        vae_frame_to_rgb8(data, frames, height, width, t, frame);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_values_map_to_bytes() {
        assert_eq!(unit_to_u8(-1.0), 0);
        assert_eq!(unit_to_u8(1.0), 255);
        assert_eq!(unit_to_u8(0.0), 128); // 127.5 rounds away from zero
        assert_eq!(unit_to_u8(-3.0), 0);
        assert_eq!(unit_to_u8(7.0), 255);
        assert_eq!(unit_to_u8(f32::NAN), 0);
        assert_eq!(unit_to_u8(2.0 * 100.0 / 255.0 - 1.0), 100);
    }

    #[test]
    fn layout_is_channel_major_to_interleaved() {
        let (frames, height, width) = (2, 2, 3);
        let plane = height * width;
        // Channel c, frame t, pixel i holds a distinct byte value v = c*100 + t*10 + i.
        let mut data = vec![0f32; 3 * frames * plane];
        for c in 0..3 {
            for t in 0..frames {
                for i in 0..plane {
                    let v = (c * 100 + t * 10 + i) as f32;
                    data[(c * frames + t) * plane + i] = v / 255.0 * 2.0 - 1.0;
                }
            }
        }
        let rgb = vae_to_rgb8(&data, frames, height, width);
        assert_eq!(rgb.len(), frames * plane * 3);
        for t in 0..frames {
            for i in 0..plane {
                for c in 0..3 {
                    assert_eq!(rgb[(t * plane + i) * 3 + c] as usize, c * 100 + t * 10 + i);
                }
            }
        }
    }
}
