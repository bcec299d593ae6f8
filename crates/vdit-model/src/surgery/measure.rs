//! Attention-output errors: how far a mode's output lies from softmax on the same q, k, v.

use vdit_wgpu::attention::{attention, softmax_attention, AttentionWorkspace, FeatureMapWeights};
use vdit_wgpu::{Recorder, Tensor};

use crate::dit::BlockAttention;
use crate::error::Result;
use crate::plan::LayerAttention;

/// sum |got - want| / sum |want| in f64 (infinite when anything is NaN or the lengths differ):
/// the relative L1 error distillation minimises and the planner sums.
pub fn relative_l1(got: &[f32], want: &[f32]) -> f64 {
    if got.len() != want.len() {
        return f64::INFINITY;
    }
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (&g, &w) in got.iter().zip(want) {
        num += (g as f64 - w as f64).abs();
        den += (w as f64).abs();
    }
    let e = num / den.max(f64::MIN_POSITIVE);
    if e.is_nan() {
        f64::INFINITY
    } else {
        e
    }
}

/// ||got - want|| / ||want|| in f64 (infinite when anything is NaN or the lengths differ).
pub fn relative_l2(got: &[f32], want: &[f32]) -> f64 {
    if got.len() != want.len() {
        return f64::INFINITY;
    }
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (&g, &w) in got.iter().zip(want) {
        num += (g as f64 - w as f64).powi(2);
        den += (w as f64).powi(2);
    }
    let e = (num / den.max(f64::MIN_POSITIVE)).sqrt();
    if e.is_nan() {
        f64::INFINITY
    } else {
        e
    }
}

/// The softmax attention of a block's captured q, k, v (what its output is measured against).
pub fn softmax_of(rec: &mut Recorder, seen: &BlockAttention<'_>) -> Result<Tensor> {
    let gpu = rec.gpu();
    let y = Tensor::empty(gpu, seen.q.shape(), seen.q.dtype())?;
    softmax_attention(rec, seen.q, seen.k, seen.v, scale(seen), &y)?;
    Ok(y)
}

/// The output of `mode` with `features` on a block's captured q, k, v.
pub fn mode_output(
    rec: &mut Recorder,
    seen: &BlockAttention<'_>,
    mode: LayerAttention,
    features: Option<&FeatureMapWeights>,
) -> Result<Tensor> {
    let gpu = rec.gpu();
    let &[n, heads, d] = seen.q.shape() else {
        return Err(crate::error::input_err("capture", "q must be [N, H, D]"));
    };
    let kernel_mode = mode.mode(seen.frame_tokens);
    let df = match features {
        Some(f) => f.validate(heads, d)?,
        None => 0,
    };
    let out = Tensor::empty(gpu, seen.q.shape(), seen.q.dtype())?;
    let ws = AttentionWorkspace::new(gpu, &kernel_mode, n, n, heads, d, df)?;
    attention(
        rec,
        &kernel_mode,
        seen.q,
        seen.k,
        seen.v,
        scale(seen),
        features,
        &out,
        &ws,
    )?;
    Ok(out)
}

fn scale(seen: &BlockAttention<'_>) -> f32 {
    1.0 / (seen.q.shape().last().copied().unwrap_or(1) as f32).sqrt()
}
