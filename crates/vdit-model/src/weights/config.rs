//! The Wan DiT hyper-parameters, read from either published `config.json` format.

use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use super::error::{Result, WeightError};

/// Sizes and switches of a Wan2.1 text-to-video DiT.
#[derive(Clone, Debug, PartialEq)]
pub struct DitConfig {
    /// Hidden size, `heads * head_dim`.
    pub dim: usize,
    pub ffn_dim: usize,
    /// Width of the sinusoidal timestep embedding.
    pub freq_dim: usize,
    pub heads: usize,
    pub head_dim: usize,
    pub layers: usize,
    pub in_channels: usize,
    pub out_channels: usize,
    /// Width of the text encoder's output.
    pub text_dim: usize,
    /// Rows of context the text embedding is padded to.
    pub text_len: usize,
    /// Patch size over (frames, height, width).
    pub patch: [usize; 3],
    pub eps: f32,
    /// Whether cross-attention has its affine LayerNorm (`blocks.N.norm2`).
    pub cross_attn_norm: bool,
    /// Whether q and k pass an RMSNorm across all heads (`attn.norm_q`, `attn.norm_k`).
    pub qk_norm: bool,
    /// Positions the RoPE tables cover per axis (diffusers' `rope_max_seq_len`).
    pub rope_max_seq_len: usize,
}

impl DitConfig {
    /// Wan2.1 T2V 1.3B.
    pub fn wan21_t2v_1_3b() -> Self {
        Self {
            dim: 1536,
            ffn_dim: 8960,
            freq_dim: 256,
            heads: 12,
            head_dim: 128,
            layers: 30,
            in_channels: 16,
            out_channels: 16,
            text_dim: 4096,
            text_len: 512,
            patch: [1, 2, 2],
            eps: 1e-6,
            cross_attn_norm: true,
            qk_norm: true,
            rope_max_seq_len: 1024,
        }
    }

    /// Wan2.1 T2V 14B: the 1.3B model with wider and more blocks.
    pub fn wan21_t2v_14b() -> Self {
        Self {
            dim: 5120,
            ffn_dim: 13824,
            heads: 40,
            layers: 40,
            ..Self::wan21_t2v_1_3b()
        }
    }

    /// Elements of one patch of one channel.
    pub fn patch_volume(&self) -> usize {
        self.patch.iter().product()
    }

    /// Reads a diffusers `transformer/config.json` or an original Wan2.1 `config.json`.
    pub fn from_json_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| WeightError::Io {
            path: path.to_path_buf(),
            action: "cannot read",
            source,
        })?;
        Self::from_json_str(&text, path)
    }

    /// Parses config JSON; `path` only names the source in errors.
    pub fn from_json_str(text: &str, path: &Path) -> Result<Self> {
        let config_err = |reason: String| WeightError::Config {
            path: path.to_path_buf(),
            reason,
        };
        let value: Value =
            serde_json::from_str(text).map_err(|e| config_err(format!("not valid JSON: {e}")))?;
        match parse_value(value) {
            Ok(Some(parsed)) => Ok(parsed.config),
            Ok(None) => Err(config_err(
                "not a Wan DiT config (neither WanTransformer3DModel nor WanModel fields)".into(),
            )),
            Err(reason) => Err(config_err(reason)),
        }
    }

    /// Checks the sizes fit together; the reason names the offending field.
    pub fn validate(&self) -> Result<(), String> {
        let sizes = [
            ("dim", self.dim),
            ("ffn_dim", self.ffn_dim),
            ("freq_dim", self.freq_dim),
            ("heads", self.heads),
            ("head_dim", self.head_dim),
            ("layers", self.layers),
            ("in_channels", self.in_channels),
            ("out_channels", self.out_channels),
            ("text_dim", self.text_dim),
            ("text_len", self.text_len),
            ("rope_max_seq_len", self.rope_max_seq_len),
        ];
        if let Some((field, _)) = sizes.iter().find(|(_, v)| *v == 0) {
            return Err(format!("{field} is 0"));
        }
        if self.patch.contains(&0) {
            return Err(format!("patch size {:?} has a 0", self.patch));
        }
        // The largest weights' element counts must be countable (the shapes the weights are
        // checked against are computed from these sizes).
        let count = |factors: &[usize]| factors.iter().try_fold(1usize, |a, &f| a.checked_mul(f));
        let patch = count(&self.patch).unwrap_or(usize::MAX);
        let channels = self.in_channels.max(self.out_channels);
        let widest = self
            .ffn_dim
            .max(self.text_dim)
            .max(self.freq_dim)
            .max(self.dim);
        if count(&[patch, channels, self.dim, 4]).is_none()
            || count(&[widest, self.dim, 4]).is_none()
        {
            return Err(format!(
                "sizes too large to count (patch {:?}, {channels} channels, dim {}, widest {widest})",
                self.patch, self.dim
            ));
        }
        if self.heads.checked_mul(self.head_dim) != Some(self.dim) {
            return Err(format!(
                "{} heads of {} do not make dim {}",
                self.heads, self.head_dim, self.dim
            ));
        }
        if self.head_dim % 2 != 0 {
            return Err(format!(
                "head_dim {} is odd; RoPE rotates pairs",
                self.head_dim
            ));
        }
        if !(self.eps.is_finite() && self.eps > 0.0) {
            return Err(format!("eps {} is not a positive number", self.eps));
        }
        Ok(())
    }
}

/// A config field the tensor shapes also tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ShapeField {
    Patch,
    InChannels,
    OutChannels,
    TextDim,
    FreqDim,
    FfnDim,
    Layers,
    CrossAttnNorm,
    QkNorm,
}

/// A config read from JSON, and the shape-given fields its JSON leaves out (those took the
/// constructor defaults, which the tensors may contradict: published Wan2.1 `config.json` files
/// carry no `text_dim` or `patch_size`).
pub(crate) struct ParsedConfig {
    pub config: DitConfig,
    pub unstated: Vec<ShapeField>,
}

/// The config a JSON value describes: Ok(None) when it is not a Wan DiT config at all (for
/// example the config of another model sitting beside the weights).
pub(crate) fn parse_value(value: Value) -> Result<Option<ParsedConfig>, String> {
    let class = value.get("_class_name").and_then(Value::as_str);
    let has = |field: &str| value.get(field).is_some();
    let diffusers = match class {
        Some("WanTransformer3DModel") => true,
        Some("WanModel") => false,
        Some(_) => return Ok(None),
        None if has("num_attention_heads") => true,
        None if has("num_heads") && has("dim") => false,
        None => return Ok(None),
    };
    let keys: [(ShapeField, &str, &str); 9] = [
        (ShapeField::Patch, "patch_size", "patch_size"),
        (ShapeField::InChannels, "in_channels", "in_dim"),
        (ShapeField::OutChannels, "out_channels", "out_dim"),
        (ShapeField::TextDim, "text_dim", "text_dim"),
        (ShapeField::FreqDim, "freq_dim", "freq_dim"),
        (ShapeField::FfnDim, "ffn_dim", "ffn_dim"),
        (ShapeField::Layers, "num_layers", "num_layers"),
        (
            ShapeField::CrossAttnNorm,
            "cross_attn_norm",
            "cross_attn_norm",
        ),
        (ShapeField::QkNorm, "qk_norm", "qk_norm"),
    ];
    let unstated = keys
        .iter()
        .filter(|(_, in_diffusers, in_original)| {
            !has(if diffusers { in_diffusers } else { in_original })
        })
        .map(|(field, _, _)| *field)
        .collect();
    let config = if diffusers {
        from_diffusers(value)?
    } else {
        from_original(value)?
    };
    config.validate()?;
    Ok(Some(ParsedConfig { config, unstated }))
}

/// diffusers' `WanTransformer3DModel` config; absent fields take its constructor defaults.
#[derive(Deserialize)]
#[serde(default)]
struct DiffusersFields {
    patch_size: Vec<usize>,
    num_attention_heads: usize,
    attention_head_dim: usize,
    in_channels: usize,
    out_channels: Option<usize>,
    text_dim: usize,
    freq_dim: usize,
    ffn_dim: usize,
    num_layers: usize,
    cross_attn_norm: bool,
    qk_norm: Option<String>,
    eps: f64,
    image_dim: Option<usize>,
    added_kv_proj_dim: Option<usize>,
    rope_max_seq_len: usize,
}

impl Default for DiffusersFields {
    fn default() -> Self {
        Self {
            patch_size: vec![1, 2, 2],
            num_attention_heads: 40,
            attention_head_dim: 128,
            in_channels: 16,
            out_channels: Some(16),
            text_dim: 4096,
            freq_dim: 256,
            ffn_dim: 13824,
            num_layers: 40,
            cross_attn_norm: true,
            qk_norm: Some("rms_norm_across_heads".into()),
            eps: 1e-6,
            image_dim: None,
            added_kv_proj_dim: None,
            rope_max_seq_len: 1024,
        }
    }
}

fn from_diffusers(value: Value) -> Result<DitConfig, String> {
    let f: DiffusersFields =
        serde_json::from_value(value).map_err(|e| format!("diffusers config: {e}"))?;
    if f.image_dim.is_some() || f.added_kv_proj_dim.is_some() {
        return Err("an image-conditioned (I2V) model; only text-to-video is supported".into());
    }
    let dim = f
        .num_attention_heads
        .checked_mul(f.attention_head_dim)
        .ok_or("num_attention_heads * attention_head_dim overflows")?;
    Ok(DitConfig {
        dim,
        ffn_dim: f.ffn_dim,
        freq_dim: f.freq_dim,
        heads: f.num_attention_heads,
        head_dim: f.attention_head_dim,
        layers: f.num_layers,
        in_channels: f.in_channels,
        // diffusers reads a missing out_channels as "same as in".
        out_channels: f.out_channels.unwrap_or(f.in_channels),
        text_dim: f.text_dim,
        text_len: 512,
        patch: patch3(&f.patch_size)?,
        eps: f.eps as f32,
        cross_attn_norm: f.cross_attn_norm,
        qk_norm: f.qk_norm.is_some(),
        rope_max_seq_len: f.rope_max_seq_len,
    })
}

/// The Wan2.1 repository's `WanModel` config; absent fields take its constructor defaults.
#[derive(Deserialize)]
#[serde(default)]
struct OriginalFields {
    model_type: String,
    patch_size: Vec<usize>,
    text_len: usize,
    in_dim: usize,
    dim: usize,
    ffn_dim: usize,
    freq_dim: usize,
    text_dim: usize,
    out_dim: usize,
    num_heads: usize,
    num_layers: usize,
    qk_norm: bool,
    cross_attn_norm: bool,
    eps: f64,
}

impl Default for OriginalFields {
    fn default() -> Self {
        Self {
            model_type: "t2v".into(),
            patch_size: vec![1, 2, 2],
            text_len: 512,
            in_dim: 16,
            dim: 2048,
            ffn_dim: 8192,
            freq_dim: 256,
            text_dim: 4096,
            out_dim: 16,
            num_heads: 16,
            num_layers: 32,
            qk_norm: true,
            cross_attn_norm: true,
            eps: 1e-6,
        }
    }
}

fn from_original(value: Value) -> Result<DitConfig, String> {
    let f: OriginalFields =
        serde_json::from_value(value).map_err(|e| format!("Wan2.1 config: {e}"))?;
    if f.model_type != "t2v" {
        return Err(format!(
            "model_type '{}'; only text-to-video (t2v) is supported",
            f.model_type
        ));
    }
    if f.num_heads == 0 || f.dim % f.num_heads != 0 {
        return Err(format!(
            "dim {} does not split into {} heads",
            f.dim, f.num_heads
        ));
    }
    Ok(DitConfig {
        dim: f.dim,
        ffn_dim: f.ffn_dim,
        freq_dim: f.freq_dim,
        heads: f.num_heads,
        head_dim: f.dim / f.num_heads,
        layers: f.num_layers,
        in_channels: f.in_dim,
        out_channels: f.out_dim,
        text_dim: f.text_dim,
        text_len: f.text_len,
        patch: patch3(&f.patch_size)?,
        eps: f.eps as f32,
        cross_attn_norm: f.cross_attn_norm,
        qk_norm: f.qk_norm,
        rope_max_seq_len: 1024,
    })
}

fn patch3(patch: &[usize]) -> Result<[usize; 3], String> {
    patch
        .try_into()
        .map_err(|_| format!("patch_size {patch:?} does not have 3 entries"))
}
