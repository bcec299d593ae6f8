//! `vdit distill`: trains the feature maps of every (block, mode) pair on the model's own
//! sampling and writes `features.safetensors` and `errors.json` for `vdit plan`.

use std::path::PathBuf;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use vdit_model::dit::Precision;
use vdit_model::pipeline::{CancelToken, Pipeline};
use vdit_model::plan::LayerAttention;
use vdit_model::surgery::distill::{CaptureSteps, DistillProgress, Pair};
use vdit_model::surgery::phi::{gpu_trainer, FeatureDims};
use vdit_model::surgery::run::{run_distill, DistillJob};
use vdit_model::weights::Checkpoint;
use vdit_wgpu::attention::attention_flops;
use vdit_wgpu::Gpu;

use crate::sampling_args::{read_prompts, SamplingArgs};

#[derive(Args, Debug, Clone)]
pub struct DistillArgs {
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Training prompts, one per line.
    #[arg(long)]
    pub prompts: PathBuf,
    /// Held-out prompts: a file (one per line), or a count taken from the end of --prompts.
    #[arg(long, default_value = "1")]
    pub held_out: String,
    /// The modes to distil for every block, comma-separated.
    #[arg(long, default_value = "hybrid:2,hybrid:4,rehyat:3:1,linear")]
    pub modes: String,
    /// The feature map to train: hedgehog (poly is not trained yet).
    #[arg(long, default_value = "hedgehog")]
    pub feature_map: String,
    /// Features per map, DF (hedgehog: two halves of DF/2) [default: the head size].
    #[arg(long)]
    pub feature_dim: Option<usize>,
    /// Optimiser steps per (block, mode) pair, spread over the captures.
    #[arg(long, default_value_t = 200)]
    pub steps: u64,
    /// Queries per optimiser step (a strided subset with a random start).
    #[arg(long, default_value_t = 4096)]
    pub queries: usize,
    /// The denoising steps whose forwards (both guidance branches) are captured: all, or a
    /// comma list of step indices.
    #[arg(long, default_value = "all")]
    pub captures: String,
    /// AdamW learning rate.
    #[arg(long, default_value_t = 1e-2)]
    pub lr: f32,
    /// The output folder (created; a checkpoint in it is resumed).
    #[arg(long)]
    pub output: PathBuf,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// One bar per stage; the message names the last pair trained, its step and loss.
struct Bar(Option<ProgressBar>, bool);

impl DistillProgress for Bar {
    fn resumed(&mut self, done: usize, total: usize) {
        eprintln!("resuming from the checkpoint: {done} of {total} training samples done");
    }
    fn stage(&mut self, what: &str, total: u64) {
        if let Some(b) = self.0.take() {
            b.finish();
        }
        if self.1 {
            return;
        }
        let b = ProgressBar::new(total);
        b.set_style(
            ProgressStyle::with_template(
                "{prefix:>17} [{bar:24}] {pos}/{len} samples {elapsed} {msg}",
            )
            .unwrap()
            .progress_chars("=> "),
        );
        b.set_prefix(what.to_string());
        self.0 = Some(b);
    }
    fn sample(&mut self, done: usize) {
        if let Some(b) = &self.0 {
            b.set_position(done as u64);
        }
    }
    fn step(&mut self, pair: &str, steps: u64, loss: f32) {
        if let Some(b) = &self.0 {
            let (block, mode) = pair.split_once('.').unwrap_or((pair, ""));
            b.set_message(format!("block {block} {mode} step {steps} loss {loss:.4}"));
        }
    }
}

/// `--modes`: distinct modes that have feature maps to distil.
pub(crate) fn parse_modes(s: &str) -> Result<Vec<LayerAttention>, String> {
    let mut modes = Vec::new();
    for m in s.split(',') {
        let mode = LayerAttention::parse(m).ok_or_else(|| {
            format!(
                "--modes: unknown mode '{}' (hybrid:R, rehyat:TC:TO, linear)",
                m.trim()
            )
        })?;
        if !mode.needs_features() {
            return Err(format!("--modes: {mode} has no feature map to distil"));
        }
        if !modes.contains(&mode) {
            modes.push(mode);
        }
    }
    Ok(modes)
}

/// `--feature-map`: the maps distillation trains.
pub(crate) fn check_feature_map(name: &str) -> Result<(), String> {
    if name == "hedgehog" {
        Ok(())
    } else {
        Err(format!(
            "--feature-map {name}: only hedgehog maps are trained (poly is not yet)"
        ))
    }
}

/// `--feature-dim`, else the head size: features per map, two hedgehog halves.
pub(crate) fn feature_dim(flag: Option<usize>, head_dim: usize) -> Result<usize, String> {
    let df = flag.unwrap_or(head_dim);
    if df < 2 || df % 2 != 0 {
        return Err(format!("--feature-dim {df} must be even and at least 2"));
    }
    Ok(df)
}

pub fn run(gpu: &Gpu, a: &DistillArgs) -> Result<(), Box<dyn std::error::Error>> {
    let modes = parse_modes(&a.modes)?;
    check_feature_map(&a.feature_map)?;
    let captures = CaptureSteps::parse(&a.captures).ok_or_else(|| {
        format!(
            "--captures: '{}' is neither 'all' nor a comma list of steps",
            a.captures
        )
    })?;
    if a.steps == 0 || a.queries == 0 {
        return Err("--steps and --queries must be at least 1".into());
    }
    let precision = Precision::parse(&a.sampling.precision).ok_or_else(|| {
        format!(
            "--precision must be f32 or f16, not '{}'",
            a.sampling.precision
        )
    })?;
    let mut prompts = read_prompts(&a.prompts, "--prompts")?;
    let held_out = match a.held_out.parse::<usize>() {
        Ok(n) if n >= prompts.len() => {
            return Err(format!(
                "--held-out {n}: --prompts has {} prompts, so at most {} can be held out",
                prompts.len(),
                prompts.len() - 1
            )
            .into())
        }
        Ok(0) => return Err("--held-out: at least one prompt must be held out".into()),
        Ok(n) => prompts.split_off(prompts.len() - n),
        Err(_) => read_prompts(std::path::Path::new(&a.held_out), "--held-out")?,
    };
    let paths = a.sampling.paths()?;
    let train = a.sampling.requests(&paths, &prompts)?;
    let held = a.sampling.requests(&paths, &held_out)?;
    let dit_path = paths.dit.clone().ok_or("the model has no DiT")?;
    let c = Checkpoint::open(&dit_path)?.config()?;
    let df = feature_dim(a.feature_dim, c.head_dim)?;
    // Every sample has the first request's size: tokens and tokens per frame.
    let shape = train[0].latent_shape(c.in_channels);
    let grid = [
        shape[1] / c.patch[0],
        shape[2] / c.patch[1],
        shape[3] / c.patch[2],
    ];
    let (n, frame_tokens) = (grid.iter().product::<usize>(), grid[1] * grid[2]);
    let dims = FeatureDims {
        heads: c.heads,
        head_dim: c.head_dim,
        half: df / 2,
        lr: a.lr,
        frame_tokens,
    };
    std::fs::create_dir_all(&a.output)
        .map_err(|e| format!("--output {}: {e}", a.output.display()))?;

    let mut pairs = Vec::new();
    for block in 0..c.layers {
        for (i, &mode) in modes.iter().enumerate() {
            pairs.push(Pair {
                block,
                mode,
                trainer: gpu_trainer(gpu, &dims, mode, (block * 131 + i) as u64)?,
                loss: f32::NAN,
            });
        }
    }
    // Hedgehog: W x per half (2 D DF/2 FLOPs) and two softmaxes over DF/2 (about 8 DF/2).
    let fm_flops = (2 * c.head_dim * dims.half + 8 * dims.half) as f64;
    let cost = |mode: LayerAttention| {
        let (df, fm) = if mode.needs_features() {
            (df, fm_flops)
        } else {
            (0, 0.0)
        };
        attention_flops(&mode.mode(frame_tokens), n, n, c.heads, c.head_dim, df, fm)
    };
    let settings = serde_json::json!({
        "prompts": prompts, "held_out": held_out, "seeds": a.sampling.seeds,
        "modes": modes.iter().map(|m| m.to_string()).collect::<Vec<_>>(),
        "feature_map": a.feature_map, "feature_dim": df, "steps": a.steps, "queries": a.queries,
        "captures": a.captures, "lr": a.lr, "latent": shape, "sampling_steps": train[0].steps,
        "guidance": train[0].guidance, "precision": a.sampling.precision,
    });
    let pipeline = Pipeline::new(gpu, paths, precision);
    let job = DistillJob {
        pipeline: &pipeline,
        dir: &a.output,
        train,
        held_out: held,
        captures,
        steps: a.steps,
        queries: a.queries,
        layers: c.layers,
        settings,
        feature_map: a.feature_map.clone(),
        cost: &cost,
    };
    let mut bar = Bar(None, a.quiet);
    let table = run_distill(gpu, &job, &mut pairs, &mut bar, &CancelToken::default())?;
    bar.stage("done", 0);
    println!(
        "{:>5}  {:<12} {:>10} {:>10} {:>10} {:>9}",
        "layer", "mode", "error", "initial", "elu1", "/softmax"
    );
    for l in &table.layers {
        let soft = l.options[0].cost;
        for o in &l.options[1..] {
            let f = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.4e}"));
            println!(
                "{:>5}  {:<12} {:>10.4e} {:>10} {:>10} {:>9.3}",
                l.layer,
                o.mode,
                o.error,
                f(o.initial_error),
                f(o.elu1_error),
                o.cost / soft
            );
        }
    }
    println!(
        "wrote {} and {}",
        a.output.join("features.safetensors").display(),
        a.output.join("errors.json").display()
    );
    Ok(())
}
