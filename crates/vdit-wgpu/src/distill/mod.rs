//! Stage-1 attention distillation on the GPU: train the feature maps phi_q, phi_k of one block
//! so that its hybrid / chunk-recurrent / linear attention matches the block's softmax output
//! (the math and gradients: DISTILL.md; the modes: ARCHITECTURE.md, Attention modes).
//!
//! The entry is [`PhiTrainer`], one per (block, mode) pair:
//! ```text
//! let mut t = PhiTrainer::new(gpu, PhiTrainerConfig::hedgehog(heads, head_dim, half, mode, seed))?;
//! t.prepare(&capture)?;                       // the frozen softmax part, once per capture
//! let loss = t.step(&QuerySubset::Strided { start: 0, step: 4 })?;   // one AdamW step
//! let losses = t.steps(&subsets)?;            // several steps in one submission
//! let e = t.error(&held_out)?;                // sum |y_hat - y| / sum |y| over all queries
//! let w = t.weights()?;                       // FeatureMapWeights for `attention()`
//! let s = t.state()?; t.load_state(&s)?;      // resume: weights, Adam moments, step count
//! ```
//!
//! Tensors (storage f32 or f16, all four of one type; arithmetic in f32):
//! - a [`BlockCapture`]: q `[Nq, H, D]`, k, v `[Nk, H, D]` exactly as the inference kernel sees
//!   them (after norm and RoPE), y `[Nq, H, D]` the teacher's softmax attention output;
//!   `frame_tokens` tokens per latent frame (rehyat). Rehyat needs Nq == Nk.
//! - the trained weights are f32, shaped as the attention plan reads them (attention module
//!   docs): hedgehog `w [H, DF/2, D]`, `b [H, DF/2]` for each of phi_q and phi_k.
//! - internal: the softmax part `[Nq, H, D + 2]` f32 (A in columns 0..D, alpha in D, m in D + 1);
//!   states `[H, DF, D + 1]` (S | z) per query segment; gradients of a hedgehog map as
//!   `[H, DF/2, D + 1]` (dW | db), which is exactly what the linear-state kernel computes from
//!   du and x, so the weight gradients reuse `attention_state.wgsl`.
//!
//! Modules: [`forward`] (softmax part, gather, the query pass), [`backward`] (key side and the
//! hedgehog backward), [`adamw`] (global-norm clipping and AdamW), [`trainer`] (the API),
//! [`reference`] (CPU float64 forward, analytic gradients and losses for the tests).

pub mod adamw;
pub mod backward;
pub mod forward;
pub mod reference;
#[cfg(test)]
mod tests;
pub mod trainer;

pub use adamw::AdamW;
pub use trainer::{ParamState, PhiInit, PhiTrainer, PhiTrainerConfig, TrainerState};

use crate::error::{shape_err, Result};
use crate::shader::ShaderFile;
use crate::tensor::Tensor;

/// The shader files of the distillation kernels.
pub fn shaders() -> Vec<ShaderFile> {
    vec![
        crate::shader_file!("distill_softmax", forward::softmax_variants),
        crate::shader_file!("distill_gather", forward::gather_variants),
        crate::shader_file!("distill_query", forward::query_variants),
        crate::shader_file!("distill_keys", backward::keys_variants),
        crate::shader_file!("distill_hedgehog", backward::hedgehog_variants),
        crate::shader_file!("distill_reduce", adamw::reduce_variants),
        crate::shader_file!("distill_adamw", adamw::adamw_variants),
    ]
}

/// The distillation loss on the attention output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Loss {
    /// mean |y_hat - y| (Attention Surgery, ReHyAt).
    #[default]
    L1,
    /// mean (y_hat - y)^2 (LoLCATs).
    Mse,
}

/// One block's captured self-attention: the inputs exactly as the attention kernel sees them
/// and the teacher's softmax output.
#[derive(Clone, Debug)]
pub struct BlockCapture {
    /// `[Nq, H, D]`
    pub q: Tensor,
    /// `[Nk, H, D]`
    pub k: Tensor,
    /// `[Nk, H, D]`
    pub v: Tensor,
    /// `[Nq, H, D]`: softmax attention of q over k, v.
    pub y: Tensor,
    /// Tokens per latent frame (rehyat's chunks are counted in frames).
    pub frame_tokens: usize,
}

impl BlockCapture {
    /// `(nq, nk)` once the shapes are checked against `heads` and `d`.
    pub fn check(&self, heads: usize, d: usize) -> Result<(usize, usize)> {
        let op = "distill capture";
        let rows = |t: &Tensor, name: &str| -> Result<usize> {
            match t.shape() {
                [n, h, dd] if *h == heads && *dd == d => Ok(*n),
                s => Err(shape_err(
                    op,
                    format!("{name} must be [N, {heads}, {d}], got {s:?}"),
                )),
            }
        };
        let nq = rows(&self.q, "q")?;
        let nk = rows(&self.k, "k")?;
        if self.v.shape() != self.k.shape() {
            return Err(shape_err(op, "v must have the shape of k"));
        }
        if self.y.shape() != self.q.shape() {
            return Err(shape_err(op, "y must have the shape of q"));
        }
        let dt = self.q.dtype();
        if [&self.k, &self.v, &self.y].iter().any(|t| t.dtype() != dt) {
            return Err(shape_err(op, "q, k, v and y must share one storage type"));
        }
        if nq == 0 || nk == 0 {
            return Err(shape_err(op, "a capture needs queries and keys"));
        }
        if nq > u32::MAX as usize / 2 || nk > u32::MAX as usize / 2 {
            return Err(shape_err(op, "too many tokens for u32 indices"));
        }
        Ok((nq, nk))
    }
}

/// Which queries one optimiser step uses (the loss is a mean, so any subset is an unbiased
/// estimate; S and z always sum over all linear keys).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QuerySubset {
    All,
    /// Queries start, start + step, ... below Nq.
    Strided {
        start: usize,
        step: usize,
    },
    /// Explicit query indices (duplicates count twice; order does not matter).
    List(Vec<u32>),
}

impl QuerySubset {
    /// The sorted query indices of this subset for `nq` queries.
    pub fn indices(&self, nq: usize) -> Result<Vec<u32>> {
        let op = "query subset";
        let mut v: Vec<u32> = match self {
            QuerySubset::All => (0..nq as u32).collect(),
            QuerySubset::Strided { start, step } => {
                if *step == 0 {
                    return Err(shape_err(op, "a strided subset needs step > 0"));
                }
                (*start..nq).step_by(*step).map(|i| i as u32).collect()
            }
            QuerySubset::List(l) => {
                if let Some(&bad) = l.iter().find(|&&i| i as usize >= nq) {
                    return Err(shape_err(op, format!("query {bad} past Nq = {nq}")));
                }
                l.clone()
            }
        };
        if v.is_empty() {
            return Err(shape_err(op, format!("{self:?} selects no query of {nq}")));
        }
        v.sort_unstable();
        Ok(v)
    }
}
