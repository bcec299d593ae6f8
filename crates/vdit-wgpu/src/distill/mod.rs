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
//!   docs): hedgehog `w [H, DF/2, D]`, `b [H, DF/2]`; poly `w1 [H, HID, D]`, `b1 [H, HID]`,
//!   `w2 [H, DF, HID]`, `b2 [H, DF]`; for each of phi_q and phi_k.
//! - internal: the softmax part `[Nq, H, D + 2]` f32 (A in columns 0..D, alpha in D, m in D + 1);
//!   states `[H, DF, D + 1]` (S | z) per query segment; the gradient of each layer of a map as a
//!   (dW | db) table (hedgehog `[H, DF/2, D + 1]`; poly `[H, HID, D + 1]` and `[H, DF, HID + 1]`),
//!   which is exactly what the linear-state kernel computes from the layer's output gradient and
//!   its input, so the weight gradients reuse `attention_state.wgsl`.
//!
//! What the student computes is exactly what `attention()` computes for the mode with
//! [`PhiTrainer::weights`]: the softmax part uses the true row maximum as its stabiliser (the
//! inference kernel's m_i), the linear term is not rescaled, and linear mode's epsilon is its
//! alpha. Hybrid and linear share one (S | z) over their linear keys; rehyat has one prefix state
//! per chunk of `chunk_frames` frames. Queries may be subsampled per step ([`QuerySubset`]); S and z
//! always sum over every linear key. Losses are means over the step's queries x H x D, taken
//! before the step's update. [`TrainerState`] names its tensors `phi_q.w`, `phi_q.b`, `phi_k.w`,
//! `phi_k.b` (hedgehog) or `phi_q.w1`, `.b1`, `.w2`, `.b2` and the same for `phi_k` (poly).
//!
//! GPU memory of a prepared capture, f32: the softmax part and the gathered queries (about
//! 3 x Nq H D), phi_k and its gradient (2 x Nk H DF plus Nk H DF / 2), phi_q and its gradient
//! (2 x Nq H DF), and one (S | z) and one (dS | dz) table per segment. [`PhiTrainer::error`] and
//! [`PhiTrainer::predict`] build their own, forward-only, for the capture they are given.
//!
//! Modules: [`forward`] (segments, softmax part, gather, the query pass), [`backward`] (key side,
//! the hedgehog and poly backward), [`adamw`] (column sums for the loss and the global norm, AdamW),
//! [`trainer`] (the API), [`reference`] (CPU float64 forward, analytic gradients and losses).

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
use crate::tensor::Tensor;

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
