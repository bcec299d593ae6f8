//! What a generation is asked to make, checked before any work starts.

use crate::dit::LoadOptions;
use crate::error::{input_err, Result};
use crate::lora::LoraSpec;
use crate::scheduler::SamplerKind;
use crate::tensor_file::HostTensor;

/// A prompt as text (encoded by the text encoder) or as precomputed embeddings [L, text_dim].
#[derive(Clone, Debug)]
pub enum Prompt {
    Text(String),
    Embeddings(HostTensor),
}

/// Sampling settings published with a model variant, chosen with one flag (`--preset`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preset {
    /// The 4-step distilled Wan2.1 models and LoRAs (lightx2v's step- and CFG-distilled
    /// "Lightning" LoRAs): 4 steps of flow Euler at timesteps 1000, 750, 500, 250 with shift 5,
    /// guidance 1 (no unconditional pass), as lightx2v's `wan_t2v_distill_4step_cfg` configs run
    /// them.
    Lightx2v4Step,
}

impl Preset {
    pub const NAMES: &'static str = "lightx2v-4step";

    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "lightx2v-4step" => Ok(Preset::Lightx2v4Step),
            _ => Err(input_err(
                "--preset",
                format!("no preset '{name}' (presets: {})", Self::NAMES),
            )),
        }
    }

    pub fn steps(self) -> usize {
        4
    }
    pub fn guidance(self) -> f32 {
        1.0
    }
    pub fn flow_shift(self) -> f32 {
        5.0
    }
    pub fn sampler(self) -> SamplerKind {
        SamplerKind::StepDistill
    }

    /// Sets the request's steps, guidance, shift and sampler.
    pub fn apply(self, request: &mut GenerateRequest) {
        request.steps = self.steps();
        request.guidance = self.guidance();
        request.flow_shift = self.flow_shift();
        request.sampler = self.sampler();
    }
}

impl std::str::FromStr for Preset {
    type Err = crate::error::ModelError;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

/// One text-to-video generation.
#[derive(Clone, Debug)]
pub struct GenerateRequest {
    pub prompt: Prompt,
    /// `None`: the empty prompt (only encoded when guidance > 1).
    pub negative_prompt: Option<Prompt>,
    pub width: usize,
    pub height: usize,
    /// 4k + 1 frames.
    pub frames: usize,
    pub steps: usize,
    /// Classifier-free guidance scale; 1.0 skips the unconditional pass.
    pub guidance: f32,
    pub flow_shift: f32,
    pub sampler: SamplerKind,
    pub seed: u64,
    /// Merged into the DiT's weights, in order, when it loads.
    pub loras: Vec<LoraSpec>,
    /// Keep the DiT's blocks in host memory, two on the GPU at a time (see
    /// [`crate::dit::LoadOptions::offload`]).
    pub offload: bool,
    /// Hold the DiT's Linear weights quantised on the GPU, Q8_0 or Q4_K (see
    /// [`crate::dit::LoadOptions::quantize`]).
    pub quantize: Option<crate::dit::Quantize>,
    /// Expand a GGUF file's Q8_0 and Q4_K weights to f16 at load (faster matmuls, more memory;
    /// see [`crate::dit::LoadOptions::expand_quantized`]).
    pub expand_quantized: bool,
}

impl GenerateRequest {
    /// Wan2.1's defaults (480x832, 81 frames, 50 steps, guidance 5, shift 3, UniPC).
    pub fn new(prompt: Prompt) -> Self {
        Self {
            prompt,
            negative_prompt: None,
            width: 832,
            height: 480,
            frames: 81,
            steps: 50,
            guidance: 5.0,
            flow_shift: 3.0,
            sampler: SamplerKind::UniPc,
            seed: 0,
            loras: Vec::new(),
            offload: false,
            quantize: None,
            expand_quantized: false,
        }
    }

    /// How the DiT's weights load for this request: its LoRAs, offload and quantisation.
    pub fn dit_load_options(&self) -> LoadOptions {
        LoadOptions {
            loras: self.loras.clone(),
            offload: self.offload,
            quantize: self.quantize,
            expand_quantized: self.expand_quantized,
        }
    }

    /// Checks sizes and settings, naming the offending flag.
    pub fn validate(&self) -> Result<()> {
        for (flag, v) in [("--width", self.width), ("--height", self.height)] {
            if v == 0 || v % 16 != 0 {
                return Err(input_err(
                    flag,
                    format!(
                        "{v} must be a positive multiple of 16 (the VAE's 8x and the patch's 2x)"
                    ),
                ));
            }
        }
        if self.frames == 0 || (self.frames - 1) % 4 != 0 {
            let below = self.frames.saturating_sub(1) / 4 * 4 + 1;
            return Err(input_err(
                "--frames",
                format!(
                    "{} must be 4k + 1 (for example {below} or {})",
                    self.frames,
                    below + 4
                ),
            ));
        }
        if self.steps == 0 {
            return Err(input_err("--steps", "must be at least 1"));
        }
        if !(self.guidance.is_finite() && self.guidance >= 1.0) {
            return Err(input_err(
                "--guidance",
                format!("{} must be a number >= 1", self.guidance),
            ));
        }
        if !(self.flow_shift.is_finite() && self.flow_shift > 0.0) {
            return Err(input_err(
                "--flow-shift",
                format!("{} must be positive", self.flow_shift),
            ));
        }
        Ok(())
    }

    /// The latent shape [16, F, H/8, W/8] for `channels` latent channels.
    pub fn latent_shape(&self, channels: usize) -> [usize; 4] {
        [
            channels,
            (self.frames - 1) / 4 + 1,
            self.height / 8,
            self.width / 8,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_checked_with_the_flag_named() {
        let ok = GenerateRequest::new(Prompt::Text("a fox".into()));
        ok.validate().unwrap();
        assert_eq!(ok.latent_shape(16), [16, 21, 60, 104]);
        let mut r = ok.clone();
        r.width = 830;
        assert!(r.validate().unwrap_err().to_string().contains("--width"));
        let mut r = ok.clone();
        r.frames = 80;
        let e = r.validate().unwrap_err().to_string();
        assert!(
            e.contains("--frames") && e.contains("77") && e.contains("81"),
            "{e}"
        );
        let mut r = ok;
        r.guidance = 0.5;
        assert!(r.validate().unwrap_err().to_string().contains("--guidance"));
    }

    #[test]
    fn the_request_says_how_the_dit_loads() {
        let mut r = GenerateRequest::new(Prompt::Text("a fox".into()));
        let plain = r.dit_load_options();
        assert!(!plain.offload && plain.quantize.is_none() && plain.loras.is_empty());
        r.offload = true;
        r.quantize = Some(crate::dit::Quantize::Q4_K);
        r.loras = vec![LoraSpec::new("style.safetensors", 0.5)];
        let o = r.dit_load_options();
        assert!(o.offload && !o.expand_quantized);
        assert_eq!(o.quantize, Some(crate::dit::Quantize::Q4_K));
        r.expand_quantized = true;
        assert!(r.dit_load_options().expand_quantized);
        assert_eq!(o.loras.len(), 1);
        assert_eq!(o.loras[0].strength, 0.5);
    }
}
