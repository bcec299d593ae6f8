//! `vdit bench dit`: one DiT forward at full size with random weights (no checkpoint needed),
//! as a per-kernel profile and a wall-clock total.

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use vdit_model::dit::{LoadOptions, WanDit};
use vdit_model::plan::{AttentionPlan, LayerAttention};
use vdit_model::weights::DitConfig;
use vdit_wgpu::attention::{FeatureMap, FeatureMapWeights};
use vdit_wgpu::rng::Rng;
use vdit_wgpu::{DType, Gpu, Profiler, Recorder, Tensor};

use crate::dit_forward::precision_arg;

#[derive(Args, Debug, Clone)]
pub struct DitBenchArgs {
    /// wan2.1-t2v-1.3b, wan2.1-t2v-14b, or a config.json.
    #[arg(long, default_value = "wan2.1-t2v-1.3b")]
    pub config: String,
    /// Random weights (the only source for now; kept explicit so results are never mistaken
    /// for a real checkpoint's).
    #[arg(long)]
    pub random_weights: bool,
    /// Latent frames, height and width: 21x60x104 is 81 frames at 480x832 (32760 tokens).
    #[arg(long, default_value = "21x60x104")]
    pub latent: String,
    #[arg(long)]
    pub precision: Option<String>,
    /// Self-attention of every block: softmax, linear, hybrid:R or rehyat:TC:TO ...
    #[arg(long, default_value = "softmax")]
    pub attention: String,
    /// ... applied to this many blocks (the first ones), the rest softmax. Default: all.
    #[arg(long)]
    pub blocks: Option<usize>,
    /// Feature size of the random hedgehog feature maps.
    #[arg(long, default_value_t = 128)]
    pub feature_dim: usize,
    /// Timed forwards (after one warm-up).
    #[arg(long, default_value_t = 3)]
    pub iters: usize,
    /// A LoRA merged into the random weights as they load (FILE[:STRENGTH]); repeatable.
    #[arg(long = "lora", value_name = "FILE[:STRENGTH]", value_parser = crate::generate::parse_lora)]
    pub loras: Vec<vdit_model::lora::LoraSpec>,
    /// Writes a random LoRA of this rank on every block's linears (kohya names, f16) to the
    /// temp folder and merges it: the cost of a merge at full size.
    #[arg(long, value_name = "RANK")]
    pub random_lora: Option<usize>,
    /// Streams the blocks' weights from host memory (as `generate --offload`).
    #[arg(long)]
    pub offload: bool,
    /// Holds the Linear weights quantised on the GPU: q8_0 or q4_k (as a GGUF file's Q8_0 and
    /// Q4_K weights are).
    #[arg(long, value_name = "q8_0|q4_k", value_parser = crate::generate::parse_quantize)]
    pub quantize: Option<vdit_model::dit::Quantize>,
    /// Skips the profiled forward after the timed ones (no kernel table; saves a forward of
    /// the large configs).
    #[arg(long)]
    pub no_profile: bool,
    #[arg(long)]
    pub json: Option<PathBuf>,
    #[arg(long)]
    pub trace: Option<PathBuf>,
}

pub(crate) fn parse_latent(s: &str) -> Result<[usize; 3], String> {
    let v: Vec<usize> = s.split('x').filter_map(|p| p.parse().ok()).collect();
    v.try_into()
        .map_err(|_| format!("--latent must be FxHxW, e.g. 21x60x104, not '{s}'"))
}

pub fn config_arg(name: &str) -> Result<DitConfig, Box<dyn std::error::Error>> {
    Ok(match name {
        "wan2.1-t2v-1.3b" => DitConfig::wan21_t2v_1_3b(),
        "wan2.1-t2v-14b" => DitConfig::wan21_t2v_14b(),
        path => DitConfig::from_json_file(path)?,
    })
}

fn random_plan(
    gpu: &Gpu,
    a: &DitBenchArgs,
    c: &DitConfig,
    dtype: DType,
) -> Result<AttentionPlan, Box<dyn std::error::Error>> {
    let mode = LayerAttention::parse(&a.attention)
        .ok_or_else(|| format!("--attention: unknown mode '{}'", a.attention))?;
    let count = a.blocks.unwrap_or(c.layers).min(c.layers);
    let mut rng = Rng::new(7);
    let mut layers = vec![LayerAttention::Softmax; c.layers];
    let mut features = Vec::new();
    for (i, layer) in layers.iter_mut().enumerate() {
        if i < count {
            *layer = mode;
        }
        let needs = layer.needs_features();
        let mut hedgehog = || -> vdit_wgpu::Result<FeatureMap> {
            let half = a.feature_dim / 2;
            let w = rng.vec_uniform(c.heads * half * c.head_dim, 0.1);
            let b = rng.vec_uniform(c.heads * half, 0.1);
            Ok(FeatureMap::Hedgehog {
                w: Tensor::from_f32(gpu, &[c.heads, half, c.head_dim], &w, dtype)?,
                b: Tensor::from_f32(gpu, &[c.heads, half], &b, dtype)?,
            })
        };
        features.push(if needs {
            Some(FeatureMapWeights {
                phi_q: hedgehog()?,
                phi_k: hedgehog()?,
            })
        } else {
            None
        });
    }
    Ok(AttentionPlan::with_layers(layers, features))
}

pub fn run(gpu: &Gpu, a: &DitBenchArgs) -> Result<(), Box<dyn std::error::Error>> {
    if !a.random_weights {
        return Err("vdit bench dit needs --random-weights (benchmarks of checkpoints come with vdit generate)".into());
    }
    let c = config_arg(&a.config)?;
    let precision = precision_arg(gpu, a.precision.as_deref())?;
    let [f, h, w] = parse_latent(&a.latent)?;
    println!("device: {}", gpu.describe());
    let t0 = Instant::now();
    let mut options = LoadOptions {
        loras: a.loras.clone(),
        offload: a.offload,
        quantize: a.quantize,
        ..Default::default()
    };
    if let Some(rank) = a.random_lora {
        let path = std::env::temp_dir().join(format!("vdit-bench-lora-rank{rank}.safetensors"));
        write_random_lora(&path, &c, rank)?;
        options
            .loras
            .push(vdit_model::lora::LoraSpec::new(path, 1.0));
    }
    let mut dit = WanDit::random_with_options(gpu, c.clone(), precision, 1, &options)?;
    dit.set_plan(random_plan(gpu, a, &c, precision.dtype())?)?;
    gpu.wait()?;
    println!(
        "weights: {:.1} s to build and upload",
        t0.elapsed().as_secs_f64()
    );
    let (weights_gpu, weights_host) = dit.weight_bytes();
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    println!(
        "weights: {:.2} GiB on the GPU{}",
        gib(weights_gpu),
        if dit.is_offloaded() {
            format!(
                ", {:.2} GiB of blocks in host memory (offload)",
                gib(weights_host)
            )
        } else {
            String::new()
        }
    );
    let report = dit.load_report.clone();
    if report.lora_tensors > 0 {
        println!(
            "LoRA: {} tensors merged in {:.2} s",
            report.lora_tensors, report.lora_merge_seconds
        );
    }
    let shape = [c.in_channels, f, h, w];
    let runner = dit.runner(gpu, shape)?;
    let mut rng = Rng::new(3);
    let n: usize = shape.iter().product();
    let latent = Tensor::from_f32(gpu, &shape, &rng.vec_normal(n, 1.0), DType::F32)?;
    let ctx_n = c.text_len * c.text_dim;
    let context = Tensor::from_f32(
        gpu,
        &[c.text_len, c.text_dim],
        &rng.vec_normal(ctx_n, 0.2),
        DType::F32,
    )?;
    let velocity = Tensor::empty(gpu, &[c.out_channels, f, h, w], DType::F32)?;
    let mut rec = Recorder::new(gpu);
    let cache = dit.prepare_context(&mut rec, &context)?;
    rec.run()?;
    // Warm-up: pipelines compiled, buffers touched.
    let mut rec = Recorder::new(gpu);
    runner.forward(&mut rec, &latent, 500.0, &cache, &velocity)?;
    rec.run()?;
    let mut wall = Vec::new();
    // CPU time of recording a forward (launchers, pipeline lookups) and of encoding it into a
    // command buffer at submit (bind groups, passes), apart from waiting for the GPU.
    let (mut record_ms, mut encode_ms) = (Vec::new(), Vec::new());
    let created_before = gpu.cache_stats();
    for _ in 0..a.iters {
        let t = Instant::now();
        let mut rec = Recorder::new(gpu);
        runner.forward(&mut rec, &latent, 500.0, &cache, &velocity)?;
        record_ms.push(t.elapsed().as_secs_f64() * 1e3);
        let t_submit = Instant::now();
        rec.submit(None)?;
        encode_ms.push(t_submit.elapsed().as_secs_f64() * 1e3);
        gpu.wait()?;
        wall.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let created_after = gpu.cache_stats();
    let median_of = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    let (record_median, encode_median) = (median_of(&mut record_ms), median_of(&mut encode_ms));
    wall.sort_by(f64::total_cmp);
    let median = wall.get(wall.len() / 2).copied().unwrap_or(f64::NAN);
    let mut profiler = Profiler::new(gpu);
    if !a.no_profile {
        let mut rec = Recorder::new(gpu);
        runner.forward(&mut rec, &latent, 500.0, &cache, &velocity)?;
        rec.submit(Some(&mut profiler))?;
        print!("{}", profiler.table());
    }
    let (in_use, free) = gpu.pool_bytes();
    let peak = gpu.pool_peak_bytes();
    println!(
        "tokens {}  attention {} on {} blocks  precision {:?}",
        runner.tokens(),
        a.attention,
        a.blocks.unwrap_or(c.layers).min(c.layers),
        precision
    );
    let kernel_sum = (!a.no_profile).then(|| profiler.total_ms());
    println!(
        "forward: {median:.1} ms wall (median of {}){}",
        wall.len(),
        kernel_sum.map_or(String::new(), |ms| format!(", kernel sum {ms:.1} ms"))
    );
    println!(
        "CPU: {record_median:.2} ms to record a forward, {encode_median:.2} ms to encode and submit it; \
         {} pipelines and {} bind groups created in the {} timed forwards",
        created_after.pipelines - created_before.pipelines,
        created_after.bind_groups - created_before.bind_groups,
        wall.len()
    );
    println!(
        "GPU memory held by tensors: {:.2} GiB (+{:.2} GiB pooled free), peak {:.2} GiB",
        gib(in_use),
        gib(free),
        gib(peak)
    );
    if let Some(path) = &a.json {
        let json = serde_json::json!({
            "device": gpu.describe(), "config": a.config, "latent": shape, "tokens": runner.tokens(),
            "precision": format!("{precision:?}"), "attention": a.attention,
            "blocks": a.blocks.unwrap_or(c.layers).min(c.layers),
            "wall_ms": wall, "median_ms": median, "kernel_sum_ms": kernel_sum,
            "record_cpu_ms": record_median, "encode_cpu_ms": encode_median,
            "bind_groups_created_when_warm": created_after.bind_groups - created_before.bind_groups,
            "pipelines_created_when_warm": created_after.pipelines - created_before.pipelines,
            "tensor_bytes": in_use, "kernels": profiler.stats(),
            "lora_tensors": report.lora_tensors, "lora_merge_s": report.lora_merge_seconds,
            "offload": dit.is_offloaded(), "quantize": a.quantize.map(vdit_model::dit::Quantize::name), "weights_gpu_bytes": weights_gpu,
            "weights_host_bytes": weights_host, "pool_peak_bytes": peak,
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

/// A LoRA of `rank` on every linear of every block (kohya names, f16 values of a trained LoRA's
/// size, alpha = rank), written to `path`.
fn write_random_lora(
    path: &std::path::Path,
    c: &DitConfig,
    rank: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    use safetensors::tensor::TensorView;
    let mut rng = Rng::new(7);
    let mut data: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    let halves = |v: Vec<f32>| -> Vec<u8> {
        v.into_iter()
            .flat_map(|x| half::f16::from_f32(x).to_le_bytes())
            .collect()
    };
    for (name, shape) in c.tensor_shapes() {
        let Some(module) = name.strip_suffix(".weight") else {
            continue;
        };
        if !module.starts_with("blocks.") || shape.len() != 2 {
            continue;
        }
        let key = format!(
            "lora_unet_{}",
            vdit_model::weights::diffusers_to_original(module).replace('.', "_")
        );
        let (out, inp) = (shape[0], shape[1]);
        let down = rng.vec_normal(rank * inp, 1.0 / (inp as f32).sqrt());
        let up = rng.vec_normal(out * rank, 0.01);
        data.push((
            format!("{key}.lora_down.weight"),
            vec![rank, inp],
            halves(down),
        ));
        data.push((format!("{key}.lora_up.weight"), vec![out, rank], halves(up)));
        data.push((format!("{key}.alpha"), vec![], halves(vec![rank as f32])));
    }
    let views = data
        .iter()
        .map(|(k, shape, bytes)| {
            TensorView::new(safetensors::Dtype::F16, shape.clone(), bytes).map(|v| (k.clone(), v))
        })
        .collect::<Result<Vec<_>, _>>()?;
    safetensors::serialize_to_file(views, None, path)?;
    Ok(())
}
