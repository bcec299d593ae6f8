//! The decoder's tensors and the two namings they are published under.
//!
//! The decoder asks for diffusers names (`decoder.up_blocks.1.resnets.0.conv1.weight`) of a
//! [`WeightSet`] (safetensors, GGUF, the original `.pth`, tensors held in memory through
//! [`WeightSet::from_f32`], or random ones through [`crate::vae::VaeConfig::random_weights`]).
//! [`VaeTensors`] finds the naming and any prefix once and translates every request.

use crate::error::Result;
use crate::weights::{WeightError, WeightSet};

/// The naming of a VAE checkpoint once its prefix is removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VaeNaming {
    /// diffusers' `AutoencoderKLWan` (`decoder.conv_in`, `post_quant_conv`).
    Diffusers,
    /// The Wan2.1 repository's `WanVAE_` (`decoder.conv1`, `conv2`), also ComfyUI's file.
    Original,
}

/// A weight set seen through diffusers names.
pub struct VaeTensors<'a> {
    source: &'a WeightSet,
    naming: VaeNaming,
    prefix: String,
    num_res_blocks: usize,
}

impl<'a> VaeTensors<'a> {
    /// Detects the naming from the decoder's first convolution, under any prefix.
    pub fn new(source: &'a WeightSet, num_res_blocks: usize) -> Result<Self> {
        for (naming, marker) in [
            (VaeNaming::Diffusers, "decoder.conv_in.weight"),
            (VaeNaming::Original, "decoder.conv1.weight"),
        ] {
            if let Some(name) = source.names().find(|n| n.ends_with(marker)) {
                return Ok(Self {
                    source,
                    naming,
                    prefix: name[..name.len() - marker.len()].to_string(),
                    num_res_blocks,
                });
            }
        }
        Err(WeightError::Layout {
            path: source.source().to_path_buf(),
            reason: "not a Wan VAE: no decoder.conv_in.weight (diffusers) or \
                     decoder.conv1.weight (original) tensor"
                .into(),
        }
        .into())
    }

    pub fn naming(&self) -> VaeNaming {
        self.naming
    }

    /// The stored name of a diffusers name.
    pub fn stored_name(&self, name: &str) -> String {
        let base = match self.naming {
            VaeNaming::Diffusers => name.to_string(),
            VaeNaming::Original => diffusers_to_original(name, self.num_res_blocks),
        };
        format!("{}{base}", self.prefix)
    }

    /// Reads `name` (diffusers naming) and checks that it holds `numel` values of `shape`
    /// (trailing ones ignored: PyTorch keeps [C, 1, 1, 1] gammas and [N, C, 1, 1] 1x1 convs).
    pub fn read(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let stored = self.stored_name(name);
        let view = self.source.get(&stored).map_err(|e| match e {
            WeightError::Missing { path, tensor, .. } if stored != name => WeightError::Missing {
                path,
                tensor,
                hint: format!(" (the decoder's '{name}')"),
            },
            other => other,
        })?;
        let found = view.shape().to_vec();
        let trim = |s: &[usize]| -> Vec<usize> {
            let mut v = s.to_vec();
            while v.len() > 1 && v.last() == Some(&1) {
                v.pop();
            }
            v
        };
        if trim(&found) != trim(shape) {
            return Err(WeightError::Shape {
                path: view.path().to_path_buf(),
                tensor: stored,
                expected: shape.to_vec(),
                found,
            }
            .into());
        }
        Ok(view.to_f32()?)
    }
}

/// Parts of a residual block: diffusers -> original (`residual` is an nn.Sequential of RMS_norm,
/// SiLU, CausalConv3d, RMS_norm, SiLU, Dropout, CausalConv3d).
const RESNET_PARTS: [(&str, &str); 5] = [
    ("norm1.", "residual.0."),
    ("conv1.", "residual.2."),
    ("norm2.", "residual.3."),
    ("conv2.", "residual.6."),
    ("conv_shortcut.", "shortcut."),
];

fn resnet_part(rest: &str) -> String {
    for (d, o) in RESNET_PARTS {
        if let Some(tail) = rest.strip_prefix(d) {
            return format!("{o}{tail}");
        }
    }
    rest.to_string()
}

/// The original name of a diffusers decoder tensor. The original `middle` is the flat list
/// [res, attention, res]; `upsamples` is flat too: per stage, `num_res_blocks + 1` residual
/// blocks and then (all but the last stage) the resampler.
pub fn diffusers_to_original(name: &str, num_res_blocks: usize) -> String {
    const SIMPLE: [(&str, &str); 4] = [
        ("post_quant_conv.", "conv2."),
        ("decoder.conv_in.", "decoder.conv1."),
        ("decoder.norm_out.", "decoder.head.0."),
        ("decoder.conv_out.", "decoder.head.2."),
    ];
    for (d, o) in SIMPLE {
        if let Some(tail) = name.strip_prefix(d) {
            return format!("{o}{tail}");
        }
    }
    if let Some(rest) = name.strip_prefix("decoder.mid_block.") {
        if let Some((kind, index, tail)) = split3(rest) {
            match kind {
                "resnets" => return format!("decoder.middle.{}.{}", 2 * index, resnet_part(tail)),
                "attentions" => return format!("decoder.middle.{}.{tail}", 2 * index + 1),
                _ => {}
            }
        }
    }
    if let Some(rest) = name.strip_prefix("decoder.up_blocks.") {
        if let Some((block, rest)) = rest.split_once('.') {
            if let (Ok(block), Some((kind, index, tail))) = (block.parse::<usize>(), split3(rest)) {
                let base = block * (num_res_blocks + 2);
                match kind {
                    "resnets" => {
                        return format!("decoder.upsamples.{}.{}", base + index, resnet_part(tail))
                    }
                    "upsamplers" => {
                        return format!("decoder.upsamples.{}.{tail}", base + num_res_blocks + 1)
                    }
                    _ => {}
                }
            }
        }
    }
    name.to_string()
}

/// `kind.N.tail` -> (kind, N, tail).
fn split3(s: &str) -> Option<(&str, usize, &str)> {
    let (kind, rest) = s.split_once('.')?;
    let (index, tail) = rest.split_once('.')?;
    Some((kind, index.parse().ok()?, tail))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn original_names_of_decoder_tensors() {
        let cases = [
            ("post_quant_conv.weight", "conv2.weight"),
            ("decoder.conv_in.bias", "decoder.conv1.bias"),
            (
                "decoder.mid_block.resnets.1.norm2.gamma",
                "decoder.middle.2.residual.3.gamma",
            ),
            (
                "decoder.mid_block.attentions.0.to_qkv.weight",
                "decoder.middle.1.to_qkv.weight",
            ),
            (
                "decoder.up_blocks.1.resnets.0.conv_shortcut.weight",
                "decoder.upsamples.4.shortcut.weight",
            ),
            (
                "decoder.up_blocks.0.upsamplers.0.time_conv.weight",
                "decoder.upsamples.3.time_conv.weight",
            ),
            (
                "decoder.up_blocks.2.upsamplers.0.resample.1.bias",
                "decoder.upsamples.11.resample.1.bias",
            ),
            (
                "decoder.up_blocks.3.resnets.2.conv2.weight",
                "decoder.upsamples.14.residual.6.weight",
            ),
            ("decoder.norm_out.gamma", "decoder.head.0.gamma"),
            ("decoder.conv_out.weight", "decoder.head.2.weight"),
        ];
        for (d, o) in cases {
            assert_eq!(diffusers_to_original(d, 2), o, "{d}");
        }
    }
}
