//! `vdit bench generate`: the denoising loop and the VAE decode of a whole generation, with
//! random full-size weights (no checkpoint needed): seconds per step, decode time, and the GPU
//! memory each stage held. The prompt contexts are random embeddings: the text encoder runs
//! before the DiT and is freed, so it does not change the peak.

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use vdit_model::dit::WanDit;
use vdit_model::pipeline::{denoise, CancelToken, GenerateRequest, Progress, Prompt, Stage};
use vdit_model::tensor_file::HostTensor;
use vdit_model::vae::{DecodeOptions, LatentScale, VaeTiling, WanVae};
use vdit_wgpu::rng::Rng;
use vdit_wgpu::{DType, Gpu, Recorder, Tensor};

use crate::bench_dit::config_arg;
use crate::dit_forward::precision_arg;
use crate::vae_decode::VAE_TILE_HELP;

#[derive(Args, Debug, Clone)]
pub struct GenerateBenchArgs {
    /// wan2.1-t2v-1.3b, wan2.1-t2v-14b, or a config.json.
    #[arg(long, default_value = "wan2.1-t2v-1.3b")]
    pub config: String,
    /// The VAE: wan2.1 (the published sizes) or a diffusers VAE config.json.
    #[arg(long, default_value = "wan2.1")]
    pub vae_config: String,
    /// Random weights (kept explicit so results are never mistaken for a checkpoint's).
    #[arg(long)]
    pub random_weights: bool,
    #[arg(long, default_value_t = 832)]
    pub width: usize,
    #[arg(long, default_value_t = 480)]
    pub height: usize,
    #[arg(long, default_value_t = 81)]
    pub frames: usize,
    /// Denoising steps to run (the time per step is what a 50-step run multiplies).
    #[arg(long, default_value_t = 50)]
    pub steps: usize,
    #[arg(long, default_value_t = 5.0)]
    pub guidance: f32,
    #[arg(long)]
    pub precision: Option<String>,
    #[arg(long, value_name = "SIZE[,OVERLAP]", help = VAE_TILE_HELP)]
    pub vae_tile: Option<VaeTiling>,
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Records the wall-clock time of each finished denoising step.
struct StepClock {
    last: Instant,
    steps_ms: Vec<f64>,
}

impl Progress for StepClock {
    fn begin(&mut self, _stage: Stage, _total: usize) {
        self.last = Instant::now();
    }
    fn advance(&mut self, _stage: Stage, done: usize) {
        let ms = self.last.elapsed().as_secs_f64() * 1e3;
        self.last = Instant::now();
        self.steps_ms.push(ms);
        println!("step {done}: {ms:.0} ms");
    }
}

fn gib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}

pub fn run(gpu: &Gpu, a: &GenerateBenchArgs) -> Result<(), Box<dyn std::error::Error>> {
    if !a.random_weights {
        return Err(
            "vdit bench generate needs --random-weights (real checkpoints: vdit generate)".into(),
        );
    }
    let c = config_arg(&a.config)?;
    let precision = precision_arg(gpu, a.precision.as_deref())?;
    let mut request = GenerateRequest::new(Prompt::Embeddings(HostTensor {
        shape: vec![1, c.text_dim],
        data: vec![0.0; c.text_dim],
    }));
    request.width = a.width;
    request.height = a.height;
    request.frames = a.frames;
    request.steps = a.steps;
    request.guidance = a.guidance;
    request.validate()?;
    println!("device: {}", gpu.describe());

    // Denoising, with the DiT and its activations resident.
    gpu.reset_pool_peak();
    let dit = WanDit::random(gpu, c.clone(), precision, 1)?;
    let shape = request.latent_shape(c.in_channels);
    let runner = dit.runner(gpu, shape)?;
    let mut rng = Rng::new(11);
    let mut caches = Vec::new();
    for _ in 0..2 {
        let ctx = rng.vec_normal(c.text_len * c.text_dim, 0.2);
        let ctx = Tensor::from_f32(gpu, &[c.text_len, c.text_dim], &ctx, DType::F32)?;
        let mut rec = Recorder::new(gpu);
        caches.push(dit.prepare_context(&mut rec, &ctx)?);
        rec.run()?;
    }
    let numel: usize = shape.iter().product();
    let latent = Tensor::from_f32(gpu, &shape, &rng.vec_normal(numel, 1.0), DType::F32)?;
    gpu.wait()?;
    let mut clock = StepClock {
        last: Instant::now(),
        steps_ms: Vec::new(),
    };
    denoise(
        gpu,
        &runner,
        &caches,
        &latent,
        &request,
        &mut clock,
        &CancelToken::default(),
    )?;
    let dit_peak = gpu.pool_peak_bytes();
    drop(runner);
    drop(caches);
    drop(dit);
    gpu.trim_pool();
    gpu.reset_pool_peak();

    // Decoding.
    let vae = WanVae::random(
        gpu,
        crate::bench_vae::config_arg(&a.vae_config)?,
        precision,
        1,
    )?;
    gpu.wait()?;
    let t = Instant::now();
    let frames = vae.decode_with(
        gpu,
        &latent,
        DecodeOptions {
            scale: LatentScale::Normalized,
            tiling: a.vae_tile,
            profiler: None,
        },
    )?;
    gpu.wait()?;
    let decode_ms = t.elapsed().as_secs_f64() * 1e3;
    let vae_peak = gpu.pool_peak_bytes();
    drop(frames);

    // The first step also compiles the pipelines: the rate comes from the others where there are.
    let steady: Vec<f64> = clock.steps_ms.iter().skip(1).copied().collect();
    let per_step = if steady.is_empty() {
        clock.steps_ms.first().copied().unwrap_or(f64::NAN)
    } else {
        steady.iter().sum::<f64>() / steady.len() as f64
    };
    let projected_s = (50.0 * per_step + decode_ms) / 1e3;
    println!(
        "{}x{}, {} frames, {} steps, guidance {}: {per_step:.0} ms per step, decode {decode_ms:.0} ms",
        a.width, a.height, a.frames, a.steps, a.guidance
    );
    println!("50 steps + decode at this rate: {projected_s:.0} s");
    println!(
        "GPU memory held by tensors at peak: DiT stage {:.2} GiB, VAE stage {:.2} GiB",
        gib(dit_peak),
        gib(vae_peak)
    );
    if let Some(path) = &a.json {
        let json = serde_json::json!({
            "device": gpu.describe(), "config": a.config, "width": a.width, "height": a.height,
            "frames": a.frames, "steps": a.steps, "guidance": a.guidance,
            "precision": format!("{precision:?}"), "steps_ms": clock.steps_ms, "step_ms": per_step,
            "decode_ms": decode_ms, "projected_50_steps_s": projected_s,
            "dit_peak_gib": gib(dit_peak), "vae_peak_gib": gib(vae_peak),
        });
        std::fs::write(path, serde_json::to_string_pretty(&json)?)
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    Ok(())
}
