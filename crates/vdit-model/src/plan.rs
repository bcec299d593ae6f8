//! The attention plan: which self-attention each block runs, and the feature-map weights of
//! the layers that need them.
//!
//! A plan file is JSON:
//! ```json
//! {
//!   "default": "softmax",
//!   "layers": { "0-14": "hybrid:2", "15": "linear", "20-29": "rehyat:3:1" },
//!   "feature_map": "hedgehog",
//!   "feature_weights": "phi.safetensors"
//! }
//! ```
//! Modes: `softmax`, `linear`, `hybrid:R` (softmax over every R-th key, linear over the rest),
//! `rehyat:TC:TO` (chunks of TC latent frames, TO frames of overlap). `feature_map` is
//! `hedgehog`, `poly` (with `"powers": P`, default 2) or `elu1`; `feature_weights` is a
//! safetensors file, relative to the plan, holding for each layer N that needs one, per map
//! `phi_q` and `phi_k`:
//! - hedgehog: `blocks.N.attn1.phi_q.weight` [H, DF/2, D] and `.bias` [H, DF/2]
//! - poly: `blocks.N.attn1.phi_q.l1.weight` [H, HID, D], `.l1.bias` [H, HID],
//!   `.l2.weight` [H, P*D1, HID], `.l2.bias` [H, P*D1]
//! - elu1: no weights.
//!
//! A file may also hold one set per (layer, mode), as `vdit distill` writes it, with the mode
//! in the name: `blocks.N.attn1.hybrid_2.phi_q.weight` (see [`feature_tensor_name`]).

use std::path::Path;

use serde::Deserialize;
use vdit_wgpu::attention::{AttentionMode, FeatureMap, FeatureMapWeights, LINEAR_EPS};
use vdit_wgpu::{DType, Gpu};

use crate::error::{ModelError, Result};
use crate::weights::{DitConfig, WeightSet};

/// A layer's self-attention, independent of the latent shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerAttention {
    Softmax,
    Linear,
    Hybrid {
        rate: u32,
    },
    Rehyat {
        chunk_frames: u32,
        overlap_frames: u32,
    },
}

impl LayerAttention {
    pub fn parse(s: &str) -> Option<Self> {
        let parts: Vec<&str> = s.trim().split(':').collect();
        let num = |i: usize| parts.get(i).and_then(|p| p.parse::<u32>().ok());
        match (parts[0], parts.len()) {
            ("softmax", 1) => Some(Self::Softmax),
            ("linear", 1) => Some(Self::Linear),
            ("hybrid", 2) => num(1).filter(|&r| r >= 1).map(|rate| Self::Hybrid { rate }),
            ("rehyat", 3) => match (num(1), num(2)) {
                (Some(tc), Some(to)) if tc >= 1 => Some(Self::Rehyat {
                    chunk_frames: tc,
                    overlap_frames: to,
                }),
                _ => None,
            },
            _ => None,
        }
    }

    /// The kernel mode for latents whose frames hold `frame_tokens` tokens.
    pub fn mode(self, frame_tokens: usize) -> AttentionMode {
        match self {
            Self::Softmax => AttentionMode::Softmax,
            Self::Linear => AttentionMode::Linear { eps: LINEAR_EPS },
            Self::Hybrid { rate } => AttentionMode::Hybrid { rate },
            Self::Rehyat {
                chunk_frames,
                overlap_frames,
            } => AttentionMode::Rehyat {
                chunk_frames,
                overlap_frames,
                frame_tokens: frame_tokens as u32,
            },
        }
    }

    /// Whether the layer needs feature maps: the kernel mode decides (hybrid:1 is softmax).
    pub fn needs_features(self) -> bool {
        self.mode(1).needs_features()
    }

    /// The mode as a key segment of a feature-weights file: `hybrid_2`, `rehyat_3_1`, `linear`.
    pub fn key(self) -> String {
        self.to_string().replace(':', "_")
    }
}

impl std::fmt::Display for LayerAttention {
    /// The plan-file spelling: `softmax`, `linear`, `hybrid:R`, `rehyat:TC:TO`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Softmax => f.write_str("softmax"),
            Self::Linear => f.write_str("linear"),
            Self::Hybrid { rate } => write!(f, "hybrid:{rate}"),
            Self::Rehyat {
                chunk_frames,
                overlap_frames,
            } => write!(f, "rehyat:{chunk_frames}:{overlap_frames}"),
        }
    }
}

/// The name of one feature-map tensor (`which` = `phi_q` or `phi_k`, `tensor` = `weight`,
/// `l1.bias`, ...) of a layer: `blocks.N.attn1.phi_q.weight`, or with a mode, the set trained
/// for that mode: `blocks.N.attn1.hybrid_2.phi_q.weight`. A file may hold one set per
/// (layer, mode); the plan loader takes the set of the layer's mode and falls back to the
/// mode-less one.
pub fn feature_tensor_name(
    layer: usize,
    mode: Option<LayerAttention>,
    which: &str,
    tensor: &str,
) -> String {
    match mode {
        Some(m) => format!("blocks.{layer}.attn1.{}.{which}.{tensor}", m.key()),
        None => format!("blocks.{layer}.attn1.{which}.{tensor}"),
    }
}

/// Per-layer self-attention and feature maps.
pub struct AttentionPlan {
    layers: Vec<LayerAttention>,
    features: Vec<Option<FeatureMapWeights>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanFile {
    #[serde(default)]
    default: Option<String>,
    #[serde(default)]
    layers: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    feature_map: Option<String>,
    #[serde(default)]
    feature_weights: Option<String>,
    #[serde(default)]
    powers: Option<usize>,
}

/// A plan file read and checked against a model's layer count, before any weight is opened:
/// what [`AttentionPlan::load`] then uploads.
#[derive(Clone, Debug, PartialEq)]
pub struct PlanSpec {
    pub layers: Vec<LayerAttention>,
    /// `hedgehog`, `poly` or `elu1`, when a layer needs a feature map.
    pub feature_map: Option<String>,
    /// The feature weights (relative to the plan's folder), for hedgehog and poly.
    pub feature_weights: Option<std::path::PathBuf>,
    /// Powers of the poly map.
    pub powers: usize,
}

impl PlanSpec {
    /// Reads and checks a plan file (format in the module docs) for a model of `config`.
    pub fn read(path: &Path, config: &DitConfig) -> Result<Self> {
        let err = |message: String| ModelError::Plan {
            path: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let file: PlanFile = serde_json::from_str(&text).map_err(|e| err(e.to_string()))?;
        let default = match &file.default {
            Some(s) => {
                LayerAttention::parse(s).ok_or_else(|| err(format!("unknown mode '{s}'")))?
            }
            None => LayerAttention::Softmax,
        };
        let mut layers = vec![default; config.layers];
        for (range, mode) in &file.layers {
            let parsed = LayerAttention::parse(mode)
                .ok_or_else(|| err(format!("layers '{range}': unknown mode '{mode}'")))?;
            let (a, b) = match range.split_once('-') {
                Some((a, b)) => (a.trim().parse::<usize>(), b.trim().parse::<usize>()),
                None => (range.trim().parse(), range.trim().parse()),
            };
            let (Ok(a), Ok(b)) = (a, b) else {
                return Err(err(format!("'{range}' is not a layer or a range A-B")));
            };
            if a > b || b >= config.layers {
                return Err(err(format!(
                    "layers '{range}' outside 0-{}",
                    config.layers - 1
                )));
            }
            layers[a..=b].fill(parsed);
        }
        let mut spec = Self {
            layers,
            feature_map: None,
            feature_weights: None,
            powers: file.powers.unwrap_or(2),
        };
        if !spec.layers.iter().any(|l| l.needs_features()) {
            return Ok(spec);
        }
        let kind = file
            .feature_map
            .ok_or_else(|| err("a linear, hybrid or rehyat layer needs \"feature_map\"".into()))?;
        match kind.as_str() {
            "elu1" => {}
            "hedgehog" | "poly" => {
                let rel = file.feature_weights.as_deref().ok_or_else(|| {
                    err(format!("feature map '{kind}' needs \"feature_weights\""))
                })?;
                spec.feature_weights = Some(path.parent().unwrap_or(Path::new(".")).join(rel));
            }
            other => return Err(err(format!("unknown feature map '{other}'"))),
        }
        spec.feature_map = Some(kind);
        Ok(spec)
    }
}

impl AttentionPlan {
    /// Softmax everywhere: the model as published.
    pub fn softmax(layers: usize) -> Self {
        Self {
            layers: vec![LayerAttention::Softmax; layers],
            features: (0..layers).map(|_| None).collect(),
        }
    }

    /// The same mode on the first `count` layers, softmax on the rest, with feature maps
    /// supplied by the caller (benchmarks with random weights).
    pub fn with_layers(
        layers: Vec<LayerAttention>,
        features: Vec<Option<FeatureMapWeights>>,
    ) -> Self {
        Self { layers, features }
    }

    pub fn layers(&self) -> &[LayerAttention] {
        &self.layers
    }

    pub fn features(&self, layer: usize) -> Option<&FeatureMapWeights> {
        self.features.get(layer).and_then(Option::as_ref)
    }

    /// DF of a layer's feature map (0 without one).
    pub fn feature_dim(&self, layer: usize, heads: usize, head_dim: usize) -> usize {
        self.features(layer)
            .and_then(|f| f.validate(heads, head_dim).ok())
            .unwrap_or(0)
    }

    /// Checks the plan against a model: one entry per block, feature maps where needed.
    pub fn check(&self, config: &DitConfig) -> Result<()> {
        let err = |message: String| ModelError::Plan {
            path: "(in memory)".into(),
            message,
        };
        if self.layers.len() != config.layers {
            return Err(err(format!(
                "{} layers planned, the model has {}",
                self.layers.len(),
                config.layers
            )));
        }
        for (i, l) in self.layers.iter().enumerate() {
            match (l.needs_features(), self.features(i)) {
                (true, None) => return Err(err(format!("layer {i} ({l:?}) has no feature map"))),
                (_, Some(f)) => {
                    f.validate(config.heads, config.head_dim)
                        .map_err(|e| err(format!("layer {i}: {e}")))?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Reads a plan file (format in the module docs) for a model of `config` and uploads the
    /// feature-map weights it names.
    pub fn load(gpu: &Gpu, path: &Path, config: &DitConfig, dtype: DType) -> Result<Self> {
        let err = |message: String| ModelError::Plan {
            path: path.display().to_string(),
            message,
        };
        let PlanSpec {
            layers,
            feature_map,
            feature_weights,
            powers,
        } = PlanSpec::read(path, config)?;
        let mut features: Vec<Option<FeatureMapWeights>> =
            (0..config.layers).map(|_| None).collect();
        if let Some(kind) = feature_map.as_deref() {
            let weights = match &feature_weights {
                Some(p) => Some(WeightSet::open(p)?),
                None => None,
            };
            let (h, d) = (config.heads, config.head_dim);
            for (i, l) in layers.iter().enumerate() {
                if !l.needs_features() {
                    continue;
                }
                let load = |which: &str| -> Result<FeatureMap> {
                    let Some(ws) = &weights else {
                        return Ok(FeatureMap::Elu1);
                    };
                    let first = if kind == "hedgehog" {
                        "weight"
                    } else {
                        "l1.weight"
                    };
                    let per_mode = ws.contains(&feature_tensor_name(i, Some(*l), which, first));
                    let name = |s: &str| feature_tensor_name(i, per_mode.then_some(*l), which, s);
                    let up = |n: &str, rank: usize| -> Result<vdit_wgpu::Tensor> {
                        let info = ws.info(n).ok_or_else(|| {
                            err(format!("{}: no tensor '{n}'", ws.source().display()))
                        })?;
                        if info.shape().len() != rank || info.shape()[0] != h {
                            return Err(err(format!(
                                "tensor '{n}' has shape {:?}, expected {rank} dims starting with {h} heads",
                                info.shape()
                            )));
                        }
                        Ok(ws.get(n)?.upload(gpu, info.shape(), dtype)?)
                    };
                    Ok(if kind == "hedgehog" {
                        FeatureMap::Hedgehog {
                            w: up(&name("weight"), 3)?,
                            b: up(&name("bias"), 2)?,
                        }
                    } else {
                        FeatureMap::Poly {
                            w1: up(&name("l1.weight"), 3)?,
                            b1: up(&name("l1.bias"), 2)?,
                            w2: up(&name("l2.weight"), 3)?,
                            b2: up(&name("l2.bias"), 2)?,
                            powers,
                        }
                    })
                };
                let f = FeatureMapWeights {
                    phi_q: load("phi_q")?,
                    phi_k: load("phi_k")?,
                };
                f.validate(h, d)
                    .map_err(|e| err(format!("layer {i}: {e}")))?;
                features[i] = Some(f);
            }
        }
        Ok(Self { layers, features })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_modes() {
        assert_eq!(
            LayerAttention::parse("softmax"),
            Some(LayerAttention::Softmax)
        );
        assert_eq!(
            LayerAttention::parse("hybrid:2"),
            Some(LayerAttention::Hybrid { rate: 2 })
        );
        assert_eq!(
            LayerAttention::parse("rehyat:3:1"),
            Some(LayerAttention::Rehyat {
                chunk_frames: 3,
                overlap_frames: 1
            })
        );
        for s in ["softmax", "linear", "hybrid:4", "rehyat:3:1"] {
            assert_eq!(LayerAttention::parse(s).unwrap().to_string(), s);
        }
        assert_eq!(
            LayerAttention::parse("rehyat:3:1").unwrap().key(),
            "rehyat_3_1"
        );
        for bad in [
            "", "hybrid", "hybrid:0", "hybrid:x", "rehyat:3", "linear:2", "flash",
        ] {
            assert_eq!(LayerAttention::parse(bad), None, "{bad}");
        }
    }
}
