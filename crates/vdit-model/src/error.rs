//! The error type of the model crate.

use thiserror::Error;
use vdit_wgpu::GpuError;

use crate::weights::WeightError;

#[derive(Debug, Error)]
pub enum ModelError {
    #[error(transparent)]
    Weights(#[from] WeightError),
    #[error(transparent)]
    Gpu(#[from] GpuError),
    /// A user-supplied input (latent, context, timestep, size) that the model cannot take.
    #[error("{what}: {message}")]
    Input { what: String, message: String },
    /// An attention plan that is malformed or does not fit the model.
    #[error("attention plan {path}: {message}")]
    Plan { path: String, message: String },
    /// The GPU ran out of memory (or out of `--max-gpu-memory`) in one part of the model.
    #[error("{detail}, in the {part}; {}", .part.advice())]
    OutOfMemory { part: ModelPart, detail: String },
    /// A LoRA file that cannot be merged into this model.
    #[error("LoRA {path}: {message}")]
    Lora { path: String, message: String },
    #[error("cancelled")]
    Cancelled,
    /// Writing the video file failed (the file is then not left behind).
    #[error(transparent)]
    Video(#[from] crate::video::VideoError),
}

/// The parts of a generation, each of which needs its own memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelPart {
    TextEncoder,
    Dit,
    Vae,
}

impl std::fmt::Display for ModelPart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ModelPart::TextEncoder => "text encoder",
            ModelPart::Dit => "DiT",
            ModelPart::Vae => "VAE",
        })
    }
}

impl ModelPart {
    /// What lowers this part's memory.
    pub fn advice(self) -> &'static str {
        match self {
            ModelPart::TextEncoder => {
                "it already streams one layer at a time: give it more memory (--max-gpu-memory, \
                 or close what else uses the GPU), or encode the prompt elsewhere and pass \
                 --prompt-embeds"
            }
            ModelPart::Dit => {
                "try a smaller --width/--height or fewer --frames, --precision f16 where it runs \
                 in f32, an --attention-plan with linear or rehyat layers, or more memory \
                 (--max-gpu-memory, or close what else uses the GPU)"
            }
            ModelPart::Vae => {
                "decode in tiles (--vae-tile 32,8; a smaller SIZE needs less), try a smaller \
                 --width/--height or fewer --frames, or give it more memory (--max-gpu-memory)"
            }
        }
    }
}

impl ModelError {
    /// Names the model part an out-of-memory error happened in, with what would help;
    /// every other error passes unchanged.
    pub fn in_part(self, part: ModelPart) -> Self {
        let oom = |e: &GpuError| matches!(e, GpuError::OutOfMemory { .. });
        match &self {
            ModelError::Gpu(e) if oom(e) => ModelError::OutOfMemory {
                part,
                detail: self.to_string(),
            },
            ModelError::Weights(WeightError::Gpu { source, .. }) if oom(source) => {
                ModelError::OutOfMemory {
                    part,
                    detail: self.to_string(),
                }
            }
            _ => self,
        }
    }
}

pub type Result<T, E = ModelError> = std::result::Result<T, E>;

pub(crate) fn input_err(what: impl Into<String>, message: impl Into<String>) -> ModelError {
    ModelError::Input {
        what: what.into(),
        message: message.into(),
    }
}
