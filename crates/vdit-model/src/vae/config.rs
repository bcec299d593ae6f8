//! The Wan-VAE decoder's sizes and latent statistics, from diffusers' `config.json` or the
//! published Wan2.1 defaults.

use std::path::Path;

use serde_json::Value;

use crate::weights::{Result, WeightError};

/// What the decoder needs of an `AutoencoderKLWan` config.
#[derive(Clone, Debug, PartialEq)]
pub struct VaeConfig {
    /// The decoder's base width (diffusers `decoder_base_dim`, else `base_dim`).
    pub base_dim: usize,
    pub z_dim: usize,
    pub dim_mult: Vec<usize>,
    pub num_res_blocks: usize,
    /// Per up stage, whether its upsampler also doubles time: the encoder's
    /// `temperal_downsample` reversed.
    pub temporal_upsample: Vec<bool>,
    /// Per latent channel: the sampler's latents are `z * std + mean` in the decoder's scale.
    pub latents_mean: Vec<f32>,
    pub latents_std: Vec<f32>,
}

const WAN21_MEAN: [f32; 16] = [
    -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508, 0.4134, -0.0715, 0.5517,
    -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
];
const WAN21_STD: [f32; 16] = [
    2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743, 3.2687, 2.1526, 2.8652, 1.5579,
    1.6382, 1.1253, 2.8251, 1.9160,
];

/// More up stages than any VAE has (Wan's has 4): each doubles the frame size.
const MAX_STAGES: usize = 16;

impl VaeConfig {
    /// The published Wan2.1 VAE (the original `.pth` carries no config).
    pub fn wan21() -> Self {
        Self {
            base_dim: 96,
            z_dim: 16,
            dim_mult: vec![1, 2, 4, 4],
            num_res_blocks: 2,
            temporal_upsample: vec![true, true, false],
            latents_mean: WAN21_MEAN.to_vec(),
            latents_std: WAN21_STD.to_vec(),
        }
    }

    pub fn from_json_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| WeightError::Io {
            path: path.to_path_buf(),
            action: "cannot read",
            source,
        })?;
        Self::from_json_str(&text, path)
    }

    /// Parses diffusers' `AutoencoderKLWan` config; missing fields keep the Wan2.1 values.
    /// `path` only names the source in errors.
    pub fn from_json_str(text: &str, path: &Path) -> Result<Self> {
        let err = |reason: String| WeightError::Config {
            path: path.to_path_buf(),
            reason,
        };
        let v: Value =
            serde_json::from_str(text).map_err(|e| err(format!("not valid JSON: {e}")))?;
        if let Some(class) = v.get("_class_name").and_then(Value::as_str) {
            if class != "AutoencoderKLWan" {
                return Err(err(format!("a {class} config, not AutoencoderKLWan")));
            }
        }
        if v.get("is_residual").and_then(Value::as_bool) == Some(true) {
            return Err(err(
                "is_residual (the Wan2.2 VAE) is not supported, only the Wan2.1 decoder".into(),
            ));
        }
        if v.get("patch_size").is_some_and(|p| !p.is_null()) {
            return Err(err("patch_size (the Wan2.2 VAE) is not supported".into()));
        }
        let mut c = Self::wan21();
        let usize_field = |name: &str| -> std::result::Result<Option<usize>, WeightError> {
            match v.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(x) => x
                    .as_u64()
                    .map(|n| Some(n as usize))
                    .ok_or_else(|| err(format!("'{name}' must be a non-negative integer"))),
            }
        };
        if let Some(n) = usize_field("base_dim")? {
            c.base_dim = n;
        }
        if let Some(n) = usize_field("decoder_base_dim")? {
            c.base_dim = n;
        }
        if let Some(n) = usize_field("z_dim")? {
            c.z_dim = n;
        }
        if let Some(n) = usize_field("num_res_blocks")? {
            c.num_res_blocks = n;
        }
        if let Some(m) = v.get("dim_mult") {
            c.dim_mult = m
                .as_array()
                .and_then(|a| a.iter().map(|x| x.as_u64().map(|n| n as usize)).collect())
                .ok_or_else(|| err("'dim_mult' must be a list of integers".into()))?;
        }
        if let Some(t) = v.get("temperal_downsample") {
            let down: Vec<bool> = t
                .as_array()
                .and_then(|a| a.iter().map(Value::as_bool).collect())
                .ok_or_else(|| err("'temperal_downsample' must be a list of booleans".into()))?;
            c.temporal_upsample = down.into_iter().rev().collect();
        }
        for (name, field) in [
            ("latents_mean", &mut c.latents_mean),
            ("latents_std", &mut c.latents_std),
        ] {
            if let Some(list) = v.get(name) {
                *field = list
                    .as_array()
                    .and_then(|a| a.iter().map(|x| x.as_f64().map(|f| f as f32)).collect())
                    .ok_or_else(|| err(format!("'{name}' must be a list of numbers")))?;
            }
        }
        c.validate().map_err(err)?;
        Ok(c)
    }

    /// Checks that the sizes fit together (and can be counted).
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.base_dim == 0 || self.z_dim == 0 {
            return Err("base_dim and z_dim must be positive".into());
        }
        if self.dim_mult.len() < 2 || self.dim_mult.contains(&0) {
            return Err(format!(
                "dim_mult {:?} needs at least two positive entries",
                self.dim_mult
            ));
        }
        // Each stage doubles the frame size; the widths' largest weights (3x3x3 convolutions
        // from one width to the next) must be countable.
        if self.dim_mult.len() > MAX_STAGES {
            return Err(format!(
                "dim_mult has {} entries; at most {MAX_STAGES} stages are supported",
                self.dim_mult.len()
            ));
        }
        let countable = |m: usize| {
            self.base_dim
                .checked_mul(m)
                .and_then(|w| w.checked_mul(w))
                .and_then(|w2| w2.checked_mul(27 * 4))
                .is_some()
        };
        if let Some(m) = self.dim_mult.iter().find(|&&m| !countable(m)) {
            return Err(format!(
                "base_dim {} x dim_mult {m} is too wide to count its weights",
                self.base_dim
            ));
        }
        if self.temporal_upsample.len() + 1 != self.dim_mult.len() {
            return Err(format!(
                "temperal_downsample has {} entries, dim_mult {} (one fewer expected)",
                self.temporal_upsample.len(),
                self.dim_mult.len()
            ));
        }
        if self.latents_mean.len() != self.z_dim || self.latents_std.len() != self.z_dim {
            return Err(format!(
                "latents_mean and latents_std need {} values each, got {} and {}",
                self.z_dim,
                self.latents_mean.len(),
                self.latents_std.len()
            ));
        }
        if let Some(s) = self
            .latents_std
            .iter()
            .find(|s| !(s.is_finite() && **s != 0.0))
        {
            return Err(format!(
                "latents_std holds {s}, which cannot scale a latent"
            ));
        }
        let dims = self.stage_dims();
        for (i, pair) in dims.windows(2).enumerate().skip(1) {
            if pair[0] % 2 != 0 {
                return Err(format!(
                    "up stage {i} would halve an odd width {} (base_dim {} x dim_mult)",
                    pair[0], self.base_dim
                ));
            }
        }
        Ok(())
    }

    /// Widths along the decoder: conv_in / mid, then each up stage's output.
    pub fn stage_dims(&self) -> Vec<usize> {
        let mut dims = vec![self.base_dim * self.dim_mult[self.dim_mult.len() - 1]];
        dims.extend(self.dim_mult.iter().rev().map(|m| self.base_dim * m));
        dims
    }

    /// Output frames of `latent_frames` latent frames: the first gives one, every later one
    /// 2^(temporal upsamplers).
    pub fn output_frames(&self, latent_frames: usize) -> usize {
        let per = 1usize << self.temporal_upsample.iter().filter(|&&t| t).count();
        if latent_frames == 0 {
            0
        } else {
            1 + per * (latent_frames - 1)
        }
    }

    /// The spatial factor: one x2 per up stage but the last.
    pub fn spatial_scale(&self) -> usize {
        1 << (self.dim_mult.len() - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_too_large_to_count_are_refused() {
        let path = Path::new("config.json");
        // Found by the fuzzer (tests/fuzz-regressions/configs): a dim_mult of 2^63.
        let text = include_str!("../../tests/fuzz-regressions/configs/vae-width-overflows.json");
        let err = VaeConfig::from_json_str(text, path)
            .unwrap_err()
            .to_string();
        assert!(err.contains("too wide to count its weights"), "{err}");
        // 70 stages would shift the frame size past 64 bits.
        let mut c = VaeConfig::wan21();
        c.dim_mult = vec![1; 70];
        c.temporal_upsample = vec![false; 69];
        assert!(c.validate().unwrap_err().contains("at most 16 stages"));
        VaeConfig::wan21().validate().unwrap();
    }
}
