//! The umT5 encoder on the GPU.
//!
//! Per layer, with x the f32 residual stream [L, d]:
//!   h = RMSNorm(x) * norm1;  q, k, v = h Wq^T, h Wk^T, h Wv^T
//!   a = softmax(q k^T + bias[bucket(j - i)]) v  per head (no 1/sqrt(d); padding keys masked)
//!   x += a Wo^T
//!   h = RMSNorm(x) * norm2;  x += (gelu_tanh(h Wi0^T) * (h Wi1^T)) Wo^T
//! then the final RMSNorm. Weights are stored in f16 (or f32); activations stay f32, which also
//! keeps umT5 clear of the f16 overflow it is known for. The embedding rows of a prompt are
//! gathered on the host from the mapped file, so the 1 GB table never reaches the GPU.
//!
//! [`Residency::Streamed`] uploads one layer at a time while encoding (run every prompt through
//! a layer, drop it, upload the next): the GPU holds one layer and the activations, the host one
//! converted layer. [`Residency::Resident`] uploads all layers once, for many encodes.

use std::path::Path;
use std::sync::OnceLock;

use vdit_wgpu::kernels::elementwise::{binary_in_place, Binary};
use vdit_wgpu::kernels::matmul::{matmul, Epilogue};
use vdit_wgpu::kernels::norm::rms_norm;
use vdit_wgpu::kernels::t5_attention::{pad_rows, relative_bias_attention, RelativeBias};
use vdit_wgpu::{DType, Gpu, Recorder, Tensor};

use super::gguf_tokenizer;
use super::tokenizer::{PromptTokenizer, TEXT_LEN};
use super::weights::{Param, T5Config, TextWeights};
use crate::dit::Precision;
use crate::error::{input_err, Result};

/// Whether the layers stay on the GPU between encodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Residency {
    /// All layers uploaded at load (umT5-XXL: 11 GB in f16).
    Resident,
    /// Layers uploaded one at a time during each encode (one layer on the GPU at a time).
    Streamed,
}

struct Layer {
    norm1: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    o: Tensor,
    bias: Tensor,
    norm2: Tensor,
    wi0: Tensor,
    wi1: Tensor,
    wo: Tensor,
}

/// Where the encoder's tokenizer comes from.
enum TokenizerChoice {
    /// A tokenizer.json found beside the weights, or one set by the caller.
    Ready(PromptTokenizer),
    /// The GGUF file's metadata, read at the first prompt (never, if another is set first).
    Gguf(OnceLock<PromptTokenizer>),
    None,
}

/// The umT5 encoder: weights (mapped, and on the GPU when resident) and its tokenizer.
pub struct UmT5Encoder {
    config: T5Config,
    dtype: DType,
    residency: Residency,
    weights: TextWeights,
    tokenizer: TokenizerChoice,
    layers: Vec<Layer>,
    final_norm: Tensor,
}

/// One sequence's activations.
struct Sequence {
    rows: usize,
    x: Tensor,
    h: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    a: Tensor,
    g: Tensor,
    u: Tensor,
    buckets: Tensor,
}

/// The bidirectional T5 bucket of a relative position `key - query`, in f32 arithmetic as the
/// reference computes it (the bucket boundaries depend on it).
pub fn relative_position_bucket(relative: i64, buckets: usize, max_distance: usize) -> usize {
    let half = buckets / 2;
    let base = if relative > 0 { half } else { 0 };
    let n = relative.unsigned_abs() as usize;
    let exact = half / 2;
    if n < exact {
        return base + n;
    }
    let ratio = (n as f32 / exact as f32).ln() / ((max_distance as f64 / exact as f64).ln() as f32);
    let large = exact + (ratio * (half - exact) as f32) as usize;
    base + large.min(half - 1)
}

impl UmT5Encoder {
    /// Loads the encoder from a checkpoint root (diffusers: `text_encoder/` + `tokenizer/`;
    /// Wan2.1: `models_t5_umt5-xxl-enc-bf16.pth` + `google/umt5-xxl/`), a `text_encoder/`
    /// folder, a safetensors file or index (HF or ComfyUI), an original `.pth` or a GGUF file.
    /// The tokenizer is the one in a GGUF file's metadata, else a tokenizer.json beside the
    /// weights ([`PromptTokenizer::find`]); [`UmT5Encoder::set_tokenizer`] replaces it. Without
    /// one, only [`UmT5Encoder::encode_ids`] works.
    pub fn load(
        gpu: &Gpu,
        path: &Path,
        precision: Precision,
        residency: Residency,
    ) -> Result<Self> {
        let weights = TextWeights::open(path)?;
        let config = weights.config()?;
        let beside = || {
            PromptTokenizer::find(path)
                .or_else(|_| PromptTokenizer::find(weights.path()))
                .ok()
        };
        // A GGUF file's own tokenizer comes first; one that carries none gives its error when a
        // prompt comes, unless a tokenizer.json lies beside it.
        let tokenizer = match weights.gguf_file() {
            Some(file) if gguf_tokenizer::has_tokenizer(file) => {
                TokenizerChoice::Gguf(OnceLock::new())
            }
            gguf => match beside() {
                Some(json) => TokenizerChoice::Ready(PromptTokenizer::from_file(json)?),
                None if gguf.is_some() => TokenizerChoice::Gguf(OnceLock::new()),
                None => TokenizerChoice::None,
            },
        };
        let dtype = precision.dtype();
        let final_norm = weights.upload(gpu, Param::FinalNorm, &[config.d_model], DType::F32)?;
        let mut encoder = Self {
            config,
            dtype,
            residency,
            weights,
            tokenizer,
            layers: Vec::new(),
            final_norm,
        };
        if residency == Residency::Resident {
            for i in 0..encoder.config.layers {
                let layer = encoder.upload_layer(gpu, i)?;
                encoder.layers.push(layer);
            }
        }
        Ok(encoder)
    }

    pub fn config(&self) -> &T5Config {
        &self.config
    }
    pub fn residency(&self) -> Residency {
        self.residency
    }
    /// The weights' storage type on the GPU.
    pub fn dtype(&self) -> DType {
        self.dtype
    }
    /// The file or folder the weights were read from.
    pub fn weights_path(&self) -> &Path {
        self.weights.path()
    }
    /// The tokenizer (read from a GGUF file's metadata at the first call); an error naming the
    /// weights when there is none.
    pub fn tokenizer(&self) -> Result<&PromptTokenizer> {
        match &self.tokenizer {
            TokenizerChoice::Ready(t) => Ok(t),
            TokenizerChoice::Gguf(cell) => {
                if let Some(t) = cell.get() {
                    return Ok(t);
                }
                let file = self
                    .weights
                    .gguf_file()
                    .ok_or_else(|| self.no_tokenizer())?;
                let t = PromptTokenizer::from_gguf(file)?;
                Ok(cell.get_or_init(|| t))
            }
            TokenizerChoice::None => Err(self.no_tokenizer()),
        }
    }

    fn no_tokenizer(&self) -> crate::error::ModelError {
        input_err(
            self.weights.path().display().to_string(),
            "no tokenizer.json was found for this text encoder",
        )
    }

    pub fn set_tokenizer(&mut self, tokenizer: PromptTokenizer) {
        self.tokenizer = TokenizerChoice::Ready(tokenizer);
    }

    /// The token ids of a prompt (clean-up, EOS, at most 512).
    pub fn tokenize(&self, prompt: &str) -> Result<Vec<u32>> {
        self.tokenizer()?.encode(prompt)
    }

    /// The context of one prompt: [512, d_model] f32 on the GPU, the prompt's rows followed by
    /// zero rows, as the DiT takes it.
    pub fn encode(&self, gpu: &Gpu, prompt: &str) -> Result<Tensor> {
        Ok(self.encode_batch(gpu, &[prompt])?.remove(0))
    }

    /// The contexts of several prompts (e.g. the prompt and the negative prompt), in one pass
    /// over the layers.
    pub fn encode_batch(&self, gpu: &Gpu, prompts: &[&str]) -> Result<Vec<Tensor>> {
        let ids: Vec<Vec<u32>> = prompts
            .iter()
            .map(|p| self.tokenize(p))
            .collect::<Result<_>>()?;
        let refs: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
        self.encode_ids(gpu, &refs)
    }

    /// Contexts [512, d_model] f32 of token id sequences (1 to 512 ids each).
    pub fn encode_ids(&self, gpu: &Gpu, ids: &[&[u32]]) -> Result<Vec<Tensor>> {
        let hidden = self.hidden_states(gpu, ids)?;
        let mut rec = Recorder::new(gpu);
        let mut out = Vec::with_capacity(hidden.len());
        for h in &hidden {
            let padded = Tensor::empty(gpu, &[TEXT_LEN, self.config.d_model], DType::F32)?;
            pad_rows(&mut rec, h, &padded)?;
            out.push(padded);
        }
        rec.run()?;
        Ok(out)
    }

    /// The encoder's output [L, d_model] f32 for each sequence of ids, without padding.
    pub fn hidden_states(&self, gpu: &Gpu, ids: &[&[u32]]) -> Result<Vec<Tensor>> {
        let c = &self.config;
        let sequences: Vec<Sequence> = ids
            .iter()
            .map(|ids| self.start_sequence(gpu, ids))
            .collect::<Result<_>>()?;
        for i in 0..c.layers {
            let streamed;
            let layer = match self.layers.get(i) {
                Some(l) => l,
                None => {
                    streamed = self.upload_layer(gpu, i)?;
                    &streamed
                }
            };
            let mut rec = Recorder::new(gpu);
            for s in &sequences {
                self.record_layer(&mut rec, layer, s)?;
            }
            rec.submit(None)?;
            if self.residency == Residency::Streamed {
                // Bounds the host's staging memory to one layer.
                gpu.wait()?;
            }
        }
        let mut rec = Recorder::new(gpu);
        let mut out = Vec::with_capacity(sequences.len());
        for s in &sequences {
            let y = Tensor::empty(gpu, &[s.rows, c.d_model], DType::F32)?;
            rms_norm(&mut rec, &s.x, Some(&self.final_norm), c.eps, &y)?;
            out.push(y);
        }
        rec.run()?;
        Ok(out)
    }

    /// Releases the encoder's GPU memory (its layers and the pool's free buffers), e.g. before
    /// the DiT is loaded. Tensors returned by `encode` stay valid.
    pub fn free(self, gpu: &Gpu) {
        drop(self);
        gpu.trim_pool();
    }

    fn start_sequence(&self, gpu: &Gpu, ids: &[u32]) -> Result<Sequence> {
        let c = &self.config;
        let rows = ids.len();
        if rows == 0 || rows > TEXT_LEN {
            return Err(input_err(
                "token ids",
                format!("{rows} ids; 1 to {TEXT_LEN} are needed"),
            ));
        }
        let embedded = self.weights.embedding_rows(ids, c)?;
        let x = Tensor::from_f32(gpu, &[rows, c.d_model], &embedded, DType::F32)?;
        let buckets: Vec<f32> = (0..2 * rows - 1)
            .map(|r| {
                relative_position_bucket(r as i64 - (rows as i64 - 1), c.buckets, c.max_distance)
                    as f32
            })
            .collect();
        let empty = |cols: usize| Tensor::empty(gpu, &[rows, cols], DType::F32);
        Ok(Sequence {
            rows,
            x,
            h: empty(c.d_model)?,
            q: empty(c.inner())?,
            k: empty(c.inner())?,
            v: empty(c.inner())?,
            a: empty(c.inner())?,
            g: empty(c.d_ff)?,
            u: empty(c.d_ff)?,
            buckets: Tensor::from_f32(gpu, &[2 * rows - 1], &buckets, DType::F32)?,
        })
    }

    fn upload_layer(&self, gpu: &Gpu, i: usize) -> Result<Layer> {
        let c = &self.config;
        let w = &self.weights;
        let (d, inner, ff, dt) = (c.d_model, c.inner(), c.d_ff, self.dtype);
        let layer = Layer {
            norm1: w.upload(gpu, Param::Norm1(i), &[d], DType::F32)?,
            q: w.upload(gpu, Param::Q(i), &[inner, d], dt)?,
            k: w.upload(gpu, Param::K(i), &[inner, d], dt)?,
            v: w.upload(gpu, Param::V(i), &[inner, d], dt)?,
            o: w.upload(gpu, Param::O(i), &[d, inner], dt)?,
            bias: w.upload(
                gpu,
                Param::RelativeBias(i),
                &[c.buckets, c.heads],
                DType::F32,
            )?,
            norm2: w.upload(gpu, Param::Norm2(i), &[d], DType::F32)?,
            wi0: w.upload(gpu, Param::Wi0(i), &[ff, d], dt)?,
            wi1: w.upload(gpu, Param::Wi1(i), &[ff, d], dt)?,
            wo: w.upload(gpu, Param::Wo(i), &[d, ff], dt)?,
        };
        // Flush the staged uploads so that host memory never holds more than one layer.
        gpu.queue.submit(std::iter::empty());
        gpu.wait()?;
        Ok(layer)
    }

    fn record_layer(&self, rec: &mut Recorder, l: &Layer, s: &Sequence) -> Result<()> {
        let c = &self.config;
        rms_norm(rec, &s.x, Some(&l.norm1), c.eps, &s.h)?;
        matmul(rec, &s.h, &l.q, None, &s.q, Epilogue::None)?;
        matmul(rec, &s.h, &l.k, None, &s.k, Epilogue::None)?;
        matmul(rec, &s.h, &l.v, None, &s.v, Epilogue::None)?;
        let bias = RelativeBias {
            table: &l.bias,
            buckets: &s.buckets,
        };
        relative_bias_attention(rec, &s.q, &s.k, &s.v, c.heads, bias, s.rows, 1.0, &s.a)?;
        matmul(rec, &s.a, &l.o, None, &s.x, Epilogue::Residual)?;
        rms_norm(rec, &s.x, Some(&l.norm2), c.eps, &s.h)?;
        matmul(rec, &s.h, &l.wi0, None, &s.g, Epilogue::GeluTanh)?;
        matmul(rec, &s.h, &l.wi1, None, &s.u, Epilogue::None)?;
        binary_in_place(rec, Binary::Mul, &s.g, &s.u)?;
        matmul(rec, &s.g, &l.wo, None, &s.x, Epilogue::Residual)?;
        Ok(())
    }
}
