//! Watching each block's self-attention during a forward: what the attention kernel saw (q, k,
//! v after qk-norm and RoPE, [N, heads, head_dim]) and what it gave. Attention distillation
//! trains on it during the model's own sampling; `vdit compare` measures the plan's error.

use vdit_wgpu::Recorder;

use crate::error::Result;
use crate::plan::LayerAttention;

/// Which classifier-free guidance branch a forward computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Branch {
    Cond,
    Uncond,
}

/// The forward about to be recorded, as the denoising loop describes it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pass {
    pub step: usize,
    pub timestep: f32,
    pub branch: Branch,
}

/// One block's self-attention, as recorded.
pub struct BlockAttention<'a> {
    pub block: usize,
    pub q: &'a vdit_wgpu::Tensor,
    pub k: &'a vdit_wgpu::Tensor,
    pub v: &'a vdit_wgpu::Tensor,
    /// The output in the block's planned mode: the softmax output y in a softmax block.
    pub output: &'a vdit_wgpu::Tensor,
    pub mode: LayerAttention,
    /// Tokens per latent frame (what the chunk-recurrent mode counts in).
    pub frame_tokens: usize,
}

/// Hears every block's self-attention of a forward.
///
/// The tensors are the forward's scratch, overwritten by the rest of the block: use them
/// through `rec` (record a copy or a kernel), or [`flush`] `rec` and finish with them before
/// returning. Either way the forward goes on recording after the tap's work.
pub trait AttentionTap {
    /// A forward of the denoising loop starts (other callers need not say).
    fn forward_begins(&mut self, _pass: Pass) {}
    /// Called once per block, right after its self-attention is recorded.
    fn block_attention(&mut self, rec: &mut Recorder, seen: &BlockAttention<'_>) -> Result<()>;
}

/// Submits what `rec` holds so far and leaves it empty to record on.
pub fn flush(rec: &mut Recorder) -> Result<()> {
    let gpu = rec.gpu();
    std::mem::replace(rec, Recorder::new(gpu)).submit(None)?;
    Ok(())
}

/// A shorter-lived copy of an optional tap, to hand to one forward (or block) of several.
pub fn reborrow<'s>(
    tap: &'s mut Option<&mut dyn AttentionTap>,
) -> Option<&'s mut dyn AttentionTap> {
    match tap {
        Some(t) => Some(&mut **t),
        None => None,
    }
}
