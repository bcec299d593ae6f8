//! The flags `vdit distill` and `vdit compare` share: the model, the prompts and how each is
//! sampled.

use std::path::{Path, PathBuf};

use clap::Args;
use vdit_model::pipeline::{GenerateRequest, ModelPaths, Prompt, SamplerKind};

#[derive(Args, Debug, Clone)]
pub struct SamplingArgs {
    /// A diffusers Wan folder or the original Wan2.1 folder [default: the embedded default model].
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Seeds, comma-separated: each prompt is sampled once per seed.
    #[arg(long, default_value = "0", value_delimiter = ',')]
    pub seeds: Vec<u64>,
    /// Width in pixels [default: the model's own, else 832].
    #[arg(long)]
    pub width: Option<usize>,
    /// Height in pixels [default: the model's own, else 480].
    #[arg(long)]
    pub height: Option<usize>,
    /// Frames, 4k + 1 [default: the model's own, else 81].
    #[arg(long)]
    pub frames: Option<usize>,
    /// Denoising steps of each sample [default: the model's own, else 50].
    #[arg(long)]
    pub sampling_steps: Option<usize>,
    /// Classifier-free guidance scale [default: the model's own, else 5.0].
    #[arg(long)]
    pub guidance: Option<f32>,
    #[arg(long, default_value = "unipc")]
    pub sampler: SamplerKind,
    /// Storage precision: f32 (default) or f16.
    #[arg(long, default_value = "f32")]
    pub precision: String,
}

impl SamplingArgs {
    pub fn paths(&self) -> Result<ModelPaths, Box<dyn std::error::Error>> {
        Ok(match &self.model {
            Some(m) => ModelPaths::resolve(m)?,
            None => ModelPaths::embedded_default()?,
        })
    }

    /// One request per (prompt, seed), prompt-major, checked.
    pub fn requests(
        &self,
        paths: &ModelPaths,
        prompts: &[String],
    ) -> Result<Vec<GenerateRequest>, Box<dyn std::error::Error>> {
        let d = paths.defaults.clone().unwrap_or_default();
        let mut out = Vec::new();
        for p in prompts {
            for &seed in &self.seeds {
                let mut r = GenerateRequest::new(Prompt::Text(p.clone()));
                r.width = self.width.or(d.width).unwrap_or(832);
                r.height = self.height.or(d.height).unwrap_or(480);
                r.frames = self.frames.or(d.frames).unwrap_or(81);
                r.steps = self.sampling_steps.or(d.steps).unwrap_or(50);
                r.guidance = self.guidance.or(d.guidance).unwrap_or(5.0);
                r.flow_shift = d.flow_shift.unwrap_or(3.0);
                r.sampler = self.sampler;
                r.seed = seed;
                r.validate()
                    .map_err(|e| e.to_string().replace("--steps", "--sampling-steps"))?;
                out.push(r);
            }
        }
        Ok(out)
    }
}

/// The prompts of a text file: one per line, blank lines and lines starting with # skipped.
pub fn read_prompts(path: &Path, flag: &str) -> Result<Vec<String>, Box<dyn std::error::Error>> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("{flag} {}: {e}", path.display()))?;
    let prompts: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect();
    if prompts.is_empty() {
        return Err(format!("{flag} {}: no prompts (one per line)", path.display()).into());
    }
    Ok(prompts)
}
