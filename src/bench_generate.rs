//! `vdit bench generate`: a whole generation through the library's `Pipeline` with random
//! full-size DiT and VAE weights (no checkpoint needed): seconds per denoising step, decode time,
//! and the GPU memory each stage held. The prompt contexts are random embeddings: the text
//! encoder runs before the DiT and is freed, so it does not change the peak.

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use vdit_model::pipeline::{
    CancelToken, GenerateRequest, ModelPaths, Pipeline, Progress, Prompt, Stage,
};
use vdit_model::tensor_file::HostTensor;
use vdit_model::vae::VaeTiling;
use vdit_model::weights::DitConfig;
use vdit_wgpu::rng::Rng;
use vdit_wgpu::Gpu;

use crate::bench_dit::config_arg;
use crate::bench_vae::RgbaFrame;
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

/// Records the wall-clock time of each finished denoising step and of the decode.
struct StageClock {
    last: Instant,
    steps_ms: Vec<f64>,
    decode_ms: f64,
}

impl Progress for StageClock {
    fn begin(&mut self, _stage: Stage, _total: usize) {
        self.last = Instant::now();
    }
    fn advance(&mut self, stage: Stage, done: usize) {
        if stage == Stage::Denoising {
            let ms = self.last.elapsed().as_secs_f64() * 1e3;
            self.last = Instant::now();
            self.steps_ms.push(ms);
            println!("step {done}: {ms:.0} ms");
        }
    }
    fn end(&mut self, stage: Stage) {
        if stage == Stage::Decoding {
            self.decode_ms = self.last.elapsed().as_secs_f64() * 1e3;
        }
    }
}

fn gib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}

/// Random prompt contexts [text_len, text_dim], as a text encoder would hand them over.
fn random_context(c: &DitConfig, rng: &mut Rng) -> Prompt {
    Prompt::Embeddings(HostTensor {
        shape: vec![c.text_len, c.text_dim],
        data: rng.vec_normal(c.text_len * c.text_dim, 0.2),
    })
}

pub fn run(gpu: &Gpu, a: &GenerateBenchArgs) -> Result<(), Box<dyn std::error::Error>> {
    if !a.random_weights {
        return Err(
            "vdit bench generate needs --random-weights (real checkpoints: vdit generate)".into(),
        );
    }
    let c = config_arg(&a.config)?;
    let precision = precision_arg(gpu, a.precision.as_deref())?;
    let mut rng = Rng::new(11);
    let mut request = GenerateRequest::new(random_context(&c, &mut rng));
    request.negative_prompt = Some(random_context(&c, &mut rng));
    request.width = a.width;
    request.height = a.height;
    request.frames = a.frames;
    request.steps = a.steps;
    request.guidance = a.guidance;
    request.validate()?;
    println!("device: {}", gpu.describe());

    // The library's own pipeline, its DiT and VAE random: loaded, run and freed stage by stage.
    let mut pipeline = Pipeline::new(gpu, ModelPaths::default(), precision)
        .with_random_dit(c.clone(), 1)
        .with_random_vae(crate::bench_vae::config_arg(&a.vae_config)?, 1);
    if let Some(tiling) = a.vae_tile {
        pipeline = pipeline.with_vae_tiling(tiling);
    }
    let mut clock = StageClock {
        last: Instant::now(),
        steps_ms: Vec::new(),
        decode_ms: f64::NAN,
    };
    let cancel = CancelToken::default();
    gpu.reset_pool_peak();
    let latent = pipeline.sample(&request, &mut clock, &cancel, None)?;
    let dit_peak = gpu.pool_peak_bytes();
    gpu.reset_pool_peak();
    // Decoded as `vdit generate` writes a video: frames converted to RGBA8 on the GPU as each
    // latent frame gives them (the downloads and the encoder left out).
    let rgba = RgbaFrame::new(gpu, a.height, a.width)?;
    pipeline.decode_each(&latent, &mut clock, &cancel, &mut |frames, count| {
        Ok(rgba.convert(gpu, frames, count)?)
    })?;
    let vae_peak = gpu.pool_peak_bytes();
    let decode_ms = clock.decode_ms;

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
