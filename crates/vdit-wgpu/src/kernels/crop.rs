//! `crop.wgsl`: a spatial window of every plane of a tensor (a tile of a latent [C, F, H, W]),
//! so that a tiled decode cuts its tiles on the GPU.

use std::ops::Range;

use super::{folded_grid, require_distinct, require_f16_support, to_u32};
use crate::error::{shape_err, Result};
use crate::param_block::ParamBytes;
use crate::profiler::Cost;
use crate::recorder::{Dispatch, Recorder};
use crate::shader::{defines, Defines};
use crate::tensor::Tensor;

crate::param_block! {
    struct Params {
        height: u32,
        width: u32,
        tile_height: u32,
        tile_width: u32,
        r0: u32,
        c0: u32,
        n: u32,
        _pad0: u32,
    }
}

/// The define sets of `crop.wgsl`.
pub fn variants() -> Vec<Defines> {
    super::dtype_combinations(1)
        .into_iter()
        .map(|t| defines(&[("X_T", t[0].wgsl())]))
        .collect()
}

/// Records `y` [.., rows.len(), cols.len()] = `x` [.., H, W] restricted to `rows` x `cols`, with
/// the same leading dimensions and storage type.
pub fn crop(
    rec: &mut Recorder,
    x: &Tensor,
    rows: Range<usize>,
    cols: Range<usize>,
    y: &Tensor,
) -> Result<()> {
    let op = "crop";
    let (xs, ys) = (x.shape(), y.shape());
    let (th, tw) = (rows.len(), cols.len());
    let fits = xs.len() >= 2
        && ys.len() == xs.len()
        && ys[..xs.len() - 2] == xs[..xs.len() - 2]
        && ys[xs.len() - 2..] == [th, tw]
        && rows.end <= xs[xs.len() - 2]
        && cols.end <= xs[xs.len() - 1]
        && x.dtype() == y.dtype();
    if !fits {
        return Err(shape_err(
            op,
            format!("y must be x {x:?} cut to rows {rows:?} and columns {cols:?}, got {y:?}"),
        ));
    }
    require_distinct(op, x, y)?;
    require_f16_support(rec.gpu(), "an f16 crop", &[x])?;
    let n = y.numel();
    to_u32(op, x.numel())?;
    let params = Params {
        height: to_u32(op, xs[xs.len() - 2])?,
        width: to_u32(op, xs[xs.len() - 1])?,
        tile_height: to_u32(op, th)?,
        tile_width: to_u32(op, tw)?,
        r0: to_u32(op, rows.start)?,
        c0: to_u32(op, cols.start)?,
        n: to_u32(op, n)?,
        _pad0: 0,
    };
    rec.dispatch(Dispatch {
        shader: &CROP,
        entry: "main",
        defines: defines(&[("X_T", x.dtype().wgsl())]),
        constants: vec![],
        params: ParamBytes::of(&params),
        tensors: &[x, y],
        workgroups: folded_grid(rec.gpu(), n.div_ceil(256)),
        label: format!("crop {ys:?} {}", y.dtype()).into(),
        cost: Cost::new(0.0, 2.0 * n as f64 * x.dtype().size() as f64),
    })
}

/// CPU reference of [`crop`] on planes of `h` x `w` (exact).
pub fn crop_reference(
    x: &[f32],
    h: usize,
    w: usize,
    rows: Range<usize>,
    cols: Range<usize>,
) -> Vec<f64> {
    let mut out = Vec::new();
    for plane in x.chunks_exact(h * w) {
        for r in rows.clone() {
            out.extend(
                plane[r * w + cols.start..r * w + cols.end]
                    .iter()
                    .map(|&v| v as f64),
            );
        }
    }
    out
}

/// `shaders/crop.wgsl`.
pub static CROP: crate::shader::ShaderFile = crate::shader_file!("crop", variants);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::with_fold_limit;
    use crate::tensor::DType;
    use crate::testing::*;

    fn check(shape: [usize; 4], rows: Range<usize>, cols: Range<usize>, dtype: DType) {
        let gpu = test_gpu();
        if dtype == DType::F16 && !gpu.caps.shader_f16 {
            return;
        }
        let seed = seed();
        let mut rng = Rng::new(seed);
        let mut xv = rng.vec_normal(shape.iter().product(), 1.0);
        if dtype == DType::F16 {
            xv = round_f16(&xv);
        }
        let x = Tensor::from_f32(gpu, &shape, &xv, dtype).unwrap();
        let y = Tensor::empty(gpu, &[shape[0], shape[1], rows.len(), cols.len()], dtype).unwrap();
        y.poison(gpu);
        let mut rec = Recorder::new(gpu);
        crop(&mut rec, &x, rows.clone(), cols.clone(), &y).unwrap();
        rec.run().unwrap();
        let want = crop_reference(&xv, shape[2], shape[3], rows.clone(), cols.clone());
        let case = format!("crop {shape:?} rows {rows:?} cols {cols:?} {dtype}");
        assert_close(&case, seed, &y.to_vec_f32(gpu).unwrap(), &want, 0.0);
    }

    #[test]
    fn crop_matches_reference() {
        check([3, 2, 11, 13], 2..9, 4..13, DType::F32);
        check([1, 1, 5, 7], 0..5, 0..7, DType::F32);
        check([2, 3, 9, 6], 8..9, 1..2, DType::F16);
        with_fold_limit(1, || check([2, 2, 30, 20], 3..29, 0..19, DType::F32));
    }

    #[test]
    fn crop_rejects_windows_outside_the_planes() {
        let gpu = test_gpu();
        let x = Tensor::empty(gpu, &[2, 1, 4, 4], DType::F32).unwrap();
        let y = Tensor::empty(gpu, &[2, 1, 3, 3], DType::F32).unwrap();
        let mut rec = Recorder::new(gpu);
        let e = crop(&mut rec, &x, 2..5, 0..3, &y).unwrap_err().to_string();
        assert!(e.contains("cut to rows 2..5"), "{e}");
    }
}
