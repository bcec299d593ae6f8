//! The key names of LoRA files: which DiT tensor each key patches, and with which part of the
//! patch.
//!
//! Published Wan LoRAs name their tensors in four ways, all accepted here:
//! - kohya / musubi-tuner: `lora_unet_blocks_0_self_attn_q.lora_down.weight`, `.lora_up.weight`,
//!   `.alpha` (the module path of the original Wan names, dots turned into underscores);
//! - diffusers / PEFT: `transformer.blocks.0.attn1.to_q.lora_A.weight`, `.lora_B.weight`;
//! - ComfyUI and the step-distilled LoRAs: `diffusion_model.blocks.0.self_attn.q.lora_down.weight`
//!   (or `lora_A`/`lora_B`), `.alpha`, and full deltas `.diff` (weights, norm gains) and
//!   `.diff_b` (biases);
//! - any of these on the other naming (diffusers names under `diffusion_model.`, original names
//!   under `transformer.`, underscored diffusers names under `lora_unet_`).

use std::collections::HashMap;

use crate::weights::{diffusers_to_original, DitConfig};

/// What one LoRA tensor is to the module it patches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Part {
    /// `lora_down` / `lora_A`: [rank, in].
    Down,
    /// `lora_up` / `lora_B`: [out, rank].
    Up,
    /// The scalar alpha: the low-rank product is scaled by alpha / rank.
    Alpha,
    /// A full delta of the module's weight (or of a parameter tensor such as a norm gain).
    Diff,
    /// A full delta of the module's bias (`diff_b`, or PEFT's `lora_B.bias`).
    DiffBias,
}

impl Part {
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Part::Down => "lora_down",
            Part::Up => "lora_up",
            Part::Alpha => "alpha",
            Part::Diff => "diff",
            Part::DiffBias => "diff_b",
        }
    }
}

/// Key endings, longest first where one ends another.
const SUFFIXES: [(&str, Part); 8] = [
    (".lora_down.weight", Part::Down),
    (".lora_A.weight", Part::Down),
    (".lora_up.weight", Part::Up),
    (".lora_B.weight", Part::Up),
    (".lora_B.bias", Part::DiffBias),
    (".alpha", Part::Alpha),
    (".diff_b", Part::DiffBias),
    (".diff", Part::Diff),
];

/// Prefixes before the module path, removed before it is looked up.
const PREFIXES: [&str; 5] = [
    "model.diffusion_model.",
    "diffusion_model.",
    "base_model.model.",
    "transformer.",
    "model.",
];

/// kohya's prefixes before an underscored module path.
const FLAT_PREFIXES: [&str; 2] = ["lora_unet_", "lora_transformer_"];

/// A key split into its module path (as written, prefixes removed) and its part.
pub(crate) fn split_key(key: &str) -> Option<(&str, Part)> {
    SUFFIXES
        .iter()
        .find_map(|(suffix, part)| key.strip_suffix(suffix).map(|module| (module, *part)))
}

/// Every spelling of every DiT module and parameter, to its canonical (diffusers) name.
pub(crate) struct ModuleIndex {
    /// Spelling -> canonical module path (`blocks.0.attn1.to_q`) or, for a bare parameter
    /// (`scale_shift_table`), its tensor name.
    spellings: HashMap<String, String>,
    /// Canonical tensor name -> shape.
    shapes: HashMap<String, Vec<usize>>,
}

impl ModuleIndex {
    pub(crate) fn new(config: &DitConfig) -> Self {
        let mut spellings = HashMap::new();
        let mut shapes = HashMap::new();
        for (tensor, shape) in config.tensor_shapes() {
            let module = tensor
                .strip_suffix(".weight")
                .or_else(|| tensor.strip_suffix(".bias"))
                .unwrap_or(&tensor)
                .to_string();
            let original = diffusers_to_original(&tensor);
            let original_module = original
                .strip_suffix(".weight")
                .or_else(|| original.strip_suffix(".bias"))
                .unwrap_or(&original)
                .to_string();
            for spelling in [
                module.clone(),
                original_module.clone(),
                flat(&module),
                flat(&original_module),
            ] {
                spellings.entry(spelling).or_insert_with(|| module.clone());
            }
            shapes.insert(tensor, shape);
        }
        Self { spellings, shapes }
    }

    /// The canonical module path a LoRA key's module path names, if the DiT has it.
    pub(crate) fn resolve(&self, module: &str) -> Option<&str> {
        let mut candidates = vec![module];
        for prefix in PREFIXES {
            if let Some(rest) = module.strip_prefix(prefix) {
                candidates.push(rest);
            }
        }
        for prefix in FLAT_PREFIXES {
            if let Some(rest) = module.strip_prefix(prefix) {
                candidates.push(rest);
            }
        }
        candidates
            .into_iter()
            .find_map(|c| self.spellings.get(c).map(String::as_str))
    }

    /// The tensor a part of a patch of `module` changes: its weight (or the parameter itself
    /// for a bare one), or its bias.
    pub(crate) fn target(&self, module: &str, part: Part) -> Option<(&str, &[usize])> {
        let names: &[String] = &match part {
            Part::DiffBias => vec![format!("{module}.bias")],
            _ => vec![format!("{module}.weight"), module.to_string()],
        };
        names.iter().find_map(|name| {
            self.shapes
                .get_key_value(name.as_str())
                .map(|(k, v)| (k.as_str(), v.as_slice()))
        })
    }
}

/// kohya's spelling of a module path: dots become underscores.
fn flat(module: &str) -> String {
    module.replace('.', "_")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index() -> ModuleIndex {
        ModuleIndex::new(&DitConfig::wan21_t2v_1_3b())
    }

    #[test]
    fn every_published_spelling_names_the_same_module() {
        let index = index();
        for key in [
            "lora_unet_blocks_3_self_attn_q.lora_down.weight",
            "transformer.blocks.3.attn1.to_q.lora_A.weight",
            "diffusion_model.blocks.3.self_attn.q.lora_up.weight",
            "diffusion_model.blocks.3.attn1.to_q.lora_B.weight",
            "transformer.blocks.3.self_attn.q.alpha",
            "lora_unet_blocks_3_attn1_to_q.alpha",
            "blocks.3.self_attn.q.diff_b",
        ] {
            let (module, _) = split_key(key).unwrap();
            assert_eq!(index.resolve(module), Some("blocks.3.attn1.to_q"), "{key}");
        }
        let (module, part) = split_key("lora_unet_blocks_0_ffn_2.lora_up.weight").unwrap();
        assert_eq!(part, Part::Up);
        assert_eq!(index.resolve(module), Some("blocks.0.ffn.net.2"));
        let (module, _) = split_key("diffusion_model.head.head.diff_b").unwrap();
        assert_eq!(index.resolve(module), Some("proj_out"));
        let (module, _) = split_key("diffusion_model.text_embedding.0.lora_A.weight").unwrap();
        assert_eq!(
            index.resolve(module),
            Some("condition_embedder.text_embedder.linear_1")
        );
    }

    #[test]
    fn full_deltas_reach_norm_gains_and_bare_parameters() {
        let index = index();
        let (module, part) = split_key("diffusion_model.blocks.0.norm3.diff").unwrap();
        let canonical = index.resolve(module).unwrap();
        assert_eq!(canonical, "blocks.0.norm2");
        assert_eq!(
            index.target(canonical, part),
            Some(("blocks.0.norm2.weight", &[1536][..]))
        );
        let (module, part) = split_key("diffusion_model.blocks.1.modulation.diff").unwrap();
        let canonical = index.resolve(module).unwrap();
        assert_eq!(
            index.target(canonical, part).unwrap().0,
            "blocks.1.scale_shift_table"
        );
        let (module, part) = split_key("diffusion_model.blocks.1.ffn.0.diff_b").unwrap();
        assert_eq!(
            index
                .target(index.resolve(module).unwrap(), part)
                .unwrap()
                .0,
            "blocks.1.ffn.net.0.proj.bias"
        );
    }

    #[test]
    fn foreign_keys_resolve_to_nothing() {
        let index = index();
        for key in [
            "lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight",
            "diffusion_model.blocks.0.cross_attn.k_img.lora_down.weight",
            "diffusion_model.img_emb.proj.1.lora_up.weight",
            "diffusion_model.blocks.30.self_attn.q.lora_up.weight",
        ] {
            let (module, _) = split_key(key).unwrap();
            assert_eq!(index.resolve(module), None, "{key}");
        }
        assert!(split_key("blocks.0.self_attn.q.weight").is_none());
    }
}
