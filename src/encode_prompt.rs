//! `vdit encode-prompt`: a prompt through the umT5 text encoder, written as the DiT's context.

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use vdit_model::dit::Precision;
use vdit_model::tensor_file::{write_tensors, HostTensor};
use vdit_model::text::{PromptTokenizer, Residency, UmT5Encoder, TEXT_LEN};
use vdit_wgpu::Gpu;

#[derive(Args, Debug, Clone)]
pub struct EncodePromptArgs {
    /// A checkpoint root (text_encoder/ + tokenizer/, or models_t5_umt5-xxl-enc-bf16.pth +
    /// google/umt5-xxl/), a text_encoder/ folder, a safetensors file or index (fp8 and scaled
    /// fp8 too), a .pth file, or a GGUF file with llama.cpp's names (its tokenizer read from
    /// its metadata).
    #[arg(long)]
    pub model: PathBuf,
    /// tokenizer.json (or its folder, or a GGUF file carrying one); by default the one in a GGUF
    /// text encoder's metadata, else one found beside the weights.
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// The prompt.
    #[arg(long)]
    pub prompt: String,
    /// Where to write `context` [512, 4096] f32 (safetensors): the prompt's rows, then zeros.
    #[arg(long)]
    pub output: PathBuf,
    /// Weight storage on the GPU: f16 (default where the adapter has it) or f32. Activations
    /// are f32 either way.
    #[arg(long)]
    pub precision: Option<String>,
}

pub fn run(gpu: &Gpu, args: &EncodePromptArgs) -> Result<(), Box<dyn std::error::Error>> {
    let precision = match args.precision.as_deref() {
        None => Precision::best_for(gpu),
        Some(s) => Precision::parse(s)
            .ok_or_else(|| format!("--precision must be f32 or f16, not '{s}'"))?,
    };
    let start = Instant::now();
    let mut encoder = UmT5Encoder::load(gpu, &args.model, precision, Residency::Streamed)?;
    if let Some(t) = &args.tokenizer {
        encoder.set_tokenizer(PromptTokenizer::from_file(t)?);
    }
    let ids = encoder.tokenize(&args.prompt)?;
    let context = encoder.encode_ids(gpu, &[&ids])?.remove(0);
    let d = encoder.config().d_model;
    encoder.free(gpu);
    let data = context.to_vec_f32(gpu)?;
    write_tensors(
        &args.output,
        &[(
            "context",
            &HostTensor {
                shape: vec![TEXT_LEN, d],
                data,
            },
        )],
    )?;
    eprintln!(
        "{} tokens ({} with EOS) -> {} [{TEXT_LEN}, {d}] in {:.2} s",
        ids.len() - 1,
        ids.len(),
        args.output.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
