//! Where the umT5 encoder's tensors come from: one [`WeightSet`] over safetensors (the HF /
//! diffusers `text_encoder/` folder, sharded or not, or ComfyUI's single file), GGUF or the Wan2.1
//! repository's original `.pth` (through the restricted unpickler), under transformers', Wan2.1's
//! or llama.cpp's naming, with an optional name prefix.

use std::path::{Path, PathBuf};

use vdit_wgpu::{DType, Gpu, Tensor};

use crate::error::{input_err, Result};
use crate::weights::{FileFormat, StoredDType, WeightFile, WeightSet};

/// The file name of the encoder in a Wan2.1 checkpoint folder.
pub const ORIGINAL_FILE: &str = "models_t5_umt5-xxl-enc-bf16.pth";

/// The sizes of a umT5 encoder.
#[derive(Clone, Debug, PartialEq)]
pub struct T5Config {
    /// Rows of the embedding table (may exceed the tokenizer's vocabulary).
    pub vocab: usize,
    pub d_model: usize,
    pub d_kv: usize,
    pub heads: usize,
    pub d_ff: usize,
    pub layers: usize,
    pub buckets: usize,
    pub max_distance: usize,
    pub eps: f32,
}

impl T5Config {
    /// umT5-XXL, the encoder of Wan2.1.
    pub fn umt5_xxl() -> Self {
        Self {
            vocab: 256384,
            d_model: 4096,
            d_kv: 64,
            heads: 64,
            d_ff: 10240,
            layers: 24,
            buckets: 32,
            max_distance: 128,
            eps: 1e-6,
        }
    }
    /// Query/key/value width.
    pub fn inner(&self) -> usize {
        self.heads * self.d_kv
    }
}

/// A tensor of one layer (or of the whole encoder), named independently of the layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Param {
    Embedding,
    FinalNorm,
    Norm1(usize),
    Q(usize),
    K(usize),
    V(usize),
    O(usize),
    RelativeBias(usize),
    Norm2(usize),
    /// The GELU branch of the gated FFN.
    Wi0(usize),
    /// The linear branch.
    Wi1(usize),
    Wo(usize),
}

#[derive(Clone, Debug)]
enum Naming {
    /// transformers' UMT5EncoderModel names; the embedding is `shared` or `encoder.embed_tokens`.
    Hf { prefix: String, embedding: String },
    /// The Wan2.1 repository's T5Encoder names.
    Original { prefix: String },
    /// llama.cpp's names, as its converter and city96's umT5 GGUF files have them.
    Llama,
}

/// The `general.architecture` values of a umT5 encoder in GGUF.
const GGUF_ARCHITECTURES: [&str; 2] = ["t5encoder", "t5"];

/// The encoder's tensors, memory-mapped; nothing is read before it is asked for.
pub(crate) struct TextWeights {
    set: WeightSet,
    naming: Naming,
    path: PathBuf,
}

impl TextWeights {
    /// Opens a `text_encoder/` folder, a checkpoint root holding `text_encoder/` or the original
    /// `.pth`, a safetensors file or index, or a `.pth` file.
    pub fn open(path: &Path) -> Result<Self> {
        let chosen = choose(path)?;
        let set = WeightSet::open(&chosen)?;
        check_gguf_architecture(&set)?;
        let names: Vec<String> = set.names().map(String::from).collect();
        let naming =
            detect_naming(&names).map_err(|m| input_err(chosen.display().to_string(), m))?;
        Ok(Self {
            set,
            naming,
            path: chosen,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The GGUF file the weights are, if they are one.
    pub fn gguf_file(&self) -> Option<&WeightFile> {
        match self.set.files() {
            [file] if file.format() == FileFormat::Gguf => Some(file),
            _ => None,
        }
    }

    pub fn name(&self, p: Param) -> String {
        match &self.naming {
            Naming::Hf { prefix, embedding } => {
                let a = |i: usize, s: &str| format!("{prefix}encoder.block.{i}.layer.0.{s}");
                let f = |i: usize, s: &str| format!("{prefix}encoder.block.{i}.layer.1.{s}");
                match p {
                    Param::Embedding => embedding.clone(),
                    Param::FinalNorm => format!("{prefix}encoder.final_layer_norm.weight"),
                    Param::Norm1(i) => a(i, "layer_norm.weight"),
                    Param::Q(i) => a(i, "SelfAttention.q.weight"),
                    Param::K(i) => a(i, "SelfAttention.k.weight"),
                    Param::V(i) => a(i, "SelfAttention.v.weight"),
                    Param::O(i) => a(i, "SelfAttention.o.weight"),
                    Param::RelativeBias(i) => a(i, "SelfAttention.relative_attention_bias.weight"),
                    Param::Norm2(i) => f(i, "layer_norm.weight"),
                    Param::Wi0(i) => f(i, "DenseReluDense.wi_0.weight"),
                    Param::Wi1(i) => f(i, "DenseReluDense.wi_1.weight"),
                    Param::Wo(i) => f(i, "DenseReluDense.wo.weight"),
                }
            }
            Naming::Llama => {
                let b = |i: usize, s: &str| format!("enc.blk.{i}.{s}.weight");
                match p {
                    Param::Embedding => "token_embd.weight".into(),
                    Param::FinalNorm => "enc.output_norm.weight".into(),
                    Param::Norm1(i) => b(i, "attn_norm"),
                    Param::Q(i) => b(i, "attn_q"),
                    Param::K(i) => b(i, "attn_k"),
                    Param::V(i) => b(i, "attn_v"),
                    Param::O(i) => b(i, "attn_o"),
                    Param::RelativeBias(i) => b(i, "attn_rel_b"),
                    Param::Norm2(i) => b(i, "ffn_norm"),
                    Param::Wi0(i) => b(i, "ffn_gate"),
                    Param::Wi1(i) => b(i, "ffn_up"),
                    Param::Wo(i) => b(i, "ffn_down"),
                }
            }
            Naming::Original { prefix } => {
                let b = |i: usize, s: &str| format!("{prefix}blocks.{i}.{s}");
                match p {
                    Param::Embedding => format!("{prefix}token_embedding.weight"),
                    Param::FinalNorm => format!("{prefix}norm.weight"),
                    Param::Norm1(i) => b(i, "norm1.weight"),
                    Param::Q(i) => b(i, "attn.q.weight"),
                    Param::K(i) => b(i, "attn.k.weight"),
                    Param::V(i) => b(i, "attn.v.weight"),
                    Param::O(i) => b(i, "attn.o.weight"),
                    Param::RelativeBias(i) => b(i, "pos_embedding.embedding.weight"),
                    Param::Norm2(i) => b(i, "norm2.weight"),
                    Param::Wi0(i) => b(i, "ffn.gate.0.weight"),
                    Param::Wi1(i) => b(i, "ffn.fc1.weight"),
                    Param::Wo(i) => b(i, "ffn.fc2.weight"),
                }
            }
        }
    }

    fn missing(&self, name: &str) -> crate::error::ModelError {
        input_err(
            self.path.display().to_string(),
            format!("no tensor '{name}'"),
        )
    }

    pub fn shape(&self, p: Param) -> Result<Vec<usize>> {
        let name = self.name(p);
        let shape = self.set.info(&name).map(|i| i.shape().to_vec());
        shape.ok_or_else(|| self.missing(&name))
    }

    pub fn contains(&self, p: Param) -> bool {
        self.set.contains(&self.name(p))
    }

    /// Uploads a tensor in `dtype` after checking its shape.
    pub fn upload(&self, gpu: &Gpu, p: Param, shape: &[usize], dtype: DType) -> Result<Tensor> {
        Ok(self.set.upload(gpu, &self.name(p), shape, dtype)?)
    }

    /// Rows `ids` of the embedding table [vocab, d] as f32, read without converting the table.
    pub fn embedding_rows(&self, ids: &[u32], config: &T5Config) -> Result<Vec<f32>> {
        let name = self.name(Param::Embedding);
        let d = config.d_model;
        // One row's bytes and its expansion to f32 (GGUF rows may be quantised blocks).
        let view = self.set.get(&name)?;
        let stored = view.dtype();
        let row_bytes = match stored {
            StoredDType::Quant(q) if q.is_readable() && d % q.elements() == 0 => {
                d / q.elements() * q.bytes()
            }
            other if other.is_readable_float() && other.bits() > 0 => d * other.bits() / 8,
            other => {
                return Err(input_err(
                    self.path.display().to_string(),
                    format!("tensor '{name}' is stored as {other}, not a float type"),
                ))
            }
        };
        // A scaled fp8 table's rows are multiplied by its scale.
        let scale = view.scale();
        let expand = |row: &[u8]| {
            let mut v = crate::weights::to_f32_values(row, stored).unwrap_or_default();
            if let Some(s) = scale {
                v.iter_mut().for_each(|x| *x *= s);
            }
            v
        };
        let bytes = view.bytes();
        let mut out = Vec::with_capacity(ids.len() * d);
        for &id in ids {
            let id = id as usize;
            if id >= config.vocab {
                return Err(input_err(
                    self.path.display().to_string(),
                    format!(
                        "token id {id} is outside the embedding table of {} rows",
                        config.vocab
                    ),
                ));
            }
            out.extend(expand(&bytes[id * row_bytes..(id + 1) * row_bytes]));
        }
        Ok(out)
    }

    /// The sizes, from the tensor shapes and a `config.json` beside the weights if any (for the
    /// bucket distance and epsilon, which no tensor carries).
    pub fn config(&self) -> Result<T5Config> {
        let err = |m: String| input_err(self.path.display().to_string(), m);
        let emb = self.shape(Param::Embedding)?;
        let &[vocab, d_model] = emb.as_slice() else {
            return Err(err(format!(
                "the embedding is {emb:?}, not [vocab, d_model]"
            )));
        };
        let mut layers = 0;
        while self.contains(Param::Q(layers)) {
            layers += 1;
        }
        if layers == 0 {
            return Err(err(format!("no layers (no '{}')", self.name(Param::Q(0)))));
        }
        let bias = self.shape(Param::RelativeBias(0))?;
        let &[buckets, heads] = bias.as_slice() else {
            return Err(err(format!(
                "the relative bias is {bias:?}, not [buckets, heads]"
            )));
        };
        let q = self.shape(Param::Q(0))?;
        let ff = self.shape(Param::Wi0(0))?;
        if heads == 0 || q.len() != 2 || q[0] % heads != 0 || ff.len() != 2 {
            return Err(err(format!(
                "q {q:?} and wi_0 {ff:?} do not fit {heads} heads"
            )));
        }
        let mut config = T5Config {
            vocab,
            d_model,
            d_kv: q[0] / heads,
            heads,
            d_ff: ff[0],
            layers,
            buckets,
            max_distance: 128,
            eps: 1e-6,
        };
        let folder = if self.path.is_dir() {
            self.path.as_path()
        } else {
            self.path.parent().unwrap_or(Path::new("."))
        };
        let json_path = folder.join("config.json");
        if let Ok(text) = std::fs::read_to_string(&json_path) {
            let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
                input_err(
                    json_path.display().to_string(),
                    format!("not valid JSON: {e}"),
                )
            })?;
            if let Some(m) = v
                .get("relative_attention_max_distance")
                .and_then(|x| x.as_u64())
            {
                config.max_distance = m as usize;
            }
            if let Some(e) = v.get("layer_norm_epsilon").and_then(|x| x.as_f64()) {
                config.eps = e as f32;
            }
            if let Some(proj) = v.get("feed_forward_proj").and_then(|x| x.as_str()) {
                if proj != "gated-gelu" {
                    return Err(input_err(
                        json_path.display().to_string(),
                        format!("feed_forward_proj '{proj}' (only gated-gelu is implemented)"),
                    ));
                }
            }
        }
        Ok(config)
    }
}

/// The weights of a path: see [`TextWeights::open`].
fn choose(path: &Path) -> Result<PathBuf> {
    if !path.is_dir() {
        if !path.exists() {
            return Err(input_err(
                path.display().to_string(),
                "no such file or folder",
            ));
        }
        return Ok(path.to_path_buf());
    }
    let te = path.join("text_encoder");
    if te.is_dir() {
        return Ok(te);
    }
    let original = path.join(ORIGINAL_FILE);
    if original.is_file() {
        return Ok(original);
    }
    let has_safetensors = std::fs::read_dir(path)
        .map(|d| {
            d.flatten()
                .any(|e| e.path().extension().is_some_and(|x| x == "safetensors"))
        })
        .unwrap_or(false);
    if has_safetensors {
        return Ok(path.to_path_buf());
    }
    Err(input_err(
        path.display().to_string(),
        format!("no text encoder here (looked for text_encoder/, {ORIGINAL_FILE} and safetensors files)"),
    ))
}

/// Refuses a GGUF file that says it holds another model than a T5 encoder.
fn check_gguf_architecture(set: &WeightSet) -> Result<()> {
    for file in set.files() {
        let Some(arch) = file.gguf_value("general.architecture") else {
            continue;
        };
        let arch = arch.as_str().unwrap_or("(not a string)");
        if !GGUF_ARCHITECTURES.contains(&arch) {
            return Err(input_err(
                file.path().display().to_string(),
                format!("the GGUF file holds a '{arch}' model, not a umT5 encoder ('t5encoder')"),
            ));
        }
    }
    Ok(())
}

fn detect_naming(names: &[String]) -> std::result::Result<Naming, String> {
    let has = |n: &str| names.iter().any(|m| m == n);
    if has("token_embd.weight") && has("enc.blk.0.attn_q.weight") {
        return Ok(Naming::Llama);
    }
    const HF_FINAL: &str = "encoder.final_layer_norm.weight";
    if let Some(n) = names.iter().find(|n| n.ends_with(HF_FINAL)) {
        let prefix = n[..n.len() - HF_FINAL.len()].to_string();
        let embedding = [
            format!("{prefix}shared.weight"),
            format!("{prefix}encoder.embed_tokens.weight"),
        ]
        .into_iter()
        .find(|e| names.contains(e))
        .ok_or_else(|| {
            format!("no {prefix}shared.weight or {prefix}encoder.embed_tokens.weight")
        })?;
        return Ok(Naming::Hf { prefix, embedding });
    }
    const ORIGINAL_Q: &str = "blocks.0.attn.q.weight";
    if let Some(n) = names.iter().find(|n| n.ends_with(ORIGINAL_Q)) {
        let prefix = n[..n.len() - ORIGINAL_Q.len()].to_string();
        if names.contains(&format!("{prefix}token_embedding.weight")) {
            return Ok(Naming::Original { prefix });
        }
    }
    let some: Vec<&str> = names.iter().take(5).map(String::as_str).collect();
    Err(format!(
        "not a umT5 encoder: neither transformers' names (encoder.final_layer_norm.weight), \
         the Wan2.1 names (token_embedding.weight, blocks.N.attn.q.weight) nor llama.cpp's \
         (token_embd.weight, enc.blk.N.attn_q.weight); found {} tensors such as {some:?}",
        names.len()
    ))
}
