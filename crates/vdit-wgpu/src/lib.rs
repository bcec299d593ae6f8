//! vdit-wgpu: a compute backend for transformer inference on any GPU through wgpu.
//!
//! - [`Gpu`]: the adapter and device, with the features and limits they really have.
//! - [`Tensor`]: a buffer, a shape and a storage type (f32 or f16), from a reusing pool.
//! - [`Recorder`]: kernel launches recorded into one command buffer; pipelines and bind groups
//!   are cached, parameter blocks share one uniform buffer.
//! - [`kernels`] and [`attention`]: each WGSL file of `shaders/` with its launcher and CPU reference.
//! - [`distill`]: stage-1 distillation of the attention feature maps (forward, backward, AdamW).
//! - [`Profiler`]: per-kernel timings from timestamp queries, as a table or a Chrome trace.
//!
//! The crate knows nothing of any particular model.

pub mod attention;
pub mod catalog;
mod cost;
pub mod distill;
pub mod error;
pub mod gpu;
pub mod kernels;
mod ops;
pub mod parallel;
pub mod param_block;
pub mod pipeline;
pub mod policy;
pub mod pool;
pub mod profiler;
pub mod recorder;
pub mod rng;
pub mod selftest;
pub mod shader;
pub mod size;
pub mod tensor;
pub mod testing;

pub use error::{GpuError, Result};
pub use gpu::{Capabilities, Gpu, GpuOptions};
pub use policy::KernelPolicy;
pub use profiler::{Cost, Profiler};
pub use recorder::{Dispatch, Recorder};
pub use tensor::{DType, HostTensor, Tensor};
