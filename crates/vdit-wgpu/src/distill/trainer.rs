//! [`PhiTrainer`]: stage-1 distillation of phi_q, phi_k for one (block, mode) pair, every step on
//! the GPU. A step: g = phi_k(k) and the (S | z) states of the segments; the gathered queries'
//! f = phi_q(q); the query pass (y_hat, loss, u, delta, df); (dS | dz) per segment summed from
//! the last segment back (rehyat's keys feed every later state); dg; the hedgehog backward and
//! (dW | db); the squared gradient norms; AdamW on the four weight tensors.

use crate::attention::reference::{FeatureSpec, HostFeatureMap};
use crate::attention::{feature_map, linear_state, AttentionMode, FeatureMap, FeatureMapWeights};
use crate::error::{shape_err, Result};
use crate::gpu::Gpu;
use crate::recorder::Recorder;
use crate::rng::Rng;
use crate::tensor::{DType, Tensor};

use super::adamw::{adamw_update, column_sums, AdamW, GradView, Moments};
use super::backward::{hedgehog_du, key_grad};
use super::forward::{
    gather_rows, query_pass, softmax_part, softmax_part_shape, upload_indices, QueryPass, Segments,
};
use super::{BlockCapture, Loss, QuerySubset};

/// Partial states per head in the first pass of the linear-state kernel.
const STATE_CHUNKS: usize = 32;

/// Where the first weights come from.
#[derive(Clone, Debug)]
pub enum PhiInit {
    /// W ~ N(0, 1/D), drawn once and given to both maps (so that phi_q(q).phi_k(k) starts out
    /// larger for aligned q and k), b = 0.
    Seeded(u64),
    /// Given weights, e.g. a previous run's (hedgehog maps of the configured sizes).
    Host {
        phi_q: HostFeatureMap,
        phi_k: HostFeatureMap,
    },
}

/// What one trainer trains.
#[derive(Clone, Debug)]
pub struct PhiTrainerConfig {
    pub heads: usize,
    pub head_dim: usize,
    /// The feature map and its sizes (hedgehog; poly is not trained yet).
    pub feature: FeatureSpec,
    /// Hybrid { rate > 1 }, Rehyat (frame_tokens 0 or the captures'), or Linear.
    pub mode: AttentionMode,
    /// The score scale of the attention (1/sqrt(D) in the DiT).
    pub scale: f32,
    pub init: PhiInit,
    pub optimizer: AdamW,
    pub loss: Loss,
}

impl PhiTrainerConfig {
    /// Hedgehog maps of `half` features per half, seeded, LoLCATs' AdamW, L1 loss.
    pub fn hedgehog(
        heads: usize,
        head_dim: usize,
        half: usize,
        mode: AttentionMode,
        seed: u64,
    ) -> Self {
        Self {
            heads,
            head_dim,
            feature: FeatureSpec::Hedgehog { half },
            mode,
            scale: 1.0 / (head_dim.max(1) as f32).sqrt(),
            init: PhiInit::Seeded(seed),
            optimizer: AdamW::default(),
            loss: Loss::L1,
        }
    }
}

/// One trained tensor on the host: its value and Adam moments.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamState {
    /// `phi_q.w`, `phi_q.b`, `phi_k.w`, `phi_k.b`.
    pub name: String,
    pub shape: Vec<usize>,
    pub value: Vec<f32>,
    pub m: Vec<f32>,
    pub v: Vec<f32>,
}

/// Everything a resumed run needs.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainerState {
    /// Optimiser steps taken.
    pub step: u64,
    pub params: Vec<ParamState>,
}

struct Param {
    name: &'static str,
    theta: Tensor,
    moments: Moments,
}

/// The buffers of one capture's forward and backward (sizes in the module docs).
struct Workspace {
    seg: Segments,
    soft: Tensor,
    gk: Tensor,
    states: Vec<Tensor>,
    part_state: Tensor,
    xq: Tensor,
    fq: Tensor,
    ud: Tensor,
    dfq: Tensor,
    parts: Tensor,
    yhat: Tensor,
    dsz: Vec<Tensor>,
    part_dsz: Tensor,
    dg: Tensor,
    duq: Tensor,
    duk: Tensor,
    grad_q: Tensor,
    grad_k: Tensor,
    part_grad: Tensor,
    norms: Tensor,
}

impl Workspace {
    fn new(gpu: &Gpu, seg: Segments, h: usize, d: usize, df: usize) -> Result<Self> {
        let (nq, nk, f) = (seg.nq, seg.nk, df / 2);
        let t = |shape: &[usize]| Tensor::empty(gpu, shape, DType::F32);
        let c = seg.list.len();
        Ok(Self {
            soft: t(&softmax_part_shape(nq, h, d))?,
            gk: t(&[nk, h, df])?,
            states: (0..c).map(|_| t(&[h, df, d + 1])).collect::<Result<_>>()?,
            part_state: t(&[STATE_CHUNKS, h, df, d + 1])?,
            xq: t(&[nq, h, d])?,
            fq: t(&[nq, h, df])?,
            ud: t(&[nq, h, d + 1])?,
            dfq: t(&[nq, h, df])?,
            parts: t(&[nq * h, 2])?,
            yhat: t(&[nq, h, d])?,
            dsz: (0..c).map(|_| t(&[h, df, d + 2])).collect::<Result<_>>()?,
            part_dsz: t(&[STATE_CHUNKS, h, df, d + 2])?,
            dg: t(&[nk, h, df])?,
            duq: t(&[nq, h, f])?,
            duk: t(&[nk, h, f])?,
            grad_q: t(&[h, f, d + 1])?,
            grad_k: t(&[h, f, d + 1])?,
            part_grad: t(&[STATE_CHUNKS, h, f, d + 1])?,
            norms: t(&[2])?,
            seg,
        })
    }
}

/// A capture made ready for steps: its tensors and workspace, the softmax part recorded.
struct Prepared {
    capture: BlockCapture,
    ws: Workspace,
}

/// Distils phi_q, phi_k of one (block, mode) pair (see the module docs of `distill`).
pub struct PhiTrainer<'g> {
    gpu: &'g Gpu,
    cfg: PhiTrainerConfig,
    df: usize,
    /// phi_q.w, phi_q.b, phi_k.w, phi_k.b, all f32.
    params: Vec<Param>,
    step: u64,
    prepared: Option<Prepared>,
}

impl<'g> PhiTrainer<'g> {
    /// Checks the configuration, uploads the first weights and zero moments.
    pub fn new(gpu: &'g Gpu, cfg: PhiTrainerConfig) -> Result<Self> {
        let op = "phi trainer";
        let (h, d) = (cfg.heads, cfg.head_dim);
        if h == 0 || d == 0 || d > 512 {
            return Err(shape_err(
                op,
                format!("heads {h} and head dim {d} (1..=512) must be positive"),
            ));
        }
        if !(cfg.scale.is_finite() && cfg.scale > 0.0) {
            return Err(shape_err(op, format!("score scale {}", cfg.scale)));
        }
        cfg.optimizer.validate()?;
        match cfg.mode {
            AttentionMode::Softmax | AttentionMode::Hybrid { rate: 0 | 1 } => {
                return Err(shape_err(
                    op,
                    format!("{} has no linear part to distil", cfg.mode.name()),
                ))
            }
            AttentionMode::Rehyat {
                chunk_frames: 0, ..
            } => return Err(shape_err(op, "rehyat needs chunk_frames > 0")),
            _ => {}
        }
        let half = match cfg.feature {
            FeatureSpec::Hedgehog { half } if (1..=512).contains(&half) => half,
            FeatureSpec::Hedgehog { half } => {
                return Err(shape_err(
                    op,
                    format!("hedgehog half size {half} not in 1..=512"),
                ))
            }
            other => {
                return Err(shape_err(
                    op,
                    format!("only hedgehog maps are trained, not {other:?}"),
                ))
            }
        };
        let (q, k) = match &cfg.init {
            PhiInit::Seeded(seed) => {
                let mut rng = Rng::new(*seed);
                let w = rng.vec_normal(h * half * d, 1.0 / (d as f32).sqrt());
                let b = vec![0.0; h * half];
                ((w.clone(), b.clone()), (w, b))
            }
            PhiInit::Host { phi_q, phi_k } => (
                hedgehog_host(phi_q, h, half, d, "phi_q")?,
                hedgehog_host(phi_k, h, half, d, "phi_k")?,
            ),
        };
        let mut params = Vec::new();
        for (name, shape, value) in [
            ("phi_q.w", vec![h, half, d], q.0),
            ("phi_q.b", vec![h, half], q.1),
            ("phi_k.w", vec![h, half, d], k.0),
            ("phi_k.b", vec![h, half], k.1),
        ] {
            let zeros = vec![0.0; value.len()];
            params.push(Param {
                name,
                theta: Tensor::from_f32(gpu, &shape, &value, DType::F32)?,
                moments: Moments {
                    m: Tensor::from_f32(gpu, &shape, &zeros, DType::F32)?,
                    v: Tensor::from_f32(gpu, &shape, &zeros, DType::F32)?,
                },
            });
        }
        Ok(Self {
            gpu,
            cfg,
            df: 2 * half,
            params,
            step: 0,
            prepared: None,
        })
    }

    pub fn config(&self) -> &PhiTrainerConfig {
        &self.cfg
    }

    /// Optimiser steps taken so far.
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// Changes the learning rate of the next steps (schedules, plateau decay).
    pub fn set_lr(&mut self, lr: f32) {
        self.cfg.optimizer.lr = lr;
    }

    /// The maps over the trained tensors themselves (shared buffers: they change with training).
    fn live_maps(&self) -> (FeatureMap, FeatureMap) {
        let p = &self.params;
        (
            FeatureMap::Hedgehog {
                w: p[0].theta.clone(),
                b: p[1].theta.clone(),
            },
            FeatureMap::Hedgehog {
                w: p[2].theta.clone(),
                b: p[3].theta.clone(),
            },
        )
    }

    fn workspace(&self, capture: &BlockCapture) -> Result<Workspace> {
        let (h, d) = (self.cfg.heads, self.cfg.head_dim);
        let (nq, nk) = capture.check(h, d)?;
        let seg = Segments::new(&self.cfg.mode, nq, nk, capture.frame_tokens)?;
        Workspace::new(self.gpu, seg, h, d, self.df)
    }

    /// Makes `capture` the one the next steps train on: records and runs its constant softmax
    /// part (m, A, alpha) once. The capture's tensors must stay unchanged until the next call.
    pub fn prepare(&mut self, capture: &BlockCapture) -> Result<()> {
        self.prepared = None;
        let ws = self.workspace(capture)?;
        let mut rec = Recorder::new(self.gpu);
        let c = capture;
        softmax_part(
            &mut rec,
            &ws.seg,
            &c.q,
            &c.k,
            &c.v,
            self.cfg.scale,
            &ws.soft,
        )?;
        rec.submit(None)?;
        self.prepared = Some(Prepared {
            capture: capture.clone(),
            ws,
        });
        Ok(())
    }

    /// One optimiser step on the prepared capture; returns the loss before the step.
    pub fn step(&mut self, queries: &QuerySubset) -> Result<f32> {
        Ok(self.steps(std::slice::from_ref(queries))?[0])
    }

    /// Several optimiser steps in one submission (one query subset each); returns each step's
    /// loss (mean over its queries, before its update). Only the losses are read back.
    pub fn steps(&mut self, subsets: &[QuerySubset]) -> Result<Vec<f32>> {
        let prep = self
            .prepared
            .as_ref()
            .ok_or_else(|| shape_err("phi trainer", "step before prepare"))?;
        if subsets.is_empty() {
            return Ok(vec![]);
        }
        let nq = prep.ws.seg.nq;
        let sets: Vec<Vec<u32>> = subsets
            .iter()
            .map(|s| s.indices(nq))
            .collect::<Result<_>>()?;
        let all: Vec<u32> = sets.iter().flatten().copied().collect();
        let idx = upload_indices(self.gpu, &all)?;
        let losses = Tensor::empty(self.gpu, &[2 * sets.len()], DType::F32)?;
        let mut rec = Recorder::new(self.gpu);
        let mut lo = 0;
        let mut counts = Vec::new();
        for (s, set) in sets.iter().enumerate() {
            let t = self.step + s as u64 + 1;
            self.record_forward(
                &mut rec,
                prep,
                &idx,
                lo,
                set,
                self.cfg.loss,
                &losses,
                s,
                false,
            )?;
            self.record_backward(&mut rec, prep, set)?;
            self.record_update(&mut rec, &prep.ws, t)?;
            counts.push(set.len() * self.cfg.heads * self.cfg.head_dim);
            lo += set.len();
        }
        rec.submit(None)?;
        self.step += sets.len() as u64;
        let sums = losses.to_vec_f32(self.gpu)?;
        Ok(counts
            .iter()
            .enumerate()
            .map(|(s, &n)| sums[2 * s] / n as f32)
            .collect())
    }

    /// The relative L1 error sum |y_hat - y| / sum |y| over all queries of `capture` with the
    /// current weights (the planner's e[l][o] on held-out captures).
    pub fn error(&self, capture: &BlockCapture) -> Result<f64> {
        let (_, sums) = self.evaluate(capture, false)?;
        let (num, den) = (sums[0] as f64, sums[1] as f64);
        if den == 0.0 {
            return Err(shape_err("phi trainer", "the teacher output is all zeros"));
        }
        Ok(num / den)
    }

    /// The student's output y_hat `[Nq, H, D]` f32 on `capture` with the current weights.
    pub fn predict(&self, capture: &BlockCapture) -> Result<Tensor> {
        Ok(self.evaluate(capture, true)?.0)
    }

    /// The forward over all queries of a capture: (y_hat, [sum |y_hat - y|, sum |y|]).
    fn evaluate(&self, capture: &BlockCapture, want_yhat: bool) -> Result<(Tensor, Vec<f32>)> {
        let ws = self.workspace(capture)?;
        let nq = ws.seg.nq;
        let all = QuerySubset::All.indices(nq)?;
        let idx = upload_indices(self.gpu, &all)?;
        let sums = Tensor::empty(self.gpu, &[2], DType::F32)?;
        let prep = Prepared {
            capture: capture.clone(),
            ws,
        };
        let mut rec = Recorder::new(self.gpu);
        let c = capture;
        let ws = &prep.ws;
        softmax_part(
            &mut rec,
            &ws.seg,
            &c.q,
            &c.k,
            &c.v,
            self.cfg.scale,
            &ws.soft,
        )?;
        self.record_forward(
            &mut rec,
            &prep,
            &idx,
            0,
            &all,
            Loss::L1,
            &sums,
            0,
            want_yhat,
        )?;
        rec.submit(None)?;
        let sums = sums.to_vec_f32(self.gpu)?;
        Ok((prep.ws.yhat.clone(), sums))
    }

    /// g, the states, the gathered queries' f, and the query pass of every segment; the loss
    /// sums of the step land in `losses[2 slot..2 slot + 2]`.
    #[allow(clippy::too_many_arguments)]
    fn record_forward(
        &self,
        rec: &mut Recorder,
        prep: &Prepared,
        idx: &Tensor,
        idx_lo: usize,
        set: &[u32],
        loss: Loss,
        losses: &Tensor,
        slot: usize,
        want_yhat: bool,
    ) -> Result<()> {
        let (c, ws) = (&prep.capture, &prep.ws);
        let seg = &ws.seg;
        let (phi_q, phi_k) = self.live_maps();
        let lin_end = seg.lin_end();
        if lin_end > 0 {
            feature_map(rec, &phi_k, &c.k, 0, lin_end, &ws.gk)?;
        }
        // The states: each segment's is the previous one plus the keys that joined.
        let mut prev = 0;
        for (t, s) in seg.list.iter().enumerate() {
            if t > 0 {
                rec.copy(&ws.states[t - 1], &ws.states[t])?;
            }
            if t == 0 || s.lin_hi > prev {
                let (gk, v) = (&ws.gk, &c.v);
                let rate = seg.exclude_rate;
                linear_state(
                    rec,
                    gk,
                    0,
                    v,
                    prev,
                    s.lin_hi,
                    rate,
                    &ws.part_state,
                    &ws.states[t],
                    t > 0,
                )?;
            }
            prev = s.lin_hi;
        }
        let m = set.len();
        gather_rows(rec, idx, idx_lo, m, &c.q, &ws.xq)?;
        feature_map(rec, &phi_q, &ws.xq, 0, m, &ws.fq)?;
        let count = m * self.cfg.heads * self.cfg.head_dim;
        for (t, (r_lo, r_hi)) in seg.row_ranges(set).into_iter().enumerate() {
            if r_hi == r_lo {
                continue;
            }
            query_pass(
                rec,
                &QueryPass {
                    idx,
                    idx_lo,
                    r_lo,
                    r_hi,
                    count,
                    loss,
                    soft: &ws.soft,
                    y: &c.y,
                    fq: &ws.fq,
                    state: &ws.states[t],
                    ud: &ws.ud,
                    dfq: &ws.dfq,
                    parts: &ws.parts,
                    yhat: &ws.yhat,
                    write_yhat: want_yhat,
                },
            )?;
        }
        column_sums(
            rec,
            &ws.parts,
            m * self.cfg.heads,
            2,
            false,
            losses,
            2 * slot,
        )
    }

    /// (dS | dz) per segment, dg, the hedgehog backward and (dW | db) of both maps.
    fn record_backward(&self, rec: &mut Recorder, prep: &Prepared, set: &[u32]) -> Result<()> {
        let (c, ws) = (&prep.capture, &prep.ws);
        let seg = &ws.seg;
        let ranges = seg.row_ranges(set);
        let last = seg.list.len() - 1;
        // A key of segment t's increment feeds the states of t and every later segment: sum
        // (dS | dz) from the last segment back.
        for t in (0..=last).rev() {
            if t < last {
                rec.copy(&ws.dsz[t + 1], &ws.dsz[t])?;
            }
            let (r_lo, r_hi) = ranges[t];
            if t == last || r_hi > r_lo {
                linear_state(
                    rec,
                    &ws.fq,
                    0,
                    &ws.ud,
                    r_lo,
                    r_hi,
                    0,
                    &ws.part_dsz,
                    &ws.dsz[t],
                    t < last,
                )?;
            }
        }
        let mut prev = 0;
        for (t, s) in seg.list.iter().enumerate() {
            if s.lin_hi > prev {
                key_grad(
                    rec,
                    &c.v,
                    Some(&ws.dsz[t]),
                    prev,
                    s.lin_hi,
                    seg.exclude_rate,
                    &ws.dg,
                )?;
            }
            prev = s.lin_hi;
        }
        let m = set.len();
        hedgehog_du(rec, &ws.fq, &ws.dfq, m, &ws.duq)?;
        linear_state(
            rec,
            &ws.duq,
            0,
            &ws.xq,
            0,
            m,
            0,
            &ws.part_grad,
            &ws.grad_q,
            false,
        )?;
        let lin_end = seg.lin_end();
        if lin_end > 0 {
            hedgehog_du(rec, &ws.gk, &ws.dg, lin_end, &ws.duk)?;
        }
        let rate = seg.exclude_rate;
        linear_state(
            rec,
            &ws.duk,
            0,
            &c.k,
            0,
            lin_end,
            rate,
            &ws.part_grad,
            &ws.grad_k,
            false,
        )
    }

    /// Squared gradient norms, then AdamW on every tensor at step `t`.
    fn record_update(&self, rec: &mut Recorder, ws: &Workspace, t: u64) -> Result<()> {
        let (g_q, g_k) = (&ws.grad_q, &ws.grad_k);
        column_sums(rec, g_q, g_q.numel(), 1, true, &ws.norms, 0)?;
        column_sums(rec, g_k, g_k.numel(), 1, true, &ws.norms, 1)?;
        let d = self.cfg.head_dim;
        for (i, p) in self.params.iter().enumerate() {
            let grad = if i < 2 { g_q } else { g_k };
            // Weights in columns 0..D of the (dW | db) table, the bias in column D.
            let view = if i % 2 == 0 {
                GradView {
                    grad,
                    cols: d,
                    stride: d + 1,
                    offset: 0,
                }
            } else {
                GradView {
                    grad,
                    cols: 1,
                    stride: d + 1,
                    offset: d,
                }
            };
            adamw_update(
                rec,
                &self.cfg.optimizer,
                t,
                &p.theta,
                view,
                &p.moments,
                &ws.norms,
                2,
            )?;
        }
        Ok(())
    }

    /// The last gradients as host vectors (phi_q (dW | db) `[H, F, D + 1]`, phi_k the same)
    /// after a forward and backward on `queries` without an update (tests, diagnostics).
    pub fn gradients(&mut self, queries: &QuerySubset) -> Result<(Vec<f32>, Vec<f32>)> {
        let prep = self
            .prepared
            .as_ref()
            .ok_or_else(|| shape_err("phi trainer", "gradients before prepare"))?;
        let set = queries.indices(prep.ws.seg.nq)?;
        let idx = upload_indices(self.gpu, &set)?;
        let losses = Tensor::empty(self.gpu, &[2], DType::F32)?;
        let mut rec = Recorder::new(self.gpu);
        self.record_forward(
            &mut rec,
            prep,
            &idx,
            0,
            &set,
            self.cfg.loss,
            &losses,
            0,
            false,
        )?;
        self.record_backward(&mut rec, prep, &set)?;
        rec.submit(None)?;
        Ok((
            prep.ws.grad_q.to_vec_f32(self.gpu)?,
            prep.ws.grad_k.to_vec_f32(self.gpu)?,
        ))
    }

    /// The prepared workspace's intermediate tensors by name (tests): `df` `[M, H, DF]` of the
    /// last step's queries, `dg` `[Nk, H, DF]`, `ud` `[M, H, D + 1]`, `soft` `[Nq, H, D + 2]`.
    #[cfg(test)]
    pub(crate) fn intermediate(&self, name: &str) -> Option<Tensor> {
        let ws = &self.prepared.as_ref()?.ws;
        Some(match name {
            "df" => ws.dfq.clone(),
            "dg" => ws.dg.clone(),
            "ud" => ws.ud.clone(),
            "soft" => ws.soft.clone(),
            _ => return None,
        })
    }

    /// Copies of the current weights as the attention plan uses them (f32 tensors).
    pub fn weights(&self) -> Result<FeatureMapWeights> {
        let mut rec = Recorder::new(self.gpu);
        let mut copies = Vec::new();
        for p in &self.params {
            let t = Tensor::empty(self.gpu, p.theta.shape(), DType::F32)?;
            rec.copy(&p.theta, &t)?;
            copies.push(t);
        }
        rec.submit(None)?;
        let mut it = copies.into_iter();
        let mut next = || it.next().expect("four tensors");
        let (wq, bq, wk, bk) = (next(), next(), next(), next());
        Ok(FeatureMapWeights {
            phi_q: FeatureMap::Hedgehog { w: wq, b: bq },
            phi_k: FeatureMap::Hedgehog { w: wk, b: bk },
        })
    }

    /// The current weights on the host, (phi_q, phi_k).
    pub fn host_weights(&self) -> Result<(HostFeatureMap, HostFeatureMap)> {
        let half = self.df / 2;
        let v = |i: usize| self.params[i].theta.to_vec_f32(self.gpu);
        Ok((
            HostFeatureMap::Hedgehog {
                w: v(0)?,
                b: v(1)?,
                half,
            },
            HostFeatureMap::Hedgehog {
                w: v(2)?,
                b: v(3)?,
                half,
            },
        ))
    }

    /// Weights, Adam moments and the step count, for a later [`load_state`](Self::load_state).
    pub fn state(&self) -> Result<TrainerState> {
        let gpu = self.gpu;
        let params = self
            .params
            .iter()
            .map(|p| {
                Ok(ParamState {
                    name: p.name.to_string(),
                    shape: p.theta.shape().to_vec(),
                    value: p.theta.to_vec_f32(gpu)?,
                    m: p.moments.m.to_vec_f32(gpu)?,
                    v: p.moments.v.to_vec_f32(gpu)?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(TrainerState {
            step: self.step,
            params,
        })
    }

    /// Restores what [`state`](Self::state) returned (same configuration).
    pub fn load_state(&mut self, s: &TrainerState) -> Result<()> {
        let op = "phi trainer state";
        if s.params.len() != self.params.len() {
            return Err(shape_err(
                op,
                format!("{} tensors, expected {}", s.params.len(), self.params.len()),
            ));
        }
        for (p, st) in self.params.iter().zip(&s.params) {
            let n = p.theta.numel();
            if st.name != p.name
                || st.shape != p.theta.shape()
                || [&st.value, &st.m, &st.v].iter().any(|v| v.len() != n)
            {
                return Err(shape_err(
                    op,
                    format!(
                        "{} {:?} does not fit {} {:?}",
                        st.name,
                        st.shape,
                        p.name,
                        p.theta.shape()
                    ),
                ));
            }
            if [&st.value, &st.m, &st.v]
                .iter()
                .any(|v| v.iter().any(|x| !x.is_finite()))
            {
                return Err(shape_err(
                    op,
                    format!("{} holds a non-finite value", st.name),
                ));
            }
        }
        for (p, st) in self.params.iter().zip(&s.params) {
            p.theta.write_f32(self.gpu, &st.value)?;
            p.moments.m.write_f32(self.gpu, &st.m)?;
            p.moments.v.write_f32(self.gpu, &st.v)?;
        }
        self.step = s.step;
        Ok(())
    }
}

/// (w, b) of a host hedgehog map, checked against the configured sizes.
fn hedgehog_host(
    m: &HostFeatureMap,
    h: usize,
    half: usize,
    d: usize,
    name: &str,
) -> Result<(Vec<f32>, Vec<f32>)> {
    match m {
        HostFeatureMap::Hedgehog { w, b, half: hf }
            if *hf == half && w.len() == h * half * d && b.len() == h * half =>
        {
            Ok((w.clone(), b.clone()))
        }
        _ => Err(shape_err(
            "phi trainer",
            format!("{name} must be a hedgehog map with w [{h}, {half}, {d}] and b [{h}, {half}]"),
        )),
    }
}
