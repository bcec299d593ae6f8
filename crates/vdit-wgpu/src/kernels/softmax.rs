//! Row-wise softmax of an f32 score matrix, the middle step of attention computed with explicit
//! scores (`attention::explicit`).

use super::{folded_grid, require_distinct, require_f16_support, to_u32};
use crate::error::{shape_err, Result};
use crate::param_block::ParamBytes;
use crate::profiler::Cost;
use crate::recorder::{Dispatch, Recorder};
use crate::shader::{defines, Defines};
use crate::tensor::{DType, Tensor};

crate::param_block! {
    struct Params {
        rows: u32,
        cols: u32,
        scale: f32,
        _pad: u32,
    }
}

/// The define sets of `softmax_rows.wgsl`.
pub fn variants() -> Vec<Defines> {
    [DType::F32, DType::F16]
        .iter()
        .map(|t| defines(&[("Y_T", t.wgsl())]))
        .collect()
}

/// Records `y[r, :] = softmax(scale * x[r, :])` for x [rows, cols] f32 and y of the same shape
/// (f32 or f16).
pub fn softmax_rows(rec: &mut Recorder, x: &Tensor, scale: f32, y: &Tensor) -> Result<()> {
    let op = "softmax_rows";
    let &[rows, cols] = x.shape() else {
        return Err(shape_err(op, format!("x must be [rows, cols], got {x:?}")));
    };
    if x.dtype() != DType::F32 || y.shape() != x.shape() {
        return Err(shape_err(
            op,
            format!("x must be f32 and y its shape, got {x:?} and {y:?}"),
        ));
    }
    require_distinct(op, x, y)?;
    require_f16_support(rec.gpu(), "an f16 softmax", &[y])?;
    to_u32(op, x.numel())?;
    let params = Params {
        rows: to_u32(op, rows)?,
        cols: to_u32(op, cols)?,
        scale,
        _pad: 0,
    };
    let n = x.numel() as f64;
    rec.dispatch(Dispatch {
        shader: &SOFTMAX_ROWS,
        entry: "main",
        defines: defines(&[("Y_T", y.dtype().wgsl())]),
        constants: vec![],
        params: ParamBytes::of(&params),
        tensors: &[x, y],
        workgroups: folded_grid(rec.gpu(), rows),
        label: format!("softmax_rows {rows}x{cols} {}", y.dtype()).into(),
        cost: Cost::new(5.0 * n, n * (8.0 + y.dtype().size() as f64)),
    })
}

/// CPU float64 reference of [`softmax_rows`].
pub fn softmax_rows_reference(x: &[f32], cols: usize, scale: f64) -> Vec<f64> {
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks(cols) {
        let m = row
            .iter()
            .map(|&v| scale * v as f64)
            .fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = row.iter().map(|&v| (scale * v as f64 - m).exp()).collect();
        let s: f64 = e.iter().sum();
        out.extend(e.iter().map(|v| v / s));
    }
    out
}

/// `shaders/softmax_rows.wgsl`.
pub static SOFTMAX_ROWS: crate::shader::ShaderFile = crate::shader_file!("softmax_rows", variants);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    #[test]
    fn softmax_rows_matches_reference() {
        let gpu = test_gpu();
        let seed = seed();
        let mut rng = Rng::new(seed);
        for (rows, cols, dt) in [
            (3, 1, DType::F32),
            (37, 300, DType::F32),
            (5, 1000, DType::F16),
        ] {
            if dt == DType::F16 && !gpu.caps.shader_f16 {
                continue;
            }
            let xv = rng.vec_normal(rows * cols, 3.0);
            let x = Tensor::from_f32(gpu, &[rows, cols], &xv, DType::F32).unwrap();
            let y = Tensor::empty(gpu, &[rows, cols], dt).unwrap();
            y.poison(gpu);
            let mut rec = Recorder::new(gpu);
            softmax_rows(&mut rec, &x, 0.7, &y).unwrap();
            rec.run().unwrap();
            let got = y.to_vec_f32(gpu).unwrap();
            let want = softmax_rows_reference(&xv, cols, 0.7);
            let tol = if dt == DType::F16 { 2e-3 } else { 1e-5 };
            assert_close(
                &format!("softmax {rows}x{cols} {dt}"),
                seed,
                &got,
                &want,
                tol,
            );
        }
    }
}
