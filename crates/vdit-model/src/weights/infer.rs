//! Working out a DiT config from tensor shapes: all of it for checkpoints without a
//! `config.json` (ComfyUI single files), the fields a `config.json` leaves out otherwise.

use super::checkpoint::Checkpoint;
use super::config::{DitConfig, ShapeField};
use super::error::{Result, WeightError};

/// Every published Wan2.1 DiT uses 128-wide heads; the head count is not stored anywhere else.
const ASSUMED_HEAD_DIM: usize = 128;

/// What the tensor shapes say about the config (everything but the head split and eps).
pub(crate) struct ShapeFacts {
    dim: usize,
    in_channels: usize,
    patch: [usize; 3],
    ffn_dim: usize,
    text_dim: usize,
    freq_dim: usize,
    out_channels: usize,
    layers: usize,
    cross_attn_norm: bool,
    qk_norm: bool,
}

impl ShapeFacts {
    /// Sizes from the shapes of the patch embedding, the embeddings, the first FFN and the head;
    /// the block count from the block indices; the norm switches from which norms exist.
    pub(crate) fn read(checkpoint: &Checkpoint) -> Result<Self> {
        let shape_of = |canonical: &str, rank: usize| -> Result<Vec<usize>> {
            let view = checkpoint.get(canonical)?;
            if view.shape().len() != rank {
                return Err(inference_error(
                    checkpoint,
                    format!(
                        "'{}' has shape {:?}, not {rank}-D",
                        view.name(),
                        view.shape()
                    ),
                ));
            }
            Ok(view.shape().to_vec())
        };
        let patch_kernel = shape_of("patch_embedding.weight", 5)?;
        let patch = [patch_kernel[2], patch_kernel[3], patch_kernel[4]];
        let layers = checkpoint
            .canonical_names()
            .filter_map(|n| {
                n.strip_prefix("blocks.")?
                    .split('.')
                    .next()?
                    .parse::<usize>()
                    .ok()
            })
            .max()
            .map_or(0, |last| last + 1);
        let out_features = shape_of("proj_out.weight", 2)?[0];
        let patch_volume: usize = patch.iter().product();
        if patch_volume == 0 || out_features % patch_volume != 0 {
            return Err(inference_error(
                checkpoint,
                format!(
                    "proj_out has {out_features} outputs, not a multiple of the patch volume {patch_volume}"
                ),
            ));
        }
        Ok(Self {
            dim: patch_kernel[0],
            in_channels: patch_kernel[1],
            patch,
            ffn_dim: shape_of("blocks.0.ffn.net.0.proj.weight", 2)?[0],
            text_dim: shape_of("condition_embedder.text_embedder.linear_1.weight", 2)?[1],
            freq_dim: shape_of("condition_embedder.time_embedder.linear_1.weight", 2)?[1],
            out_channels: out_features / patch_volume,
            layers,
            cross_attn_norm: checkpoint.contains("blocks.0.norm2.weight"),
            qk_norm: checkpoint.contains("blocks.0.attn1.norm_q.weight"),
        })
    }

    /// Replaces the `unstated` fields of `config` with what the shapes say.
    pub(crate) fn fill(&self, config: &mut DitConfig, unstated: &[ShapeField]) {
        for field in unstated {
            match field {
                ShapeField::Patch => config.patch = self.patch,
                ShapeField::InChannels => config.in_channels = self.in_channels,
                ShapeField::OutChannels => config.out_channels = self.out_channels,
                ShapeField::TextDim => config.text_dim = self.text_dim,
                ShapeField::FreqDim => config.freq_dim = self.freq_dim,
                ShapeField::FfnDim => config.ffn_dim = self.ffn_dim,
                ShapeField::Layers => config.layers = self.layers,
                ShapeField::CrossAttnNorm => config.cross_attn_norm = self.cross_attn_norm,
                ShapeField::QkNorm => config.qk_norm = self.qk_norm,
            }
        }
    }
}

fn inference_error(checkpoint: &Checkpoint, reason: String) -> WeightError {
    WeightError::Config {
        path: checkpoint.source().to_path_buf(),
        reason: format!("inferring the config from tensor shapes: {reason}"),
    }
}

impl DitConfig {
    /// The whole config from tensor shapes (see [`ShapeFacts::read`]), with heads assumed 128
    /// wide, eps 1e-6 and the text length 512.
    pub fn infer(checkpoint: &Checkpoint) -> Result<Self> {
        let facts = ShapeFacts::read(checkpoint)?;
        if facts.dim % ASSUMED_HEAD_DIM != 0 {
            return Err(inference_error(
                checkpoint,
                format!(
                    "dim {} is not a multiple of {ASSUMED_HEAD_DIM}, so the head count is unknown; add a config.json",
                    facts.dim
                ),
            ));
        }
        let mut config = DitConfig {
            dim: facts.dim,
            heads: facts.dim / ASSUMED_HEAD_DIM,
            head_dim: ASSUMED_HEAD_DIM,
            ..DitConfig::wan21_t2v_1_3b()
        };
        let every_field = [
            ShapeField::Patch,
            ShapeField::InChannels,
            ShapeField::OutChannels,
            ShapeField::TextDim,
            ShapeField::FreqDim,
            ShapeField::FfnDim,
            ShapeField::Layers,
            ShapeField::CrossAttnNorm,
            ShapeField::QkNorm,
        ];
        facts.fill(&mut config, &every_field);
        config
            .validate()
            .map_err(|reason| inference_error(checkpoint, reason))?;
        Ok(config)
    }
}
