//! One distillation run from start (or checkpoint) to `features.safetensors` and
//! `errors.json` in its output folder.

use std::path::Path;

use vdit_wgpu::attention::reference::FeatureSpec;
use vdit_wgpu::Gpu;

use super::checkpoint::{self, Progress};
use super::distill::{
    error_table, feature_tensors, pairs_state, resume, CaptureSteps, DistillProgress, Evaluator,
    Pair, PairTrainer, StepSchedule, Trainer,
};
use super::errors::ErrorTable;
use super::planner::FEATURES_FILE;
use crate::error::{input_err, Result};
use crate::pipeline::{CancelToken, GenerateRequest, Pipeline, Silent};
use crate::plan::LayerAttention;
use crate::tensor_file::{write_tensors, HostTensor};

/// The errors file a run writes beside its feature weights.
pub const ERRORS_FILE: &str = "errors.json";

/// What a run samples and how it trains.
pub struct DistillJob<'a> {
    pub pipeline: &'a Pipeline<'a>,
    pub dir: &'a Path,
    /// One request per training sample (prompt x seed).
    pub train: Vec<GenerateRequest>,
    pub held_out: Vec<GenerateRequest>,
    pub captures: CaptureSteps,
    /// Optimiser steps per pair.
    pub steps: u64,
    /// Queries per optimiser step.
    pub queries: usize,
    pub layers: usize,
    /// Everything that must match for a checkpoint to resume (the command line, normalised).
    pub settings: serde_json::Value,
    /// The trained map (named in errors.json with poly's powers).
    pub feature: FeatureSpec,
    /// FLOPs of one layer's self-attention in a mode.
    pub cost: &'a dyn Fn(LayerAttention) -> f64,
}

/// Trains every pair (resuming from the folder's checkpoint), measures the held-out errors and
/// writes the outputs. Returns the errors table.
pub fn run_distill<T: PairTrainer>(
    gpu: &Gpu,
    job: &DistillJob<'_>,
    pairs: &mut [Pair<T>],
    progress: &mut dyn DistillProgress,
    cancel: &CancelToken,
) -> Result<ErrorTable> {
    if job.train.is_empty() {
        return Err(input_err("--prompts", "no training prompts"));
    }
    if job.held_out.is_empty() {
        return Err(input_err("--held-out", "no held-out prompts"));
    }
    let resuming = job.dir.join(checkpoint::CHECKPOINT_FILE).exists();
    let mut state = resume(job.dir, &job.settings, pairs)?;
    if resuming {
        progress.resumed(state.samples_done, job.train.len());
    }
    let save = |state: &Progress, pairs: &[Pair<T>]| -> Result<()> {
        checkpoint::save(job.dir, state, &pairs_state(pairs)?)
    };

    // Before training: the initial maps' and elu1's held-out errors.
    if state.samples_done == 0 && state.initial_error.is_empty() {
        let means = evaluate(job, pairs, true, progress, "held-out, before", cancel)?;
        for (p, (e, u)) in pairs.iter().zip(means) {
            state.initial_error.insert(p.name(), e);
            state.elu1_error.insert(p.name(), u);
        }
        save(&state, pairs)?;
    }

    // Training: each sample's captured forwards (both branches) feed every pair's steps.
    let per_sample: Vec<u64> = job
        .train
        .iter()
        .map(|r| {
            let branches = 1 + crate::scheduler::needs_uncond(r.guidance) as usize;
            (job.captures.count(r.steps) * branches) as u64
        })
        .collect();
    let schedule = StepSchedule {
        total_steps: job.steps,
        captures: per_sample.iter().sum(),
    };
    if schedule.captures == 0 {
        return Err(input_err("--captures", "selects no denoising step"));
    }
    progress.stage("train", job.train.len() as u64);
    progress.sample(state.samples_done);
    for (i, request) in job.train.iter().enumerate().skip(state.samples_done) {
        cancel.check()?;
        let first: u64 = per_sample[..i].iter().sum();
        let mut tap = Trainer::new(
            pairs,
            &job.captures,
            schedule,
            first,
            job.queries,
            request.seed ^ (i as u64).wrapping_mul(0x9E37_79B9),
            progress,
        );
        job.pipeline
            .sample(request, &mut Silent, cancel, Some(&mut tap))?;
        state.samples_done = i + 1;
        save(&state, pairs)?;
        progress.sample(i + 1);
    }

    // After training: the held-out errors, then the outputs (errors.json last).
    let means = evaluate(job, pairs, false, progress, "held-out, after", cancel)?;
    let errors: Vec<f64> = means.iter().map(|m| m.0).collect();
    let features = feature_tensors(gpu, pairs)?;
    let refs: Vec<(&str, &HostTensor)> = features.iter().map(|(n, t)| (n.as_str(), t)).collect();
    write_tensors(&job.dir.join(FEATURES_FILE), &refs)?;
    let table = error_table(job.layers, pairs, &errors, &state, job.feature, job.cost);
    table.write(&job.dir.join(ERRORS_FILE))?;
    Ok(table)
}

/// Mean held-out error (and elu1 error) of every pair over the held-out samples' captures.
fn evaluate<T: PairTrainer>(
    job: &DistillJob<'_>,
    pairs: &mut [Pair<T>],
    with_elu1: bool,
    progress: &mut dyn DistillProgress,
    what: &str,
    cancel: &CancelToken,
) -> Result<Vec<(f64, f64)>> {
    progress.stage(what, job.held_out.len() as u64);
    let mut eval = Evaluator::new(pairs, &job.captures, with_elu1);
    for (i, request) in job.held_out.iter().enumerate() {
        cancel.check()?;
        job.pipeline
            .sample(request, &mut Silent, cancel, Some(&mut eval))?;
        progress.sample(i + 1);
    }
    Ok((0..eval.pairs.len()).map(|i| eval.means(i)).collect())
}
