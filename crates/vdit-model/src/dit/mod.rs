//! The Wan2.1 diffusion transformer (T2V 1.3B and 14B), one struct per module of the reference.
//!
//! - [`WanDit`]: the weights on the GPU, loaded from any supported checkpoint layout.
//! - [`DitRunner`]: the activations of one latent shape, allocated once; `forward` records a
//!   whole forward pass into a [`Recorder`].
//! - [`ContextCache`]: the text embedding and every block's cross-attention keys and values,
//!   computed once per prompt and reused by all denoising steps.

mod forward;
mod layers;
mod offload;
pub mod tap;
mod time;

use std::collections::HashSet;
use std::path::Path;

use vdit_wgpu::kernels::matmul::Weight;
use vdit_wgpu::kernels::q4k::{Q4KWeight, Q4K_BLOCK};
use vdit_wgpu::kernels::q8::{Q8Weight, Q8_BLOCK};
use vdit_wgpu::{DType, Gpu, Tensor};

pub use forward::{wan_rope_pairs, ContextCache, DitRunner};
pub use layers::{Attention, Block, Linear};
pub use tap::{AttentionTap, BlockAttention, Branch, Pass};
pub use time::timestep_sinusoid;

use crate::error::Result;
use crate::lora::{LoraSet, LoraSpec};
use crate::plan::AttentionPlan;
use crate::weights::{Checkpoint, DitConfig, QuantType, StoredDType, WeightError};
use offload::BlockWeights;

/// Storage precision of weights and activations. The residual stream, norms, modulation and
/// the time embedding are f32 in both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    F32,
    F16,
}

impl Precision {
    /// f16 where the adapter has it, else f32.
    pub fn best_for(gpu: &Gpu) -> Self {
        if gpu.caps.shader_f16 {
            Precision::F16
        } else {
            Precision::F32
        }
    }
    pub fn dtype(self) -> DType {
        match self {
            Precision::F32 => DType::F32,
            Precision::F16 => DType::F16,
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "f32" => Some(Precision::F32),
            "f16" => Some(Precision::F16),
            _ => None,
        }
    }
}

/// A quantised form the DiT's Linear weights can be held in on the GPU; the matmuls dequantise
/// them as they load W.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quantize {
    /// 1.125 bytes per parameter (GGML Q8_0: an int8 per value, a scale per 32).
    Q8_0,
    /// 4.75 bits per parameter (GGML Q4_K: 4-bit values, 6-bit scales and minimums per 32,
    /// f16 super-block scales per 256).
    Q4_K,
}

impl Quantize {
    /// `q8_0` or `q4_k`, as the command line names them.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "q8_0" => Some(Quantize::Q8_0),
            "q4_k" => Some(Quantize::Q4_K),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Quantize::Q8_0 => "q8_0",
            Quantize::Q4_K => "q4_k",
        }
    }

    /// Whether rows of `inp` values are whole blocks of this type.
    pub fn fits(self, inp: usize) -> bool {
        match self {
            Quantize::Q8_0 => inp % Q8_BLOCK == 0,
            Quantize::Q4_K => inp % Q4K_BLOCK == 0,
        }
    }

    /// The GGUF block type of the same name.
    fn of_stored(dtype: StoredDType) -> Option<Self> {
        match dtype {
            StoredDType::Quant(QuantType::Q8_0) => Some(Quantize::Q8_0),
            StoredDType::Quant(QuantType::Q4_K) => Some(Quantize::Q4_K),
            _ => None,
        }
    }

    /// A [n, k] weight from GGML blocks of this type.
    fn upload(self, gpu: &Gpu, n: usize, k: usize, blocks: &[u8]) -> vdit_wgpu::Result<Weight> {
        Ok(match self {
            Quantize::Q8_0 => Weight::Q8(Q8Weight::from_ggml_blocks(gpu, n, k, blocks)?),
            Quantize::Q4_K => Weight::Q4K(Q4KWeight::from_ggml_blocks(gpu, n, k, blocks)?),
        })
    }

    /// A [n, k] weight quantised from f32 values.
    fn quantize(self, gpu: &Gpu, n: usize, k: usize, values: &[f32]) -> vdit_wgpu::Result<Weight> {
        Ok(match self {
            Quantize::Q8_0 => Weight::Q8(Q8Weight::quantize(gpu, n, k, values)?),
            Quantize::Q4_K => Weight::Q4K(Q4KWeight::quantize(gpu, n, k, values)?),
        })
    }
}

/// What is done to a DiT's weights as they load, beyond reading them.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Merged in order; see [`crate::lora`].
    pub loras: Vec<LoraSpec>,
    /// Keep the blocks' weights in host memory and upload each block just ahead of its use
    /// (two blocks on the GPU instead of all).
    pub offload: bool,
    /// Hold the Linear weights quantised on the GPU, quantising dense ones as they load (Q8_0:
    /// 1.125 bytes per parameter, Q4_K: 4.75 bits, instead of f16's 2 bytes; random benchmark
    /// weights use this). Weights a GGUF file stores as Q8_0 or Q4_K stay in their own type.
    /// Matrices whose rows are not whole blocks of the type stay dense.
    pub quantize: Option<Quantize>,
    /// Expand Q8_0 and Q4_K weights of GGUF files to the model's precision at load instead of
    /// keeping them quantised on the GPU.
    pub expand_quantized: bool,
}

/// What loading did beyond uploading weights.
#[derive(Clone, Debug, Default)]
pub struct LoadReport {
    /// Tensors changed by LoRAs, and the seconds their merges took.
    pub lora_tensors: usize,
    pub lora_merge_seconds: f64,
}

/// The DiT's weights on the GPU.
pub struct WanDit {
    pub config: DitConfig,
    pub load_report: LoadReport,
    pub precision: Precision,
    pub plan: AttentionPlan,
    /// The Conv3d patch embedding as a Linear over flattened patches: [dim, C*pt*ph*pw].
    pub(crate) patch_embedding: Linear,
    pub(crate) text_1: Linear,
    pub(crate) text_2: Linear,
    pub(crate) time_1: Linear,
    pub(crate) time_2: Linear,
    pub(crate) time_proj: Linear,
    pub(crate) blocks: BlockWeights,
    /// The head's (shift, scale) table [2, dim], f32.
    pub(crate) head_table: Tensor,
    pub(crate) proj_out: Linear,
}

/// Uploads tensors from a checkpoint (or random weights seen as one), merges the LoRAs into
/// them and remembers which names were used.
pub(crate) struct Loader<'a> {
    pub gpu: &'a Gpu,
    pub source: &'a Checkpoint,
    pub loras: &'a LoraSet,
    pub dtype: DType,
    pub used: HashSet<String>,
    /// See [`LoadOptions::quantize`] and [`LoadOptions::expand_quantized`].
    pub quantize: Option<Quantize>,
    pub keep_quantized: bool,
}

impl Loader<'_> {
    /// The tensor `name` (canonical, diffusers naming), checked to be `shape`, in `dtype`.
    pub fn tensor(&mut self, name: &str, shape: &[usize], dtype: DType) -> Result<Tensor> {
        self.used.insert(name.to_string());
        let tensor = self.source.upload(self.gpu, name, shape, dtype)?;
        self.loras.apply(self.gpu, name, &tensor)?;
        Ok(tensor)
    }

    /// The Linear weight `name` [out, inp], quantised on the GPU where `dtype` is the model's
    /// precision, no LoRA changes it (a LoRA is merged into a dense copy) and either the file
    /// stores it as Q8_0 or Q4_K (kept so unless `expand_quantized`) or `quantize` asks for it,
    /// its rows being whole blocks of the type; else dense.
    pub fn matrix(&mut self, name: &str, out: usize, inp: usize, dtype: DType) -> Result<Weight> {
        if dtype == self.dtype && !self.loras.patches(name) {
            // Decided from the header: the values are read once, whichever way they go.
            let stored = self
                .source
                .info(name)
                .and_then(|info| Quantize::of_stored(info.dtype()))
                .filter(|q| self.keep_quantized && q.fits(inp));
            let quantize = self.quantize.filter(|q| q.fits(inp));
            if let Some(q) = stored.or(quantize) {
                let view = self.source.get(name)?;
                view.check_shape(&[out, inp])?;
                self.used.insert(name.to_string());
                if stored.is_none() {
                    return Ok(q.quantize(self.gpu, out, inp, &view.to_f32()?)?);
                }
                return q
                    .upload(self.gpu, out, inp, view.bytes())
                    .map_err(|source| {
                        WeightError::Gpu {
                            path: view.path().to_path_buf(),
                            tensor: view.name().to_string(),
                            source,
                        }
                        .into()
                    });
            }
        }
        Ok(Weight::Dense(self.tensor(name, &[out, inp], dtype)?))
    }
}

impl WanDit {
    /// Loads a DiT from a transformer folder, a checkpoint root holding `transformer/`, or a
    /// safetensors file (original, diffusers or ComfyUI layout), with softmax attention.
    pub fn load(gpu: &Gpu, path: &Path, precision: Precision) -> Result<Self> {
        Self::load_with_config(gpu, path, None, precision)
    }

    /// As [`WanDit::load`], with the sizes given instead of read from a `config.json` beside
    /// the weights or inferred from tensor shapes (needed for single files of unusual sizes).
    pub fn load_with_config(
        gpu: &Gpu,
        path: &Path,
        config: Option<DitConfig>,
        precision: Precision,
    ) -> Result<Self> {
        Self::load_with_options(gpu, path, config, precision, &LoadOptions::default())
    }

    /// As [`WanDit::load_with_config`], with LoRAs merged as the weights load.
    pub fn load_with_options(
        gpu: &Gpu,
        path: &Path,
        config: Option<DitConfig>,
        precision: Precision,
        options: &LoadOptions,
    ) -> Result<Self> {
        let folder = path.join("transformer");
        let path = if folder.is_dir() {
            folder.as_path()
        } else {
            path
        };
        let ckpt = Checkpoint::open(path)?;
        let config = match config {
            Some(c) => c,
            None => ckpt.config()?,
        };
        Self::from_checkpoint_with_options(gpu, &ckpt, config, precision, options)
    }

    pub fn from_checkpoint(
        gpu: &Gpu,
        ckpt: &Checkpoint,
        config: DitConfig,
        precision: Precision,
    ) -> Result<Self> {
        Self::from_checkpoint_with_options(gpu, ckpt, config, precision, &LoadOptions::default())
    }

    /// A model of `config` with random weights (seeded): for benchmarks and tests of speed and
    /// memory, where the values do not matter.
    pub fn random(gpu: &Gpu, config: DitConfig, precision: Precision, seed: u64) -> Result<Self> {
        Self::random_with_options(gpu, config, precision, seed, &LoadOptions::default())
    }

    /// As [`WanDit::random`], with LoRAs merged into the random weights (benchmarks of the
    /// merge at full size). The weights are [`DitConfig::random_weights`], loaded like a
    /// checkpoint's.
    pub fn random_with_options(
        gpu: &Gpu,
        config: DitConfig,
        precision: Precision,
        seed: u64,
        options: &LoadOptions,
    ) -> Result<Self> {
        let ckpt = Checkpoint::from_set(config.random_weights(seed))?;
        Self::from_checkpoint_with_options(gpu, &ckpt, config, precision, options)
    }

    /// As [`WanDit::from_checkpoint`], with LoRAs merged, quantisation and offloading as
    /// `options` ask; every tensor of the checkpoint must be used.
    pub fn from_checkpoint_with_options(
        gpu: &Gpu,
        ckpt: &Checkpoint,
        config: DitConfig,
        precision: Precision,
        options: &LoadOptions,
    ) -> Result<Self> {
        // Every LoRA key is resolved and shape-checked before the first weight is uploaded.
        let loras = LoraSet::open(&options.loras, &config)?;
        let (dit, used) = Self::build(gpu, ckpt, &loras, config, precision, options)?;
        ckpt.check_all_used(&used)?;
        Ok(dit)
    }

    fn build(
        gpu: &Gpu,
        source: &Checkpoint,
        loras: &LoraSet,
        config: DitConfig,
        precision: Precision,
        options: &LoadOptions,
    ) -> Result<(Self, HashSet<String>)> {
        if precision == Precision::F16 && !gpu.caps.shader_f16 {
            return Err(vdit_wgpu::GpuError::MissingFeature(
                "--precision f16".into(),
                "SHADER_F16",
            )
            .into());
        }
        if !config.cross_attn_norm || !config.qk_norm {
            return Err(crate::error::input_err(
                "model config",
                "only Wan2.1 T2V blocks (cross_attn_norm and qk_norm on) are supported",
            ));
        }
        let c = &config;
        let mut ld = Loader {
            gpu,
            source,
            loras,
            dtype: precision.dtype(),
            used: HashSet::new(),
            quantize: options.quantize,
            keep_quantized: !options.expand_quantized,
        };
        let patch_in = c.in_channels * c.patch_volume();
        let wd = precision.dtype();
        let patch_weight = ld.tensor(
            "patch_embedding.weight",
            &[c.dim, c.in_channels, c.patch[0], c.patch[1], c.patch[2]],
            wd,
        )?;
        let patch_embedding = Linear {
            weight: Weight::Dense(patch_weight.reshape(&[c.dim, patch_in])?),
            bias: ld.tensor("patch_embedding.bias", &[c.dim], wd)?,
        };
        let text_1 = Linear::load(
            &mut ld,
            "condition_embedder.text_embedder.linear_1",
            c.dim,
            c.text_dim,
            wd,
        )?;
        let text_2 = Linear::load(
            &mut ld,
            "condition_embedder.text_embedder.linear_2",
            c.dim,
            c.dim,
            wd,
        )?;
        // The time embedding stays f32: it sets every modulation.
        let f32 = DType::F32;
        let time_1 = Linear::load(
            &mut ld,
            "condition_embedder.time_embedder.linear_1",
            c.dim,
            c.freq_dim,
            f32,
        )?;
        let time_2 = Linear::load(
            &mut ld,
            "condition_embedder.time_embedder.linear_2",
            c.dim,
            c.dim,
            f32,
        )?;
        let time_proj = Linear::load(
            &mut ld,
            "condition_embedder.time_proj",
            6 * c.dim,
            c.dim,
            f32,
        )?;
        let blocks = BlockWeights::load(&mut ld, c, options.offload)?;
        let head_table = ld
            .tensor("scale_shift_table", &[1, 2, c.dim], f32)?
            .reshape(&[2, c.dim])?;
        let proj_out = Linear::load(
            &mut ld,
            "proj_out",
            c.out_channels * c.patch_volume(),
            c.dim,
            wd,
        )?;
        let used = std::mem::take(&mut ld.used);
        let load_report = LoadReport {
            lora_tensors: loras.patched_tensors(),
            lora_merge_seconds: loras.merge_seconds(),
        };
        let dit = Self {
            load_report,
            plan: AttentionPlan::softmax(c.layers),
            config,
            precision,
            patch_embedding,
            text_1,
            text_2,
            time_1,
            time_2,
            time_proj,
            blocks,
            head_table,
            proj_out,
        };
        Ok((dit, used))
    }

    /// Whether the blocks' weights are streamed from host memory (`--offload`).
    pub fn is_offloaded(&self) -> bool {
        self.blocks.is_streamed()
    }

    /// GPU bytes of all the weights, and host bytes of the offloaded blocks' copies.
    pub fn weight_bytes(&self) -> (u64, u64) {
        let linears = [
            &self.patch_embedding,
            &self.text_1,
            &self.text_2,
            &self.time_1,
            &self.time_2,
            &self.time_proj,
            &self.proj_out,
        ];
        let others: u64 = linears
            .iter()
            .map(|l| l.weight.bytes() + l.bias.bytes())
            .sum::<u64>()
            + self.head_table.bytes();
        let (gpu, host) = self.blocks.bytes();
        (gpu + others, host)
    }

    /// Replaces the attention plan (checked against the model's sizes).
    pub fn set_plan(&mut self, plan: AttentionPlan) -> Result<()> {
        plan.check(&self.config)?;
        self.plan = plan;
        Ok(())
    }
}
