//! [`PhiTrainer`]: stage-1 distillation of phi_q, phi_k for one (block, mode) pair, every step on
//! the GPU. A step: g = phi_k(k) and the (S | z) states of the segments; the gathered queries'
//! f = phi_q(q); the query pass (y_hat, loss, u, delta, df); (dS | dz) per segment summed from
//! the last segment back (rehyat's keys feed every later state); dg; the map's backward and
//! the (dW | db) tables of each layer; the squared gradient norms; AdamW on every weight tensor.

use crate::attention::reference::{FeatureSpec, HostFeatureMap};
use crate::attention::{feature_map, linear_state, AttentionMode, FeatureMap, FeatureMapWeights};
use crate::error::{shape_err, Result};
use crate::gpu::Gpu;
use crate::recorder::Recorder;
use crate::rng::Rng;
use crate::tensor::{DType, Tensor};

use super::adamw::{adamw_update, column_sums, AdamW, GradView, Moments};
use super::backward::{hedgehog_du, key_grad, poly_stage, PolyBuffers, PolyStage};
use super::forward::{
    gather_rows, query_pass, softmax_part, softmax_part_shape, upload_indices, QueryPass, Segments,
};
use super::{BlockCapture, Loss, QuerySubset};

/// Partial states per head in the first pass of the linear-state kernel.
const STATE_CHUNKS: usize = 32;

/// Where the first weights come from.
#[derive(Clone, Debug)]
pub enum PhiInit {
    /// Drawn once and given to both maps (so that phi_q(q).phi_k(k) starts out larger for
    /// aligned q and k): hedgehog W ~ N(0, 1/D), b = 0; poly W1 ~ N(0, 1/D), b1 = 0,
    /// W2 ~ N(0, 0.01/HID), b2 = 1 (psi near 1: positive features).
    Seeded(u64),
    /// Given weights, e.g. a previous run's (maps of the configured kind and sizes).
    Host {
        phi_q: Box<HostFeatureMap>,
        phi_k: Box<HostFeatureMap>,
    },
}

/// What one trainer trains.
#[derive(Clone, Debug)]
pub struct PhiTrainerConfig {
    pub heads: usize,
    pub head_dim: usize,
    /// The feature map and its sizes (hedgehog or poly; elu1 has nothing to train).
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

    /// Poly maps (HID hidden units, P powers of D1 values each: DF = P * D1), seeded, LoLCATs'
    /// AdamW, L1 loss. Attention Surgery's setting: P = 2, D1 = 128.
    pub fn poly(
        heads: usize,
        head_dim: usize,
        [hid, d1, powers]: [usize; 3],
        mode: AttentionMode,
        seed: u64,
    ) -> Self {
        Self {
            feature: FeatureSpec::Poly { hid, d1, powers },
            ..Self::hedgehog(heads, head_dim, 1, mode, seed)
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
    name: String,
    theta: Tensor,
    moments: Moments,
}

/// The sizes of the trained maps (phi_q and phi_k have the same).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MapShape {
    Hedgehog {
        half: usize,
    },
    Poly {
        hid: usize,
        d1: usize,
        powers: usize,
    },
}

impl MapShape {
    fn df(&self) -> usize {
        match *self {
            MapShape::Hedgehog { half } => 2 * half,
            MapShape::Poly { d1, powers, .. } => d1 * powers,
        }
    }

    /// Name and shape of each tensor of one map, in the order of `FeatureMap`.
    fn tensors(&self, h: usize, d: usize) -> Vec<(&'static str, Vec<usize>)> {
        match *self {
            MapShape::Hedgehog { half } => vec![("w", vec![h, half, d]), ("b", vec![h, half])],
            MapShape::Poly { hid, .. } => {
                let df = self.df();
                vec![
                    ("w1", vec![h, hid, d]),
                    ("b1", vec![h, hid]),
                    ("w2", vec![h, df, hid]),
                    ("b2", vec![h, df]),
                ]
            }
        }
    }

    /// The gradient tables of one map, `[H, rows, cols + 1]` = (dW | db) of each layer.
    fn tables(&self, h: usize, d: usize) -> Vec<[usize; 3]> {
        match *self {
            MapShape::Hedgehog { half } => vec![[h, half, d + 1]],
            MapShape::Poly { hid, .. } => vec![[h, hid, d + 1], [h, self.df(), hid + 1]],
        }
    }

    /// Where tensor `t` of a map finds its gradient: (table, cols, stride, offset), the
    /// weight in columns 0..cols of its layer's table, the bias in the last column.
    fn grad_view(&self, t: usize, d: usize) -> (usize, usize, usize, usize) {
        let cols = match (*self, t / 2) {
            (_, 0) => d,
            (MapShape::Poly { hid, .. }, _) => hid,
            (MapShape::Hedgehog { .. }, _) => unreachable!("hedgehog has two tensors"),
        };
        if t % 2 == 0 {
            (t / 2, cols, cols + 1, 0)
        } else {
            (t / 2, 1, cols + 1, cols)
        }
    }

    /// The `FeatureMap` over one map's tensors.
    fn feature_map(&self, t: &[Tensor]) -> FeatureMap {
        match *self {
            MapShape::Hedgehog { .. } => FeatureMap::Hedgehog {
                w: t[0].clone(),
                b: t[1].clone(),
            },
            MapShape::Poly { powers, .. } => FeatureMap::Poly {
                w1: t[0].clone(),
                b1: t[1].clone(),
                w2: t[2].clone(),
                b2: t[3].clone(),
                powers,
            },
        }
    }

    /// The host map of one map's values.
    fn host_map(&self, mut v: Vec<Vec<f32>>) -> HostFeatureMap {
        match *self {
            MapShape::Hedgehog { half } => {
                let b = v.pop().unwrap_or_default();
                let w = v.pop().unwrap_or_default();
                HostFeatureMap::Hedgehog { w, b, half }
            }
            MapShape::Poly { hid, powers, .. } => {
                let b2 = v.pop().unwrap_or_default();
                let w2 = v.pop().unwrap_or_default();
                let b1 = v.pop().unwrap_or_default();
                let w1 = v.pop().unwrap_or_default();
                HostFeatureMap::Poly {
                    w1,
                    b1,
                    w2,
                    b2,
                    hid,
                    df: self.df(),
                    powers,
                }
            }
        }
    }

    /// The values of a host map of these sizes, in the order of `tensors`.
    fn values_of(
        &self,
        m: &HostFeatureMap,
        h: usize,
        d: usize,
        name: &str,
    ) -> Result<Vec<Vec<f32>>> {
        let v: Vec<Vec<f32>> = match (m, *self) {
            (HostFeatureMap::Hedgehog { w, b, half: hf }, MapShape::Hedgehog { half })
                if *hf == half =>
            {
                vec![w.clone(), b.clone()]
            }
            (
                HostFeatureMap::Poly {
                    w1,
                    b1,
                    w2,
                    b2,
                    hid: hh,
                    powers: pp,
                    df,
                },
                MapShape::Poly { hid, powers, .. },
            ) if *hh == hid && *pp == powers && *df == self.df() => {
                vec![w1.clone(), b1.clone(), w2.clone(), b2.clone()]
            }
            _ => vec![],
        };
        let shapes = self.tensors(h, d);
        if v.len() != shapes.len()
            || v.iter()
                .zip(&shapes)
                .any(|(v, (_, s))| v.len() != s.iter().product::<usize>())
        {
            return Err(shape_err(
                "phi trainer",
                format!("{name} must be a map of sizes {self:?} ({shapes:?})"),
            ));
        }
        Ok(v)
    }

    /// Seeded first values: drawn once and given to both maps.
    fn seeded(&self, seed: u64, h: usize, d: usize) -> Vec<Vec<f32>> {
        let mut rng = Rng::new(seed);
        let inv_sqrt = |n: usize| 1.0 / (n as f32).sqrt();
        match *self {
            MapShape::Hedgehog { half } => {
                vec![
                    rng.vec_normal(h * half * d, inv_sqrt(d)),
                    vec![0.0; h * half],
                ]
            }
            MapShape::Poly { hid, .. } => {
                let df = self.df();
                vec![
                    rng.vec_normal(h * hid * d, inv_sqrt(d)),
                    vec![0.0; h * hid],
                    rng.vec_normal(h * df * hid, 0.1 * inv_sqrt(hid)),
                    // psi near 1 keeps every power, and so every feature, positive.
                    vec![1.0; h * df],
                ]
            }
        }
    }
}

/// The buffers of one capture's forward (sizes in the module docs).
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
    /// Only for training: evaluation needs none of it.
    bwd: Option<Backward>,
}

/// The buffers of the backward and the update.
struct Backward {
    dsz: Vec<Tensor>,
    part_dsz: Tensor,
    dg: Tensor,
    q: MapGrads,
    k: MapGrads,
    /// Squared norms of every gradient table.
    norms: Tensor,
}

/// One map's backward: scratch (hedgehog: du; poly: pre, a, dpre `[rows, H, HID]`, dpsi
/// `[rows, H, DF]`), the (dW | db) tables of its layers and their partial sums.
struct MapGrads {
    scratch: Vec<Tensor>,
    tables: Vec<Tensor>,
    partials: Vec<Tensor>,
}

impl MapGrads {
    fn new(gpu: &Gpu, shape: MapShape, rows: usize, h: usize, d: usize) -> Result<Self> {
        let t = |s: &[usize]| Tensor::empty(gpu, s, DType::F32);
        let scratch = match shape {
            MapShape::Hedgehog { half } => vec![t(&[rows, h, half])?],
            MapShape::Poly { hid, .. } => vec![
                t(&[rows, h, hid])?,
                t(&[rows, h, hid])?,
                t(&[rows, h, hid])?,
                t(&[rows, h, shape.df()])?,
            ],
        };
        let tables = shape.tables(h, d);
        Ok(Self {
            scratch,
            tables: tables.iter().map(|s| t(s)).collect::<Result<_>>()?,
            partials: tables
                .iter()
                .map(|s| t(&[STATE_CHUNKS, s[0], s[1], s[2]]))
                .collect::<Result<_>>()?,
        })
    }
}

impl Workspace {
    fn new(
        gpu: &Gpu,
        seg: Segments,
        h: usize,
        d: usize,
        shape: MapShape,
        train: bool,
    ) -> Result<Self> {
        let (nq, nk, df) = (seg.nq, seg.nk, shape.df());
        let t = |shape: &[usize]| Tensor::empty(gpu, shape, DType::F32);
        let c = seg.list.len();
        let bwd = if train {
            Some(Backward {
                dsz: (0..c).map(|_| t(&[h, df, d + 2])).collect::<Result<_>>()?,
                part_dsz: t(&[STATE_CHUNKS, h, df, d + 2])?,
                dg: t(&[nk, h, df])?,
                q: MapGrads::new(gpu, shape, nq, h, d)?,
                k: MapGrads::new(gpu, shape, nk, h, d)?,
                norms: t(&[4])?,
            })
        } else {
            None
        };
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
            bwd,
            seg,
        })
    }

    fn bwd(&self) -> Result<&Backward> {
        self.bwd
            .as_ref()
            .ok_or_else(|| shape_err("phi trainer", "an evaluation workspace has no backward"))
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
    shape: MapShape,
    /// The tensors of phi_q, then those of phi_k (f32; names in `MapShape::tensors`).
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
            _ if cfg.mode.runs_as_softmax() => {
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
        let shape = match cfg.feature {
            FeatureSpec::Hedgehog { half } if (1..=512).contains(&half) => {
                MapShape::Hedgehog { half }
            }
            FeatureSpec::Poly { hid, d1, powers }
                if (1..=1024).contains(&hid)
                    && d1 > 0
                    && (1..=8).contains(&powers)
                    && d1 * powers <= 1024 =>
            {
                MapShape::Poly { hid, d1, powers }
            }
            other => {
                return Err(shape_err(
                    op,
                    format!(
                        "{other:?}: hedgehog (half 1..=512) and poly (HID 1..=1024, P 1..=8, \
                         DF <= 1024) maps are trained"
                    ),
                ))
            }
        };
        let (q, k) = match &cfg.init {
            PhiInit::Seeded(seed) => {
                let v = shape.seeded(*seed, h, d);
                (v.clone(), v)
            }
            PhiInit::Host { phi_q, phi_k } => (
                shape.values_of(phi_q, h, d, "phi_q")?,
                shape.values_of(phi_k, h, d, "phi_k")?,
            ),
        };
        let mut params = Vec::new();
        for (map, values) in [("phi_q", q), ("phi_k", k)] {
            for ((name, dims), value) in shape.tensors(h, d).into_iter().zip(values) {
                let zeros = vec![0.0; value.len()];
                params.push(Param {
                    name: format!("{map}.{name}"),
                    theta: Tensor::from_f32(gpu, &dims, &value, DType::F32)?,
                    moments: Moments {
                        m: Tensor::from_f32(gpu, &dims, &zeros, DType::F32)?,
                        v: Tensor::from_f32(gpu, &dims, &zeros, DType::F32)?,
                    },
                });
            }
        }
        Ok(Self {
            gpu,
            cfg,
            shape,
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
        let t: Vec<Tensor> = self.params.iter().map(|p| p.theta.clone()).collect();
        self.maps_of(&t)
    }

    /// (phi_q, phi_k) over tensors in the order of `params`.
    fn maps_of(&self, t: &[Tensor]) -> (FeatureMap, FeatureMap) {
        let n = t.len() / 2;
        (
            self.shape.feature_map(&t[..n]),
            self.shape.feature_map(&t[n..]),
        )
    }

    fn workspace(&self, capture: &BlockCapture, train: bool) -> Result<Workspace> {
        let (h, d) = (self.cfg.heads, self.cfg.head_dim);
        let (nq, nk) = capture.check(h, d)?;
        let seg = Segments::new(&self.cfg.mode, nq, nk, capture.frame_tokens)?;
        Workspace::new(self.gpu, seg, h, d, self.shape, train)
    }

    /// Makes `capture` the one the next steps train on: records and runs its constant softmax
    /// part (m, A, alpha) once. The capture's tensors must stay unchanged until the next call.
    pub fn prepare(&mut self, capture: &BlockCapture) -> Result<()> {
        self.prepared = None;
        let ws = self.workspace(capture, true)?;
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

    /// Drops the prepared capture and its workspace (back to the buffer pool) until the next
    /// [`prepare`](Self::prepare): a run of many pairs then holds one pair's workspace at a
    /// time instead of every pair's.
    pub fn release(&mut self) {
        self.prepared = None;
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
        let ws = self.workspace(capture, false)?;
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

    /// (dS | dz) per segment, dg, and each map's backward to its (dW | db) tables.
    fn record_backward(&self, rec: &mut Recorder, prep: &Prepared, set: &[u32]) -> Result<()> {
        let (c, ws) = (&prep.capture, &prep.ws);
        let b = ws.bwd()?;
        let seg = &ws.seg;
        let ranges = seg.row_ranges(set);
        let last = seg.list.len() - 1;
        // A key of segment t's increment feeds the states of t and every later segment: sum
        // (dS | dz) from the last segment back.
        for t in (0..=last).rev() {
            if t < last {
                rec.copy(&b.dsz[t + 1], &b.dsz[t])?;
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
                    &b.part_dsz,
                    &b.dsz[t],
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
                    Some(&b.dsz[t]),
                    prev,
                    s.lin_hi,
                    seg.exclude_rate,
                    &b.dg,
                )?;
            }
            prev = s.lin_hi;
        }
        let n = self.params.len() / 2;
        let (wq, wk) = self.params.split_at(n);
        self.record_map_backward(rec, &b.q, wq, &ws.fq, &ws.dfq, &ws.xq, set.len(), 0)?;
        let rate = seg.exclude_rate;
        self.record_map_backward(rec, &b.k, wk, &ws.gk, &b.dg, &c.k, seg.lin_end(), rate)
    }

    /// The (dW | db) tables of one map from its outputs `phi` and upstream `dphi` over rows
    /// `0..count` of its inputs `x` (rows `j % rate == 0` left out when `rate > 0`).
    #[allow(clippy::too_many_arguments)]
    fn record_map_backward(
        &self,
        rec: &mut Recorder,
        g: &MapGrads,
        weights: &[Param],
        phi: &Tensor,
        dphi: &Tensor,
        x: &Tensor,
        count: usize,
        rate: usize,
    ) -> Result<()> {
        match self.shape {
            MapShape::Hedgehog { .. } => {
                let du = &g.scratch[0];
                hedgehog_du(rec, phi, dphi, count, du)?;
                linear_state(
                    rec,
                    du,
                    0,
                    x,
                    0,
                    count,
                    rate,
                    &g.partials[0],
                    &g.tables[0],
                    false,
                )
            }
            MapShape::Poly { d1, .. } => {
                let (pre, a, dpre, dpsi) =
                    (&g.scratch[0], &g.scratch[1], &g.scratch[2], &g.scratch[3]);
                let bufs = PolyBuffers {
                    x,
                    w1: &weights[0].theta,
                    b1: &weights[1].theta,
                    w2: &weights[2].theta,
                    b2: &weights[3].theta,
                    dphi,
                    pre,
                    a,
                    dpsi,
                    dpre,
                    d1,
                };
                for stage in [PolyStage::Hidden, PolyStage::Dpsi, PolyStage::Dpre] {
                    poly_stage(rec, stage, &bufs, count)?;
                }
                linear_state(
                    rec,
                    dpre,
                    0,
                    x,
                    0,
                    count,
                    rate,
                    &g.partials[0],
                    &g.tables[0],
                    false,
                )?;
                linear_state(
                    rec,
                    dpsi,
                    0,
                    a,
                    0,
                    count,
                    rate,
                    &g.partials[1],
                    &g.tables[1],
                    false,
                )
            }
        }
    }

    /// Squared norms of every gradient table, then AdamW on every tensor at step `t`.
    fn record_update(&self, rec: &mut Recorder, ws: &Workspace, t: u64) -> Result<()> {
        let b = ws.bwd()?;
        let tables: Vec<&Tensor> = b.q.tables.iter().chain(&b.k.tables).collect();
        for (slot, g) in tables.iter().enumerate() {
            column_sums(rec, g, g.numel(), 1, true, &b.norms, slot)?;
        }
        let n = self.params.len() / 2;
        for (i, p) in self.params.iter().enumerate() {
            let (table, cols, stride, offset) = self.shape.grad_view(i % n, self.cfg.head_dim);
            let side = if i < n { &b.q } else { &b.k };
            let view = GradView {
                grad: &side.tables[table],
                cols,
                stride,
                offset,
            };
            let opt = &self.cfg.optimizer;
            adamw_update(
                rec,
                opt,
                t,
                &p.theta,
                view,
                &p.moments,
                &b.norms,
                tables.len(),
            )?;
        }
        Ok(())
    }

    /// The gradients as host vectors, (phi_q, phi_k), each the (dW | db) tables of its layers one
    /// after the other (hedgehog `[H, DF/2, D + 1]`; poly `[H, HID, D + 1]` then `[H, DF, HID + 1]`)
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
        let b = prep.ws.bwd()?;
        let read = |tables: &[Tensor]| -> Result<Vec<f32>> {
            let mut v = Vec::new();
            for t in tables {
                v.extend(t.to_vec_f32(self.gpu)?);
            }
            Ok(v)
        };
        Ok((read(&b.q.tables)?, read(&b.k.tables)?))
    }

    /// The prepared workspace's intermediate tensors by name (tests): `df` `[M, H, DF]` of the
    /// last step's queries, `dg` `[Nk, H, DF]`, `ud` `[M, H, D + 1]`, `soft` `[Nq, H, D + 2]`.
    #[cfg(test)]
    pub(crate) fn intermediate(&self, name: &str) -> Option<Tensor> {
        let ws = &self.prepared.as_ref()?.ws;
        Some(match name {
            "df" => ws.dfq.clone(),
            "dg" => ws.bwd.as_ref()?.dg.clone(),
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
        let (phi_q, phi_k) = self.maps_of(&copies);
        Ok(FeatureMapWeights { phi_q, phi_k })
    }

    /// The current weights on the host, (phi_q, phi_k).
    pub fn host_weights(&self) -> Result<(HostFeatureMap, HostFeatureMap)> {
        let mut values = Vec::new();
        for p in &self.params {
            values.push(p.theta.to_vec_f32(self.gpu)?);
        }
        let k = values.split_off(values.len() / 2);
        Ok((self.shape.host_map(values), self.shape.host_map(k)))
    }

    /// Weights, Adam moments and the step count, for a later [`load_state`](Self::load_state).
    pub fn state(&self) -> Result<TrainerState> {
        let gpu = self.gpu;
        let params = self
            .params
            .iter()
            .map(|p| {
                Ok(ParamState {
                    name: p.name.clone(),
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
