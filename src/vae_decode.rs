//! `vdit vae-decode`: latents to video frames with the Wan-VAE decoder, through safetensors.

use std::path::PathBuf;

use clap::Args;
use vdit_model::tensor_file::{read_tensor, write_tensors, HostTensor};
use vdit_model::vae::{DecodeOptions, LatentScale, VaeTiling, WanVae};
use vdit_wgpu::{DType, Gpu, Tensor};

use crate::dit_forward::precision_arg;

#[derive(Args, Debug, Clone)]
pub struct VaeDecodeArgs {
    /// A model root holding vae/, a vae/ folder, a safetensors file (diffusers or original
    /// names) or the original Wan2.1_VAE.pth.
    #[arg(long)]
    pub model: PathBuf,
    /// safetensors with `latent` [16, F, H, W], as the sampler produces it.
    #[arg(long)]
    pub latent: PathBuf,
    /// Where to write `frames` [3, 4(F-1)+1, 8H, 8W], f32 in [-1, 1].
    #[arg(long)]
    pub output: PathBuf,
    /// The latent is already de-normalised (z * std + mean), as diffusers' vae.decode takes it.
    #[arg(long)]
    pub denormalized: bool,
    /// Storage precision: f16 (default where the adapter has it) or f32.
    #[arg(long)]
    pub precision: Option<String>,
    #[arg(long, value_name = "SIZE[,OVERLAP]", help = VAE_TILE_HELP)]
    pub vae_tile: Option<VaeTiling>,
}

/// The help of `--vae-tile`, shared by every command that decodes.
pub const VAE_TILE_HELP: &str = "Decode in spatial tiles of SIZE x SIZE latent pixels \
(8 SIZE output pixels), neighbours overlapping by OVERLAP (default SIZE/4, at most SIZE/2) and \
blended as diffusers' tiled decode does: the decoder then needs the memory of one tile. 32,8 is \
diffusers' default; a latent within one tile is decoded whole";

pub fn run(gpu: &Gpu, a: &VaeDecodeArgs) -> Result<(), Box<dyn std::error::Error>> {
    let precision = precision_arg(gpu, a.precision.as_deref())?;
    let vae = WanVae::load(gpu, &a.model, precision)?;
    let latent = read_tensor(&a.latent, "latent")?;
    let out_shape = vae
        .output_shape(&latent.shape)
        .map_err(|e| format!("{}: {e}", a.latent.display()))?;
    let latent_t = Tensor::from_f32(gpu, &latent.shape, &latent.data, DType::F32)?;
    let options = DecodeOptions {
        scale: if a.denormalized {
            LatentScale::Denormalized
        } else {
            LatentScale::Normalized
        },
        tiling: a.vae_tile,
        profiler: None,
    };
    let started = std::time::Instant::now();
    let frames = vae.decode_with(gpu, &latent_t, options)?;
    gpu.wait()?;
    log::info!(
        "vae decode: {:.1} ms, GPU tensors at peak {:.2} GiB",
        started.elapsed().as_secs_f64() * 1e3,
        gpu.pool_peak_bytes() as f64 / (1u64 << 30) as f64
    );
    let data = frames.to_vec_f32(gpu)?;
    if let Some(i) = data.iter().position(|v| !v.is_finite()) {
        return Err(format!("the decoder produced a non-finite value at element {i}").into());
    }
    let out = HostTensor {
        shape: out_shape.to_vec(),
        data,
    };
    write_tensors(&a.output, &[("frames", &out)])?;
    Ok(())
}
