//! Decoded frames for display: one frame of a channel-first video [3, F, H, W] in [-1, 1] as
//! packed RGBA8 pixels in a storage buffer, laid out so that `copy_buffer_to_texture` can move
//! it into an `Rgba8Unorm` texture on the same device, without a trip through the host.

use super::{folded_grid, require_distinct, require_f16_support, to_u32};
use crate::error::{shape_err, Result};
use crate::param_block::ParamBytes;
use crate::profiler::Cost;
use crate::recorder::{Dispatch, Recorder};
use crate::shader::{defines, Defines};
use crate::tensor::{DType, Tensor};

crate::param_block! {
    struct Params {
        frames: u32,
        frame: u32,
        width: u32,
        hw: u32,
        row_stride: u32,
        _pad: [u32; 3],
    }
}

/// The define sets of `frames_to_rgba.wgsl`: f32 or f16 frames.
pub fn variants() -> Vec<Defines> {
    super::dtype_combinations(1)
        .into_iter()
        .map(|t| defines(&[("X_T", t[0].wgsl())]))
        .collect()
}

/// The row stride, in pixels, that makes rows of `width` RGBA8 pixels start on the 256-byte
/// boundaries `copy_buffer_to_texture` requires (`bytes_per_row = row_stride * 4`).
pub fn padded_row_pixels(width: usize) -> usize {
    let align = wgpu::COPY_BYTES_PER_ROW_ALIGNMENT as usize / 4;
    width.div_ceil(align).max(1) * align
}

/// Records `out` = frame `frame` of `frames` [3, F, H, W] (f32 or f16, values in [-1, 1]) as
/// RGBA8 pixels, each channel `round((v + 1) / 2 * 255)` clamped to 0..=255 (NaN gives 0, as
/// the video writers do) and alpha 255. Pixel (row, col) is the 4-byte element
/// `row * row_stride + col` of `out`, bytes R, G, B, A in memory; the padding pixels past
/// `W` in each row are left untouched. `out` is an f32 tensor used as raw 4-byte elements,
/// with `H * row_stride` of them; `row_stride >= W`. With `row_stride` from
/// [`padded_row_pixels`], `out` copies into an `Rgba8Unorm` texture as it is.
pub fn frames_to_rgba(
    rec: &mut Recorder,
    frames: &Tensor,
    frame: usize,
    row_stride: usize,
    out: &Tensor,
) -> Result<()> {
    let op = "frames_to_rgba";
    let &[c, f, h, w] = frames.shape() else {
        return Err(shape_err(
            op,
            format!("frames must be [3, F, H, W], got {frames:?}"),
        ));
    };
    if c != 3 || frame >= f {
        return Err(shape_err(
            op,
            format!("frames must be [3, F, H, W] with frame {frame} < F, got {frames:?}"),
        ));
    }
    if row_stride < w || out.dtype() != DType::F32 || out.numel() != h * row_stride {
        return Err(shape_err(
            op,
            format!(
                "out must be an f32 tensor of {h} x {row_stride} 4-byte pixels \
                 (row_stride >= width {w}), got {out:?}"
            ),
        ));
    }
    require_distinct(op, frames, out)?;
    require_f16_support(rec.gpu(), "f16 frames to RGBA", &[frames])?;
    to_u32(op, frames.numel())?;
    to_u32(op, out.numel())?;
    let hw = h * w;
    let params = Params {
        frames: to_u32(op, f)?,
        frame: to_u32(op, frame)?,
        width: to_u32(op, w)?,
        hw: to_u32(op, hw)?,
        row_stride: to_u32(op, row_stride)?,
        _pad: [0; 3],
    };
    rec.dispatch(Dispatch {
        shader: &FRAMES_TO_RGBA,
        entry: "main",
        defines: defines(&[("X_T", frames.dtype().wgsl())]),
        constants: vec![],
        params: ParamBytes::of(&params),
        tensors: &[frames, out],
        workgroups: folded_grid(rec.gpu(), hw.div_ceil(256)),
        label: format!("frames_to_rgba {h}x{w} {}", frames.dtype()).into(),
        cost: Cost::new(
            hw as f64 * 12.0,
            hw as f64 * (3 * frames.dtype().size() + 4) as f64,
        ),
    })
}

/// CPU reference of [`frames_to_rgba`]: frame `frame` of `x` [3, F, H, W] as `H * W * 4`
/// bytes, unpadded (exact).
pub fn frames_to_rgba_reference(x: &[f32], [c, f, h, w]: [usize; 4], frame: usize) -> Vec<u8> {
    assert_eq!(c, 3, "frames have three channels");
    assert_eq!(x.len(), c * f * h * w, "frames of {} values", x.len());
    // `as` saturates and maps NaN to 0.
    let byte = |v: f32| ((v + 1.0) * 127.5).round() as u8;
    let plane = h * w;
    let channel = |ch: usize| &x[(ch * f + frame) * plane..][..plane];
    let (r, g, b) = (channel(0), channel(1), channel(2));
    (0..plane)
        .flat_map(|i| [byte(r[i]), byte(g[i]), byte(b[i]), 255])
        .collect()
}

/// `shaders/frames_to_rgba.wgsl`.
pub static FRAMES_TO_RGBA: crate::shader::ShaderFile =
    crate::shader_file!("frames_to_rgba", variants);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    /// Values where rounding and clamping are easy to get wrong.
    const EDGES: [f32; 12] = [
        -1.0,
        1.0,
        0.0,
        -1.5,
        7.0,
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        2.0 * 100.0 / 255.0 - 1.0,
        // 127.5 * (v + 1) a hair under and at k + 0.5
        0.49999997 / 127.5 - 1.0,
        2.5 / 127.5 - 1.0,
        254.5 / 127.5 - 1.0,
    ];

    fn check(shape: [usize; 4], frame: usize, row_stride: usize, dtype: DType) {
        let gpu = test_gpu();
        if dtype == DType::F16 && !gpu.caps.shader_f16 {
            eprintln!("skipping f16 case: adapter lacks SHADER_F16");
            return;
        }
        let seed = seed();
        let mut rng = Rng::new(seed);
        let n: usize = shape.iter().product();
        let mut xv = rng.vec_uniform(n, 1.2);
        for (i, &e) in EDGES.iter().enumerate() {
            // Into every channel of the chosen frame.
            let plane = shape[2] * shape[3];
            for ch in 0..3 {
                let at = (ch * shape[1] + frame) * plane + (i * 7 + ch) % plane;
                xv[at] = e;
            }
        }
        if dtype == DType::F16 {
            xv = round_f16(&xv);
        }
        let x = Tensor::from_f32(gpu, &shape, &xv, dtype).unwrap();
        let [_, _, h, w] = shape;
        let out = Tensor::empty(gpu, &[h, row_stride], DType::F32).unwrap();
        out.poison(gpu);
        let mut rec = Recorder::new(gpu);
        frames_to_rgba(&mut rec, &x, frame, row_stride, &out).unwrap();
        rec.run().unwrap();
        let got = out.to_bytes(gpu).unwrap();
        let want = frames_to_rgba_reference(&xv, shape, frame);
        let case = format!("frames_to_rgba {shape:?} frame {frame} stride {row_stride} {dtype}");
        let nan = f32::NAN.to_le_bytes();
        for row in 0..h {
            let line = &got[row * row_stride * 4..][..row_stride * 4];
            let (pixels, padding) = line.split_at(w * 4);
            let expected = &want[row * w * 4..][..w * 4];
            if pixels != expected {
                let col = (0..w)
                    .find(|&c| pixels[c * 4..c * 4 + 4] != expected[c * 4..c * 4 + 4])
                    .unwrap();
                panic!(
                    "{case}: pixel ({row}, {col}) is {:?}, want {:?} (replay with VDIT_TEST_SEED={seed})",
                    &pixels[col * 4..col * 4 + 4],
                    &expected[col * 4..col * 4 + 4]
                );
            }
            assert!(
                padding.chunks(4).all(|p| p == nan),
                "{case}: row {row}'s padding was written"
            );
        }
    }

    #[test]
    fn frames_to_rgba_matches_reference_bytes() {
        check([3, 1, 5, 7], 0, 7, DType::F32);
        check([3, 3, 9, 13], 2, padded_row_pixels(13), DType::F32);
        check([3, 2, 17, 70], 1, padded_row_pixels(70), DType::F32);
        check([3, 2, 6, 11], 1, 16, DType::F16);
    }

    #[test]
    fn frames_to_rgba_with_a_folded_grid() {
        crate::kernels::with_fold_limit(2, || check([3, 2, 33, 40], 1, 64, DType::F32));
    }

    #[test]
    fn frames_to_rgba_padded_rows_copy_into_a_texture() {
        assert_eq!(padded_row_pixels(1), 64);
        assert_eq!(padded_row_pixels(64), 64);
        assert_eq!(padded_row_pixels(160), 192);
        assert_eq!(padded_row_pixels(832), 832);
    }

    #[test]
    fn frames_to_rgba_rejects_bad_shapes() {
        let gpu = test_gpu();
        let x = Tensor::empty(gpu, &[3, 2, 4, 5], DType::F32).unwrap();
        let mut rec = Recorder::new(gpu);
        let out = Tensor::empty(gpu, &[4, 5], DType::F32).unwrap();
        let err = frames_to_rgba(&mut rec, &x, 2, 5, &out).unwrap_err();
        assert!(err.to_string().contains("frame 2 < F"), "{err}");
        let err = frames_to_rgba(&mut rec, &x, 0, 4, &out).unwrap_err();
        assert!(err.to_string().contains("row_stride >= width 5"), "{err}");
        let short = Tensor::empty(gpu, &[4, 63], DType::F32).unwrap();
        let err = frames_to_rgba(&mut rec, &x, 0, 64, &short).unwrap_err();
        assert!(err.to_string().contains("4 x 64"), "{err}");
        let four = Tensor::empty(gpu, &[4, 2, 4, 5], DType::F32).unwrap();
        let err = frames_to_rgba(&mut rec, &four, 0, 5, &out).unwrap_err();
        assert!(err.to_string().contains("[3, F, H, W]"), "{err}");
    }
}
