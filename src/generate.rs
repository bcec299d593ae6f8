//! `vdit generate`: text to video, with progress bars, written atomically.

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use vdit_model::dit::Quantize;
use vdit_model::lora::LoraSpec;
use vdit_model::pipeline::Preset;
use vdit_model::pipeline::{
    CancelToken, GenerateRequest, ModelPaths, Pipeline, Progress, Prompt, SamplerKind, Stage,
    VideoStream,
};
use vdit_model::tensor_file::read_tensor;
use vdit_model::vae::VaeTiling;
use vdit_wgpu::Gpu;

use crate::dit_forward::precision_arg;
use crate::vae_decode::VAE_TILE_HELP;

#[derive(Args, Debug, Clone)]
pub struct GenerateArgs {
    /// A diffusers Wan folder or the original Wan2.1 folder. Without it (and without --dit),
    /// the small embedded default model is used.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Explicit DiT weights (a file or folder), e.g. a ComfyUI checkpoint or a GGUF file
    /// (F32, F16, BF16, Q4_0 to Q8_0, Q2_K to Q6_K; Q8_0 and Q4_K matrices kept quantised on
    /// the GPU, the rest expanded to f16 or f32 as it is loaded).
    #[arg(long)]
    pub dit: Option<PathBuf>,
    /// Explicit VAE weights (diffusers vae/ folder, wan_2.1_vae.safetensors or Wan2.1_VAE.pth).
    #[arg(long)]
    pub vae: Option<PathBuf>,
    /// Explicit text encoder weights (text_encoder/ folder, umt5 safetensors, .pth or GGUF).
    #[arg(long)]
    pub text_encoder: Option<PathBuf>,
    /// The tokenizer (tokenizer.json or its folder, or a GGUF file carrying one); by default the
    /// one in a GGUF text encoder's metadata, else one found beside the text encoder.
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    #[arg(
        long,
        conflicts_with = "prompt_embeds",
        required_unless_present = "prompt_embeds"
    )]
    pub prompt: Option<String>,
    /// safetensors with the prompt's context [L, text_dim] (instead of --prompt).
    #[arg(long)]
    pub prompt_embeds: Option<PathBuf>,
    #[arg(long, conflicts_with = "negative_prompt_embeds")]
    pub negative_prompt: Option<String>,
    #[arg(long)]
    pub negative_prompt_embeds: Option<PathBuf>,
    /// Width in pixels, a multiple of 16 [default: 832, or the model's own].
    #[arg(long)]
    pub width: Option<usize>,
    /// Height in pixels, a multiple of 16 [default: 480, or the model's own].
    #[arg(long)]
    pub height: Option<usize>,
    /// Frames, 4k + 1 [default: 81, or the model's own].
    #[arg(long)]
    pub frames: Option<usize>,
    /// Frames per second of the video [default: 16].
    #[arg(long)]
    pub fps: Option<u32>,
    /// Denoising steps [default: 50, or the model's own].
    #[arg(long)]
    pub steps: Option<usize>,
    /// Classifier-free guidance scale; 1.0 skips the unconditional pass [default: 5.0].
    #[arg(long)]
    pub guidance: Option<f32>,
    /// Flow shift: 3.0 for 480p, 5.0 for 720p [default: 3.0].
    #[arg(long)]
    pub flow_shift: Option<f32>,
    /// unipc, euler or step-distill [default: unipc].
    #[arg(long)]
    pub sampler: Option<SamplerKind>,
    /// Steps, guidance, shift and sampler of a distilled model or LoRA: lightx2v-4step (4 steps
    /// of flow Euler at timesteps 1000/750/500/250, shift 5, guidance 1). Flags given beside it
    /// win.
    #[arg(long, value_parser = parse_preset)]
    pub preset: Option<Preset>,
    /// A LoRA merged into the DiT as it loads, with its strength (default 1); repeatable.
    /// kohya, diffusers/PEFT and ComfyUI (`diffusion_model.`, with `diff`/`diff_b`) key formats.
    #[arg(long = "lora", value_name = "FILE[:STRENGTH]", value_parser = parse_lora)]
    pub loras: Vec<LoraSpec>,
    /// Keep the DiT's blocks in host memory and upload each just ahead of its use: the GPU
    /// holds two blocks' weights instead of all (Wan 14B on a 24 GB card).
    #[arg(long)]
    pub offload: bool,
    /// Hold the DiT's Linear weights quantised on the GPU, quantising them as they load: q8_0
    /// (1.125 bytes per parameter instead of f16's 2) or q4_k (4.75 bits); a GGUF file's Q8_0
    /// and Q4_K weights stay so without it.
    #[arg(long, value_name = "q8_0|q4_k", value_parser = parse_quantize)]
    pub quantize: Option<Quantize>,
    /// Expand a GGUF DiT's Q8_0 and Q4_K weights to f16 as they load instead of keeping them
    /// quantised on the GPU: for Q8_0, about 9% faster forwards on the H200 for 1.8 x the
    /// weights' memory.
    #[arg(long, conflicts_with = "quantize")]
    pub expand_quantized: bool,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long)]
    pub attention_plan: Option<PathBuf>,
    /// Storage precision: f16 (default where the adapter has it) or f32.
    #[arg(long)]
    pub precision: Option<String>,
    #[arg(long, value_name = "SIZE[,OVERLAP]", help = VAE_TILE_HELP)]
    pub vae_tile: Option<VaeTiling>,
    /// out.mp4, out.webp, out.gif, or a folder (ending in /) of PNG frames.
    #[arg(long, default_value = "out.mp4")]
    pub output: PathBuf,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
}

/// indicatif bars for each stage, and how long each stage took.
struct Bars {
    quiet: bool,
    bar: Option<ProgressBar>,
    started: Instant,
    took: Vec<(Stage, f64)>,
}

impl Bars {
    /// "prompt 0.3 s, denoise 12.1 s, decode 2.0 s".
    fn summary(&self) -> String {
        self.took
            .iter()
            .map(|(stage, s)| format!("{} {s:.1} s", stage_name(*stage)))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn stage_name(stage: Stage) -> &'static str {
    match stage {
        Stage::EncodingPrompt => "prompt",
        Stage::Denoising => "denoise",
        Stage::Decoding => "decode",
    }
}

impl Progress for Bars {
    fn begin(&mut self, stage: Stage, total: usize) {
        self.started = Instant::now();
        if self.quiet {
            return;
        }
        let name = stage_name(stage);
        let template = match stage {
            Stage::EncodingPrompt => "{prefix:>9} [{bar:30}] {pos}/{len} {elapsed}",
            Stage::Denoising => {
                "{prefix:>9} [{bar:30}] {pos}/{len} steps {per_sec} ETA {eta} ({elapsed})"
            }
            Stage::Decoding => "{prefix:>9} [{bar:30}] {pos}/{len} frames {elapsed}",
        };
        let bar = ProgressBar::new(total as u64);
        bar.set_style(
            ProgressStyle::with_template(template)
                .unwrap()
                .progress_chars("=> "),
        );
        bar.set_prefix(name);
        bar.tick();
        self.bar = Some(bar);
    }
    fn advance(&mut self, _stage: Stage, done: usize) {
        if let Some(b) = &self.bar {
            b.set_position(done as u64);
        }
    }
    fn end(&mut self, stage: Stage) {
        if let Some(b) = self.bar.take() {
            b.finish();
        }
        let seconds = self.started.elapsed().as_secs_f64();
        log::info!("{stage:?}: {seconds:.1} s");
        self.took.push((stage, seconds));
    }
}

/// `--quantize`: the weight types the DiT can be held in on the GPU besides its precision.
pub fn parse_quantize(arg: &str) -> Result<Quantize, String> {
    Quantize::parse(arg)
        .ok_or_else(|| format!("'{arg}': the DiT can be quantised to q8_0 or q4_k only"))
}

pub fn parse_lora(arg: &str) -> Result<LoraSpec, String> {
    LoraSpec::parse(arg).map_err(|e| e.to_string())
}

fn parse_preset(arg: &str) -> Result<Preset, String> {
    Preset::parse(arg).map_err(|e| e.to_string())
}

fn embeds(path: &std::path::Path) -> Result<Prompt, Box<dyn std::error::Error>> {
    Ok(Prompt::Embeddings(read_tensor(path, "context")?))
}

pub fn run(gpu: &Gpu, a: &GenerateArgs) -> Result<(), Box<dyn std::error::Error>> {
    let mut paths = match (&a.model, &a.dit) {
        (Some(m), _) => ModelPaths::resolve(m)?,
        (None, Some(_)) => ModelPaths::default(),
        (None, None) => {
            let p = ModelPaths::embedded_default()?;
            if !a.quiet {
                eprintln!(
                    "no --model given: using the small embedded default model, which knows only \
                     prompts like \"a red ball moving left on a gray background\" (README.md)"
                );
            }
            p
        }
    };
    for (flag, slot) in [
        (&a.dit, &mut paths.dit),
        (&a.vae, &mut paths.vae),
        (&a.text_encoder, &mut paths.text_encoder),
        (&a.tokenizer, &mut paths.tokenizer),
    ] {
        if let Some(p) = flag {
            *slot = Some(p.clone());
        }
    }
    let d = paths.defaults.clone().unwrap_or_default();
    let prompt = match (&a.prompt, &a.prompt_embeds) {
        (_, Some(p)) => embeds(p)?,
        (Some(t), None) => Prompt::Text(t.clone()),
        (None, None) => return Err("give --prompt or --prompt-embeds".into()),
    };
    let negative = match (&a.negative_prompt, &a.negative_prompt_embeds) {
        (_, Some(p)) => Some(embeds(p)?),
        (Some(t), None) => Some(Prompt::Text(t.clone())),
        (None, None) => None,
    };
    let mut request = GenerateRequest::new(prompt);
    request.negative_prompt = negative;
    // Explicit flags, then the preset, then the model's own defaults, then Wan2.1's.
    let preset = a.preset;
    request.width = a.width.or(d.width).unwrap_or(832);
    request.height = a.height.or(d.height).unwrap_or(480);
    request.frames = a.frames.or(d.frames).unwrap_or(81);
    request.steps = a
        .steps
        .or(preset.map(Preset::steps))
        .or(d.steps)
        .unwrap_or(50);
    request.guidance = a
        .guidance
        .or(preset.map(Preset::guidance))
        .or(d.guidance)
        .unwrap_or(5.0);
    request.flow_shift = a
        .flow_shift
        .or(preset.map(Preset::flow_shift))
        .or(d.flow_shift)
        .unwrap_or(3.0);
    request.sampler = a
        .sampler
        .or(preset.map(Preset::sampler))
        .unwrap_or_default();
    request.loras = a.loras.clone();
    request.offload = a.offload;
    request.quantize = a.quantize;
    request.expand_quantized = a.expand_quantized;
    request.seed = a.seed;
    request.validate()?;
    // Fail on an unwritable output before minutes of work.
    vdit_model::video::VideoFormat::from_path(&a.output)?;
    let precision = precision_arg(gpu, a.precision.as_deref())?;
    let mut pipeline = Pipeline::new(gpu, paths, precision);
    if let Some(fps) = a.fps {
        pipeline.fps = fps;
    }
    if let Some(plan) = &a.attention_plan {
        pipeline = pipeline.with_attention_plan(plan.clone());
    }
    if let Some(tiling) = a.vae_tile {
        pipeline = pipeline.with_vae_tiling(tiling);
    }
    let cancel = CancelToken::default();
    let mut bars = Bars {
        quiet: a.quiet,
        bar: None,
        started: Instant::now(),
        took: Vec::new(),
    };
    let started = Instant::now();
    let latent = pipeline.sample(&request, &mut bars, &cancel, None)?;
    // The decoder hands each latent frame's frames to the file as they come.
    let mut stream =
        VideoStream::create(gpu, &a.output, request.width, request.height, pipeline.fps)?;
    let mut write_s = 0.0;
    pipeline.decode_each(&latent, &mut bars, &cancel, &mut |frames, n| {
        let t = Instant::now();
        stream.push(gpu, frames, n)?;
        write_s += t.elapsed().as_secs_f64();
        Ok(())
    })?;
    let written = stream.frames();
    let writing = Instant::now();
    stream.finish()?;
    write_s += writing.elapsed().as_secs_f64();
    if !a.quiet {
        eprintln!(
            "wrote {} ({} frames, {}x{}, {} fps) in {:.1} s: {}, write {:.1} s",
            a.output.display(),
            written,
            request.width,
            request.height,
            pipeline.fps,
            started.elapsed().as_secs_f64(),
            bars.summary(),
            write_s
        );
    }
    Ok(())
}
