//! Attention surgery: replacing softmax self-attention block by block with cheaper modes
//! whose feature maps are distilled from the model's own attention, at the rates a planner
//! picks for a cost budget.
//!
//! - [`distill`]: training each (block, mode) pair's feature maps during the model's own
//!   sampling, and their held-out errors; [`checkpoint`]: its resumable state.
//! - [`phi`]: vdit-wgpu's GPU trainer as a distillation pair's trainer.
//! - [`run`]: one distillation run to `features.safetensors` and `errors.json`.
//! - [`compare`]: a plan's per-block error along its own sampling, and its DiT time.
//! - [`measure`]: attention-output errors against softmax; [`quality`]: PSNR and SSIM of videos.
//! - [`errors`]: `errors.json`, each layer's options with their error and cost.
//! - [`knapsack`]: the multiple-choice knapsack, exact by dynamic programming.
//! - [`planner`]: errors and a budget -> an attention plan file.

pub mod checkpoint;
pub mod compare;
pub mod distill;
pub mod errors;
pub mod knapsack;
pub mod measure;
pub mod phi;
pub mod planner;
pub mod quality;
pub mod run;
