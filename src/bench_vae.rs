//! `vdit bench vae`: one Wan-VAE decode at full size with random weights (no checkpoint needed),
//! as a per-kernel profile, a wall-clock total and the GPU memory it held.

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use vdit_model::vae::{DecodeOptions, LatentScale, VaeConfig, VaeTiling, WanVae};
use vdit_wgpu::rng::Rng;
use vdit_wgpu::{DType, Gpu, Profiler, Tensor};

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
    // Warm-up: pipelines compiled, buffers allocated.
    drop(vae.decode_with(gpu, &latent, decode_options(a.vae_tile, None))?);
    gpu.wait()?;
    let mut wall = Vec::new();
    for _ in 0..a.iters {
        let t = Instant::now();
        let frames = vae.decode_with(gpu, &latent, decode_options(a.vae_tile, None))?;
        gpu.wait()?;
        wall.push(t.elapsed().as_secs_f64() * 1e3);
        drop(frames);
    }
    let peak = gpu.pool_peak_bytes();
    wall.sort_by(f64::total_cmp);
    let median = wall.get(wall.len() / 2).copied().unwrap_or(f64::NAN);
    let mut profiler = Profiler::new(gpu);
    drop(vae.decode_with(
        gpu,
        &latent,
        decode_options(a.vae_tile, Some(&mut profiler)),
    )?);
    gpu.wait()?;
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
    let output_bytes = 4 * frames_shape.iter().product::<usize>() as u64;
    println!("latent {shape:?} -> frames {frames_shape:?}, precision {precision:?}, {tiling}");
    println!(
        "decode: {median:.1} ms wall (median of {}), kernel sum {:.1} ms",
        wall.len(),
        profiler.total_ms()
    );
    println!(
        "GPU memory: peak {} held by the pool (weights {}, frames {})",
        size(peak),
        size(weight_bytes),
        size(output_bytes)
    );
    if let Some(path) = &a.json {
        let json = serde_json::json!({
            "device": gpu.describe(), "config": a.config, "latent": shape, "frames": frames_shape,
            "precision": format!("{precision:?}"),
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

fn size(bytes: u64) -> String {
    let mib = bytes as f64 / (1u64 << 20) as f64;
    if mib >= 1024.0 {
        format!("{:.2} GiB", mib / 1024.0)
    } else {
        format!("{mib:.1} MiB")
    }
}
