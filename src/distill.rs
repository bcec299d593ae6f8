//! `vdit distill`: trains the feature maps of every (block, mode) pair on the model's own
//! sampling and writes `features.safetensors` and `errors.json` for `vdit plan`.

use std::path::PathBuf;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use vdit_model::dit::Precision;
use vdit_model::pipeline::{CancelToken, Pipeline};
use vdit_model::plan::AttentionPlan;
use vdit_model::plan::LayerAttention;
use vdit_model::surgery::distill::{CaptureSteps, DistillProgress, Pair};
use vdit_model::surgery::phi::{gpu_trainer, gpu_trainer_from, host_map, spec_of, FeatureDims};
use vdit_model::surgery::run::{run_distill, DistillJob, PLAN_FILE};
use vdit_model::weights::Checkpoint;
use vdit_wgpu::attention::attention_flops;
use vdit_wgpu::attention::reference::FeatureSpec;
use vdit_wgpu::attention::reference::HostFeatureMap;
use vdit_wgpu::distill::PhiInit;
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
    /// Go on training the maps of this plan (as `vdit plan` writes it) on the plan's own
    /// sampling: each converted block learns softmax's output on the q, k, v that the converted
    /// blocks before it produce. Replaces --modes and the feature-map flags (the plan's maps are
    /// the start); writes plan.json with the trained maps into --output.
    #[arg(long)]
    pub student: Option<PathBuf>,
    #[command(flatten)]
    pub features: FeatureArgs,
    /// Optimiser steps per (block, mode) pair, spread over the captures (2000 at learning rate
    /// 1e-3 gave the default model its lowest held-out errors; bench/SURGERY.md).
    #[arg(long, default_value_t = 2000)]
    pub steps: u64,
    /// Queries per optimiser step (a strided subset with a random start).
    #[arg(long, default_value_t = 4096)]
    pub queries: usize,
    /// The denoising steps whose forwards (both guidance branches) are captured: all, or a
    /// comma list of step indices.
    #[arg(long, default_value = "all")]
    pub captures: String,
    /// AdamW learning rate.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f32,
    /// Skip measuring each pair's effect on the held-out denoised latents (errors.json's
    /// output_error, which `vdit plan` sums by default): one sampling per pair and held-out
    /// prompt.
    #[arg(long)]
    pub no_output_errors: bool,
    /// The output folder (created; a checkpoint in it is resumed).
    #[arg(long)]
    pub output: PathBuf,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// The feature map to train and its sizes (vdit distill and vdit bench distill).
#[derive(Args, Debug, Clone)]
pub struct FeatureArgs {
    /// The feature map to train: hedgehog (Hedgehog / LoLCATs) or poly (Attention Surgery's
    /// two-layer map raised to the powers 1..=P).
    #[arg(long, default_value = "hedgehog")]
    pub feature_map: String,
    /// Features per map, DF (hedgehog: two halves of DF/2; poly: P powers of DF/P values)
    /// [default: the head size].
    #[arg(long)]
    pub feature_dim: Option<usize>,
    /// Poly's P: the powers 1..=P of its values.
    #[arg(long, default_value_t = 2)]
    pub powers: usize,
    /// Poly's hidden units [default: the head size].
    #[arg(long)]
    pub poly_hidden: Option<usize>,
}

impl FeatureArgs {
    /// The map these flags describe, for heads of size `head_dim`.
    pub fn spec(&self, head_dim: usize) -> Result<FeatureSpec, String> {
        let df = self.feature_dim.unwrap_or(head_dim);
        if df > 1024 {
            return Err(format!(
                "--feature-dim {df}: at most 1024 features are trained"
            ));
        }
        match self.feature_map.as_str() {
            "hedgehog" => {
                if df < 2 || df % 2 != 0 {
                    return Err(format!("--feature-dim {df} must be even and at least 2"));
                }
                Ok(FeatureSpec::Hedgehog { half: df / 2 })
            }
            "poly" => {
                let powers = self.powers;
                if !(1..=8).contains(&powers) {
                    return Err(format!("--powers {powers} must be 1 to 8"));
                }
                if df == 0 || df % powers != 0 {
                    return Err(format!(
                        "--feature-dim {df} must be a positive multiple of --powers {powers}"
                    ));
                }
                let hid = self.poly_hidden.unwrap_or(head_dim);
                if !(1..=1024).contains(&hid) {
                    return Err(format!("--poly-hidden {hid} must be 1 to 1024"));
                }
                Ok(FeatureSpec::Poly {
                    hid,
                    d1: df / powers,
                    powers,
                })
            }
            "elu1" => Err("--feature-map elu1 has no weights to train (hedgehog or poly)".into()),
            other => Err(format!(
                "--feature-map {other}: unknown feature map (hedgehog or poly)"
            )),
        }
    }

    /// The map's settings as a checkpoint records them (a resumed run must match).
    pub fn settings(&self, spec: FeatureSpec, head_dim: usize) -> serde_json::Value {
        let mut v = serde_json::json!({
            "feature_map": spec.name(), "feature_dim": spec.df(head_dim),
        });
        if let FeatureSpec::Poly { hid, powers, .. } = spec {
            v["powers"] = powers.into();
            v["poly_hidden"] = hid.into();
        }
        v
    }
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

pub fn run(gpu: &Gpu, a: &DistillArgs) -> Result<(), Box<dyn std::error::Error>> {
    let modes = parse_modes(&a.modes)?;
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
    let student = match &a.student {
        Some(plan) => Some(student_maps(gpu, plan, &c, precision)?),
        None => None,
    };
    let feature = match &student {
        Some(s) => s.feature,
        None => a.features.spec(c.head_dim)?,
    };
    let df = feature.df(c.head_dim);
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
        feature,
        lr: a.lr,
        frame_tokens,
    };
    std::fs::create_dir_all(&a.output)
        .map_err(|e| format!("--output {}: {e}", a.output.display()))?;

    let mut pairs = Vec::new();
    match &student {
        Some(s) => {
            for (block, (&mode, maps)) in s.layers.iter().zip(&s.maps).enumerate() {
                let Some((phi_q, phi_k)) = maps else {
                    continue;
                };
                let init = PhiInit::Host {
                    phi_q: Box::new(phi_q.clone()),
                    phi_k: Box::new(phi_k.clone()),
                };
                pairs.push(Pair {
                    block,
                    mode,
                    trainer: gpu_trainer_from(gpu, &dims, mode, init)?,
                    loss: f32::NAN,
                });
            }
        }
        None => {
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
        }
    }
    let modes: Vec<LayerAttention> = match &student {
        Some(s) => s.layers.clone(),
        None => modes,
    };
    let fm_flops = feature.flops(c.head_dim);
    let cost = |mode: LayerAttention| {
        let (df, fm) = if mode.needs_features() {
            (df, fm_flops)
        } else {
            (0, 0.0)
        };
        attention_flops(&mode.mode(frame_tokens), n, n, c.heads, c.head_dim, df, fm)
    };
    let mut settings = serde_json::json!({
        "prompts": prompts, "held_out": held_out, "seeds": a.sampling.seeds,
        "modes": modes.iter().map(|m| m.to_string()).collect::<Vec<_>>(),
        "steps": a.steps, "queries": a.queries,
        "captures": a.captures, "lr": a.lr, "latent": shape, "sampling_steps": train[0].steps,
        "guidance": train[0].guidance, "precision": a.sampling.precision,
    });
    for (k, v) in a
        .features
        .settings(feature, c.head_dim)
        .as_object()
        .unwrap()
    {
        settings[k] = v.clone();
    }
    if let Some(plan) = &a.student {
        settings["student"] = plan.display().to_string().into();
    }
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
        feature,
        cost: &cost,
        output_errors: !a.no_output_errors,
        student: student.as_ref().map(|s| s.layers.clone()),
    };
    let mut bar = Bar(None, a.quiet);
    let table = run_distill(gpu, &job, &mut pairs, &mut bar, &CancelToken::default())?;
    bar.stage("done", 0);
    println!(
        "{:>5}  {:<12} {:>10} {:>10} {:>10} {:>10} {:>9}",
        "layer", "mode", "error", "initial", "elu1", "output", "/softmax"
    );
    for l in &table.layers {
        let soft = l.options[0].cost;
        for o in &l.options[1..] {
            let f = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.4e}"));
            println!(
                "{:>5}  {:<12} {:>10.4e} {:>10} {:>10} {:>10} {:>9.3}",
                l.layer,
                o.mode,
                o.error,
                f(o.initial_error),
                f(o.elu1_error),
                f(o.output_error),
                o.cost / soft
            );
        }
    }
    println!(
        "wrote {} and {}",
        a.output.join("features.safetensors").display(),
        a.output.join("errors.json").display()
    );
    if student.is_some() {
        println!(
            "wrote {} (the plan with the maps trained here)",
            a.output.join(PLAN_FILE).display()
        );
    }
    Ok(())
}

/// A student run's start: the plan's modes, and its maps on the host.
struct Student {
    layers: Vec<LayerAttention>,
    /// Per layer, (phi_q, phi_k) where the layer has a feature map.
    maps: Vec<Option<(HostFeatureMap, HostFeatureMap)>>,
    feature: FeatureSpec,
}

/// Reads `--student PLAN`: its layers and trained maps (all of one kind and size).
fn student_maps(
    gpu: &Gpu,
    path: &std::path::Path,
    config: &vdit_model::weights::DitConfig,
    precision: Precision,
) -> Result<Student, Box<dyn std::error::Error>> {
    let named = |m: String| format!("--student {}: {m}", path.display());
    let plan = AttentionPlan::load(gpu, path, config, precision.dtype())?;
    let layers = plan.layers().to_vec();
    let mut maps = Vec::new();
    let mut feature: Option<FeatureSpec> = None;
    for (i, l) in layers.iter().enumerate() {
        let Some(w) = plan.features(i) else {
            maps.push(None);
            continue;
        };
        let (q, k) = (host_map(gpu, &w.phi_q)?, host_map(gpu, &w.phi_k)?);
        let spec = spec_of(&q)
            .filter(|s| Some(*s) == spec_of(&k))
            .ok_or_else(|| {
                named(format!(
                    "layer {i} ({l}) has no trained hedgehog or poly maps to start from (plan \
                 from the errors.json of a vdit distill run)"
                ))
            })?;
        if feature.is_some_and(|f| f != spec) {
            return Err(named(format!(
                "layer {i}'s maps are {spec:?}, an earlier layer's {feature:?}: one kind \
                 and size"
            ))
            .into());
        }
        feature = Some(spec);
        maps.push(Some((q, k)));
    }
    let feature = feature.ok_or_else(|| named("converts no layer: nothing to train".into()))?;
    Ok(Student {
        layers,
        maps,
        feature,
    })
}
