//! Softmax attention with explicit scores, for one head with a wide head dim (the Wan-VAE's
//! mid-block attention: 1 head of 384): S = Q K^T and O = P V are two matmuls, which run on
//! tensor cores where the adapter has cooperative matrices, with a row softmax between them.
//! The flash kernels keep a head's Q and output in registers, which a head dim of 384 does not
//! fit; here the price is the [Nq, Nk] score matrix in memory.

use crate::error::{shape_err, Result};
use crate::kernels::layout::channels_last;
use crate::kernels::matmul::{matmul, Epilogue};
use crate::kernels::softmax::softmax_rows;
use crate::recorder::Recorder;
use crate::tensor::{DType, Tensor};

/// The most scratch memory (scores, probabilities, V^T) this path allocates; larger attention
/// stays on the flash kernels.
pub const MAX_SCRATCH_BYTES: usize = 1 << 30;

/// Whether [`explicit_attention`] takes this attention: one head wider than the flash kernels'
/// fast path, whose scratch fits [`MAX_SCRATCH_BYTES`] and the adapter's buffer limits.
pub fn takes(
    gpu: &crate::gpu::Gpu,
    nq: usize,
    nk: usize,
    heads: usize,
    d: usize,
    dtype: DType,
) -> bool {
    let scores = nq * nk * 4;
    let scratch = scores + nq * nk * dtype.size() + d * nk * dtype.size();
    heads == 1
        && d > 128
        && scratch <= MAX_SCRATCH_BYTES
        && (scores as u64) <= gpu.limits.max_storage_buffer_binding_size
        && (scores as u64) <= gpu.limits.max_buffer_size
}

/// Records `out = softmax(scale q k^T) v` for q [Nq, 1, D], k and v [Nk, 1, D], out [Nq, 1, D].
pub fn explicit_attention(
    rec: &mut Recorder,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f32,
    out: &Tensor,
) -> Result<()> {
    let op = "explicit_attention";
    let (&[nq, 1, d], &[nk, 1, dk]) = (q.shape(), k.shape()) else {
        return Err(shape_err(
            op,
            format!("q and k must be [N, 1, D], got {q:?} and {k:?}"),
        ));
    };
    if dk != d || v.shape() != k.shape() || out.shape() != q.shape() {
        return Err(shape_err(
            op,
            format!(
                "k, v [Nk, 1, {d}] and out {:?} expected, got {k:?}, {v:?}, {out:?}",
                q.shape()
            ),
        ));
    }
    let gpu = rec.gpu();
    let scores = Tensor::empty(gpu, &[nq, nk], DType::F32)?;
    let probs = Tensor::empty(gpu, &[nq, nk], q.dtype())?;
    let v_t = Tensor::empty(gpu, &[1, 1, d, nk], v.dtype())?;
    matmul(
        rec,
        &q.reshape(&[nq, d])?,
        &k.reshape(&[nk, d])?,
        None,
        &scores,
        Epilogue::None,
    )?;
    softmax_rows(rec, &scores, scale, &probs)?;
    // V^T [D, Nk]: V seen as Nk "channels" of a 1 x 1 x D frame, made channels-last.
    channels_last(rec, &v.reshape(&[nk, 1, 1, d])?, 0, &v_t)?;
    matmul(
        rec,
        &probs,
        &v_t.reshape(&[d, nk])?,
        None,
        &out.reshape(&[nq, d])?,
        Epilogue::None,
    )
}
