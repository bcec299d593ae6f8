//! The generation loop: prompt -> context, noise -> denoised latent, latent -> frames.
//!
//! Every tensor stays on the GPU from the first step to the last frame; the host only records
//! and submits. The parts are loaded one after another and dropped when done (text encoder,
//! then DiT, then VAE), so the peak memory is that of the largest part and its activations.

use vdit_wgpu::{DType, Gpu, Recorder, Tensor};

use super::denoise::denoise_tapped;
use super::noise::gaussian_noise;
use super::parts::{load_dit, load_vae, PartWeights};
use super::paths::ModelPaths;
use super::progress::{CancelToken, Progress, Stage};
use super::request::{GenerateRequest, Prompt};
use crate::dit::{AttentionTap, Precision};
use crate::error::{input_err, ModelError, ModelPart, Result};
use crate::plan::AttentionPlan;
use crate::scheduler::needs_uncond;
use crate::text::{PromptTokenizer, Residency, UmT5Encoder};
use crate::vae::{DecodeOptions, FrameSink, LatentScale, VaeConfig, VaeTiling, WanVae};
use crate::weights::DitConfig;

/// A generated video on the GPU: f32 [3, frames, height, width] in [-1, 1].
#[derive(Debug)]
pub struct Video {
    pub frames: Tensor,
    pub fps: u32,
}

/// A text-to-video model ready to generate on one device.
#[derive(Clone)]
pub struct Pipeline<'g> {
    gpu: &'g Gpu,
    /// The text encoder and tokenizer (and where the DiT and VAE were found).
    paths: ModelPaths,
    dit: Option<PartWeights<DitConfig>>,
    vae: Option<PartWeights<VaeConfig>>,
    precision: Precision,
    plan: Option<std::path::PathBuf>,
    vae_tiling: Option<VaeTiling>,
    /// Frames per second of the written video (16 for Wan2.1).
    pub fps: u32,
}

impl<'g> Pipeline<'g> {
    pub fn new(gpu: &'g Gpu, paths: ModelPaths, precision: Precision) -> Self {
        let fps = paths.defaults.as_ref().and_then(|d| d.fps).unwrap_or(16);
        Self {
            gpu,
            dit: PartWeights::from_path(paths.dit.as_ref()),
            vae: PartWeights::from_path(paths.vae.as_ref()),
            paths,
            precision,
            plan: None,
            vae_tiling: None,
            fps,
        }
    }

    /// Random DiT weights of `config` instead of a file: a whole generation at full size
    /// without a checkpoint (`vdit bench generate`).
    pub fn with_random_dit(mut self, config: DitConfig, seed: u64) -> Self {
        self.dit = Some(PartWeights::Random { config, seed });
        self
    }

    /// Random VAE weights of `config` instead of a file.
    pub fn with_random_vae(mut self, config: VaeConfig, seed: u64) -> Self {
        self.vae = Some(PartWeights::Random { config, seed });
        self
    }

    /// Self-attention per block from a plan file (see `crate::plan`).
    pub fn with_attention_plan(mut self, plan: std::path::PathBuf) -> Self {
        self.plan = Some(plan);
        self
    }

    /// Decodes in overlapping spatial tiles (see [`VaeTiling`]): the VAE then needs the memory
    /// of one tile, whatever the frame size.
    pub fn with_vae_tiling(mut self, tiling: VaeTiling) -> Self {
        self.vae_tiling = Some(tiling);
        self
    }

    pub fn gpu(&self) -> &'g Gpu {
        self.gpu
    }

    pub fn paths(&self) -> &ModelPaths {
        &self.paths
    }

    /// Runs a whole generation. `progress` hears about each stage and step; `cancel` stops it
    /// between steps with `ModelError::Cancelled`. Running out of GPU memory is a
    /// `ModelError::OutOfMemory` naming the part and what would help.
    pub fn generate(
        &self,
        request: &GenerateRequest,
        progress: &mut dyn Progress,
        cancel: &CancelToken,
    ) -> Result<Video> {
        let latent = self.sample(request, progress, cancel, None)?;
        self.decode(&latent, progress, cancel)
    }

    /// The denoised latent [16, F, H/8, W/8] of `request` (prompt encoding and denoising),
    /// handing every block's self-attention of every forward to `tap` if one is given.
    pub fn sample(
        &self,
        request: &GenerateRequest,
        progress: &mut dyn Progress,
        cancel: &CancelToken,
        tap: Option<&mut dyn AttentionTap>,
    ) -> Result<Tensor> {
        request.validate()?;
        if let Some(t) = &self.vae_tiling {
            t.validate().map_err(|e| input_err("--vae-tile", e))?;
        }
        let gpu = self.gpu;
        let in_dit = |e: ModelError| e.in_part(ModelPart::Dit);
        let options = request.dit_load_options();
        let mut dit = load_dit(gpu, self.dit.as_ref(), self.precision, &options).map_err(in_dit)?;
        if let Some(plan) = &self.plan {
            let plan = AttentionPlan::load(gpu, plan, &dit.config, self.precision.dtype())
                .map_err(in_dit)?;
            dit.set_plan(plan)?;
        }
        let c = dit.config.clone();
        let guided = needs_uncond(request.guidance);

        // Prompts -> contexts [text_len, text_dim] on the host, then each block's K/V on the GPU.
        progress.begin(Stage::EncodingPrompt, 1 + guided as usize);
        let negative = request
            .negative_prompt
            .clone()
            .unwrap_or(Prompt::Text(String::new()));
        let mut prompts = vec![&request.prompt];
        if guided {
            prompts.push(&negative);
        }
        let contexts = self
            .encode_prompts(&prompts, c.text_dim, c.text_len)
            .map_err(|e| e.in_part(ModelPart::TextEncoder))?;
        let mut caches = Vec::new();
        for (i, ctx) in contexts.iter().enumerate() {
            cancel.check()?;
            let mut rec = Recorder::new(gpu);
            caches.push(dit.prepare_context(&mut rec, ctx).map_err(in_dit)?);
            rec.submit(None).map_err(|e| in_dit(e.into()))?;
            progress.advance(Stage::EncodingPrompt, i + 1);
        }
        progress.end(Stage::EncodingPrompt);

        // Denoising.
        let shape = request.latent_shape(c.in_channels);
        let runner = dit.runner(gpu, shape).map_err(in_dit)?;
        let numel: usize = shape.iter().product();
        let latent = Tensor::from_f32(
            gpu,
            &shape,
            &gaussian_noise(request.seed, numel),
            DType::F32,
        )
        .map_err(|e| in_dit(e.into()))?;
        denoise_tapped(
            gpu, &runner, &caches, &latent, request, progress, cancel, tap,
        )
        .map_err(in_dit)?;
        drop(runner);
        drop(caches);
        drop(dit);
        gpu.trim_pool();
        Ok(latent)
    }

    /// Decodes a denoised latent with the VAE, one latent frame (and tile) at a time.
    pub fn decode(
        &self,
        latent: &Tensor,
        progress: &mut dyn Progress,
        cancel: &CancelToken,
    ) -> Result<Video> {
        let gpu = self.gpu;
        let (vae, options) = self.vae_for_decoding(cancel)?;
        progress.begin(Stage::Decoding, 1);
        let in_vae = |e: ModelError| e.in_part(ModelPart::Vae);
        let frames = vae.decode_with(gpu, latent, options).map_err(in_vae)?;
        gpu.wait().map_err(|e| in_vae(e.into()))?;
        progress.advance(Stage::Decoding, 1);
        progress.end(Stage::Decoding);
        Ok(Video {
            frames,
            fps: self.fps,
        })
    }

    /// Decodes a denoised latent, handing the frames to `on_frames` as each latent frame gives
    /// them (see [`crate::vae::WanVae::decode_streamed`]: no tensor of the whole video exists
    /// unless tiles split the frame). Progress counts the frames; `cancel` is checked after each
    /// latent frame.
    pub fn decode_each(
        &self,
        latent: &Tensor,
        progress: &mut dyn Progress,
        cancel: &CancelToken,
        on_frames: &mut FrameSink,
    ) -> Result<()> {
        let (vae, options) = self.vae_for_decoding(cancel)?;
        let total = vae.output_shape(latent.shape())?[1];
        progress.begin(Stage::Decoding, total);
        let mut done = 0;
        vae.decode_streamed(self.gpu, latent, options, &mut |frames, n| {
            on_frames(frames, n)?;
            done += n;
            progress.advance(Stage::Decoding, done);
            cancel.check()
        })
        .map_err(|e| e.in_part(ModelPart::Vae))?;
        // The stage ends when its last frames exist, not when they are recorded.
        self.gpu
            .wait()
            .map_err(|e| ModelError::from(e).in_part(ModelPart::Vae))?;
        progress.end(Stage::Decoding);
        Ok(())
    }

    /// The VAE, loaded, and how to decode with it. As the DiT before the prompt stage, the VAE
    /// loads before its stage begins.
    fn vae_for_decoding(&self, cancel: &CancelToken) -> Result<(WanVae, DecodeOptions<'static>)> {
        if let Some(t) = &self.vae_tiling {
            t.validate().map_err(|e| input_err("--vae-tile", e))?;
        }
        cancel.check()?;
        let vae = load_vae(self.gpu, self.vae.as_ref(), self.precision)
            .map_err(|e| e.in_part(ModelPart::Vae))?;
        let options = DecodeOptions {
            scale: LatentScale::Normalized,
            tiling: self.vae_tiling,
            profiler: None,
        };
        Ok((vae, options))
    }

    /// Each prompt as a context [text_len, text_dim]: embeddings are zero-padded (or rejected
    /// when too long), texts go through the text encoder.
    fn encode_prompts(
        &self,
        prompts: &[&Prompt],
        text_dim: usize,
        text_len: usize,
    ) -> Result<Vec<Tensor>> {
        let mut out = Vec::new();
        let mut texts = Vec::new();
        for p in prompts {
            match p {
                Prompt::Embeddings(e) => {
                    if e.shape.len() != 2 || e.shape[1] != text_dim || e.shape[0] > text_len {
                        return Err(input_err(
                            "prompt embeddings",
                            format!("must be [L <= {text_len}, {text_dim}], got {:?}", e.shape),
                        ));
                    }
                    let mut data = e.data.clone();
                    data.resize(text_len * text_dim, 0.0);
                    out.push(Some(Tensor::from_f32(
                        self.gpu,
                        &[text_len, text_dim],
                        &data,
                        DType::F32,
                    )?));
                }
                Prompt::Text(t) => {
                    texts.push((out.len(), t.clone()));
                    out.push(None);
                }
            }
        }
        if !texts.is_empty() {
            let encoded = self.encode_texts(
                &texts.iter().map(|t| t.1.as_str()).collect::<Vec<_>>(),
                text_dim,
                text_len,
            )?;
            for ((slot, _), e) in texts.iter().zip(encoded) {
                out[*slot] = Some(e);
            }
        }
        Ok(out
            .into_iter()
            .map(|o| o.expect("every prompt encoded"))
            .collect())
    }

    /// Runs the text encoder on `texts` one layer at a time, then frees it before the DiT runs.
    fn encode_texts(
        &self,
        texts: &[&str],
        text_dim: usize,
        text_len: usize,
    ) -> Result<Vec<Tensor>> {
        let path = self.paths.text_encoder.as_ref().ok_or_else(|| {
            input_err(
                "prompt",
                "the model has no text encoder: pass --text-encoder, or --prompt-embeds",
            )
        })?;
        let mut encoder = UmT5Encoder::load(self.gpu, path, self.precision, Residency::Streamed)?;
        if let Some(t) = &self.paths.tokenizer {
            encoder.set_tokenizer(PromptTokenizer::from_file(PromptTokenizer::find(t)?)?);
        }
        if encoder.config().d_model != text_dim {
            return Err(input_err(
                path.display().to_string(),
                format!(
                    "the text encoder gives {} features, the DiT takes {text_dim}",
                    encoder.config().d_model
                ),
            ));
        }
        let contexts = encoder.encode_batch(self.gpu, texts)?;
        encoder.free(self.gpu);
        for c in &contexts {
            if c.shape() != [text_len, text_dim] {
                return Err(input_err(
                    "prompt",
                    format!("context {c:?}, the DiT takes [{text_len}, {text_dim}]"),
                ));
            }
        }
        Ok(contexts)
    }
}
