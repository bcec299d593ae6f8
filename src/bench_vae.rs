//! `vdit bench vae`: one Wan-VAE decode at full size with random weights (no checkpoint needed),
//! as a per-kernel profile, a wall-clock total and the GPU memory it held.

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use vdit_model::vae::{DecodeOptions, LatentScale, VaeConfig, VaeTiling, WanVae};
use vdit_wgpu::kernels::rgba::frames_to_rgba;
use vdit_wgpu::rng::Rng;
use vdit_wgpu::{DType, Gpu, GpuError, Profiler, Recorder, Tensor};

use crate::dit_forward::precision_arg;
use crate::vae_decode::VAE_TILE_HELP;

#[derive(Args, Debug, Clone)]
pub struct VaeBenchArgs {
    /// wan2.1 (the published VAE's sizes) or a diffusers VAE config.json.
    #[arg(long, default_value = "wan2.1")]
    pub config: String,
    /// Latent frames: 21 decode to 81 video frames.
    #[arg(long, default_value_t = 21)]
    pub latent_frames: usize,
    /// Latent height: 60 is 480 pixels.
    #[arg(long, default_value_t = 60)]
    pub latent_height: usize,
    /// Latent width: 104 is 832 pixels.
    #[arg(long, default_value_t = 104)]
    pub latent_width: usize,
    #[arg(long, value_name = "SIZE[,OVERLAP]", help = VAE_TILE_HELP)]
    pub vae_tile: Option<VaeTiling>,
    /// Storage precision: f16 (default where the adapter has it) or f32.
    #[arg(long)]
    pub precision: Option<String>,
    /// Keep the whole decoded video (f32) on the GPU, as `vdit vae-decode` does, instead of
    /// handing each latent frame's frames to an RGBA8 conversion as `vdit generate` does.
    #[arg(long)]
    pub whole_video: bool,
    /// Timed decodes (after one warm-up).
    #[arg(long, default_value_t = 1)]
    pub iters: usize,
    /// Writes the totals, the memory and the per-kernel table as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Writes a Chrome trace of the profiled decode.
    #[arg(long)]
    pub trace: Option<PathBuf>,
}

pub fn config_arg(name: &str) -> Result<VaeConfig, Box<dyn std::error::Error>> {
    Ok(match name {
        "wan2.1" => VaeConfig::wan21(),
        path => VaeConfig::from_json_file(path)?,
    })
}

pub fn run(gpu: &Gpu, a: &VaeBenchArgs) -> Result<(), Box<dyn std::error::Error>> {
    let config = config_arg(&a.config)?;
    let precision = precision_arg(gpu, a.precision.as_deref())?;
    let [f, h, w] = [a.latent_frames, a.latent_height, a.latent_width];
    let shape = [config.z_dim, f, h, w];
    println!("device: {}", gpu.describe());
    let t0 = Instant::now();
    let vae = WanVae::random(gpu, config, precision, 1)?;
    gpu.wait()?;
    let weight_bytes = gpu.pool_bytes().0;
    println!(
        "weights: random, {}, {:.1} s to build and upload",
        size(weight_bytes),
        t0.elapsed().as_secs_f64()
    );
    let frames_shape = vae.output_shape(&shape)?;
    let n: usize = shape.iter().product();
    let latent = Tensor::from_f32(gpu, &shape, &Rng::new(3).vec_normal(n, 1.0), DType::F32)?;
    // From here the pool holds the weights and the latent; the decode adds the rest.
    gpu.trim_pool();
    gpu.reset_pool_peak();
    // Tiles that split the frame blend across the whole video, which then exists either way.
    let streamed = !a.whole_video && !a.vae_tile.is_some_and(|t| t.splits(h, w));
    let decode = |profiler: Option<&mut Profiler>| -> Result<(), Box<dyn std::error::Error>> {
        let options = decode_options(a.vae_tile, profiler);
        if streamed {
            decode_to_rgba(gpu, &vae, &latent, options)?;
        } else {
            drop(vae.decode_with(gpu, &latent, options)?);
        }
        Ok(gpu.wait()?)
    };
    // Warm-up: pipelines compiled, buffers allocated.
    decode(None)?;
    let mut wall = Vec::new();
    for _ in 0..a.iters {
        let t = Instant::now();
        decode(None)?;
        wall.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let peak = gpu.pool_peak_bytes();
    wall.sort_by(f64::total_cmp);
    let median = wall.get(wall.len() / 2).copied().unwrap_or(f64::NAN);
    let mut profiler = Profiler::new(gpu);
    decode(Some(&mut profiler))?;
    print!("{}", profiler.table());

    let tiles = a
        .vae_tile
        .filter(|t| t.splits(h, w))
        .map(|t| [h.div_ceil(t.stride()), w.div_ceil(t.stride())]);
    let tiling = match (a.vae_tile, tiles) {
        (Some(t), Some([r, c])) => {
            format!("{r} x {c} tiles of {} overlapping by {}", t.tile, t.overlap)
        }
        (Some(t), None) => format!("whole (within one tile of {})", t.tile),
        (None, _) => "whole".into(),
    };
    // What the decode's output holds: the whole f32 video, or one latent frame's f32 frames
    // and one RGBA8 frame.
    let [_, _, oh, ow] = frames_shape;
    let output_bytes = if streamed {
        let per_latent_frame = vae.config.output_frames(2) - vae.config.output_frames(1);
        (4 * (3 * per_latent_frame + 1) * oh * ow) as u64
    } else {
        4 * frames_shape.iter().product::<usize>() as u64
    };
    let output = if streamed {
        "streamed to RGBA8"
    } else {
        "whole video kept"
    };
    println!(
        "latent {shape:?} -> frames {frames_shape:?}, precision {precision:?}, {tiling}, {output}"
    );
    println!(
        "decode: {median:.1} ms wall (median of {}), kernel sum {:.1} ms",
        wall.len(),
        profiler.total_ms()
    );
    println!(
        "GPU memory: peak {} held by the pool (weights {}, output {})",
        size(peak),
        size(weight_bytes),
        size(output_bytes)
    );
    if let Some(path) = &a.json {
        let json = serde_json::json!({
            "device": gpu.describe(), "config": a.config, "latent": shape, "frames": frames_shape,
            "precision": format!("{precision:?}"), "streamed": streamed,
            "tiling": a.vae_tile.map(|t| serde_json::json!({
                "tile": t.tile, "overlap": t.overlap, "tiles": tiles,
            })),
            "wall_ms": wall, "median_ms": median, "kernel_sum_ms": profiler.total_ms(),
            "peak_bytes": peak, "weight_bytes": weight_bytes, "frames_bytes": output_bytes,
            "kernels": profiler.stats(),
        });
        std::fs::write(path, serde_json::to_string_pretty(&json)?)
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    if let Some(path) = &a.trace {
        std::fs::write(path, serde_json::to_string(&profiler.chrome_trace())?)
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    Ok(())
}

fn decode_options(tiling: Option<VaeTiling>, profiler: Option<&mut Profiler>) -> DecodeOptions<'_> {
    DecodeOptions {
        scale: LatentScale::Normalized,
        tiling,
        profiler,
    }
}

/// Decodes as `vdit generate` does: each latent frame's frames converted to RGBA8 on the GPU as
/// they come (the download and the encoder are left out), so no whole video exists.
fn decode_to_rgba(
    gpu: &Gpu,
    vae: &WanVae,
    latent: &Tensor,
    options: DecodeOptions<'_>,
) -> Result<(), Box<dyn std::error::Error>> {
    let [_, _, h, w] = vae.output_shape(latent.shape())?;
    let rgba = RgbaFrame::new(gpu, h, w)?;
    vae.decode_streamed(gpu, latent, options, &mut |frames, count| {
        Ok(rgba.convert(gpu, frames, count)?)
    })?;
    Ok(())
}

/// The GPU side of writing a video: one RGBA8 frame that decoded frames are converted into,
/// as `vdit generate`'s writer does before each download.
pub(crate) struct RgbaFrame {
    rgba: Tensor,
    width: usize,
}

impl RgbaFrame {
    pub(crate) fn new(gpu: &Gpu, height: usize, width: usize) -> Result<Self, GpuError> {
        Ok(Self {
            rgba: Tensor::empty(gpu, &[height * width], DType::F32)?,
            width,
        })
    }

    /// Converts the first `count` frames of `frames` [3, n, H, W], one after the other.
    pub(crate) fn convert(&self, gpu: &Gpu, frames: &Tensor, count: usize) -> Result<(), GpuError> {
        let mut rec = Recorder::new(gpu);
        for frame in 0..count {
            frames_to_rgba(&mut rec, frames, frame, self.width, &self.rgba)?;
        }
        rec.submit(None)
    }
}

fn size(bytes: u64) -> String {
    let mib = bytes as f64 / (1u64 << 20) as f64;
    if mib >= 1024.0 {
        format!("{:.2} GiB", mib / 1024.0)
    } else {
        format!("{mib:.1} MiB")
    }
}
