//! Loading weights from safetensors, GGUF and PyTorch files, or seeded random ones: the one
//! loader of the DiT, the VAE, the text encoder, LoRAs and attention-plan weights.
//!
//! - [`WeightFile`]: one memory-mapped safetensors, GGUF or PyTorch (`.pth`, through
//!   `crate::pth`'s restricted unpickler) file whose header is validated against the file size
//!   before any tensor is read; nothing is ever read outside the mapping. GGUF's block-quantised
//!   types ([`QuantType`]) are expanded to f32 or f16 as they are read.
//! - [`WeightFile::random`]: seeded random tensors of the names and shapes a model config
//!   implies, each drawn from (seed, name) as it is read and never kept ([`random`]).
//! - [`WeightSet`]: tensors by name across a single file, a sharded checkpoint
//!   (`*.safetensors.index.json`) or a folder holding either.
//! - [`TensorView`]: one tensor's bytes, converted from f64/f32/f16/bf16 to f32 values or to the
//!   bytes of a GPU storage type (borrowed when no conversion is needed), and uploaded with a
//!   shape check.
//! - [`KeyLayout`] and [`Checkpoint`]: original, diffusers and ComfyUI key layouts, all looked up
//!   by the canonical diffusers names.
//! - [`DitConfig`]: the model sizes from either `config.json` format, presets, inference from
//!   tensor shapes, and the list of tensors a config implies.
//!
//! Every error names the file, and the tensor where one is involved.

mod checkpoint;
mod config;
mod convert;
mod dtype;
mod error;
mod file;
mod gguf;
mod header;
mod infer;
mod layout;
mod manifest;
mod quant;
pub mod random;
mod set;
mod view;

#[cfg(test)]
pub(crate) mod tests;

pub use checkpoint::Checkpoint;
pub use config::DitConfig;
pub(crate) use convert::{to_f32_values, to_storage_bytes};
pub use dtype::StoredDType;
pub use error::{Result, WeightError};
pub use file::{FileFormat, WeightFile};
pub use gguf::{GgufArray, GgufValue};
pub use header::TensorInfo;
pub use layout::{diffusers_to_original, original_to_diffusers, KeyLayout, Naming, COMFYUI_PREFIX};
pub use quant::QuantType;
pub use random::{InitRule, Uniform};
pub use set::WeightSet;
pub use view::TensorView;
