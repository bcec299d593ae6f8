//! The `vdit` command.

mod bench_attention;
mod bench_distill;
mod bench_dit;
mod bench_generate;
mod bench_kernels;
mod bench_vae;
mod compare;
mod distill;
mod dit_forward;
mod encode_prompt;
mod generate;
mod gpu_args;
mod info;
mod plan;
mod sampling_args;
mod selftest;
mod vae_decode;

use clap::{Parser, Subcommand};

use gpu_args::{in_part, GpuArgs};
use vdit_model::ModelPart;

#[derive(Parser)]
#[command(
    name = "vdit",
    version,
    about = "Video diffusion transformers on any GPU (wgpu)"
)]
struct Cli {
    #[command(flatten)]
    gpu: GpuArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Text to video: prompt in, MP4 / WebP / GIF / PNG frames out.
    Generate(Box<generate::GenerateArgs>),
    /// List adapters and show the chosen one's features and limits.
    Info,
    /// Encode a prompt with the umT5 text encoder: `context` [512, 4096] out (safetensors).
    EncodePrompt(encode_prompt::EncodePromptArgs),
    /// One DiT forward pass: latent, timestep and context in, velocity out (safetensors).
    DitForward(dit_forward::DitForwardArgs),
    /// Decode latents to frames with the Wan-VAE: latent in, frames [3, T, H, W] out (safetensors).
    VaeDecode(vae_decode::VaeDecodeArgs),
    /// Distil each block's feature maps for cheaper attention modes on the model's own sampling.
    Distill(Box<distill::DistillArgs>),
    /// Per-layer attention modes of least distillation error within a cost budget.
    Plan(plan::PlanArgs),
    /// Softmax against an attention plan from the same noise: PSNR, SSIM, per-block error, time.
    Compare(Box<compare::CompareArgs>),
    /// Every kernel variant this GPU can run, at odd sizes, against the CPU float64 reference.
    Selftest(selftest::SelftestArgs),
    /// Time kernels or models with GPU timestamp queries.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Every core kernel at Wan2.1 1.3B shapes.
    Kernels(bench_kernels::KernelBenchArgs),
    /// One DiT forward at full size with random weights.
    Dit(bench_dit::DitBenchArgs),
    /// What `vdit distill` costs at full size with random weights: capture, steps, memory, hours.
    Distill(bench_distill::DistillBenchArgs),
    /// One attention mode over sequence lengths, optionally checked against the CPU.
    Attention(bench_attention::AttentionBenchArgs),
    /// One Wan-VAE decode at full size with random weights.
    Vae(bench_vae::VaeBenchArgs),
    /// The denoising loop and decode of a whole generation with random full-size weights.
    Generate(bench_generate::GenerateBenchArgs),
}

type CliResult = Result<(), Box<dyn std::error::Error>>;

fn with_gpu(args: &GpuArgs, f: impl FnOnce(&vdit_wgpu::Gpu) -> CliResult) -> CliResult {
    let gpu = args.open()?;
    f(&gpu)
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Generate(a) => with_gpu(&cli.gpu, |gpu| generate::run(gpu, a)),
        Command::Info => info::run(&cli.gpu),
        Command::EncodePrompt(a) => with_gpu(&cli.gpu, |gpu| {
            encode_prompt::run(gpu, a).map_err(|e| in_part(e, ModelPart::TextEncoder))
        }),
        Command::DitForward(a) => with_gpu(&cli.gpu, |gpu| {
            dit_forward::run(gpu, a).map_err(|e| in_part(e, ModelPart::Dit))
        }),
        Command::VaeDecode(a) => with_gpu(&cli.gpu, |gpu| {
            vae_decode::run(gpu, a).map_err(|e| in_part(e, ModelPart::Vae))
        }),
        Command::Plan(a) => plan::run(a),
        Command::Distill(a) => with_gpu(&cli.gpu, |gpu| distill::run(gpu, a)),
        Command::Compare(a) => with_gpu(&cli.gpu, |gpu| compare::run(gpu, a)),
        Command::Selftest(a) => with_gpu(&cli.gpu, |gpu| selftest::run(gpu, a)),
        Command::Bench(b) => match b {
            BenchCommand::Kernels(a) => with_gpu(&cli.gpu, |gpu| bench_kernels::run(gpu, a)),
            BenchCommand::Dit(a) => with_gpu(&cli.gpu, |gpu| bench_dit::run(gpu, a)),
            BenchCommand::Distill(a) => with_gpu(&cli.gpu, |gpu| bench_distill::run(gpu, a)),
            BenchCommand::Attention(a) => with_gpu(&cli.gpu, |gpu| {
                print!("{}", bench_attention::run(gpu, a)?);
                Ok(())
            }),
            BenchCommand::Vae(a) => with_gpu(&cli.gpu, |gpu| bench_vae::run(gpu, a)),
            BenchCommand::Generate(a) => with_gpu(&cli.gpu, |gpu| bench_generate::run(gpu, a)),
        },
    };
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
