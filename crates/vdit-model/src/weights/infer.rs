//! Working out a DiT config from tensor shapes, for checkpoints without a `config.json`
//! (ComfyUI single files).

use super::checkpoint::Checkpoint;
use super::config::DitConfig;
use super::error::{Result, WeightError};

/// Every published Wan2.1 DiT uses 128-wide heads; the head count is not stored anywhere else.
const ASSUMED_HEAD_DIM: usize = 128;

impl DitConfig {
    /// Sizes from the shapes of the patch embedding, the embeddings, the first FFN and the head;
    /// the block count from the block indices; the norm switches from which norms exist.
    /// Heads are assumed 128 wide, eps 1e-6 and the text length 512.
    pub fn infer(checkpoint: &Checkpoint) -> Result<Self> {
        let config_err = |reason: String| WeightError::Config {
            path: checkpoint.source().to_path_buf(),
            reason: format!("inferring the config from tensor shapes: {reason}"),
        };
        let shape_of = |canonical: &str, rank: usize| -> Result<Vec<usize>> {
            let view = checkpoint.get(canonical)?;
            if view.shape().len() != rank {
                return Err(config_err(format!(
                    "'{}' has shape {:?}, not {rank}-D",
                    view.name(),
                    view.shape()
                )));
            }
            Ok(view.shape().to_vec())
        };

        let patch = shape_of("patch_embedding.weight", 5)?;
        let (dim, in_channels) = (patch[0], patch[1]);
        let patch = [patch[2], patch[3], patch[4]];
        if dim % ASSUMED_HEAD_DIM != 0 {
            return Err(config_err(format!(
                "dim {dim} is not a multiple of {ASSUMED_HEAD_DIM}, so the head count is unknown; add a config.json"
            )));
        }
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
        if layers == 0 {
            return Err(config_err("no blocks".into()));
        }
        let ffn_dim = shape_of("blocks.0.ffn.net.0.proj.weight", 2)?[0];
        let text_dim = shape_of("condition_embedder.text_embedder.linear_1.weight", 2)?[1];
        let freq_dim = shape_of("condition_embedder.time_embedder.linear_1.weight", 2)?[1];
        let out_features = shape_of("proj_out.weight", 2)?[0];
        let patch_volume: usize = patch.iter().product();
        if patch_volume == 0 || out_features % patch_volume != 0 {
            return Err(config_err(format!(
                "proj_out has {out_features} outputs, not a multiple of the patch volume {patch_volume}"
            )));
        }
        let config = DitConfig {
            dim,
            ffn_dim,
            freq_dim,
            heads: dim / ASSUMED_HEAD_DIM,
            head_dim: ASSUMED_HEAD_DIM,
            layers,
            in_channels,
            out_channels: out_features / patch_volume,
            text_dim,
            patch,
            cross_attn_norm: checkpoint.contains("blocks.0.norm2.weight"),
            qk_norm: checkpoint.contains("blocks.0.attn1.norm_q.weight"),
            ..DitConfig::wan21_t2v_1_3b()
        };
        config.validate().map_err(config_err)?;
        Ok(config)
    }
}
