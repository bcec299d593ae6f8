//! Key layouts of Wan DiT checkpoints and the mapping to the canonical (diffusers) names.
//!
//! Three layouts are published: the original Wan2.1 names (`blocks.0.self_attn.q.weight`), the
//! diffusers names (`blocks.0.attn1.to_q.weight`), and ComfyUI files, which carry either naming
//! under the prefix `model.diffusion_model.`. The model asks for diffusers names everywhere;
//! stored names are translated once when a checkpoint is opened. Tensor shapes are identical in
//! both namings (the modulation tables are [1, 6, dim] and [1, 2, dim] in both).

use std::fmt;

/// The prefix ComfyUI puts before every DiT tensor name.
pub const COMFYUI_PREFIX: &str = "model.diffusion_model.";

/// Which naming the tensor names follow, once any prefix is removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Naming {
    /// The Wan2.1 repository's module names.
    Original,
    /// diffusers' `WanTransformer3DModel` names, the canonical ones.
    Diffusers,
}

/// How a checkpoint names its DiT tensors: a naming, under a prefix ("" for none).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct KeyLayout {
    pub naming: Naming,
    pub prefix: String,
}

/// An (original, diffusers) pair of module paths, or the same pair turned around.
type Pair = (&'static str, &'static str);

/// Renames between the original and diffusers namings, as (original, diffusers) pairs of module
/// paths, matched whole at dot boundaries. Top level:
const TOP_LEVEL_RENAMES: [Pair; 7] = [
    (
        "text_embedding.0",
        "condition_embedder.text_embedder.linear_1",
    ),
    (
        "text_embedding.2",
        "condition_embedder.text_embedder.linear_2",
    ),
    (
        "time_embedding.0",
        "condition_embedder.time_embedder.linear_1",
    ),
    (
        "time_embedding.2",
        "condition_embedder.time_embedder.linear_2",
    ),
    ("time_projection.1", "condition_embedder.time_proj"),
    ("head.modulation", "scale_shift_table"),
    ("head.head", "proj_out"),
];

/// Inside `blocks.N.`. The original calls its norms norm1 (self-attn), norm3 (the affine
/// cross-attn norm), norm2 (FFN); diffusers numbers them in order of use, hence the swap.
const BLOCK_RENAMES: [Pair; 17] = [
    ("modulation", "scale_shift_table"),
    ("self_attn.q", "attn1.to_q"),
    ("self_attn.k", "attn1.to_k"),
    ("self_attn.v", "attn1.to_v"),
    ("self_attn.o", "attn1.to_out.0"),
    ("self_attn.norm_q", "attn1.norm_q"),
    ("self_attn.norm_k", "attn1.norm_k"),
    ("cross_attn.q", "attn2.to_q"),
    ("cross_attn.k", "attn2.to_k"),
    ("cross_attn.v", "attn2.to_v"),
    ("cross_attn.o", "attn2.to_out.0"),
    ("cross_attn.norm_q", "attn2.norm_q"),
    ("cross_attn.norm_k", "attn2.norm_k"),
    ("norm3", "norm2"),
    ("norm2", "norm3"),
    ("ffn.0", "ffn.net.0.proj"),
    ("ffn.2", "ffn.net.2"),
];

/// `name` with the module path `from` replaced by `to`, when `name` is `from` or lies under it.
fn rename_module(name: &str, from: &str, to: &str) -> Option<String> {
    let rest = name.strip_prefix(from)?;
    (rest.is_empty() || rest.starts_with('.')).then(|| format!("{to}{rest}"))
}

/// Applies the first matching pair of the tables, direction chosen by `pick`
/// (`(from, to)` out of an `(original, diffusers)` pair). Unknown names pass through unchanged.
fn translate(name: &str, pick: fn(Pair) -> Pair) -> String {
    if let Some((index, tail)) = name
        .strip_prefix("blocks.")
        .and_then(|rest| rest.split_once('.'))
        .filter(|(index, _)| index.parse::<usize>().is_ok())
    {
        for pair in BLOCK_RENAMES {
            let (from, to) = pick(pair);
            if let Some(renamed) = rename_module(tail, from, to) {
                return format!("blocks.{index}.{renamed}");
            }
        }
        return name.to_string();
    }
    for pair in TOP_LEVEL_RENAMES {
        let (from, to) = pick(pair);
        if let Some(renamed) = rename_module(name, from, to) {
            return renamed;
        }
    }
    name.to_string()
}

/// The diffusers name of an original Wan2.1 DiT tensor name; unknown names are returned as they are.
pub fn original_to_diffusers(name: &str) -> String {
    translate(name, |pair| pair)
}

/// The original Wan2.1 name of a diffusers DiT tensor name; unknown names are returned as they are.
pub fn diffusers_to_original(name: &str) -> String {
    translate(name, |(original, diffusers)| (diffusers, original))
}

/// Module names only one naming uses, matched as whole dot-separated segments.
fn naming_evidence(name: &str) -> Option<Naming> {
    const DIFFUSERS: [&str; 5] = [
        "condition_embedder",
        "proj_out",
        "attn1",
        "attn2",
        "scale_shift_table",
    ];
    const ORIGINAL: [&str; 7] = [
        "text_embedding",
        "time_embedding",
        "time_projection",
        "head",
        "self_attn",
        "cross_attn",
        "modulation",
    ];
    name.split('.').find_map(|segment| {
        if DIFFUSERS.contains(&segment) {
            Some(Naming::Diffusers)
        } else if ORIGINAL.contains(&segment) {
            Some(Naming::Original)
        } else {
            None
        }
    })
}

impl KeyLayout {
    /// Works out the layout from the stored names. The prefix is whatever precedes the one
    /// `patch_embedding.weight`; the naming is decided by names only one naming uses.
    /// The error explains what could not be decided.
    pub fn detect<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Self, String> {
        let names: Vec<&str> = names.into_iter().collect();
        let anchors: Vec<&str> = names
            .iter()
            .copied()
            .filter(|n| *n == "patch_embedding.weight" || n.ends_with(".patch_embedding.weight"))
            .collect();
        let prefix = match anchors[..] {
            [anchor] => anchor
                .trim_end_matches("patch_embedding.weight")
                .to_string(),
            [] => {
                return Err(
                    "no patch_embedding.weight tensor: this is not a Wan DiT checkpoint".into(),
                )
            }
            _ => {
                return Err(format!(
                    "several patch embeddings ({}): more than one model in these files",
                    anchors.join(", ")
                ))
            }
        };
        let mut diffusers_example = None;
        let mut original_example = None;
        for name in &names {
            let Some(inner) = name.strip_prefix(prefix.as_str()) else {
                continue;
            };
            match naming_evidence(inner) {
                Some(Naming::Diffusers) => {
                    diffusers_example.get_or_insert(*name);
                }
                Some(Naming::Original) => {
                    original_example.get_or_insert(*name);
                }
                None => {}
            }
        }
        let naming =
            match (original_example, diffusers_example) {
                (Some(o), Some(d)) => {
                    return Err(format!(
                        "names of both the original ('{o}') and the diffusers ('{d}') layouts"
                    ))
                }
                (Some(_), None) => Naming::Original,
                (None, Some(_)) => Naming::Diffusers,
                (None, None) => return Err(
                    "no tensor name shows whether the layout is the original or the diffusers one"
                        .into(),
                ),
            };
        Ok(Self { naming, prefix })
    }

    /// The canonical (diffusers) name of a stored name, or None for a name outside the prefix.
    pub fn canonical_name(&self, stored: &str) -> Option<String> {
        let inner = stored.strip_prefix(self.prefix.as_str())?;
        Some(match self.naming {
            Naming::Diffusers => inner.to_string(),
            Naming::Original => original_to_diffusers(inner),
        })
    }

    /// The name this layout stores a canonical name under.
    pub fn stored_name(&self, canonical: &str) -> String {
        let inner = match self.naming {
            Naming::Diffusers => canonical.to_string(),
            Naming::Original => diffusers_to_original(canonical),
        };
        format!("{}{inner}", self.prefix)
    }

    /// Whether this is a ComfyUI file (the `model.diffusion_model.` prefix).
    pub fn is_comfyui(&self) -> bool {
        self.prefix == COMFYUI_PREFIX
    }
}

impl fmt::Display for KeyLayout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let naming = match self.naming {
            Naming::Original => "original Wan2.1 names",
            Naming::Diffusers => "diffusers names",
        };
        match self.prefix.as_str() {
            "" => f.write_str(naming),
            COMFYUI_PREFIX => write!(f, "{naming} under the ComfyUI prefix '{COMFYUI_PREFIX}'"),
            prefix => write!(f, "{naming} under the prefix '{prefix}'"),
        }
    }
}
