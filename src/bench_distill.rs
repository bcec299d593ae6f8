//! `vdit bench distill`: what `vdit distill` costs at full size, measured with random weights
//! (no checkpoint needed): the teacher forward with and without the capture tap, the bytes of
//! a capture, the optimiser steps of one block's pairs on its capture, the buffer pool's peak
//! of each, and the hours of a whole run projected from these figures.

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use vdit_model::dit::{AttentionTap, BlockAttention, ContextCache, DitRunner, Precision, WanDit};
use vdit_model::plan::LayerAttention;
use vdit_model::scheduler::needs_uncond;
use vdit_model::surgery::distill::{CaptureSteps, PairTrainer};
use vdit_model::surgery::measure::{mode_output, relative_l1};
use vdit_model::surgery::phi::{gpu_trainer, FeatureDims};
use vdit_wgpu::attention::{FeatureMap, FeatureMapWeights};
use vdit_wgpu::rng::Rng;
use vdit_wgpu::size::format_size;
use vdit_wgpu::{Gpu, Profiler, Recorder, Tensor};

use crate::bench_dit::{config_arg, parse_latent};
use crate::distill::{parse_modes, FeatureArgs};

type BenchResult<T> = Result<T, Box<dyn std::error::Error>>;

#[derive(Args, Debug, Clone)]
pub struct DistillBenchArgs {
    /// wan2.1-t2v-1.3b, wan2.1-t2v-14b, or a config.json.
    #[arg(long, default_value = "wan2.1-t2v-1.3b")]
    pub config: String,
    /// Random weights (kept explicit so results are never mistaken for a checkpoint's).
    #[arg(long)]
    pub random_weights: bool,
    /// Latent frames, height and width: 21x60x104 is 81 frames at 480x832 (32760 tokens).
    #[arg(long, default_value = "21x60x104")]
    pub latent: String,
    /// Storage precision: f32 (vdit distill's default) or f16.
    #[arg(long, default_value = "f32")]
    pub precision: String,
    /// The modes distilled for every block, as vdit distill's --modes.
    #[arg(long, default_value = "hybrid:2,hybrid:4,linear")]
    pub modes: String,
    /// The feature map trained, as vdit distill's.
    #[command(flatten)]
    pub features: FeatureArgs,
    /// Queries per optimiser step (a strided subset with a random start), as vdit distill's.
    #[arg(long, default_value_t = 4096)]
    pub queries: usize,
    /// AdamW learning rate, as vdit distill's.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f32,
    /// The block whose capture the timed steps train on.
    #[arg(long, default_value_t = 0)]
    pub block: usize,
    /// Timed optimiser steps per mode (after one warm-up step), each waited for.
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    /// Timed teacher forwards with and without the tap (after one profiled warm-up each).
    #[arg(long, default_value_t = 3)]
    pub iters: usize,
    /// Projection: blocks distilled [default: every block of the config].
    #[arg(long)]
    pub blocks: Option<usize>,
    /// Projection: optimiser steps per (block, mode) pair (vdit distill's --steps).
    #[arg(long, default_value_t = 1000)]
    pub steps_per_pair: u64,
    /// Projection: training samples (prompts x seeds).
    #[arg(long, default_value_t = 8)]
    pub samples: u64,
    /// Projection: held-out samples (prompts x seeds), sampled before and after training.
    #[arg(long, default_value_t = 1)]
    pub held_out: u64,
    /// Projection: denoising steps of each sample.
    #[arg(long, default_value_t = 50)]
    pub sampling_steps: usize,
    /// Projection: the denoising steps whose forwards are captured, as vdit distill's
    /// --captures (all, or a comma list of step indices).
    #[arg(long, default_value = "0,16,32,48")]
    pub captures: String,
    /// Projection: classifier-free guidance scale (other than 1: two forwards per step).
    #[arg(long, default_value_t = 5.0)]
    pub guidance: f32,
    #[arg(long)]
    pub json: Option<PathBuf>,
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s.get(s.len() / 2).copied().unwrap_or(f64::NAN)
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// Seconds of `f`.
fn timed<T>(f: impl FnOnce() -> BenchResult<T>) -> BenchResult<(T, f64)> {
    let t = Instant::now();
    let out = f()?;
    Ok((out, t.elapsed().as_secs_f64()))
}

/// One block's self-attention copied out of the forward's scratch.
struct Captured {
    block: usize,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    y: Tensor,
    frame_tokens: usize,
}

impl Captured {
    fn seen(&self) -> BlockAttention<'_> {
        BlockAttention {
            block: self.block,
            q: &self.q,
            k: &self.k,
            v: &self.v,
            output: &self.y,
            mode: LayerAttention::Softmax,
            frame_tokens: self.frame_tokens,
        }
    }

    fn bytes(&self) -> u64 {
        [&self.q, &self.k, &self.v, &self.y]
            .iter()
            .map(|t| t.bytes())
            .sum()
    }
}

/// The capture as `vdit distill` takes it: after every block's attention the recorded work is
/// submitted and waited for (its training reads each step's loss back before the forward goes
/// on). One block's q, k, v and softmax output are also copied out, to train on afterwards.
struct CaptureTap {
    block: usize,
    captured: Option<Captured>,
    /// Times the submissions when given.
    profiler: Option<Profiler>,
}

impl AttentionTap for CaptureTap {
    fn block_attention(
        &mut self,
        rec: &mut Recorder,
        seen: &BlockAttention<'_>,
    ) -> vdit_model::Result<()> {
        let gpu = rec.gpu();
        if seen.block == self.block {
            let like = |t: &Tensor| Tensor::empty(gpu, t.shape(), t.dtype());
            let c = match self.captured.take() {
                Some(c) => c,
                None => Captured {
                    block: seen.block,
                    q: like(seen.q)?,
                    k: like(seen.k)?,
                    v: like(seen.v)?,
                    y: like(seen.output)?,
                    frame_tokens: seen.frame_tokens,
                },
            };
            for (src, dst) in [
                (seen.q, &c.q),
                (seen.k, &c.k),
                (seen.v, &c.v),
                (seen.output, &c.y),
            ] {
                rec.copy(src, dst)?;
            }
            self.captured = Some(c);
        }
        std::mem::replace(rec, Recorder::new(gpu)).submit(self.profiler.as_mut())?;
        Ok(gpu.wait()?)
    }
}

/// The teacher: a random-weight DiT's runner and its inputs.
struct Teacher<'a> {
    gpu: &'a Gpu,
    runner: DitRunner<'a>,
    latent: Tensor,
    cache: ContextCache,
    velocity: Tensor,
}

impl Teacher<'_> {
    /// One forward to completion without a tap; seconds.
    fn plain(&self, profiler: Option<&mut Profiler>) -> BenchResult<f64> {
        let ((), s) = timed(|| {
            let mut rec = Recorder::new(self.gpu);
            let (latent, cache, velocity) = (&self.latent, &self.cache, &self.velocity);
            self.runner
                .forward(&mut rec, latent, 500.0, cache, velocity)?;
            rec.submit(profiler)?;
            Ok(self.gpu.wait()?)
        })?;
        Ok(s)
    }

    /// One forward to completion with the capture tap; seconds.
    fn tapped(&self, tap: &mut CaptureTap) -> BenchResult<f64> {
        let ((), s) = timed(|| {
            let mut rec = Recorder::new(self.gpu);
            let (latent, cache, velocity) = (&self.latent, &self.cache, &self.velocity);
            let t: &mut dyn AttentionTap = &mut *tap;
            self.runner
                .forward_tapped(&mut rec, latent, 500.0, cache, velocity, Some(t))?;
            rec.submit(tap.profiler.as_mut())?;
            Ok(self.gpu.wait()?)
        })?;
        Ok(s)
    }
}

/// What one mode's pair costs on one capture.
struct ModeFigures {
    mode: String,
    /// The pair's prepare (its frozen softmax part), once per captured forward.
    prepare_s: f64,
    step_s: Vec<f64>,
    mean_step_s: f64,
    /// The held-out error over all queries, once per held-out capture and pass.
    error_s: f64,
    /// elu1's held-out error (the output and the relative L1 on the host), before training.
    elu1_s: f64,
    losses: Vec<f32>,
    /// Pool bytes in use that the pair keeps after its steps (its prepared workspace).
    retained_bytes: u64,
    /// The pool's peak while the pair trained and measured (the DiT and capture resident).
    peak_bytes: u64,
}

impl ModeFigures {
    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "mode": self.mode, "prepare_s": self.prepare_s, "step_s": self.step_s,
            "mean_step_s": self.mean_step_s, "error_s": self.error_s, "elu1_s": self.elu1_s,
            "losses": self.losses, "retained_bytes": self.retained_bytes,
            "peak_bytes": self.peak_bytes,
        })
    }
}

/// The stride of vdit distill's query subsets: about `queries` of `n` tokens per step.
fn query_stride(n: usize, queries: usize) -> usize {
    (n / queries.max(1)).max(1)
}

/// Times one pair of `mode` on the capture as `vdit distill`'s tap drives it.
fn measure_mode(
    gpu: &Gpu,
    dims: &FeatureDims,
    mode: LayerAttention,
    seed: u64,
    captured: &Captured,
    y: &[f32],
    a: &DistillBenchArgs,
) -> BenchResult<ModeFigures> {
    gpu.trim_pool();
    gpu.reset_pool_peak();
    let before = gpu.pool_bytes().0;
    let seen = captured.seen();
    let mut trainer = gpu_trainer(gpu, dims, mode, seed)?;
    let mut prepare = || -> BenchResult<()> {
        PairTrainer::prepare(&mut trainer, &seen)?;
        Ok(gpu.wait()?)
    };
    // Each measurement first runs once untimed: pipelines compiled, buffers pooled.
    prepare()?;
    let ((), prepare_s) = timed(prepare)?;
    // The subsets of vdit distill's tap: every stride-th query from a random start.
    let stride = query_stride(captured.q.shape()[0], a.queries);
    let mut rng = Rng::new(seed ^ 0x5EED);
    let mut step = || -> BenchResult<Vec<f32>> {
        let start = (rng.next_u64() % stride as u64) as usize;
        let losses = PairTrainer::steps(&mut trainer, &[(start, stride)])?;
        gpu.wait()?;
        Ok(losses)
    };
    let mut losses = step()?;
    let mut step_s = Vec::new();
    for _ in 0..a.steps {
        let (l, s) = timed(&mut step)?;
        losses.extend(l);
        step_s.push(s);
    }
    if losses.iter().any(|l| !l.is_finite()) {
        return Err(format!(
            "{mode} diverged on block {}: losses {losses:?}",
            captured.block
        )
        .into());
    }
    let retained_bytes = gpu.pool_bytes().0.saturating_sub(before);
    PairTrainer::error(&mut trainer, &seen)?;
    let (_, error_s) = timed(|| Ok(PairTrainer::error(&mut trainer, &seen)?))?;
    let elu1 = FeatureMapWeights {
        phi_q: FeatureMap::Elu1,
        phi_k: FeatureMap::Elu1,
    };
    let elu1_error = || -> BenchResult<f64> {
        let mut rec = Recorder::new(gpu);
        let out = mode_output(&mut rec, &seen, mode, Some(&elu1))?;
        rec.run()?;
        Ok(relative_l1(&out.to_vec_f32(gpu)?, y))
    };
    elu1_error()?;
    let (_, elu1_s) = timed(elu1_error)?;
    Ok(ModeFigures {
        mode: mode.to_string(),
        prepare_s,
        mean_step_s: mean(&step_s),
        step_s,
        error_s,
        elu1_s,
        losses,
        retained_bytes,
        peak_bytes: gpu.pool_peak_bytes(),
    })
}

/// The shape of a `vdit distill` run, as its flags and sampling set it.
struct RunShape {
    /// L: blocks distilled.
    blocks: u64,
    /// N: optimiser steps per (block, mode) pair.
    steps_per_pair: u64,
    /// P: training samples (prompts x seeds).
    samples: u64,
    /// H: held-out samples.
    held_out: u64,
    /// S: denoising steps per sample.
    sampling_steps: u64,
    /// K: the captured ones among them.
    captured_steps: u64,
    /// B: forwards per step (two with classifier-free guidance).
    branches: u64,
}

impl RunShape {
    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "blocks": self.blocks, "steps_per_pair": self.steps_per_pair,
            "samples": self.samples, "held_out": self.held_out,
            "sampling_steps": self.sampling_steps, "captured_steps": self.captured_steps,
            "branches": self.branches,
        })
    }

    /// C: the captured forwards of the training samples, as `run_distill` counts them.
    fn captured_forwards(&self) -> u64 {
        self.samples * self.captured_steps * self.branches
    }
    /// A: the captured forwards that train (a pair's N steps spread over C; none when N < C).
    fn training_captures(&self) -> u64 {
        self.captured_forwards().min(self.steps_per_pair)
    }
    /// E: the captured forwards of one pass over the held-out samples.
    fn held_out_captures(&self) -> u64 {
        self.held_out * self.captured_steps * self.branches
    }
}

const TRAIN_FORMULA: &str = "(P S B - A) f + A f_tap + L sum_m (A prepare_m + N step_m)";
const HELD_OUT_FORMULA: &str =
    "2 ((H S B - E) f + E f_tap) + E L (y_read + sum_m (2 error_m + elu1_m))";

/// Seconds of the training and of the two held-out passes (before and after).
fn project(r: &RunShape, f: f64, f_tap: f64, y_read: f64, modes: &[ModeFigures]) -> (f64, f64) {
    let (l, n, a) = (
        r.blocks as f64,
        r.steps_per_pair as f64,
        r.training_captures() as f64,
    );
    let sampled = |samples: u64| (samples * r.sampling_steps * r.branches) as f64;
    let pairs: f64 = modes
        .iter()
        .map(|m| a * m.prepare_s + n * m.mean_step_s)
        .sum();
    let train = (sampled(r.samples) - a) * f + a * f_tap + l * pairs;
    let e = r.held_out_captures() as f64;
    let errors: f64 = modes.iter().map(|m| 2.0 * m.error_s + m.elu1_s).sum();
    let held_out = 2.0 * ((sampled(r.held_out) - e) * f + e * f_tap) + e * l * (y_read + errors);
    (train, held_out)
}

fn check_args(a: &DistillBenchArgs, layers: usize) -> BenchResult<()> {
    if !a.random_weights {
        return Err(
            "vdit bench distill needs --random-weights (real runs: vdit distill itself)".into(),
        );
    }
    for (flag, v) in [
        ("--steps", a.steps as u64),
        ("--iters", a.iters as u64),
        ("--queries", a.queries as u64),
        ("--steps-per-pair", a.steps_per_pair),
        ("--samples", a.samples),
        ("--held-out", a.held_out),
        ("--sampling-steps", a.sampling_steps as u64),
    ] {
        if v == 0 {
            return Err(format!("{flag} must be at least 1").into());
        }
    }
    if a.block >= layers {
        return Err(format!(
            "--block {}: the model has blocks 0..{}",
            a.block,
            layers - 1
        )
        .into());
    }
    if a.blocks.is_some_and(|b| b == 0 || b > layers) {
        return Err(format!("--blocks must be 1..={layers}").into());
    }
    if !(a.lr.is_finite() && a.lr > 0.0) {
        return Err(format!("--lr {} must be positive", a.lr).into());
    }
    if !a.guidance.is_finite() {
        return Err(format!("--guidance {} must be finite", a.guidance).into());
    }
    Ok(())
}

pub fn run(gpu: &Gpu, a: &DistillBenchArgs) -> BenchResult<()> {
    let c = config_arg(&a.config)?;
    check_args(a, c.layers)?;
    let modes = parse_modes(&a.modes)?;
    let feature = a.features.spec(c.head_dim)?;
    let df = feature.df(c.head_dim);
    let precision = Precision::parse(&a.precision)
        .ok_or_else(|| format!("--precision must be f32 or f16, not '{}'", a.precision))?;
    let captures = CaptureSteps::parse(&a.captures).ok_or_else(|| {
        format!(
            "--captures: '{}' is neither 'all' nor a comma list of steps",
            a.captures
        )
    })?;
    let shape = RunShape {
        blocks: a.blocks.unwrap_or(c.layers) as u64,
        steps_per_pair: a.steps_per_pair,
        samples: a.samples,
        held_out: a.held_out,
        sampling_steps: a.sampling_steps as u64,
        captured_steps: captures.count(a.sampling_steps) as u64,
        branches: 1 + needs_uncond(a.guidance) as u64,
    };
    if shape.captured_steps == 0 {
        return Err(format!(
            "--captures {} selects none of the {} denoising steps",
            a.captures, a.sampling_steps
        )
        .into());
    }
    let [f, h, w] = parse_latent(&a.latent)?;

    println!("device: {}", gpu.describe());
    let (dit, build_s) = timed(|| {
        let dit = WanDit::random(gpu, c.clone(), precision, 1)?;
        gpu.wait()?;
        Ok(dit)
    })?;
    println!("weights: {build_s:.1} s to build and upload");
    let latent_shape = [c.in_channels, f, h, w];
    let runner = dit.runner(gpu, latent_shape)?;
    let mut rng = Rng::new(3);
    let numel: usize = latent_shape.iter().product();
    let latent = Tensor::from_f32(
        gpu,
        &latent_shape,
        &rng.vec_normal(numel, 1.0),
        vdit_wgpu::DType::F32,
    )?;
    let context = Tensor::from_f32(
        gpu,
        &[c.text_len, c.text_dim],
        &rng.vec_normal(c.text_len * c.text_dim, 0.2),
        vdit_wgpu::DType::F32,
    )?;
    let velocity = Tensor::empty(gpu, &[c.out_channels, f, h, w], vdit_wgpu::DType::F32)?;
    let mut rec = Recorder::new(gpu);
    let cache = dit.prepare_context(&mut rec, &context)?;
    rec.run()?;
    let teacher = Teacher {
        gpu,
        runner,
        latent,
        cache,
        velocity,
    };
    let tokens = teacher.runner.tokens();
    println!(
        "config {}: {} blocks, {} heads of {}; latent {f}x{h}x{w} = {tokens} tokens; \
         {precision:?}",
        a.config, c.layers, c.heads, c.head_dim
    );
    println!();

    // 1. The teacher forward, plain and with the capture tap. The profiled forward of each
    // comes first, as its warm-up: the kernel times leave out the pipelines' compilation.
    // Each figure is printed as it comes: a full-size run takes minutes.
    println!(
        "{:<34} {:>12} {:>16}",
        "teacher forward",
        format!("wall s (med {})", a.iters),
        "kernel sum s"
    );
    let mut profiler = Profiler::new(gpu);
    teacher.plain(Some(&mut profiler))?;
    let plain_kernel_ms = profiler.total_ms();
    let plain_s: Vec<f64> = (0..a.iters)
        .map(|_| teacher.plain(None))
        .collect::<BenchResult<_>>()?;
    let f_plain = median(&plain_s);
    println!(
        "{:<34} {f_plain:>12.3} {:>16.3}",
        "  without the tap",
        plain_kernel_ms / 1e3
    );
    gpu.reset_pool_peak();
    let mut tap = CaptureTap {
        block: a.block,
        captured: None,
        profiler: Some(Profiler::new(gpu)),
    };
    teacher.tapped(&mut tap)?;
    let capture_peak = gpu.pool_peak_bytes();
    let tap_kernel_ms = tap.profiler.take().map_or(f64::NAN, |p| p.total_ms());
    let tap_s: Vec<f64> = (0..a.iters)
        .map(|_| teacher.tapped(&mut tap))
        .collect::<BenchResult<_>>()?;
    let captured = tap.captured.take().ok_or("the tap saw no block")?;
    let f_tap = median(&tap_s);
    let block_bytes = captured.bytes();
    let clock = format!("{:?}", profiler.clock());
    println!(
        "{:<34} {f_tap:>12.3} {:>16.3}",
        "  with the capture tap",
        tap_kernel_ms / 1e3
    );
    println!(
        "{:<34} {:>12.3}   (kernel times: {clock})",
        "  tap overhead",
        f_tap - f_plain
    );
    println!(
        "one capture (q, k, v, y; one timestep, one guidance branch): {} per block, \
         {} for all {} blocks",
        format_size(block_bytes),
        format_size(block_bytes * c.layers as u64),
        c.layers
    );
    println!(
        "pool peak during the capture forward: {}",
        format_size(capture_peak)
    );
    println!();

    // 2. The pairs of one block on its capture.
    let (y, y_read_s) = timed(|| Ok(captured.y.to_vec_f32(gpu)?))?;
    let dims = FeatureDims {
        heads: c.heads,
        head_dim: c.head_dim,
        feature,
        lr: a.lr,
        frame_tokens: captured.frame_tokens,
    };
    let stride = query_stride(tokens, a.queries);
    println!(
        "training block {} at N = {tokens} ({} tokens per frame): {} maps of {df} features, {} \
         queries per step (stride {stride} from a random start; --queries {}), lr {}",
        a.block,
        captured.frame_tokens,
        feature.name(),
        tokens.div_ceil(stride),
        a.queries,
        a.lr
    );
    println!(
        "{:<12} {:>10} {:>10} {:>10} {:>10} {:>12} {:>12} {:>10}",
        "mode", "prepare s", "s/step", "error s", "elu1 s", "retained", "peak", "loss"
    );
    let mut figures = Vec::new();
    for (i, &mode) in modes.iter().enumerate() {
        let seed = (a.block * 131 + i) as u64;
        let m = measure_mode(gpu, &dims, mode, seed, &captured, &y, a)?;
        println!(
            "{:<12} {:>10.4} {:>10.4} {:>10.4} {:>10.4} {:>12} {:>12} {:>10.4}",
            m.mode,
            m.prepare_s,
            m.mean_step_s,
            m.error_s,
            m.elu1_s,
            format_size(m.retained_bytes),
            format_size(m.peak_bytes),
            m.losses.last().copied().unwrap_or(f32::NAN)
        );
        figures.push(m);
    }
    println!(
        "s/step: mean of {} steps, each waited for; y read back to the host: {y_read_s:.4} s",
        a.steps
    );
    println!();

    // 3. The projection.
    let (train_s, held_out_s) = project(&shape, f_plain, f_tap, y_read_s, &figures);
    let hours = (train_s + held_out_s) / 3600.0;
    // vdit distill trains one pair at a time on a block's capture and each pair releases its
    // workspace after its steps, so the peak is the larger of the capture forward's and the
    // costliest pair's.
    let projected_peak = figures
        .iter()
        .map(|m| m.peak_bytes)
        .fold(capture_peak, u64::max);
    println!("projection: vdit distill on real weights");
    println!(
        "  L = {} blocks, modes {}, N = {} steps per pair; P = {} training and H = {} held-out \
         samples, S = {} denoising steps, K = {} captured ({}), B = {} branches",
        shape.blocks,
        a.modes,
        shape.steps_per_pair,
        shape.samples,
        shape.held_out,
        shape.sampling_steps,
        shape.captured_steps,
        a.captures,
        shape.branches
    );
    println!(
        "  C = P K B = {} captured forwards, A = min(C, N) = {} of them train, E = H K B = {} \
         held-out captures; f = {f_plain:.3} s, f_tap = {f_tap:.3} s",
        shape.captured_forwards(),
        shape.training_captures(),
        shape.held_out_captures()
    );
    println!("  train    = {TRAIN_FORMULA} = {train_s:.1} s");
    println!("  held-out = {HELD_OUT_FORMULA} = {held_out_s:.1} s");
    println!("  hours    = (train + held-out) / 3600 = {hours:.3} h");
    println!(
        "  not counted: loading the DiT and encoding the prompts of each of the P + 2H samples"
    );
    println!(
        "  GPU memory: pairs train one at a time and release their workspace after their \
         steps, so the peak is about max(capture peak, peak_m) = {}",
        format_size(projected_peak)
    );

    if let Some(path) = &a.json {
        let json = serde_json::json!({
            "device": gpu.describe(), "config": a.config, "latent": latent_shape,
            "tokens": tokens, "frame_tokens": captured.frame_tokens,
            "precision": format!("{precision:?}"), "block": a.block, "build_s": build_s,
            "forward": {
                "plain_s": plain_s, "plain_median_s": f_plain,
                "tap_s": tap_s, "tap_median_s": f_tap,
                "plain_kernel_ms": plain_kernel_ms, "tap_kernel_ms": tap_kernel_ms,
                "clock": clock,
            },
            "capture": {
                "block_bytes": block_bytes,
                "all_blocks_bytes": block_bytes * c.layers as u64,
                "peak_bytes": capture_peak,
            },
            "training": {
                "feature_map": feature.name(), "feature_dim": df, "powers": feature.powers(), "lr": a.lr,
                "queries": a.queries, "query_stride": stride,
                "queries_per_step": tokens.div_ceil(stride),
                "y_read_s": y_read_s, "modes": figures.iter().map(ModeFigures::json).collect::<Vec<_>>(),
            },
            "projection": {
                "shape": shape.json(), "modes": a.modes, "captures": a.captures,
                "captured_forwards": shape.captured_forwards(),
                "training_captures": shape.training_captures(),
                "held_out_captures": shape.held_out_captures(),
                "train_formula": TRAIN_FORMULA, "held_out_formula": HELD_OUT_FORMULA,
                "hours_formula": "(train + held-out) / 3600",
                "train_s": train_s, "held_out_s": held_out_s, "hours": hours,
                "peak_bytes": projected_peak,
            },
        });
        std::fs::write(path, serde_json::to_string_pretty(&json)?)
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    Ok(())
}
