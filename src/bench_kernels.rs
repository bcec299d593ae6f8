//! `vdit bench kernels`: every core kernel at the shapes of a Wan2.1 1.3B forward
//! (32760 tokens x 1536, FFN 8960), timed by the profiler, printed as a table.

use std::path::PathBuf;

use clap::Args;
use vdit_wgpu::kernels::elementwise::{binary_in_place, unary, Binary, Unary};
use vdit_wgpu::kernels::matmul::{matmul, Epilogue};
use vdit_wgpu::kernels::norm::{layer_norm, rms_norm_in_place, Affine};
use vdit_wgpu::kernels::patch::patchify;
use vdit_wgpu::kernels::rope::{rope_in_place, RopeTable};
use vdit_wgpu::kernels::{Modulation, Row};
use vdit_wgpu::rng::Rng;
use vdit_wgpu::{DType, Gpu, Profiler, Recorder, Tensor};

#[derive(Args, Debug, Clone)]
pub struct KernelBenchArgs {
    /// Tokens (rows). 32760 is 81 frames at 480x832.
    #[arg(long, default_value_t = 32760)]
    pub tokens: usize,
    /// Model width.
    #[arg(long, default_value_t = 1536)]
    pub dim: usize,
    /// FFN width.
    #[arg(long, default_value_t = 8960)]
    pub ffn: usize,
    /// Storage precision of activations and weights: f32, f16 or both.
    #[arg(long, default_value = "both")]
    pub precision: String,
    /// Milliseconds each kernel runs before it is timed (at least once), so that the GPU is at
    /// its working clock.
    #[arg(long, default_value_t = 1000)]
    pub warmup_ms: u64,
    /// Timed repetitions of each kernel (after the warm-up).
    #[arg(long, default_value_t = 5)]
    pub iters: usize,
    /// Only kernels whose label contains this text.
    #[arg(long)]
    pub filter: Option<String>,
    /// Write the per-kernel statistics as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write a Chrome trace of every timed launch.
    #[arg(long)]
    pub trace: Option<PathBuf>,
    /// Instead of the model's kernels, time plain matmuls (with bias) of these shapes, each on
    /// fresh tensors: `MxNxK[,MxNxK...]`.
    #[arg(long, value_delimiter = ',')]
    pub shapes: Vec<String>,
}

/// Times `y = x w^T + b` at each `MxNxK` of `--shapes`, on fresh tensors per shape.
fn run_shapes(gpu: &Gpu, a: &KernelBenchArgs, dt: DType) -> Result<(), Box<dyn std::error::Error>> {
    let mut rng = Rng::new(0x5eed);
    for shape in &a.shapes {
        let dims: Vec<usize> = shape
            .split('x')
            .map(|v| v.trim().parse::<usize>())
            .collect::<Result<_, _>>()
            .map_err(|_| format!("--shapes: '{shape}' is not MxNxK"))?;
        let &[m, n, k] = dims.as_slice() else {
            return Err(format!("--shapes: '{shape}' is not MxNxK").into());
        };
        let x = random(gpu, &mut rng, &[m, k], 1.0, dt)?;
        let w = random(gpu, &mut rng, &[n, k], 1.0 / (k as f32).sqrt(), dt)?;
        let b = random(gpu, &mut rng, &[n], 0.1, dt)?;
        let y = Tensor::empty(gpu, &[m, n], dt)?;
        let mut profiler = Profiler::new(gpu);
        for i in 0..=a.iters {
            let mut rec = Recorder::new(gpu);
            matmul(&mut rec, &x, &w, Some(&b), &y, Epilogue::None)?;
            if i == 0 {
                rec.run()?; // warm-up
            } else {
                rec.submit(Some(&mut profiler))?;
            }
        }
        let ms = profiler
            .samples()
            .iter()
            .map(|s| s.duration_ns)
            .sum::<f64>()
            / 1e6
            / a.iters as f64;
        let tflops = 2.0 * (m * n * k) as f64 / ms / 1e9;
        let each: Vec<String> = profiler
            .samples()
            .iter()
            .map(|s| format!("{:.2}", s.duration_ns / 1e6))
            .collect();
        println!(
            "matmul {m}x{n}x{k} {dt}: {ms:.3} ms, {tflops:.1} TFLOP/s (each: {})",
            each.join(" ")
        );
    }
    Ok(())
}

type Record<'a> = Box<dyn Fn(&mut Recorder) -> vdit_wgpu::Result<()> + 'a>;

/// A tensor of random values (never zeros: zeros can run faster than real data).
fn random(
    gpu: &Gpu,
    rng: &mut Rng,
    shape: &[usize],
    scale: f32,
    dtype: DType,
) -> vdit_wgpu::Result<Tensor> {
    let n: usize = shape.iter().product();
    Tensor::from_f32(gpu, shape, &rng.vec_uniform(n, scale), dtype)
}

fn cases<'a>(
    gpu: &'a Gpu,
    a: &KernelBenchArgs,
    dt: DType,
) -> vdit_wgpu::Result<Vec<(String, Record<'a>)>> {
    let mut rng = Rng::new(0x5eed);
    let (n, d, f) = (a.tokens, a.dim, a.ffn);
    let x = random(gpu, &mut rng, &[n, d], 1.0, dt)?;
    let h = random(gpu, &mut rng, &[n, f], 1.0, dt)?;
    let w_dd = random(gpu, &mut rng, &[d, d], 0.03, dt)?;
    let w_fd = random(gpu, &mut rng, &[f, d], 0.03, dt)?;
    let w_df = random(gpu, &mut rng, &[d, f], 0.01, dt)?;
    let b_d = random(gpu, &mut rng, &[d], 0.1, dt)?;
    let b_f = random(gpu, &mut rng, &[f], 0.1, dt)?;
    let gate = random(gpu, &mut rng, &[d], 1.0, DType::F32)?;
    let y_dd = Tensor::empty(gpu, &[n, d], dt)?;
    let y_fd = Tensor::empty(gpu, &[n, f], dt)?;
    let resid = random(gpu, &mut rng, &[n, d], 1.0, DType::F32)?;
    let mut out: Vec<(String, Record<'a>)> = Vec::new();
    let b_d2 = b_d.clone();
    out.push((
        format!("matmul qkv/out {n}x{d}x{d}"),
        Box::new(move |r| matmul(r, &x, &w_dd, Some(&b_d), &y_dd, Epilogue::None)),
    ));
    let x2 = random(gpu, &mut rng, &[n, d], 1.0, dt)?;
    out.push((
        format!("matmul ffn-up+gelu {n}x{f}x{d}"),
        Box::new(move |r| matmul(r, &x2, &w_fd, Some(&b_f), &y_fd, Epilogue::GeluTanh)),
    ));
    out.push((
        format!("matmul ffn-down+residual {n}x{d}x{f}"),
        Box::new(move |r| {
            matmul(
                r,
                &h,
                &w_df,
                Some(&b_d2),
                &resid,
                Epilogue::ResidualGate(Row::whole(&gate)),
            )
        }),
    ));
    // The rest of a block at the same shapes: norms, RoPE, attention-free elementwise work.
    let heads = d / 128;
    let (hd, grid_t) = (128, 21);
    let residual = random(gpu, &mut rng, &[n, d], 1.0, DType::F32)?;
    let table = random(gpu, &mut rng, &[6, d], 0.1, DType::F32)?;
    let normed = Tensor::empty(gpu, &[n, d], dt)?;
    let ln_weight = random(gpu, &mut rng, &[d], 1.0, DType::F32)?;
    let ln_bias = random(gpu, &mut rng, &[d], 0.1, DType::F32)?;
    let q = random(gpu, &mut rng, &[n, d], 1.0, dt)?;
    let ffn_act = random(gpu, &mut rng, &[n, f], 1.0, dt)?;
    let ffn_out = Tensor::empty(gpu, &[n, f], dt)?;
    // RoPE over a token grid of the right size: 21 frames when the token count allows it.
    let frames = if n % grid_t == 0 { grid_t } else { 1 };
    let rows = (n / frames).max(1);
    let rope_ok = heads > 0 && frames * rows == n;
    let rope = if rope_ok {
        Some(RopeTable::new(
            gpu,
            [frames, rows, 1],
            hd,
            vdit_model::dit::wan_rope_pairs(hd),
            10000.0,
        )?)
    } else {
        None
    };
    let patches_in = random(
        gpu,
        &mut rng,
        &[16, frames, 2 * rows.min(4096), 2],
        1.0,
        DType::F32,
    )?;
    let patches_out = Tensor::empty(gpu, &[frames * rows.min(4096), 64], DType::F32)?;
    {
        let (residual, table, normed) = (residual.clone(), table.clone(), normed.clone());
        out.push((
            format!("layer_norm+modulation {n}x{d}"),
            Box::new(move |r| {
                let m = Modulation {
                    shift: Row::of(&table, 0),
                    scale: Row::of(&table, 1),
                };
                layer_norm(r, &residual, None, Some(m), 1e-6, &normed)
            }),
        ));
    }
    {
        let (residual, normed) = (residual.clone(), normed.clone());
        out.push((
            format!("layer_norm affine {n}x{d}"),
            Box::new(move |r| {
                let affine = Affine {
                    weight: &ln_weight,
                    bias: &ln_bias,
                };
                layer_norm(r, &residual, Some(affine), None, 1e-6, &normed)
            }),
        ));
    }
    {
        let q = q.clone();
        let w = random(gpu, &mut rng, &[d], 1.0, DType::F32)?;
        out.push((
            format!("rms_norm {n}x{d}"),
            Box::new(move |r| rms_norm_in_place(r, &q, Some(&w), 1e-6)),
        ));
    }
    if let Some(rope) = rope {
        let q = q.reshape(&[n, heads, hd])?;
        out.push((
            format!("rope {n}x{heads}x{hd}"),
            Box::new(move |r| rope_in_place(r, &q, &rope)),
        ));
    }
    out.push((
        format!("gelu {n}x{f}"),
        Box::new(move |r| unary(r, Unary::GeluTanh, &ffn_act, &ffn_out)),
    ));
    let row = random(gpu, &mut rng, &[d], 1.0, DType::F32)?;
    out.push((
        format!("add {n}x{d}"),
        Box::new(move |r| binary_in_place(r, Binary::Add, &residual, &row)),
    ));
    out.push((
        "patchify".to_string(),
        Box::new(move |r| patchify(r, &patches_in, &patches_out, [1, 2, 2])),
    ));
    Ok(out)
}

pub fn run(gpu: &Gpu, a: &KernelBenchArgs) -> Result<(), Box<dyn std::error::Error>> {
    if a.iters == 0 {
        return Err("--iters must be at least 1".into());
    }
    if !a.shapes.is_empty() && (a.json.is_some() || a.trace.is_some() || a.filter.is_some()) {
        return Err(
            "--shapes prints its timings only: leave out --json, --trace and --filter".into(),
        );
    }
    let precisions: Vec<DType> = match a.precision.as_str() {
        "f32" => vec![DType::F32],
        "f16" => vec![DType::F16],
        "both" => vec![DType::F32, DType::F16],
        other => return Err(format!("--precision must be f32, f16 or both, not '{other}'").into()),
    };
    println!("device: {}", gpu.describe());
    let mut profiler = Profiler::new(gpu);
    for dt in precisions {
        if dt == DType::F16 && !gpu.caps.shader_f16 {
            println!("skipping f16: the adapter lacks SHADER_F16");
            continue;
        }
        if !a.shapes.is_empty() {
            run_shapes(gpu, a, dt)?;
            continue;
        }
        for (label, record) in cases(gpu, a, dt)? {
            if a.filter
                .as_ref()
                .is_some_and(|f| !label.contains(f.as_str()))
            {
                continue;
            }
            // Warm-up: pipeline creation and first-touch costs stay out of the numbers, and the
            // kernel runs for --warmup-ms first: a GPU that was idle runs at a low clock for a
            // while, which made one standalone matmul take 9 ms or 29 ms from run to run on the
            // H200 (inside a DiT forward, where the GPU is busy, the same kernel takes 9 ms).
            let started = std::time::Instant::now();
            loop {
                let mut rec = Recorder::new(gpu);
                record(&mut rec)?;
                rec.run()?;
                if started.elapsed().as_secs_f64() * 1e3 >= a.warmup_ms as f64 {
                    break;
                }
            }
            for _ in 0..a.iters {
                let mut rec = Recorder::new(gpu);
                record(&mut rec)?;
                rec.submit(Some(&mut profiler))?;
            }
            log::info!("{label} ({dt}) done");
        }
        gpu.trim_pool();
    }
    print!("{}", profiler.table());
    if let Some(path) = &a.json {
        let json = serde_json::json!({
            "device": gpu.describe(),
            "backend": format!("{:?}", gpu.info.backend),
            "tokens": a.tokens, "dim": a.dim, "ffn": a.ffn,
            "clock": profiler.clock(),
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
