//! Stage-1 distillation over the model's own sampling (DISTILL.md): the teacher (the model with
//! softmax attention) samples the training prompts; at each captured forward, every block's q,
//! k, v and softmax output y train the feature maps of that block's (block, mode) pairs for a
//! few optimiser steps, streaming (nothing is stored). Held-out prompts then give each pair's
//! error: before training, with the weightless elu1 map, and after.
//!
//! The optimiser of one pair is a [`PairTrainer`] (the GPU trainer of vdit-wgpu in `vdit
//! distill`); this module only schedules captures and steps, measures, and saves.

use std::path::Path;

use vdit_wgpu::attention::reference::FeatureSpec;
use vdit_wgpu::attention::{FeatureMap, FeatureMapWeights};
use vdit_wgpu::rng::Rng;
use vdit_wgpu::Recorder;

use super::checkpoint::{self, Progress};
use super::errors::{ErrorTable, LayerOptions, ModeOption};
use super::measure::{mode_output, relative_l1};
use crate::dit::tap::flush;
use crate::dit::{AttentionTap, BlockAttention, Pass};
use crate::error::{input_err, Result};
use crate::plan::LayerAttention;
use crate::tensor_file::HostTensor;

/// What distillation needs from the optimiser of one (block, mode) pair.
pub trait PairTrainer {
    /// Takes a capture (q, k, v and y = `seen.output`) for the next steps. The tensors are only
    /// valid until the call returns: keep what the steps need.
    fn prepare(&mut self, seen: &BlockAttention<'_>) -> Result<()>;
    /// Optimiser steps on the prepared capture, one per (start, stride): queries start,
    /// start + stride, ...; each step's loss.
    fn steps(&mut self, subsets: &[(usize, usize)]) -> Result<Vec<f32>>;
    /// Frees what `prepare` kept, once the capture's steps are done.
    fn release(&mut self);
    /// The relative L1 error of the pair's output on a capture, over all queries.
    fn error(&mut self, seen: &BlockAttention<'_>) -> Result<f64>;
    /// Optimiser steps taken.
    fn steps_taken(&self) -> u64;
    /// The current feature maps, on the GPU.
    fn weights(&self) -> Result<FeatureMapWeights>;
    /// Everything a resumed run needs (weights, optimiser moments, step count), by name.
    fn state(&self) -> Result<Vec<(String, HostTensor)>>;
    fn load_state(&mut self, state: &[(String, HostTensor)]) -> Result<()>;
}

/// One (block, mode) pair and its trainer.
pub struct Pair<T> {
    pub block: usize,
    pub mode: LayerAttention,
    pub trainer: T,
    /// The loss of the last step.
    pub loss: f32,
}

impl<T> Pair<T> {
    /// `block.mode`, e.g. `2.hybrid_4`: the pair's name in checkpoints and logs.
    pub fn name(&self) -> String {
        format!("{}.{}", self.block, self.mode.key())
    }
}

/// Which denoising steps' forwards are captured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CaptureSteps {
    All,
    List(Vec<usize>),
}

impl CaptureSteps {
    /// `all` or a comma list of step indices.
    pub fn parse(s: &str) -> Option<Self> {
        if s.trim() == "all" {
            return Some(Self::All);
        }
        let list: Option<Vec<usize>> = s.split(',').map(|p| p.trim().parse().ok()).collect();
        list.filter(|l| !l.is_empty()).map(Self::List)
    }
    pub fn count(&self, steps: usize) -> usize {
        match self {
            Self::All => steps,
            Self::List(l) => l.iter().filter(|&&s| s < steps).count(),
        }
    }
    fn contains(&self, step: usize) -> bool {
        match self {
            Self::All => true,
            Self::List(l) => l.contains(&step),
        }
    }
}

/// What the trainers hear, for a progress display.
pub trait DistillProgress {
    /// A checkpoint was found: `done` of `total` training samples are behind.
    fn resumed(&mut self, _done: usize, _total: usize) {}
    fn stage(&mut self, _what: &str, _total: u64) {}
    fn sample(&mut self, _done: usize) {}
    /// After an optimiser step of a pair: its name, its step count and loss.
    fn step(&mut self, _pair: &str, _steps: u64, _loss: f32) {}
}

/// How a pair's optimiser steps are spread over a run's captures: capture c (counted over
/// all training samples) gets floor((c + 1) N / C) - floor(c N / C) of the N steps, so every
/// capture contributes, however N and C compare.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StepSchedule {
    /// Optimiser steps per pair in all (N).
    pub total_steps: u64,
    /// Captured forwards in all (C), over every training sample.
    pub captures: u64,
}

impl StepSchedule {
    pub fn quota(&self, capture: u64) -> u64 {
        let at =
            |c: u64| (c as u128 * self.total_steps as u128 / self.captures.max(1) as u128) as u64;
        at(capture + 1) - at(capture)
    }
}

/// The tap that trains: at each captured forward, each block's pairs take their steps.
pub struct Trainer<'a, T> {
    pub pairs: &'a mut [Pair<T>],
    pub captures: &'a CaptureSteps,
    pub schedule: StepSchedule,
    /// Queries per step (a strided subset with a random start).
    pub queries: usize,
    pub rng: Rng,
    pub progress: &'a mut dyn DistillProgress,
    /// The run-wide index of the next captured forward, and of the current one.
    next_capture: u64,
    current: Option<u64>,
}

impl<'a, T: PairTrainer> Trainer<'a, T> {
    /// A tap for one training sample whose first captured forward is the run's `first_capture`.
    pub fn new(
        pairs: &'a mut [Pair<T>],
        captures: &'a CaptureSteps,
        schedule: StepSchedule,
        first_capture: u64,
        queries: usize,
        seed: u64,
        progress: &'a mut dyn DistillProgress,
    ) -> Self {
        Self {
            pairs,
            captures,
            schedule,
            queries,
            rng: Rng::new(seed),
            progress,
            next_capture: first_capture,
            current: None,
        }
    }
}

impl<T: PairTrainer> AttentionTap for Trainer<'_, T> {
    fn forward_begins(&mut self, pass: Pass) {
        self.current = None;
        if self.captures.contains(pass.step) {
            self.current = Some(self.next_capture);
            self.next_capture += 1;
        }
    }

    fn block_attention(&mut self, rec: &mut Recorder, seen: &BlockAttention<'_>) -> Result<()> {
        let Some(capture) = self.current else {
            return Ok(());
        };
        let quota = self.schedule.quota(capture);
        let total = self.schedule.total_steps;
        let wanted = |p: &Pair<T>| p.block == seen.block && p.trainer.steps_taken() < total;
        if quota == 0 || !self.pairs.iter().any(wanted) {
            return Ok(());
        }
        flush(rec)?;
        let n = seen.q.shape()[0];
        let stride = (n / self.queries.max(1)).max(1);
        for p in self.pairs.iter_mut() {
            if !wanted(p) {
                continue;
            }
            let count = quota.min(total - p.trainer.steps_taken()) as usize;
            let subsets: Vec<(usize, usize)> = (0..count)
                .map(|_| ((self.rng.next_u64() % stride as u64) as usize, stride))
                .collect();
            p.trainer.prepare(seen)?;
            let losses = p.trainer.steps(&subsets)?;
            p.trainer.release();
            p.loss = losses.last().copied().unwrap_or(f32::NAN);
            if losses.iter().any(|l| !l.is_finite()) {
                return Err(input_err(
                    "distill",
                    format!("block {} {} diverged: losses {losses:?}", p.block, p.mode),
                ));
            }
            self.progress
                .step(&p.name(), p.trainer.steps_taken(), p.loss);
        }
        Ok(())
    }
}

/// Held-out errors per pair: the trainers' (mean over captures), and optionally elu1's.
pub struct Evaluator<'a, T> {
    pub pairs: &'a mut [Pair<T>],
    pub captures: &'a CaptureSteps,
    pub with_elu1: bool,
    /// Per pair: (sum of errors, sum of elu1 errors, captures).
    pub sums: Vec<(f64, f64, usize)>,
    capturing: bool,
}

impl<'a, T: PairTrainer> Evaluator<'a, T> {
    pub fn new(pairs: &'a mut [Pair<T>], captures: &'a CaptureSteps, with_elu1: bool) -> Self {
        let sums = vec![(0.0, 0.0, 0); pairs.len()];
        Self {
            pairs,
            captures,
            with_elu1,
            sums,
            capturing: false,
        }
    }

    /// Mean error and mean elu1 error of pair `i` (NaN before any capture).
    pub fn means(&self, i: usize) -> (f64, f64) {
        let (e, u, n) = self.sums[i];
        (e / n as f64, u / n as f64)
    }
}

impl<T: PairTrainer> AttentionTap for Evaluator<'_, T> {
    fn forward_begins(&mut self, pass: Pass) {
        self.capturing = self.captures.contains(pass.step);
    }

    fn block_attention(&mut self, rec: &mut Recorder, seen: &BlockAttention<'_>) -> Result<()> {
        if !self.capturing || !self.pairs.iter().any(|p| p.block == seen.block) {
            return Ok(());
        }
        flush(rec)?;
        let gpu = rec.gpu();
        let y = if self.with_elu1 {
            seen.output.to_vec_f32(gpu)?
        } else {
            Vec::new()
        };
        for (i, p) in self.pairs.iter_mut().enumerate() {
            if p.block != seen.block {
                continue;
            }
            self.sums[i].0 += p.trainer.error(seen)?;
            if self.with_elu1 {
                let elu1 = FeatureMapWeights {
                    phi_q: FeatureMap::Elu1,
                    phi_k: FeatureMap::Elu1,
                };
                let mut r = Recorder::new(gpu);
                let out = mode_output(&mut r, seen, p.mode, Some(&elu1))?;
                r.run()?;
                self.sums[i].1 += relative_l1(&out.to_vec_f32(gpu)?, &y);
            }
            self.sums[i].2 += 1;
        }
        Ok(())
    }
}

/// The checkpoint tensors of all pairs (each name prefixed by the pair's).
pub fn pairs_state<T: PairTrainer>(pairs: &[Pair<T>]) -> Result<Vec<(String, HostTensor)>> {
    let mut out = Vec::new();
    for p in pairs {
        for (n, t) in p.trainer.state()? {
            out.push((format!("{}.{n}", p.name()), t));
        }
    }
    Ok(out)
}

/// Restores every pair from checkpoint tensors; a pair missing from them is an error.
pub fn load_pairs_state<T: PairTrainer>(
    pairs: &mut [Pair<T>],
    tensors: &std::collections::HashMap<String, HostTensor>,
    path: &Path,
) -> Result<()> {
    for p in pairs.iter_mut() {
        let prefix = format!("{}.", p.name());
        let mine: Vec<(String, HostTensor)> = tensors
            .iter()
            .filter_map(|(n, t)| n.strip_prefix(&prefix).map(|s| (s.to_string(), t.clone())))
            .collect();
        if mine.is_empty() {
            return Err(input_err(
                path.display().to_string(),
                format!("holds no state for block {} mode {}", p.block, p.mode),
            ));
        }
        p.trainer.load_state(&mine)?;
    }
    Ok(())
}

/// The feature maps of every pair, named as the attention plan reads them
/// (`blocks.N.attn1.<mode>.phi_q.weight`, ...; see `crate::plan::feature_tensor_name`).
pub fn feature_tensors<T: PairTrainer>(
    gpu: &vdit_wgpu::Gpu,
    pairs: &[Pair<T>],
) -> Result<Vec<(String, HostTensor)>> {
    let mut out = Vec::new();
    for p in pairs {
        let w = p.trainer.weights()?;
        for (which, map) in [("phi_q", &w.phi_q), ("phi_k", &w.phi_k)] {
            let named: Vec<(&str, &vdit_wgpu::Tensor)> = match map {
                FeatureMap::Hedgehog { w, b } => vec![("weight", w), ("bias", b)],
                FeatureMap::Poly { w1, b1, w2, b2, .. } => vec![
                    ("l1.weight", w1),
                    ("l1.bias", b1),
                    ("l2.weight", w2),
                    ("l2.bias", b2),
                ],
                FeatureMap::Elu1 => vec![],
            };
            for (tensor, t) in named {
                out.push((
                    crate::plan::feature_tensor_name(p.block, Some(p.mode), which, tensor),
                    HostTensor {
                        shape: t.shape().to_vec(),
                        data: t.to_vec_f32(gpu)?,
                    },
                ));
            }
        }
    }
    Ok(out)
}

/// errors.json from the held-out errors: per layer softmax (error 0) and every distilled mode,
/// with `cost(layer, mode)` FLOPs.
pub fn error_table<T>(
    layers: usize,
    pairs: &[Pair<T>],
    errors: &[f64],
    progress: &Progress,
    feature: FeatureSpec,
    cost: &dyn Fn(LayerAttention) -> f64,
) -> ErrorTable {
    let layers = (0..layers)
        .map(|l| {
            let mut options = vec![ModeOption::new(
                LayerAttention::Softmax,
                0.0,
                cost(LayerAttention::Softmax),
            )];
            for (p, &e) in pairs.iter().zip(errors).filter(|(p, _)| p.block == l) {
                let mut o = ModeOption::new(p.mode, e, cost(p.mode));
                o.initial_error = progress.initial_error.get(&p.name()).copied();
                o.elu1_error = progress.elu1_error.get(&p.name()).copied();
                options.push(o);
            }
            LayerOptions { layer: l, options }
        })
        .collect();
    ErrorTable {
        layers,
        feature_map: Some(feature.name().to_string()),
        powers: feature.powers(),
    }
}

/// Loads the checkpoint of `dir` if its settings are `settings`; a different run's is an error.
pub fn resume<T: PairTrainer>(
    dir: &Path,
    settings: &serde_json::Value,
    pairs: &mut [Pair<T>],
) -> Result<Progress> {
    let path = dir.join(checkpoint::CHECKPOINT_FILE);
    match checkpoint::load(dir)? {
        None => Ok(Progress {
            settings: settings.clone(),
            ..Progress::default()
        }),
        Some((progress, tensors)) => {
            if &progress.settings != settings {
                let differs = settings
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter(|(k, v)| progress.settings.get(k.as_str()) != Some(v))
                    .map(|(k, v)| {
                        format!(
                            "{k}: {} then, {v} now",
                            progress
                                .settings
                                .get(k.as_str())
                                .unwrap_or(&serde_json::Value::Null)
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("; ");
                return Err(input_err(
                    path.display().to_string(),
                    format!(
                        "was written by a run with other settings ({differs}): repeat them to \
                         resume, or give another --output"
                    ),
                ));
            }
            load_pairs_state(pairs, &tensors, &path)?;
            Ok(progress)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_spread_every_step_over_the_captures() {
        for (n, c) in [(4u64, 8u64), (200, 16), (7, 7), (5, 3), (1, 10)] {
            let s = StepSchedule {
                total_steps: n,
                captures: c,
            };
            let q: Vec<u64> = (0..c).map(|i| s.quota(i)).collect();
            assert_eq!(q.iter().sum::<u64>(), n, "{n} over {c}: {q:?}");
            let (lo, hi) = (q.iter().min().unwrap(), q.iter().max().unwrap());
            assert!(hi - lo <= 1, "{n} over {c}: {q:?}");
        }
        assert_eq!(CaptureSteps::parse("all"), Some(CaptureSteps::All));
        assert_eq!(
            CaptureSteps::parse("0, 3"),
            Some(CaptureSteps::List(vec![0, 3]))
        );
        assert_eq!(CaptureSteps::parse("x"), None);
        assert_eq!(CaptureSteps::List(vec![0, 3, 9]).count(4), 2);
    }
}
