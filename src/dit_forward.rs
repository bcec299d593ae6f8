//! `vdit dit-forward`: one DiT forward pass on tensors read from and written to safetensors.

use std::path::PathBuf;

use clap::Args;
use vdit_model::dit::{LoadOptions, Precision, WanDit};
use vdit_model::plan::AttentionPlan;
use vdit_model::tensor_file::{read_tensor, write_tensors, HostTensor};
use vdit_model::weights::DitConfig;
use vdit_wgpu::{DType, Gpu, Recorder, Tensor};

#[derive(Args, Debug, Clone)]
pub struct DitForwardArgs {
    /// A transformer folder, a checkpoint root holding transformer/, or a safetensors or GGUF
    /// file.
    #[arg(long)]
    pub model: PathBuf,
    /// The model's config.json, for single files whose sizes cannot be inferred.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// safetensors with `latent` [16, F, H, W].
    #[arg(long)]
    pub latent: PathBuf,
    /// The diffusion timestep (0..1000).
    #[arg(long)]
    pub timestep: f32,
    /// safetensors with `context` [L, text_dim]; shorter contexts are zero-padded to the
    /// model's text length (512), as the Wan pipeline does.
    #[arg(long)]
    pub context: PathBuf,
    /// Where to write `velocity` [16, F, H, W].
    #[arg(long)]
    pub output: PathBuf,
    /// A JSON attention plan (see README.md).
    #[arg(long)]
    pub attention_plan: Option<PathBuf>,
    /// Storage precision: f16 (default where the adapter has it) or f32.
    #[arg(long)]
    pub precision: Option<String>,
    /// A LoRA merged into the DiT as it loads, with its strength (default 1); repeatable.
    #[arg(long = "lora", value_name = "FILE[:STRENGTH]", value_parser = crate::generate::parse_lora)]
    pub loras: Vec<vdit_model::lora::LoraSpec>,
    /// Keep the DiT's blocks in host memory and upload each just ahead of its use (the GPU
    /// holds two blocks' weights instead of all).
    #[arg(long)]
    pub offload: bool,
    /// Hold the Linear weights quantised on the GPU (q8_0 or q4_k), quantising them as they load.
    #[arg(long, value_name = "q8_0|q4_k", value_parser = crate::generate::parse_quantize)]
    pub quantize: Option<vdit_model::dit::Quantize>,
    /// Expand a GGUF file's Q8_0 and Q4_K weights to f16 as they load instead of keeping them
    /// quantised.
    #[arg(long, conflicts_with = "quantize")]
    pub expand_quantized: bool,
}

pub fn precision_arg(gpu: &Gpu, p: Option<&str>) -> Result<Precision, String> {
    match p {
        None => Ok(Precision::best_for(gpu)),
        Some(s) => {
            Precision::parse(s).ok_or_else(|| format!("--precision must be f32 or f16, not '{s}'"))
        }
    }
}

pub fn run(gpu: &Gpu, a: &DitForwardArgs) -> Result<(), Box<dyn std::error::Error>> {
    let precision = precision_arg(gpu, a.precision.as_deref())?;
    let config = a
        .config
        .as_ref()
        .map(DitConfig::from_json_file)
        .transpose()?;
    let options = LoadOptions {
        loras: a.loras.clone(),
        offload: a.offload,
        quantize: a.quantize,
        expand_quantized: a.expand_quantized,
    };
    let mut dit = WanDit::load_with_options(gpu, &a.model, config, precision, &options)?;
    let (on_gpu, in_host) = dit.weight_bytes();
    log::info!("weights: {on_gpu} bytes on the GPU, {in_host} bytes in host memory");
    if let Some(plan) = &a.attention_plan {
        let plan = AttentionPlan::load(gpu, plan, &dit.config, precision.dtype())?;
        dit.set_plan(plan)?;
    }
    let c = dit.config.clone();
    let latent = read_tensor(&a.latent, "latent")?;
    let shape: [usize; 4] = latent.shape.clone().try_into().map_err(|_| {
        format!(
            "{}: latent must be [{}, F, H, W], got {:?}",
            a.latent.display(),
            c.in_channels,
            latent.shape
        )
    })?;
    let mut context = read_tensor(&a.context, "context")?;
    if context.shape.len() != 2 || context.shape[1] != c.text_dim {
        return Err(format!(
            "{}: context must be [L, {}], got {:?}",
            a.context.display(),
            c.text_dim,
            context.shape
        )
        .into());
    }
    if context.shape[0] < c.text_len {
        context.data.resize(c.text_len * c.text_dim, 0.0);
        context.shape[0] = c.text_len;
    }
    let runner = dit.runner(gpu, shape)?;
    let latent_t = Tensor::from_f32(gpu, &latent.shape, &latent.data, DType::F32)?;
    let context_t = Tensor::from_f32(gpu, &context.shape, &context.data, DType::F32)?;
    let out_shape = [c.out_channels, shape[1], shape[2], shape[3]];
    let velocity = Tensor::empty(gpu, &out_shape, DType::F32)?;
    let mut rec = Recorder::new(gpu);
    let cache = dit.prepare_context(&mut rec, &context_t)?;
    rec.submit(None)?;
    let started = std::time::Instant::now();
    let mut rec = Recorder::new(gpu);
    runner.forward(&mut rec, &latent_t, a.timestep, &cache, &velocity)?;
    rec.run()?;
    log::info!("forward: {:.1} ms", started.elapsed().as_secs_f64() * 1e3);
    let data = velocity.to_vec_f32(gpu)?;
    if let Some(i) = data.iter().position(|v| !v.is_finite()) {
        return Err(format!("the forward produced a non-finite value at element {i}").into());
    }
    let out = HostTensor {
        shape: out_shape.to_vec(),
        data,
    };
    write_tensors(&a.output, &[("velocity", &out)])?;
    Ok(())
}
