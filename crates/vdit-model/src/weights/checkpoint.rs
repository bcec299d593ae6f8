//! A Wan DiT checkpoint seen through canonical (diffusers) names, whatever layout its files use.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use vdit_wgpu::{DType, Gpu, Tensor};

use super::config::{parse_value, DitConfig, ParsedConfig};
use super::error::{Result, WeightError};
use super::header::TensorInfo;
use super::infer::ShapeFacts;
use super::layout::KeyLayout;
use super::set::WeightSet;
use super::view::TensorView;

/// The folder diffusers keeps a pipeline's DiT in.
const DIFFUSERS_TRANSFORMER_FOLDER: &str = "transformer";

/// The `general.architecture` of GGUF files holding a Wan DiT (ComfyUI-GGUF writes it; files
/// of stable-diffusion.cpp may leave it out).
const GGUF_ARCHITECTURE: &str = "wan";

/// Refuses a GGUF file that says it holds another model (a text encoder, a language model).
fn check_gguf_architecture(set: &WeightSet) -> Result<()> {
    for file in set.files() {
        let arch = file
            .gguf_value("general.architecture")
            .map(|v| v.as_str().unwrap_or("(not a string)"));
        if let Some(arch) = arch.filter(|a| *a != GGUF_ARCHITECTURE) {
            return Err(WeightError::Layout {
                path: file.path().to_path_buf(),
                reason: format!(
                    "the GGUF file holds a '{arch}' model, not a Wan DiT ('{GGUF_ARCHITECTURE}')"
                ),
            });
        }
    }
    Ok(())
}

/// A weight set whose DiT tensors are looked up by canonical name.
#[derive(Debug)]
pub struct Checkpoint {
    set: WeightSet,
    layout: KeyLayout,
    /// Canonical name -> stored name, for every stored name inside the layout's prefix.
    stored_by_canonical: BTreeMap<String, String>,
}

impl Checkpoint {
    /// Opens a file, an index, a model folder, or a diffusers pipeline folder (its `transformer/`).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let transformer = path.join(DIFFUSERS_TRANSFORMER_FOLDER);
        let chosen = if path.is_dir() && transformer.is_dir() {
            transformer.as_path()
        } else {
            path
        };
        Self::from_set(WeightSet::open(chosen)?)
    }

    /// Detects the key layout of `set` and indexes its tensors by canonical name.
    pub fn from_set(set: WeightSet) -> Result<Self> {
        check_gguf_architecture(&set)?;
        let layout = KeyLayout::detect(set.names()).map_err(|reason| WeightError::Layout {
            path: set.source().to_path_buf(),
            reason,
        })?;
        let mut stored_by_canonical = BTreeMap::new();
        for stored in set.names() {
            let Some(canonical) = layout.canonical_name(stored) else {
                continue;
            };
            if let Some(previous) = stored_by_canonical.insert(canonical.clone(), stored.into()) {
                return Err(WeightError::Layout {
                    path: set.source().to_path_buf(),
                    reason: format!(
                        "'{previous}' and '{stored}' both stand for '{canonical}' ({layout})"
                    ),
                });
            }
        }
        Ok(Self {
            set,
            layout,
            stored_by_canonical,
        })
    }

    pub fn layout(&self) -> &KeyLayout {
        &self.layout
    }

    /// The underlying files, for access by stored name.
    pub fn weights(&self) -> &WeightSet {
        &self.set
    }

    /// The file or index the weights came from.
    pub fn source(&self) -> &Path {
        self.set.source()
    }

    /// Canonical names of every DiT tensor present, sorted.
    pub fn canonical_names(&self) -> impl Iterator<Item = &str> {
        self.stored_by_canonical.keys().map(String::as_str)
    }

    pub fn contains(&self, canonical: &str) -> bool {
        self.stored_by_canonical.contains_key(canonical)
    }

    /// The name a canonical name is stored under, when present.
    pub fn stored_name(&self, canonical: &str) -> Option<&str> {
        self.stored_by_canonical.get(canonical).map(String::as_str)
    }

    /// Dtype and shape of a tensor, without touching its data.
    pub fn info(&self, canonical: &str) -> Option<&TensorInfo> {
        self.set.info(self.stored_name(canonical)?)
    }

    /// The tensor with this canonical name; a missing one is reported with the name it was
    /// looked for under in this layout.
    pub fn get(&self, canonical: &str) -> Result<TensorView<'_>> {
        match self.stored_name(canonical) {
            Some(stored) => self.set.get(stored),
            None => {
                let stored = self.layout.stored_name(canonical);
                let hint = if stored == canonical {
                    String::new()
                } else {
                    format!(" (looked for '{stored}': {})", self.layout)
                };
                Err(WeightError::Missing {
                    path: self.source().to_path_buf(),
                    tensor: canonical.to_string(),
                    hint,
                })
            }
        }
    }

    pub fn read_f32(&self, canonical: &str) -> Result<Vec<f32>> {
        self.get(canonical)?.to_f32()
    }

    pub fn read_storage(&self, canonical: &str, storage: DType) -> Result<Cow<'_, [u8]>> {
        self.get(canonical)?.to_storage(storage)
    }

    /// Uploads in `storage` after checking the shape is `expected_shape`.
    pub fn upload(
        &self,
        gpu: &Gpu,
        canonical: &str,
        expected_shape: &[usize],
        storage: DType,
    ) -> Result<Tensor> {
        self.get(canonical)?.upload(gpu, expected_shape, storage)
    }

    /// Stored names, sorted, of the tensors no name in `used` (canonical names) stands for;
    /// this includes tensors outside the layout's prefix.
    pub fn unused_names(&self, used: &HashSet<String>) -> Vec<String> {
        self.set
            .names()
            .filter(|stored| {
                self.layout
                    .canonical_name(stored)
                    .is_none_or(|canonical| !used.contains(&canonical))
            })
            .map(str::to_string)
            .collect()
    }

    /// Fails, listing them, when some tensors are not in `used` (see [`Self::unused_names`]).
    pub fn check_all_used(&self, used: &HashSet<String>) -> Result<()> {
        let names = self.unused_names(used);
        if names.is_empty() {
            Ok(())
        } else {
            Err(WeightError::Unexpected {
                path: self.source().to_path_buf(),
                names,
            })
        }
    }

    /// The model config: the `config.json` beside the weights when it is a Wan DiT config
    /// (diffusers or original format), with the sizes it leaves out read off the tensor shapes;
    /// otherwise inferred from the shapes entirely ([`DitConfig::infer`]). Either way checked
    /// against the tensors with [`Self::verify`].
    pub fn config(&self) -> Result<DitConfig> {
        let path = self.set.folder().join("config.json");
        let parsed = if path.is_file() {
            let text = std::fs::read_to_string(&path).map_err(|source| WeightError::Io {
                path: path.clone(),
                action: "cannot read",
                source,
            })?;
            let value = serde_json::from_str(&text).map_err(|e| WeightError::Config {
                path: path.clone(),
                reason: format!("not valid JSON: {e}"),
            })?;
            let parsed = parse_value(value).map_err(|reason| WeightError::Config {
                path: path.clone(),
                reason,
            })?;
            if parsed.is_none() {
                log::warn!(
                    "{} is not a Wan DiT config; inferring the config from the tensor shapes",
                    path.display()
                );
            }
            parsed
        } else {
            None
        };
        let config = match parsed {
            Some(ParsedConfig {
                mut config,
                unstated,
            }) => {
                ShapeFacts::read(self)?.fill(&mut config, &unstated);
                config.validate().map_err(|reason| WeightError::Config {
                    path: path.clone(),
                    reason,
                })?;
                config
            }
            None => DitConfig::infer(self)?,
        };
        self.verify(&config)?;
        Ok(config)
    }

    /// Checks that the DiT tensors are exactly those `config` describes, with its shapes and a
    /// readable dtype; lists every missing, misshapen, unreadable or unexpected tensor at once.
    /// Tensors outside the layout's prefix (other models in the same file) are left alone.
    pub fn verify(&self, config: &DitConfig) -> Result<()> {
        let wanted = config.tensor_shapes();
        // Misshapen and unreadable tensors first: they say most about what is wrong.
        let (mut misfits, mut missing, mut unexpected) = (Vec::new(), Vec::new(), Vec::new());
        for (canonical, shape) in &wanted {
            let Some(info) = self.info(canonical) else {
                let stored = self.layout.stored_name(canonical);
                missing.push(format!("missing tensor '{stored}'"));
                continue;
            };
            if info.shape() != shape.as_slice() {
                misfits.push(format!(
                    "tensor '{}' has shape {:?}, expected {shape:?}",
                    info.name(),
                    info.shape()
                ));
            }
            if !info.dtype().is_readable_float() {
                misfits.push(format!(
                    "tensor '{}' is stored as {}, which cannot be read",
                    info.name(),
                    info.dtype()
                ));
            }
        }
        let wanted_names: HashSet<&str> = wanted.iter().map(|(n, _)| n.as_str()).collect();
        for (canonical, stored) in &self.stored_by_canonical {
            if !wanted_names.contains(canonical.as_str()) {
                unexpected.push(format!("unexpected tensor '{stored}'"));
            }
        }
        let mut problems = misfits;
        problems.append(&mut missing);
        problems.append(&mut unexpected);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(WeightError::Mismatch {
                path: self.source().to_path_buf(),
                problems,
            })
        }
    }
}
