//! Attention kernels: softmax (flash-style), linear, hybrid and chunk-recurrent hybrid, exactly
//! as ARCHITECTURE.md, Attention modes writes them.
//!
//! Tensors: q `[Nq, H, D]`, k and v `[Nk, H, D]`, output `[Nq, H, D]`, all f32 or all f16;
//! arithmetic in f32. One entry, [`attention`], runs any [`AttentionMode`] with a workspace built
//! once per shape ([`AttentionWorkspace`]); the per-kernel launchers are public too:
//! - [`flash_attention`]: softmax over a strided key range, plus an optional linear term;
//!   softmax, the linear apply pass, hybrid and rehyat chunks all use it. It runs
//!   `attention_flash_coop.wgsl` on cooperative matrices where they fit (f16, head dim 128; two
//!   passes over the keys), else `attention_flash_vec.wgsl` (head dims up to 128) or
//!   `attention_flash.wgsl` (up to 512), both with an online softmax.
//! - [`softmax_attention`]: plain softmax; one head wider than 128 goes through [`explicit`]
//!   (scores in memory, two matmuls).
//! - [`feature_map`]: phi of hedgehog / poly / elu1 into an f32 buffer (`feature_map.wgsl`).
//! - [`linear_state`]: the chunked state update S = sum phi_k v^T, z = sum phi_k
//!   (`attention_state.wgsl`, two passes).
//!
//! Feature-map weight shapes (per head, f32 or f16, all of one type):
//! - hedgehog: `w [H, DF/2, D]`, `b [H, DF/2]`; phi = [softmax(W x + b), softmax(-(W x + b))].
//! - poly: `w1 [H, HID, D]`, `b1 [H, HID]`, `w2 [H, P*D1, HID]`, `b2 [H, P*D1]`, activation GELU
//!   (tanh form) between the layers; phi = [psi_1, psi_2^2, .., psi_P^P], DF = P*D1.
//! - elu1: no weights, DF = D.

pub mod explicit;
mod feature_map;
mod flash;
mod flash_coop;
mod flash_general;
mod flash_vec;
mod mode;
pub mod reference;
mod state;
#[cfg(test)]
mod tests;

pub use feature_map::*;
pub use flash::*;
pub use flash_coop::*;
pub use flash_general::*;
pub use flash_vec::*;
pub use mode::*;
pub use state::*;

use crate::error::{shape_err, GpuError, Result};
use crate::gpu::Gpu;
use crate::recorder::Recorder;
use crate::tensor::{DType, Tensor};

fn same_dtype(op: &'static str, ts: &[&Tensor]) -> Result<()> {
    if ts.windows(2).any(|w| w[0].dtype() != w[1].dtype()) {
        return Err(shape_err(
            op,
            format!("tensors must share one storage type: {ts:?}"),
        ));
    }
    Ok(())
}

fn need_f16(gpu: &Gpu, what: &str, ts: &[&Tensor]) -> Result<()> {
    if ts.iter().any(|t| t.dtype() == DType::F16) && !gpu.caps.shader_f16 {
        return Err(GpuError::MissingFeature(what.into(), "SHADER_F16"));
    }
    Ok(())
}

/// A flat grid of `n` workgroups folded into 2D when one dimension would exceed the limit.
fn fold_grid(gpu: &Gpu, n: usize) -> Result<([u32; 3], u32)> {
    let max = gpu.limits.max_compute_workgroups_per_dimension as usize;
    if n <= max {
        return Ok(([n as u32, 1, 1], n.max(1) as u32));
    }
    let y = n.div_ceil(max);
    if y > max {
        return Err(GpuError::OverLimit {
            what: "an attention grid".into(),
            needed: n as u64,
            limit: (max * max) as u64,
            limit_name: "max_compute_workgroups_per_dimension squared",
        });
    }
    let x = n.div_ceil(y);
    Ok(([x as u32, y as u32, 1], x as u32))
}

/// At most this many partial states per head in the state's first pass.
const MAX_STATE_CHUNKS: usize = 32;

/// Buffers a mode needs for one shape, built once and reused by every call of that shape.
pub struct AttentionWorkspace {
    mode: AttentionMode,
    shape: [usize; 4],
    df: usize,
    phi_q: Option<Tensor>,
    phi_k: Option<Tensor>,
    partial: Option<Tensor>,
    state: Option<Tensor>,
}

impl std::fmt::Debug for AttentionWorkspace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "AttentionWorkspace({:?}, nq/nk/h/d {:?}, df {}, {} bytes)",
            self.mode,
            self.shape,
            self.df,
            self.bytes()
        )
    }
}

impl AttentionWorkspace {
    /// Sizes the buffers of `mode` for q `[nq, heads, d]`, k/v `[nk, heads, d]` and feature
    /// dimension `df` (ignored by softmax). Rehyat's buffers hold one chunk, whatever the length.
    pub fn new(
        gpu: &Gpu,
        mode: &AttentionMode,
        nq: usize,
        nk: usize,
        heads: usize,
        d: usize,
        df: usize,
    ) -> Result<Self> {
        let mut ws = Self {
            mode: *mode,
            shape: [nq, nk, heads, d],
            df,
            phi_q: None,
            phi_k: None,
            partial: None,
            state: None,
        };
        if !mode.needs_features() {
            return Ok(ws);
        }
        if df == 0 {
            return Err(shape_err(
                "attention workspace",
                "the feature dimension must be positive",
            ));
        }
        let (q_rows, k_rows) = match *mode {
            AttentionMode::Rehyat {
                chunk_frames,
                frame_tokens,
                ..
            } => {
                let c = (chunk_frames as usize * frame_tokens as usize).max(1);
                (c.min(nq.max(1)), c.min(nk.max(1)))
            }
            _ => (nq.max(1), nk.max(1)),
        };
        let chunks = k_rows.div_ceil(state_chunk(k_rows, MAX_STATE_CHUNKS));
        ws.phi_q = Some(Tensor::empty(gpu, &[q_rows, heads, df], DType::F32)?);
        ws.phi_k = Some(Tensor::empty(gpu, &[k_rows, heads, df], DType::F32)?);
        ws.partial = Some(Tensor::empty(gpu, &[chunks, heads, df, d + 1], DType::F32)?);
        ws.state = Some(Tensor::empty(gpu, &[heads, df, d + 1], DType::F32)?);
        Ok(ws)
    }

    /// Bytes held on the GPU.
    pub fn bytes(&self) -> u64 {
        [&self.phi_q, &self.phi_k, &self.partial, &self.state]
            .iter()
            .filter_map(|t| t.as_ref().map(|t| t.bytes()))
            .sum()
    }

    /// The (S | z) state `[H, DF, D + 1]` after the last call (for tests and inspection).
    pub fn state(&self) -> Option<&Tensor> {
        self.state.as_ref()
    }
}

/// Hybrid attention at `rate`: softmax over keys j % rate == 0, the linear state of the others,
/// one shared normalizer. `ws` must hold feature buffers for this shape. At rate 1 every key is
/// a softmax key and the state is empty, so it gives softmax through the hybrid kernels (what
/// [`attention`] does instead at rate 1, and what the tests check this against).
#[allow(clippy::too_many_arguments)]
pub(crate) fn hybrid_attention(
    rec: &mut Recorder,
    rate: usize,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f32,
    features: &FeatureMapWeights,
    out: &Tensor,
    ws: &AttentionWorkspace,
) -> Result<()> {
    let op = "hybrid attention";
    let [nq, nk, ..] = qkv_shape(op, q, k, v, out)?;
    let (Some(pq), Some(pk), Some(partial), Some(state)) =
        (&ws.phi_q, &ws.phi_k, &ws.partial, &ws.state)
    else {
        return Err(shape_err(op, "the workspace holds no feature buffers"));
    };
    let rate = rate.max(1);
    feature_map(rec, &features.phi_k, k, 0, nk, pk)?;
    linear_state(rec, pk, 0, v, 0, nk, rate, partial, state, false)?;
    feature_map(rec, &features.phi_q, q, 0, nq, pq)?;
    flash_attention(
        rec,
        q,
        k,
        v,
        out,
        &FlashArgs {
            scale,
            q_lo: 0,
            q_count: nq,
            k_lo: 0,
            k_count: nk.div_ceil(rate),
            k_stride: rate,
            linear: Some(LinearTerm {
                phi_q: pq,
                phi_lo: 0,
                state,
                eps: 0.0,
            }),
        },
    )
}

/// Records attention of `mode` with score scale `scale` (1/sqrt(D) for the DiT, 1 for umT5).
/// q `[Nq, H, D]`, k/v `[Nk, H, D]`, out `[Nq, H, D]`; `features` for every mode but softmax
/// (and hybrid with rate 1); `ws` built for this mode and shape.
#[allow(clippy::too_many_arguments)]
pub fn attention(
    rec: &mut Recorder,
    mode: &AttentionMode,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f32,
    features: Option<&FeatureMapWeights>,
    out: &Tensor,
    ws: &AttentionWorkspace,
) -> Result<()> {
    let op = "attention";
    let [nq, nk, h, d] = qkv_shape(op, q, k, v, out)?;
    if ws.mode != *mode || ws.shape != [nq, nk, h, d] {
        return Err(shape_err(
            op,
            format!(
                "the workspace was built for {:?} with nq/nk/h/d {:?}, called with {mode:?} {:?}",
                ws.mode,
                ws.shape,
                [nq, nk, h, d]
            ),
        ));
    }
    if nq == 0 {
        return Ok(());
    }
    if nk == 0 {
        return Err(shape_err(op, "no keys"));
    }
    let feats = if mode.needs_features() {
        let f = features
            .ok_or_else(|| shape_err(op, format!("{} needs feature-map weights", mode.name())))?;
        let df = f.validate(h, d)?;
        if df != ws.df {
            return Err(shape_err(
                op,
                format!("the workspace holds {} features, the maps give {df}", ws.df),
            ));
        }
        Some(f)
    } else {
        None
    };
    let bufs = || {
        (
            ws.phi_q.as_ref().unwrap(),
            ws.phi_k.as_ref().unwrap(),
            ws.partial.as_ref().unwrap(),
            ws.state.as_ref().unwrap(),
        )
    };
    match mode.normalized() {
        AttentionMode::Softmax => softmax_attention(rec, q, k, v, scale, out),
        AttentionMode::Linear { eps } => {
            let f = feats.unwrap();
            let (pq, pk, partial, state) = bufs();
            feature_map(rec, &f.phi_k, k, 0, nk, pk)?;
            linear_state(rec, pk, 0, v, 0, nk, 0, partial, state, false)?;
            feature_map(rec, &f.phi_q, q, 0, nq, pq)?;
            let linear = Some(LinearTerm {
                phi_q: pq,
                phi_lo: 0,
                state,
                eps,
            });
            flash_attention(
                rec,
                q,
                k,
                v,
                out,
                &FlashArgs {
                    scale,
                    q_lo: 0,
                    q_count: nq,
                    k_lo: 0,
                    k_count: 0,
                    k_stride: 1,
                    linear,
                },
            )
        }
        AttentionMode::Hybrid { rate } => {
            hybrid_attention(rec, rate as usize, q, k, v, scale, feats.unwrap(), out, ws)
        }
        AttentionMode::Rehyat {
            chunk_frames,
            overlap_frames,
            frame_tokens,
        } => {
            if nq != nk {
                return Err(shape_err(op, "rehyat is self-attention: Nq must equal Nk"));
            }
            if chunk_frames == 0 || frame_tokens == 0 {
                return Err(shape_err(
                    op,
                    "rehyat needs chunk_frames and frame_tokens > 0",
                ));
            }
            let f = feats.unwrap();
            let (pq, pk, partial, state) = bufs();
            let (tc, to, ft) = (
                chunk_frames as usize,
                overlap_frames as usize,
                frame_tokens as usize,
            );
            let frames = nq.div_ceil(ft);
            // Keys already folded into the state.
            let mut linear_hi = 0usize;
            let mut t = 0;
            while t * tc < frames {
                let q_lo = t * tc * ft;
                let q_hi = ((t + 1) * tc * ft).min(nq);
                let win_lo = (t * tc).saturating_sub(to) * ft;
                if win_lo > linear_hi {
                    // The keys leaving the softmax window join the state.
                    feature_map(rec, &f.phi_k, k, linear_hi, win_lo - linear_hi, pk)?;
                    linear_state(
                        rec,
                        pk,
                        linear_hi,
                        v,
                        linear_hi,
                        win_lo,
                        0,
                        partial,
                        state,
                        linear_hi > 0,
                    )?;
                }
                let has_state = win_lo > 0;
                linear_hi = win_lo;
                if has_state {
                    feature_map(rec, &f.phi_q, q, q_lo, q_hi - q_lo, pq)?;
                }
                flash_attention(
                    rec,
                    q,
                    k,
                    v,
                    out,
                    &FlashArgs {
                        scale,
                        q_lo,
                        q_count: q_hi - q_lo,
                        k_lo: win_lo,
                        k_count: q_hi - win_lo,
                        k_stride: 1,
                        linear: has_state.then_some(LinearTerm {
                            phi_q: pq,
                            phi_lo: q_lo,
                            state,
                            eps: 0.0,
                        }),
                    },
                )?;
                t += 1;
            }
            Ok(())
        }
    }
}

/// Self-attention FLOPs of one call per the attention cost model (ARCHITECTURE.md) (all heads), including
/// feature maps and the state.
pub fn attention_flops(
    mode: &AttentionMode,
    nq: usize,
    nk: usize,
    h: usize,
    d: usize,
    df: usize,
    fm_flops_per_token: f64,
) -> f64 {
    let (nq, nk, h, d, df) = (nq as f64, nk as f64, h as f64, d as f64, df as f64);
    let linear = |keys: f64, queries: f64| 2.0 * keys * df * d + 2.0 * queries * df * d;
    h * match mode.normalized() {
        AttentionMode::Softmax => 4.0 * nq * nk * d,
        AttentionMode::Linear { .. } => linear(nk, nq) + (nq + nk) * fm_flops_per_token,
        AttentionMode::Hybrid { rate } => {
            4.0 * nq * (nk / rate as f64).ceil() * d
                + linear(nk, nq)
                + (nq + nk) * fm_flops_per_token
        }
        AttentionMode::Rehyat {
            chunk_frames,
            overlap_frames,
            frame_tokens,
        } => {
            // softmax: each chunk's queries against its window; linear: every key once, every
            // query of a chunk with a state once.
            let (tc, to, ft) = (
                chunk_frames as f64,
                overlap_frames as f64,
                frame_tokens as f64,
            );
            let frames = (nq / ft).ceil();
            let mut soft = 0.0;
            let mut t = 0.0;
            while t * tc < frames {
                let qn = ((t + 1.0) * tc * ft).min(nq) - t * tc * ft;
                let lo = (t * tc - to).max(0.0) * ft;
                soft += 4.0 * qn * (((t + 1.0) * tc * ft).min(nk) - lo) * d;
                t += 1.0;
            }
            soft + linear(nk, nq) + (nq + nk) * fm_flops_per_token
        }
    }
}
