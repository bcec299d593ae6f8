//! The Wan2.1 VAE decoder: latents [16, F, H, W] to video [3, 4(F-1)+1, 8H, 8W] in [-1, 1].
//!
//! - [`WanVae`]: the decoder's weights on the GPU, from diffusers' `vae/` folder or a safetensors,
//!   GGUF or `.pth` file in either naming, or any [`WeightSet`] (tensors in memory too).
//! - [`WanVae::decode`]: one latent frame at a time, each causal convolution keeping its last two
//!   input frames for the next; the activations of one latent frame exist at a time.
//! - [`WanVae::decode_with`]: the same with [`DecodeOptions`]: spatial tiles ([`VaeTiling`],
//!   diffusers' tiled decode) so that the activations are those of one tile, and a profiler.
//!
//! The first latent frame skips the temporal upsamplers' time convolution and gives one frame;
//! every later one gives four (two per temporal upsampler), as in the reference.

mod config;
mod decode;
mod layers;
mod manifest;
mod source;
mod tiling;

use std::path::{Path, PathBuf};

use vdit_wgpu::Gpu;

pub use config::VaeConfig;
pub use decode::{DecodeOptions, FrameSink, LatentScale};
pub use layers::{AttentionBlock, CausalConv, ResidualBlock, UpStage, Upsampler};
pub use source::{diffusers_to_original, VaeNaming, VaeTensors};
pub use tiling::VaeTiling;

use crate::dit::Precision;
use crate::error::Result;
use crate::weights::{WeightError, WeightSet};
use layers::{ChannelRmsNorm, Loader};

/// The decoder's weights on the GPU.
pub struct WanVae {
    pub config: VaeConfig,
    pub precision: Precision,
    pub naming: VaeNaming,
    /// post_quant_conv (1x1x1, z -> z), kept on the host: the latent de-normalisation is folded
    /// into it per decode. Weight [z, z] and bias [z].
    post_quant: (Vec<f32>, Vec<f32>),
    conv_in: CausalConv,
    mid: (ResidualBlock, AttentionBlock, ResidualBlock),
    stages: Vec<UpStage>,
    norm_out: ChannelRmsNorm,
    conv_out: CausalConv,
}

impl WanVae {
    /// Loads the decoder from a model root holding `vae/`, a `vae/` folder, a safetensors file
    /// (diffusers or original names, any prefix) or the original `.pth`. The config is the
    /// `config.json` beside the weights, else the Wan2.1 one with the widths read from the
    /// tensors.
    pub fn load(gpu: &Gpu, path: &Path, precision: Precision) -> Result<Self> {
        let sub = path.join("vae");
        let path = if sub.is_dir() { sub.as_path() } else { path };
        let source = WeightSet::open(path)?;
        let config_path = source.folder().join("config.json");
        let config = if config_path.is_file() {
            VaeConfig::from_json_file(&config_path)?
        } else {
            infer_config(&source)?
        };
        Self::from_source(gpu, &source, config, precision)
    }

    /// Loads the decoder from any weight set (either naming, any prefix).
    pub fn from_source(
        gpu: &Gpu,
        source: &WeightSet,
        config: VaeConfig,
        precision: Precision,
    ) -> Result<Self> {
        check_config(&config, source.source())?;
        let tensors = VaeTensors::new(source, config.num_res_blocks)?;
        Self::build(gpu, &tensors, config, precision)
    }

    /// A decoder of `config` with seeded random weights scaled like trained ones: for
    /// benchmarks of speed and memory, where the values do not matter. The weights are
    /// [`VaeConfig::random_weights`], loaded like a checkpoint's.
    pub fn random(gpu: &Gpu, config: VaeConfig, precision: Precision, seed: u64) -> Result<Self> {
        // Checked before the config's tensors are listed.
        check_config(&config, Path::new(manifest::RANDOM_ORIGIN))?;
        Self::from_source(gpu, &config.random_weights(seed), config, precision)
    }

    fn build(
        gpu: &Gpu,
        tensors: &VaeTensors<'_>,
        config: VaeConfig,
        precision: Precision,
    ) -> Result<Self> {
        if precision == Precision::F16 && !gpu.caps.shader_f16 {
            return Err(
                vdit_wgpu::GpuError::MissingFeature("an f16 VAE".into(), "SHADER_F16").into(),
            );
        }
        let ld = Loader {
            gpu,
            tensors,
            dtype: precision.dtype(),
        };
        let z = config.z_dim;
        let dims = config.stage_dims();
        let post_quant = (
            ld.read("post_quant_conv.weight", &[z, z])?,
            ld.read("post_quant_conv.bias", &[z])?,
        );
        let conv_in = CausalConv::load(&ld, "decoder.conv_in", z, dims[0], [3, 3, 3])?;
        let mid = (
            ResidualBlock::load(&ld, "decoder.mid_block.resnets.0", dims[0], dims[0])?,
            AttentionBlock::load(&ld, "decoder.mid_block.attentions.0", dims[0])?,
            ResidualBlock::load(&ld, "decoder.mid_block.resnets.1", dims[0], dims[0])?,
        );
        let mut stages = Vec::new();
        let last = dims.len() - 2;
        for i in 0..=last {
            // After an upsampler the width is halved (the Wan2.1 decoder).
            let cin = if i == 0 { dims[0] } else { dims[i] / 2 };
            let cout = dims[i + 1];
            let name = format!("decoder.up_blocks.{i}");
            let resnets = (0..=config.num_res_blocks)
                .map(|j| {
                    let from = if j == 0 { cin } else { cout };
                    ResidualBlock::load(&ld, &format!("{name}.resnets.{j}"), from, cout)
                })
                .collect::<Result<Vec<_>>>()?;
            let upsampler = if i < last {
                Some(Upsampler::load(
                    &ld,
                    &format!("{name}.upsamplers.0"),
                    cout,
                    config.temporal_upsample[i],
                )?)
            } else {
                None
            };
            stages.push(UpStage { resnets, upsampler });
        }
        let out_dim = dims[dims.len() - 1];
        let norm_out = ChannelRmsNorm::load(&ld, "decoder.norm_out", out_dim)?;
        let conv_out = CausalConv::load(&ld, "decoder.conv_out", out_dim, 3, [3, 3, 3])?;
        Ok(Self {
            naming: tensors.naming(),
            config,
            precision,
            post_quant,
            conv_in,
            mid,
            stages,
            norm_out,
            conv_out,
        })
    }
}

fn check_config(config: &VaeConfig, origin: &Path) -> Result<()> {
    config.validate().map_err(|reason| WeightError::Config {
        path: PathBuf::from(origin),
        reason,
    })?;
    Ok(())
}

/// The Wan2.1 config with base_dim and z_dim read from the decoder's first and last convolutions
/// (files without a config.json: the original `.pth`, ComfyUI's file).
fn infer_config(source: &WeightSet) -> Result<VaeConfig> {
    let mut config = VaeConfig::wan21();
    let tensors = VaeTensors::new(source, config.num_res_blocks)?;
    let shape = |name: &str| -> Result<Vec<usize>> {
        Ok(source.get(&tensors.stored_name(name))?.shape().to_vec())
    };
    let conv_in = shape("decoder.conv_in.weight")?;
    let conv_out = shape("decoder.conv_out.weight")?;
    if let (Some(&z), Some(&base)) = (conv_in.get(1), conv_out.get(1)) {
        if z != config.latents_mean.len() {
            return Err(WeightError::Config {
                path: source.source().to_path_buf(),
                reason: format!(
                    "{z} latent channels and no config.json to give their mean and std"
                ),
            }
            .into());
        }
        config.z_dim = z;
        config.base_dim = base;
    }
    Ok(config)
}
