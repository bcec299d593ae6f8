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
use super::measure::{relative_l2, softmax_of};
use super::planner::FEATURES_FILE;
use crate::dit::{AttentionTap, BlockAttention, Pass};
use crate::error::{input_err, Result};
use crate::pipeline::{CancelToken, GenerateRequest, Pipeline, Silent};
use crate::plan::LayerAttention;
use crate::tensor_file::{write_atomically, write_tensors, HostTensor};
use vdit_wgpu::Recorder;

/// The errors file a run writes beside its feature weights.
pub const ERRORS_FILE: &str = "errors.json";
/// The plan a student run writes: the student's modes with the maps it trained.
pub const PLAN_FILE: &str = "plan.json";

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
    /// Also measure each pair's effect on the held-out denoised latents (`output_error`).
    pub output_errors: bool,
    /// Train on a student's own sampling instead of the teacher's: the model runs these
    /// layers' modes with the pairs' current maps, and each converted block's pair learns to
    /// give softmax's output on the q, k, v the student feeds it (see [`AgainstSoftmax`]).
    /// The pairs must be exactly the plan's converted (layer, mode) pairs.
    pub student: Option<Vec<LayerAttention>>,
}

/// The plan and feature files a student run writes in its folder before each sample.
const STUDENT_PLAN: &str = "student-plan.json";
const STUDENT_FEATURES: &str = "student-features.safetensors";

/// Hands a tap each converted block's capture with softmax's output on the block's own q, k,
/// v in place of the block's output: what a student block should have given.
pub struct AgainstSoftmax<'t>(pub &'t mut dyn AttentionTap);

impl AttentionTap for AgainstSoftmax<'_> {
    fn forward_begins(&mut self, pass: Pass) {
        self.0.forward_begins(pass);
    }

    fn block_attention(&mut self, rec: &mut Recorder, seen: &BlockAttention<'_>) -> Result<()> {
        if seen.mode == LayerAttention::Softmax {
            return self.0.block_attention(rec, seen);
        }
        let y = softmax_of(rec, seen)?;
        let teacher = BlockAttention {
            output: &y,
            mode: LayerAttention::Softmax,
            ..*seen
        };
        self.0.block_attention(rec, &teacher)
    }
}

/// The pipeline that samples for training and held-out errors: the teacher's, or the
/// student's with the pairs' current maps (written to the run's folder first).
fn sampler<'p, T: PairTrainer>(
    job: &DistillJob<'p>,
    pairs: &[Pair<T>],
) -> Result<std::borrow::Cow<'p, Pipeline<'p>>> {
    let Some(layers) = &job.student else {
        return Ok(std::borrow::Cow::Borrowed(job.pipeline));
    };
    let features = feature_tensors(job.pipeline.gpu(), pairs)?;
    let refs: Vec<(&str, &HostTensor)> = features.iter().map(|(n, t)| (n.as_str(), t)).collect();
    write_tensors(&job.dir.join(STUDENT_FEATURES), &refs)?;
    let plan = student_plan(job, layers, STUDENT_FEATURES);
    let path = job.dir.join(STUDENT_PLAN);
    write_atomically(&path, plan.to_string().as_bytes())?;
    Ok(std::borrow::Cow::Owned(
        job.pipeline.clone().with_attention_plan(path),
    ))
}

/// A plan file running `layers` with the maps of `features` (relative to the run's folder).
fn student_plan(
    job: &DistillJob<'_>,
    layers: &[LayerAttention],
    features: &str,
) -> serde_json::Value {
    let named: serde_json::Map<String, serde_json::Value> = layers
        .iter()
        .enumerate()
        .filter(|(_, m)| **m != LayerAttention::Softmax)
        .map(|(i, m)| (i.to_string(), m.to_string().into()))
        .collect();
    let mut plan = serde_json::json!({
        "layers": named,
        "feature_map": job.feature.name(),
        "feature_weights": features,
    });
    if let Some(powers) = job.feature.powers() {
        plan["powers"] = powers.into();
    }
    plan
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
        let pipeline = sampler(job, pairs)?;
        let mut tap = Trainer::new(
            pairs,
            &job.captures,
            schedule,
            first,
            job.queries,
            request.seed ^ (i as u64).wrapping_mul(0x9E37_79B9),
            progress,
        );
        let mut against = AgainstSoftmax(&mut tap);
        pipeline.sample(request, &mut Silent, cancel, Some(&mut against))?;
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
    if let Some(layers) = &job.student {
        let plan = student_plan(job, layers, FEATURES_FILE);
        let text = serde_json::to_string_pretty(&plan).unwrap_or_default();
        write_atomically(&job.dir.join(PLAN_FILE), format!("{text}\n").as_bytes())?;
        let _ = std::fs::remove_file(job.dir.join(STUDENT_PLAN));
        let _ = std::fs::remove_file(job.dir.join(STUDENT_FEATURES));
    }
    let mut table = error_table(job.layers, pairs, &errors, &state, job.feature, job.cost);
    if job.output_errors {
        let measured = output_errors(job, pairs, progress, cancel)?;
        for (p, e) in pairs.iter().zip(measured) {
            let layer = &mut table.layers[p.block];
            if let Some(o) = layer
                .options
                .iter_mut()
                .find(|o| o.mode == p.mode.to_string())
            {
                o.output_error = Some(e);
            }
        }
    }
    table.write(&job.dir.join(ERRORS_FILE))?;
    Ok(table)
}

/// The plan file `output_errors` writes for one pair at a time (removed after).
const ONE_LAYER_PLAN: &str = "one-layer-plan.json";

/// Per pair: the relative L2 distance between the held-out denoised latents sampled with that
/// pair's block alone in the pair's mode (its distilled maps from the features file) and with
/// softmax everywhere, averaged over the held-out samples. Errors of single blocks do not add
/// up exactly, but unlike the attention-output error this sees how much a block's error moves
/// the video, which differs widely between blocks of one model.
fn output_errors<T: PairTrainer>(
    job: &DistillJob<'_>,
    pairs: &[Pair<T>],
    progress: &mut dyn DistillProgress,
    cancel: &CancelToken,
) -> Result<Vec<f64>> {
    let gpu = job.pipeline.gpu();
    progress.stage(
        "output errors",
        ((pairs.len() + 1) * job.held_out.len()) as u64,
    );
    let mut done = 0;
    let mut reference = Vec::new();
    for request in &job.held_out {
        cancel.check()?;
        let latent = job.pipeline.sample(request, &mut Silent, cancel, None)?;
        reference.push(latent.to_vec_f32(gpu)?);
        done += 1;
        progress.sample(done);
    }
    let plan_path = job.dir.join(ONE_LAYER_PLAN);
    let mut errors = Vec::with_capacity(pairs.len());
    for p in pairs {
        let mut plan = serde_json::json!({
            "layers": {p.block.to_string(): p.mode.to_string()},
            "feature_map": job.feature.name(),
            "feature_weights": FEATURES_FILE,
        });
        if let Some(powers) = job.feature.powers() {
            plan["powers"] = powers.into();
        }
        write_atomically(&plan_path, plan.to_string().as_bytes())?;
        let planned = job.pipeline.clone().with_attention_plan(plan_path.clone());
        let mut sum = 0.0;
        for (request, want) in job.held_out.iter().zip(&reference) {
            cancel.check()?;
            let latent = planned.sample(request, &mut Silent, cancel, None)?;
            sum += relative_l2(&latent.to_vec_f32(gpu)?, want);
            done += 1;
            progress.sample(done);
        }
        errors.push(sum / job.held_out.len() as f64);
    }
    let _ = std::fs::remove_file(&plan_path);
    Ok(errors)
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
    let pipeline = sampler(job, pairs)?;
    let mut eval = Evaluator::new(pairs, &job.captures, with_elu1);
    for (i, request) in job.held_out.iter().enumerate() {
        cancel.check()?;
        let mut against = AgainstSoftmax(&mut eval);
        pipeline.sample(request, &mut Silent, cancel, Some(&mut against))?;
        progress.sample(i + 1);
    }
    Ok((0..eval.pairs.len()).map(|i| eval.means(i)).collect())
}
