//! LoRAs and full-delta patches, merged into the DiT's weights on the GPU as they load.
//!
//! - [`LoraSpec`]: a file and its strength (`FILE[:STRENGTH]` on the command line).
//! - [`LoraSet`]: the opened files, every key resolved to the DiT tensor it changes and checked
//!   against its shape before any weight is uploaded; [`LoraSet::apply`] merges the patches of
//!   one tensor right after it is uploaded.
//!
//! A low-rank pair adds `strength x alpha / rank x up @ down` to a weight (`alpha / rank` is 1
//! when the file has no alpha); `diff` and `diff_b` add `strength x delta` to a weight, a norm
//! gain or a bias. Several LoRAs add up. Quantised bases are merged into their dequantised
//! (f16 or f32) copy, which is what the GPU holds. Key formats: see [`keys`].

mod keys;
mod merge;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use vdit_wgpu::{Gpu, Tensor};

use crate::error::{ModelError, Result};
use crate::weights::{DitConfig, StoredDType, WeightSet};
use keys::{split_key, ModuleIndex, Part};

/// One LoRA file and the strength it is merged with.
#[derive(Clone, Debug, PartialEq)]
pub struct LoraSpec {
    pub path: PathBuf,
    pub strength: f32,
}

impl LoraSpec {
    pub fn new(path: impl Into<PathBuf>, strength: f32) -> Self {
        Self {
            path: path.into(),
            strength,
        }
    }

    /// `FILE` (strength 1) or `FILE:STRENGTH`. A colon followed by something that is not a
    /// number belongs to the path (`C:\loras\a.safetensors`).
    pub fn parse(arg: &str) -> Result<Self> {
        let (path, strength) = match arg.rsplit_once(':') {
            Some((path, s)) if !path.is_empty() && s.trim().parse::<f32>().is_ok() => {
                (path, s.trim().parse::<f32>().unwrap())
            }
            _ => (arg, 1.0),
        };
        if path.is_empty() {
            return Err(crate::error::input_err("--lora", "needs a file name"));
        }
        if !strength.is_finite() {
            return Err(crate::error::input_err(
                "--lora",
                format!("{arg}: the strength must be a finite number"),
            ));
        }
        Ok(Self::new(path, strength))
    }
}

impl std::str::FromStr for LoraSpec {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

/// What one patch adds to its tensor.
#[derive(Clone, Debug)]
enum Change {
    /// `scale x up @ down`; `scale` is strength x alpha / rank.
    LowRank {
        down: String,
        up: String,
        rank: usize,
        scale: f32,
    },
    /// `strength x delta`, the delta shaped as the tensor.
    Delta { key: String, strength: f32 },
}

/// One opened LoRA file.
struct LoraFile {
    spec: LoraSpec,
    weights: WeightSet,
}

/// LoRA files resolved against one DiT config, ready to be merged as the weights load.
pub struct LoraSet {
    files: Vec<LoraFile>,
    /// Canonical tensor name -> (file index, change), in the order the files were given.
    patches: HashMap<String, Vec<(usize, Change)>>,
    /// Seconds spent in [`LoraSet::apply`] (reading, uploading and merging), for reports.
    merge_seconds: std::cell::Cell<f64>,
}

impl LoraSet {
    /// Opens every file and resolves its keys against the tensors of `config`. A file none of
    /// whose keys patch this DiT, a low-rank pair with a half missing, or a tensor whose shape
    /// does not fit its target is an error naming the file and the tensor; keys that match no
    /// DiT tensor while others do are listed in a warning, with counts.
    pub fn open(specs: &[LoraSpec], config: &DitConfig) -> Result<Self> {
        let index = ModuleIndex::new(config);
        let mut set = Self::empty();
        for spec in specs {
            let weights = WeightSet::open(&spec.path)?;
            let resolved = resolve_file(&weights, &index, spec)?;
            let file = set.files.len();
            for (target, change) in resolved {
                set.patches.entry(target).or_default().push((file, change));
            }
            set.files.push(LoraFile {
                spec: spec.clone(),
                weights,
            });
        }
        Ok(set)
    }

    /// No files: nothing to merge.
    pub fn empty() -> Self {
        Self {
            files: Vec::new(),
            patches: HashMap::new(),
            merge_seconds: std::cell::Cell::new(0.0),
        }
    }

    /// Seconds spent merging so far (each merge waits for the GPU).
    pub fn merge_seconds(&self) -> f64 {
        self.merge_seconds.get()
    }

    pub fn is_empty(&self) -> bool {
        self.patches.is_empty()
    }

    /// Whether some LoRA changes the tensor `name` (canonical).
    pub fn patches(&self, name: &str) -> bool {
        self.patches.contains_key(name)
    }

    /// The number of DiT tensors the set changes.
    pub fn patched_tensors(&self) -> usize {
        self.patches.len()
    }

    /// Merges every patch of the tensor `name` (canonical) into `tensor`, which holds it on the
    /// GPU. Tensors no LoRA touches are left as they are.
    pub fn apply(&self, gpu: &Gpu, name: &str, tensor: &Tensor) -> Result<()> {
        let Some(patches) = self.patches.get(name) else {
            return Ok(());
        };
        let started = std::time::Instant::now();
        for (file, change) in patches {
            let file = &self.files[*file];
            let read = |key: &str| -> Result<Vec<f32>> { Ok(file.weights.get(key)?.to_f32()?) };
            let result = match change {
                Change::LowRank { scale, .. }
                | Change::Delta {
                    strength: scale, ..
                } if *scale == 0.0 => Ok(()),
                Change::LowRank {
                    down,
                    up,
                    rank,
                    scale,
                } => merge::add_low_rank(gpu, tensor, &read(up)?, &read(down)?, *rank, *scale),
                Change::Delta { key, strength } => {
                    merge::add_delta(gpu, tensor, &read(key)?, *strength)
                }
            };
            result.map_err(|e| lora_err(&file.spec.path, format!("merging into '{name}': {e}")))?;
        }
        self.merge_seconds
            .set(self.merge_seconds.get() + started.elapsed().as_secs_f64());
        Ok(())
    }
}

/// The parts one file holds for one module, by key.
#[derive(Default)]
struct ModuleParts {
    keys: BTreeMap<Part, String>,
}

/// Every patch of one file as (target tensor, change), checked against the DiT's shapes.
fn resolve_file(
    weights: &WeightSet,
    index: &ModuleIndex,
    spec: &LoraSpec,
) -> Result<Vec<(String, Change)>> {
    let path = spec.path.as_path();
    let mut modules: BTreeMap<String, ModuleParts> = BTreeMap::new();
    // Unmatched keys, counted by the module path they name (block numbers folded).
    let mut unmatched: BTreeMap<String, usize> = BTreeMap::new();
    let mut total = 0;
    for key in weights.names() {
        total += 1;
        let resolved = split_key(key).and_then(|(module, part)| {
            index
                .resolve(module)
                .map(|canonical| (canonical.to_string(), part))
        });
        let Some((canonical, part)) = resolved else {
            *unmatched.entry(fold_block_number(key)).or_default() += 1;
            continue;
        };
        let parts = modules.entry(canonical.clone()).or_default();
        if let Some(first) = parts.keys.insert(part, key.to_string()) {
            return Err(lora_err(
                path,
                format!(
                    "'{first}' and '{key}' are both the {} of '{canonical}'",
                    part.describe()
                ),
            ));
        }
    }
    if modules.is_empty() {
        let examples: Vec<&str> = weights.names().take(3).collect();
        return Err(lora_err(
            path,
            format!(
                "none of its {total} tensors patches a weight of this DiT (first keys: {})",
                examples.join(", ")
            ),
        ));
    }
    if !unmatched.is_empty() {
        let count: usize = unmatched.values().sum();
        let listing: Vec<String> = unmatched
            .iter()
            .map(|(name, n)| format!("{name} ({n})"))
            .collect();
        log::warn!(
            "LoRA {}: {count} of {total} tensors match no weight of this DiT and are ignored: {}",
            path.display(),
            listing.join(", ")
        );
    }
    let mut changes = Vec::new();
    for (module, parts) in &modules {
        changes.extend(module_changes(weights, index, spec, module, parts)?);
    }
    Ok(changes)
}

/// The changes one module's parts make, their shapes checked.
fn module_changes(
    weights: &WeightSet,
    index: &ModuleIndex,
    spec: &LoraSpec,
    module: &str,
    parts: &ModuleParts,
) -> Result<Vec<(String, Change)>> {
    let path = spec.path.as_path();
    let shape_of = |key: &str| -> Vec<usize> {
        weights
            .info(key)
            .map(|i| i.shape().to_vec())
            .unwrap_or_default()
    };
    let target = |part: Part| {
        index.target(module, part).ok_or_else(|| {
            lora_err(
                path,
                format!(
                    "'{}' patches '{module}', which has no {}",
                    parts.keys[&part],
                    if part == Part::DiffBias {
                        "bias"
                    } else {
                        "weight"
                    }
                ),
            )
        })
    };
    let mut changes = Vec::new();
    let (down, up) = (parts.keys.get(&Part::Down), parts.keys.get(&Part::Up));
    match (down, up) {
        (Some(down), Some(up)) => {
            let (name, shape) = target(Part::Down)?;
            let out = shape[0];
            let inp: usize = shape[1..].iter().product();
            let (down_shape, up_shape) = (shape_of(down), shape_of(up));
            let rank = down_shape.first().copied().unwrap_or(0);
            let fits = rank > 0
                && down_shape.iter().product::<usize>() == rank * inp
                && up_shape.len() >= 2
                && up_shape[0] == out
                && up_shape[1] == rank
                && up_shape.iter().product::<usize>() == out * rank;
            if !fits {
                return Err(lora_err(
                    path,
                    format!(
                        "'{down}' {down_shape:?} and '{up}' {up_shape:?} do not make a delta of \
                         '{name}' {shape:?} (down must be [rank, {inp}], up [{out}, rank])"
                    ),
                ));
            }
            let alpha = match parts.keys.get(&Part::Alpha) {
                Some(key) => read_scalar(weights, key, path)?,
                None => rank as f32,
            };
            changes.push((
                name.to_string(),
                Change::LowRank {
                    down: down.clone(),
                    up: up.clone(),
                    rank,
                    scale: spec.strength * alpha / rank as f32,
                },
            ));
        }
        (Some(half), None) | (None, Some(half)) => {
            let missing = if down.is_some() {
                "lora_up"
            } else {
                "lora_down"
            };
            return Err(lora_err(
                path,
                format!("'{half}' has no {missing} partner for '{module}'"),
            ));
        }
        (None, None) => {
            if let Some(alpha) = parts.keys.get(&Part::Alpha) {
                log::warn!(
                    "LoRA {}: '{alpha}' has no lora_down/lora_up pair and is ignored",
                    path.display()
                );
            }
        }
    }
    for part in [Part::Diff, Part::DiffBias] {
        let Some(key) = parts.keys.get(&part) else {
            continue;
        };
        let (name, shape) = target(part)?;
        let found = shape_of(key);
        if found.iter().product::<usize>() != shape.iter().product::<usize>() {
            return Err(lora_err(
                path,
                format!("'{key}' has shape {found:?}; its target '{name}' is {shape:?}"),
            ));
        }
        changes.push((
            name.to_string(),
            Change::Delta {
                key: key.clone(),
                strength: spec.strength,
            },
        ));
    }
    Ok(changes)
}

/// A one-element tensor (alpha) as a number: float, or an integer as some trainers store it.
fn read_scalar(weights: &WeightSet, key: &str, path: &Path) -> Result<f32> {
    let view = weights.get(key)?;
    if view.numel() != 1 {
        return Err(lora_err(
            path,
            format!(
                "'{key}' must hold one number, it has shape {:?}",
                view.shape()
            ),
        ));
    }
    let b = view.bytes();
    let value = match view.dtype() {
        StoredDType::I64 => i64::from_le_bytes(b[..8].try_into().unwrap()) as f32,
        StoredDType::U64 => u64::from_le_bytes(b[..8].try_into().unwrap()) as f32,
        StoredDType::I32 => i32::from_le_bytes(b[..4].try_into().unwrap()) as f32,
        StoredDType::U32 => u32::from_le_bytes(b[..4].try_into().unwrap()) as f32,
        StoredDType::I16 => i16::from_le_bytes(b[..2].try_into().unwrap()) as f32,
        StoredDType::U16 => u16::from_le_bytes(b[..2].try_into().unwrap()) as f32,
        StoredDType::I8 => b[0] as i8 as f32,
        StoredDType::U8 => b[0] as f32,
        _ => view.to_f32()?[0],
    };
    if !value.is_finite() {
        return Err(lora_err(path, format!("'{key}' is {value}")));
    }
    Ok(value)
}

/// `blocks.12.self_attn.q.lora_down.weight` -> `blocks.N.self_attn.q`: unmatched keys grouped.
fn fold_block_number(key: &str) -> String {
    let module = split_key(key).map(|(m, _)| m).unwrap_or(key);
    module
        .split(['.', '_'])
        .map(|s| {
            if s.chars().all(|c| c.is_ascii_digit()) && !s.is_empty() {
                "N"
            } else {
                s
            }
        })
        .collect::<Vec<_>>()
        .join(".")
}

fn lora_err(path: &Path, message: impl Into<String>) -> ModelError {
    ModelError::Lora {
        path: path.display().to_string(),
        message: message.into(),
    }
}
