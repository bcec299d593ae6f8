//! Where the pipeline's DiT and VAE come from: weight files, or random weights of a given size
//! (for benchmarks and tests at full size without a checkpoint).

use std::path::PathBuf;

use vdit_wgpu::Gpu;

use crate::dit::{LoadOptions, Precision, WanDit};
use crate::error::{input_err, Result};
use crate::vae::{VaeConfig, WanVae};
use crate::weights::DitConfig;

/// The weights of one model part.
#[derive(Clone, Debug)]
pub enum PartWeights<C> {
    /// A file or folder, loaded when the part is needed.
    File(PathBuf),
    /// Seeded random weights of this size.
    Random { config: C, seed: u64 },
}

impl<C> PartWeights<C> {
    /// The part named by an optional path of the model's files.
    pub(crate) fn from_path(path: Option<&PathBuf>) -> Option<Self> {
        path.map(|p| PartWeights::File(p.clone()))
    }
}

/// Loads the DiT.
pub(crate) fn load_dit(
    gpu: &Gpu,
    part: Option<&PartWeights<DitConfig>>,
    precision: Precision,
    options: &LoadOptions,
) -> Result<WanDit> {
    match part {
        Some(PartWeights::File(path)) => {
            WanDit::load_with_options(gpu, path, None, precision, options)
        }
        Some(PartWeights::Random { config, seed }) => {
            WanDit::random_with_options(gpu, config.clone(), precision, *seed, options)
        }
        None => Err(input_err("model", "no DiT weights given")),
    }
}

/// Loads the VAE.
pub(crate) fn load_vae(
    gpu: &Gpu,
    part: Option<&PartWeights<VaeConfig>>,
    precision: Precision,
) -> Result<WanVae> {
    match part {
        Some(PartWeights::File(path)) => WanVae::load(gpu, path, precision),
        Some(PartWeights::Random { config, seed }) => {
            WanVae::random(gpu, config.clone(), precision, *seed)
        }
        None => Err(input_err("model", "no VAE weights given")),
    }
}
