//! vdit-model: Wan2.1 text-to-video on vdit-wgpu.
//!
//! - [`weights`]: safetensors checkpoints in the original, diffusers and ComfyUI layouts.
//! - [`dit`]: the diffusion transformer.
//! - [`lora`]: LoRAs and full-delta patches merged into the DiT's weights as they load.
//! - [`plan`]: the per-layer attention plan (softmax, linear, hybrid, chunk-recurrent hybrid).
//! - [`surgery`]: distilling feature maps and planning per-layer rates for a cost budget.

pub mod dit;
pub mod error;
pub mod lora;
pub mod pipeline;
pub mod plan;
pub mod pth;
pub mod scheduler;
pub mod surgery;
pub mod tensor_file;
pub mod text;
pub mod vae;
pub mod video;
pub mod weights;

pub use error::{ModelError, ModelPart, Result};
