//! Self-attention with an additive relative position bias (T5 and umT5 encoders), for
//! sequences of at most [`MAX_ROWS`] tokens, and zero-padding of rows (t5_attention.wgsl).
//!
//! The bias of query `i` and key `j` in head `h` is `table[bucket(j - i), h]`: the bucket of
//! each relative position comes from a small f32 table computed on the CPU ([`RelativeBias`]),
//! the per-head values from the model's learned `[buckets, heads]` table. Keys at or past
//! `valid` are masked (padding). T5 uses no `1/sqrt(d)` scaling: pass `scale` = 1.

use super::{folded_grid, require_distinct, require_f16_support, to_u32};
use crate::error::{shape_err, Result};
use crate::param_block::ParamBytes;
use crate::profiler::Cost;
use crate::recorder::{Dispatch, Recorder};
use crate::shader::{defines, Defines};
use crate::tensor::{DType, Tensor};

/// The longest sequence the kernel takes (its scores live in workgroup memory).
pub const MAX_ROWS: usize = 512;
/// The largest head dimension the kernel takes.
pub const MAX_HEAD_DIM: usize = 256;

/// The relative position bias of one layer.
#[derive(Clone, Copy, Debug)]
pub struct RelativeBias<'a> {
    /// The learned values [buckets, heads] (f32 or f16).
    pub table: &'a Tensor,
    /// [2 * rows - 1] f32: at index `j - i + rows - 1` the bucket (an integer as f32) of the
    /// relative position `j - i`.
    pub buckets: &'a Tensor,
}

crate::param_block! {
    struct Params {
        rows: u32,
        heads: u32,
        head_dim: u32,
        valid: u32,
        center: u32,
        scale: f32,
        _pad: [u32; 2],
    }
}

crate::param_block! {
    struct PadParams {
        in_rows: u32,
        out_rows: u32,
        cols: u32,
        _pad: u32,
    }
}

fn attention_defines(q: DType, k: DType, v: DType, b: DType, o: DType) -> Defines {
    defines(&[
        ("Q_T", q.wgsl()),
        ("K_T", k.wgsl()),
        ("V_T", v.wgsl()),
        ("B_T", b.wgsl()),
        ("O_T", o.wgsl()),
    ])
}

fn pad_defines(x: DType, y: DType) -> Defines {
    defines(&[("PAD_ROWS", "1"), ("X_T", x.wgsl()), ("Y_T", y.wgsl())])
}

/// The define sets the portability test compiles.
pub fn variants() -> Vec<Defines> {
    use DType::*;
    vec![
        attention_defines(F32, F32, F32, F32, F32),
        attention_defines(F16, F16, F16, F32, F16),
        attention_defines(F16, F16, F16, F16, F32),
        pad_defines(F32, F32),
        pad_defines(F16, F32),
        pad_defines(F32, F16),
    ]
}

/// Records `o = softmax(scale * q k^T + bias, keys >= valid masked) v` per head. `q`, `k`, `v`
/// and `o`: [rows, heads * head_dim] (or [rows, heads, head_dim]); `1 <= valid <= rows <= 512`.
#[allow(clippy::too_many_arguments)]
pub fn relative_bias_attention(
    rec: &mut Recorder,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    bias: RelativeBias<'_>,
    valid: usize,
    scale: f32,
    o: &Tensor,
) -> Result<()> {
    let op = "relative_bias_attention";
    let rows = q.shape().first().copied().unwrap_or(0);
    let width = q.numel().checked_div(rows).unwrap_or(0);
    for (name, t) in [("k", k), ("v", v), ("o", o)] {
        if t.shape() != q.shape() {
            return Err(shape_err(
                op,
                format!("{name} {t:?} must have q's shape {:?}", q.shape()),
            ));
        }
    }
    if heads == 0 || width % heads != 0 {
        return Err(shape_err(
            op,
            format!("q {q:?} does not split into {heads} heads"),
        ));
    }
    let head_dim = width / heads;
    if rows == 0 || rows > MAX_ROWS || head_dim == 0 || head_dim > MAX_HEAD_DIM {
        return Err(shape_err(
            op,
            format!(
                "q {q:?}: needs 1..={MAX_ROWS} rows and a head dimension of 1..={MAX_HEAD_DIM}"
            ),
        ));
    }
    if valid == 0 || valid > rows {
        return Err(shape_err(
            op,
            format!("{valid} valid keys of {rows} (at least one is needed)"),
        ));
    }
    if bias.table.shape().len() != 2 || bias.table.shape()[1] != heads {
        return Err(shape_err(
            op,
            format!(
                "the bias table must be [buckets, {heads}], got {:?}",
                bias.table
            ),
        ));
    }
    if bias.buckets.dtype() != DType::F32 || bias.buckets.numel() != 2 * rows - 1 {
        return Err(shape_err(
            op,
            format!(
                "the bucket table must be f32 [{}] for {rows} rows, got {:?}",
                2 * rows - 1,
                bias.buckets
            ),
        ));
    }
    for input in [q, k, v, bias.table, bias.buckets] {
        require_distinct(op, input, o)?;
    }
    require_f16_support(
        rec.gpu(),
        "an f16 relative-bias attention",
        &[q, k, v, bias.table, o],
    )?;
    let params = Params {
        rows: to_u32(op, rows)?,
        heads: to_u32(op, heads)?,
        head_dim: to_u32(op, head_dim)?,
        valid: to_u32(op, valid)?,
        center: to_u32(op, rows - 1)?,
        scale,
        _pad: [0; 2],
    };
    to_u32(op, q.numel())?;
    let flops = 4.0 * (rows * valid * width) as f64;
    let bytes = (q.bytes() + o.bytes()) as f64 + (k.bytes() + v.bytes()) as f64;
    rec.dispatch(Dispatch {
        shader: &T5_ATTENTION,
        entry: "main",
        defines: attention_defines(
            q.dtype(),
            k.dtype(),
            v.dtype(),
            bias.table.dtype(),
            o.dtype(),
        ),
        constants: vec![],
        params: ParamBytes::of(&params),
        tensors: &[q, k, v, bias.table, bias.buckets, o],
        workgroups: folded_grid(rec.gpu(), rows * heads),
        label: format!(
            "relative-bias attention {rows}x{heads}x{head_dim} {}",
            q.dtype()
        )
        .into(),
        cost: Cost::new(flops, bytes),
    })
}

/// Records `y` [R, C] = `x` [r, C] (r <= R) followed by R - r zero rows.
pub fn pad_rows(rec: &mut Recorder, x: &Tensor, y: &Tensor) -> Result<()> {
    let op = "pad_rows";
    let (&[in_rows, cols], &[out_rows, out_cols]) = (x.shape(), y.shape()) else {
        return Err(shape_err(op, format!("x {x:?} and y {y:?} must be 2D")));
    };
    if cols != out_cols || in_rows > out_rows {
        return Err(shape_err(op, format!("cannot pad x {x:?} into y {y:?}")));
    }
    require_distinct(op, x, y)?;
    require_f16_support(rec.gpu(), "an f16 row padding", &[x, y])?;
    let params = PadParams {
        in_rows: to_u32(op, in_rows)?,
        out_rows: to_u32(op, out_rows)?,
        cols: to_u32(op, cols)?,
        _pad: 0,
    };
    to_u32(op, out_rows * cols)?;
    rec.dispatch(Dispatch {
        shader: &T5_ATTENTION,
        entry: "main",
        defines: pad_defines(x.dtype(), y.dtype()),
        constants: vec![],
        params: ParamBytes::of(&params),
        tensors: &[x, y],
        workgroups: folded_grid(rec.gpu(), (out_rows * cols).div_ceil(256)),
        label: format!("pad rows {in_rows}->{out_rows}x{cols}").into(),
        cost: Cost::new(0.0, (x.bytes() + y.bytes()) as f64),
    })
}

/// CPU float64 reference of [`relative_bias_attention`]: `table` [buckets, heads], `buckets`
/// the bucket of relative position `j - i` at `j - i + rows - 1`.
#[allow(clippy::too_many_arguments)]
pub fn relative_bias_attention_reference(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    rows: usize,
    heads: usize,
    table: &[f32],
    buckets: &[usize],
    valid: usize,
    scale: f32,
) -> Vec<f64> {
    let width = q.len() / rows;
    let d = width / heads;
    let mut out = vec![0.0f64; rows * width];
    for h in 0..heads {
        for i in 0..rows {
            let s: Vec<f64> = (0..valid)
                .map(|j| {
                    let dot: f64 = (0..d)
                        .map(|c| q[i * width + h * d + c] as f64 * k[j * width + h * d + c] as f64)
                        .sum();
                    let b = buckets[j + rows - 1 - i];
                    scale as f64 * dot + table[b * heads + h] as f64
                })
                .collect();
            let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
            let total: f64 = e.iter().sum();
            for c in 0..d {
                let acc: f64 = (0..valid)
                    .map(|j| e[j] * v[j * width + h * d + c] as f64)
                    .sum();
                out[i * width + h * d + c] = acc / total;
            }
        }
    }
    out
}

/// `shaders/t5_attention.wgsl`.
pub static T5_ATTENTION: crate::shader::ShaderFile = crate::shader_file!("t5_attention", variants);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;
    use DType::{F16, F32};

    fn check(rows: usize, heads: usize, d: usize, valid: usize, types: [DType; 3]) {
        let gpu = test_gpu();
        let [qt, bt, ot] = types;
        if types.contains(&F16) && !gpu.caps.shader_f16 {
            eprintln!("skipping f16 case: adapter lacks SHADER_F16");
            return;
        }
        let seed = seed();
        let mut rng = Rng::new(seed);
        let n = rows * heads * d;
        let round = |v: Vec<f32>, t: DType| if t == F16 { round_f16(&v) } else { v };
        let qv = round(rng.vec_normal(n, 1.0), qt);
        let kv = round(rng.vec_normal(n, 1.0), qt);
        let vv = round(rng.vec_normal(n, 1.0), qt);
        let nb = 7;
        let table_v = round(rng.vec_normal(nb * heads, 2.0), bt);
        let buckets: Vec<usize> = (0..2 * rows - 1).map(|r| (r * 31 + 5) % nb).collect();
        let bucket_f: Vec<f32> = buckets.iter().map(|&b| b as f32).collect();
        let up = |v: &[f32], shape: &[usize], t| Tensor::from_f32(gpu, shape, v, t).unwrap();
        let shape = [rows, heads * d];
        let q = up(&qv, &shape, qt);
        let k = up(&kv, &shape, qt);
        let v = up(&vv, &shape, qt);
        let table = up(&table_v, &[nb, heads], bt);
        let bucket_t = up(&bucket_f, &[2 * rows - 1], F32);
        let o = Tensor::empty(gpu, &shape, ot).unwrap();
        o.poison(gpu);
        let scale = 0.7;
        let mut rec = Recorder::new(gpu);
        relative_bias_attention(
            &mut rec,
            &q,
            &k,
            &v,
            heads,
            RelativeBias {
                table: &table,
                buckets: &bucket_t,
            },
            valid,
            scale,
            &o,
        )
        .unwrap();
        rec.run().unwrap();
        let got = o.to_vec_f32(gpu).unwrap();
        let want = relative_bias_attention_reference(
            &qv, &kv, &vv, rows, heads, &table_v, &buckets, valid, scale,
        );
        let tol = if types.contains(&F16) { 3e-3 } else { 1e-5 };
        assert_close(
            &format!("relative-bias attention {rows}x{heads}x{d} valid {valid} {types:?}"),
            seed,
            &got,
            &want,
            tol,
        );
    }

    #[test]
    fn matches_reference() {
        check(1, 1, 4, 1, [F32; 3]);
        check(37, 3, 16, 37, [F32; 3]);
        check(70, 2, 64, 51, [F32; 3]);
        check(130, 4, 8, 130, [F16, F16, F16]);
        check(29, 2, 72, 20, [F16, F32, F32]);
    }

    #[test]
    fn longest_sequence() {
        check(MAX_ROWS, 2, 8, MAX_ROWS - 3, [F32; 3]);
    }

    #[test]
    fn folded_grid_reaches_every_row() {
        super::super::with_fold_limit(5, || check(23, 2, 8, 23, [F32; 3]));
    }

    #[test]
    fn rejects_bad_shapes() {
        let gpu = test_gpu();
        let x = Tensor::empty(gpu, &[600, 8], F32).unwrap();
        let table = Tensor::empty(gpu, &[4, 2], F32).unwrap();
        let b = Tensor::empty(gpu, &[1199], F32).unwrap();
        let o = Tensor::empty(gpu, &[600, 8], F32).unwrap();
        let mut rec = Recorder::new(gpu);
        let bias = RelativeBias {
            table: &table,
            buckets: &b,
        };
        let err = relative_bias_attention(&mut rec, &x, &x, &x, 2, bias, 600, 1.0, &o)
            .unwrap_err()
            .to_string();
        assert!(err.contains("1..=512 rows"), "{err}");
        let x = Tensor::empty(gpu, &[6, 8], F32).unwrap();
        let o = Tensor::empty(gpu, &[6, 8], F32).unwrap();
        let err = relative_bias_attention(&mut rec, &x, &x, &x, 3, bias, 6, 1.0, &o)
            .unwrap_err()
            .to_string();
        assert!(err.contains("3 heads"), "{err}");
        let err = relative_bias_attention(&mut rec, &x, &x, &x, 2, bias, 0, 1.0, &o)
            .unwrap_err()
            .to_string();
        assert!(err.contains("0 valid keys"), "{err}");
    }

    #[test]
    fn pad_rows_appends_zeros() {
        let gpu = test_gpu();
        let seed = seed();
        let mut rng = Rng::new(seed);
        let v = rng.vec_normal(5 * 33, 1.0);
        let x = Tensor::from_f32(gpu, &[5, 33], &v, F32).unwrap();
        let y = Tensor::empty(gpu, &[9, 33], F32).unwrap();
        y.poison(gpu);
        let mut rec = Recorder::new(gpu);
        pad_rows(&mut rec, &x, &y).unwrap();
        rec.run().unwrap();
        let got = y.to_vec_f32(gpu).unwrap();
        let mut want: Vec<f64> = v.iter().map(|&x| x as f64).collect();
        want.resize(9 * 33, 0.0);
        assert_eq!(got.len(), want.len());
        assert!(got.iter().zip(&want).all(|(&g, &w)| g as f64 == w));
        let mut rec = Recorder::new(gpu);
        assert!(pad_rows(&mut rec, &y, &x).is_err());
    }
}
