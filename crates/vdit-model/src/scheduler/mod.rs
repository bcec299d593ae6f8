//! The samplers of Wan2.1: flow-matching UniPC (the default of both reference implementations)
//! and flow Euler, plus classifier-free guidance.
//!
//! The latent, the model outputs and the solver's history stay on the GPU; a step computes its
//! scalar coefficients on the host (f64) and records linear combinations of tensors. The same
//! steps run on host slices ([`Sampler::step_host`]) for tests and CPU tooling.
//!
//! A generation loop (the initial latent is plain unit-variance noise: flow matching starts at
//! sigma = 1 with no input scaling):
//!
//! ```ignore
//! let mut sampler = Sampler::new(SamplerKind::UniPc, steps, shift)?;
//! while !sampler.is_done() {
//!     let t = sampler.timesteps()[sampler.step_index()];
//!     let mut rec = Recorder::new(gpu);
//!     dit.forward(&mut rec, &latent, t, &cond, &v)?;
//!     if needs_uncond(guidance) {
//!         dit.forward(&mut rec, &latent, t, &uncond, &v_uncond)?;
//!         guide_in_place(&mut rec, &v, &v_uncond, guidance)?;
//!     }
//!     sampler.step(&mut rec, &v, &latent)?;
//!     rec.submit(None)?;
//! }
//! ```

mod schedule;
mod unipc;

#[cfg(test)]
mod tests;

use std::fmt;
use std::str::FromStr;

use vdit_wgpu::kernels::elementwise::{axpby, axpby_in_place, cast};
use vdit_wgpu::{DType, Recorder, Tensor};

use crate::error::{input_err, Result};

pub use schedule::{Schedule, NUM_TRAIN_TIMESTEPS};

/// Which sampler to run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum SamplerKind {
    /// Flow-matching UniPC (bh2, order 2, predict-x0, lower order on the last step).
    #[default]
    UniPc,
    /// Flow Euler: `x += (sigma_next - sigma) * v`.
    Euler,
    /// Flow Euler on the schedule of the step-distilled Wan models and LoRAs (lightx2v's
    /// `denoising_step_list`): see [`Schedule::step_distill`].
    StepDistill,
}

impl SamplerKind {
    pub fn name(self) -> &'static str {
        match self {
            SamplerKind::UniPc => "unipc",
            SamplerKind::Euler => "euler",
            SamplerKind::StepDistill => "step-distill",
        }
    }
}

impl fmt::Display for SamplerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for SamplerKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "unipc" => Ok(SamplerKind::UniPc),
            "euler" => Ok(SamplerKind::Euler),
            "step-distill" => Ok(SamplerKind::StepDistill),
            _ => Err(format!(
                "unknown sampler '{s}': expected unipc, euler or step-distill"
            )),
        }
    }
}

/// Whether classifier-free guidance at scale `guidance` needs the unconditional pass: at 1.0 the
/// guided output is the conditional one.
pub fn needs_uncond(guidance: f32) -> bool {
    guidance != 1.0
}

/// Records `out = v_uncond + guidance * (v_cond - v_uncond)`, as `guidance * v_cond +
/// (1 - guidance) * v_uncond` in one pass.
pub fn guide(
    rec: &mut Recorder,
    v_cond: &Tensor,
    v_uncond: &Tensor,
    guidance: f32,
    out: &Tensor,
) -> Result<()> {
    Ok(axpby(rec, guidance, v_cond, 1.0 - guidance, v_uncond, out)?)
}

/// [`guide`] writing into `v_cond`.
pub fn guide_in_place(
    rec: &mut Recorder,
    v_cond: &Tensor,
    v_uncond: &Tensor,
    guidance: f32,
) -> Result<()> {
    Ok(axpby_in_place(
        rec,
        guidance,
        v_cond,
        1.0 - guidance,
        v_uncond,
    )?)
}

/// Host version of [`guide_in_place`].
pub fn guide_host(v_cond: &mut [f32], v_uncond: &[f32], guidance: f32) {
    let g = guidance as f64;
    for (c, &u) in v_cond.iter_mut().zip(v_uncond) {
        *c = (u as f64 + g * (*c as f64 - u as f64)) as f32;
    }
}

/// A tensor a step reads or writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Slot {
    /// The caller's latent, updated in place.
    Sample,
    /// The caller's (guided) model output.
    Output,
    /// UniPC: the (corrected) starting point of the latest predictor step.
    Last,
    /// UniPC: a ring of three data predictions.
    X0(usize),
}

/// `dst = sum of coef * src`; `dst` may appear among the sources.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Update {
    pub dst: Slot,
    pub terms: Vec<(f64, Slot)>,
}

impl Update {
    pub fn new(dst: Slot, terms: &[(f64, Slot)]) -> Self {
        Self {
            dst,
            terms: terms.to_vec(),
        }
    }
}

/// The solver state of one sampler: where its history lives.
enum History {
    /// Nothing yet (before the first step, or a sampler without history).
    Empty,
    Gpu {
        last: Tensor,
        x0: [Tensor; 3],
    },
    Host {
        last: Vec<f32>,
        x0: [Vec<f32>; 3],
    },
}

/// A sampler over a fixed schedule: call [`Sampler::step`] once per entry of
/// [`Sampler::timesteps`], each time with the model output at that timestep.
pub struct Sampler {
    kind: SamplerKind,
    schedule: Schedule,
    /// Steps taken.
    index: usize,
    /// The predictor order of the latest step (UniPC).
    order: usize,
    history: History,
    /// The sample shape, fixed by the first step.
    shape: Option<Vec<usize>>,
}

impl Sampler {
    /// `kind` with Wan2.1's schedule for `steps` steps and flow shift `shift` (3.0 at 480p, 5.0 at
    /// 720p).
    pub fn new(kind: SamplerKind, steps: usize, shift: f64) -> Result<Self> {
        let schedule = match kind {
            SamplerKind::UniPc => Schedule::unipc(steps, shift)?,
            SamplerKind::Euler => Schedule::flow_euler(steps, shift)?,
            SamplerKind::StepDistill => Schedule::step_distill(steps, shift)?,
        };
        Ok(Self::with_schedule(kind, schedule))
    }

    /// `kind` over an explicit schedule.
    pub fn with_schedule(kind: SamplerKind, schedule: Schedule) -> Self {
        Self {
            kind,
            schedule,
            index: 0,
            order: 0,
            history: History::Empty,
            shape: None,
        }
    }

    pub fn kind(&self) -> SamplerKind {
        self.kind
    }

    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    /// `steps + 1` noise levels, the last 0.
    pub fn sigmas(&self) -> &[f32] {
        self.schedule.sigmas()
    }

    /// The model's timestep at each step.
    pub fn timesteps(&self) -> &[f32] {
        self.schedule.timesteps()
    }

    /// The number of steps of the schedule.
    pub fn steps(&self) -> usize {
        self.schedule.steps()
    }

    /// The number of steps taken so far; the next step's timestep is `timesteps()[step_index()]`.
    pub fn step_index(&self) -> usize {
        self.index
    }

    /// Whether every step has been taken.
    pub fn is_done(&self) -> bool {
        self.index >= self.steps()
    }

    /// The predictor order of the latest UniPC step (0 before the first, 1 for Euler).
    pub fn last_order(&self) -> usize {
        self.order
    }

    /// Starts again from the first step, dropping the history.
    pub fn reset(&mut self) {
        self.index = 0;
        self.order = 0;
        self.history = History::Empty;
        self.shape = None;
    }

    /// Records one step: `sample` (the latent the model saw) is updated in place to the latent of
    /// the next timestep, from `model_output` (the guided velocity; f32 or f16, as `sample`).
    /// The sample must be the one the previous step wrote.
    pub fn step(
        &mut self,
        rec: &mut Recorder,
        model_output: &Tensor,
        sample: &Tensor,
    ) -> Result<()> {
        if model_output.shape() != sample.shape() {
            return Err(input_err(
                "sampler step",
                format!(
                    "model output {:?} and sample {:?} differ in shape",
                    model_output.shape(),
                    sample.shape()
                ),
            ));
        }
        let updates = self.begin_step(sample.shape(), true)?;
        if self.kind == SamplerKind::UniPc && matches!(self.history, History::Empty) {
            // f32 history whatever the latent's storage: the corrector differences small values.
            let gpu = rec.gpu();
            let t = || Tensor::empty(gpu, sample.shape(), DType::F32);
            self.history = History::Gpu {
                last: t()?,
                x0: [t()?, t()?, t()?],
            };
        }
        let hist = match &self.history {
            History::Gpu { last, x0 } => Some((last, x0)),
            _ => None,
        };
        let get = |slot: Slot| -> &Tensor {
            match (slot, hist) {
                (Slot::Sample, _) => sample,
                (Slot::Output, _) => model_output,
                (Slot::Last, Some((last, _))) => last,
                (Slot::X0(i), Some((_, x0))) => &x0[i],
                _ => unreachable!("UniPC history is allocated before its first update"),
            }
        };
        for u in &updates {
            record_update(rec, u, get)?;
        }
        self.index += 1;
        Ok(())
    }

    /// [`Sampler::step`] on host slices, with f64 arithmetic per element. A sampler runs either
    /// on the GPU or on the host.
    pub fn step_host(&mut self, model_output: &[f32], sample: &mut [f32]) -> Result<()> {
        if model_output.len() != sample.len() {
            return Err(input_err(
                "sampler step",
                format!(
                    "model output ({}) and sample ({}) differ in length",
                    model_output.len(),
                    sample.len()
                ),
            ));
        }
        let updates = self.begin_step(&[sample.len()], false)?;
        if self.kind == SamplerKind::UniPc && matches!(self.history, History::Empty) {
            let n = sample.len();
            self.history = History::Host {
                last: vec![0.0; n],
                x0: [vec![0.0; n], vec![0.0; n], vec![0.0; n]],
            };
        }
        for u in &updates {
            let value: Vec<f32> = {
                let read = |slot: Slot| -> &[f32] {
                    match (slot, &self.history) {
                        (Slot::Sample, _) => sample,
                        (Slot::Output, _) => model_output,
                        (Slot::Last, History::Host { last, .. }) => last,
                        (Slot::X0(i), History::Host { x0, .. }) => &x0[i],
                        _ => unreachable!("UniPC history is allocated before its first update"),
                    }
                };
                let srcs: Vec<(f64, &[f32])> = u.terms.iter().map(|&(c, s)| (c, read(s))).collect();
                (0..sample.len())
                    .map(|i| srcs.iter().map(|&(c, v)| c * v[i] as f64).sum::<f64>() as f32)
                    .collect()
            };
            let dst: &mut [f32] = match (u.dst, &mut self.history) {
                (Slot::Sample, _) => sample,
                (Slot::Last, History::Host { last, .. }) => last,
                (Slot::X0(i), History::Host { x0, .. }) => &mut x0[i],
                _ => unreachable!("updates write the sample or the history"),
            };
            dst.copy_from_slice(&value);
        }
        self.index += 1;
        Ok(())
    }

    /// The host-side part of a step: checks, the updates to apply, the order bookkeeping.
    fn begin_step(&mut self, shape: &[usize], gpu: bool) -> Result<Vec<Update>> {
        if self.is_done() {
            return Err(input_err(
                "sampler step",
                format!("all {} steps have been taken", self.steps()),
            ));
        }
        match &self.shape {
            Some(s) if s != shape => {
                return Err(input_err(
                    "sampler step",
                    format!("sample shape {shape:?} differs from the first step's {s:?}"),
                ))
            }
            Some(_) => {}
            None => self.shape = Some(shape.to_vec()),
        }
        match (&self.history, gpu) {
            (History::Gpu { .. }, false) | (History::Host { .. }, true) => {
                return Err(input_err(
                    "sampler step",
                    "a sampler's steps run all on the GPU or all on the host",
                ))
            }
            _ => {}
        }
        let k = self.index;
        let sigmas = self.schedule.sigmas();
        Ok(match self.kind {
            SamplerKind::Euler | SamplerKind::StepDistill => {
                self.order = 1;
                let dt = sigmas[k + 1] as f64 - sigmas[k] as f64;
                vec![Update::new(
                    Slot::Sample,
                    &[(1.0, Slot::Sample), (dt, Slot::Output)],
                )]
            }
            SamplerKind::UniPc => {
                let updates = unipc::step_updates(sigmas, k, self.order);
                self.order = unipc::predictor_order(k, self.steps());
                updates
            }
        })
    }
}

/// Records `u` as a chain of `axpby` launches (a copy or cast for a plain move).
fn record_update<'a>(
    rec: &mut Recorder,
    u: &Update,
    get: impl Fn(Slot) -> &'a Tensor,
) -> Result<()> {
    let dst = get(u.dst);
    let own = u.terms.iter().find(|t| t.1 == u.dst).map(|t| t.0);
    let mut rest = u
        .terms
        .iter()
        .filter(|t| t.1 != u.dst)
        .map(|&(c, s)| (c as f32, get(s)));
    match own {
        Some(a) => {
            let (b, y) = rest
                .next()
                .expect("an update reads more than its destination");
            axpby_in_place(rec, a as f32, dst, b, y)?;
        }
        None => {
            let (a, x) = rest.next().expect("an update has a source");
            match rest.next() {
                Some((b, y)) => axpby(rec, a, x, b, y, dst)?,
                None if a == 1.0 && x.dtype() == dst.dtype() => rec.copy(x, dst)?,
                None if a == 1.0 => cast(rec, x, dst)?,
                None => axpby(rec, a, x, 0.0, x, dst)?,
            }
        }
    }
    for (c, y) in rest {
        axpby_in_place(rec, 1.0, dst, c, y)?;
    }
    Ok(())
}
