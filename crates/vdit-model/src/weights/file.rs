//! One safetensors or GGUF file, memory-mapped, its header validated before any tensor is touched.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::error::{Result, WeightError};
use super::gguf::{parse_gguf, GgufValue, MAGIC};
use super::header::{parse_header, TensorInfo};
use super::view::TensorView;

/// The container format of a weight file, told by its first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileFormat {
    Safetensors,
    Gguf,
}

/// A memory-mapped safetensors or GGUF file.
pub struct WeightFile {
    path: PathBuf,
    map: Mmap,
    format: FileFormat,
    /// GGUF's typed metadata (empty for safetensors).
    gguf_values: BTreeMap<String, GgufValue>,
    /// Sorted by name.
    tensors: Vec<TensorInfo>,
    position: HashMap<String, usize>,
    metadata: BTreeMap<String, String>,
}

impl std::fmt::Debug for WeightFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "WeightFile({}, {} tensors)",
            self.path.display(),
            self.tensors.len()
        )
    }
}

impl WeightFile {
    /// Maps the file and validates its header; fails with the path on any inconsistency.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let io = |action, source| WeightError::Io {
            path: path.clone(),
            action,
            source,
        };
        let file = File::open(&path).map_err(|e| io("cannot open", e))?;
        let len = file.metadata().map_err(|e| io("cannot stat", e))?.len();
        let named_gguf = path.extension().is_some_and(|e| e == "gguf");
        if named_gguf && len < 4 {
            return Err(WeightError::Gguf {
                path,
                reason: format!("the file has {len} bytes, fewer than the 4-byte magic 'GGUF'"),
            });
        }
        if len < 8 {
            // Checked before mapping: some platforms refuse to map an empty file.
            return Err(WeightError::Malformed {
                path,
                reason: format!("the file has {len} bytes, fewer than the 8-byte header length"),
            });
        }
        // SAFETY: the mapping is read-only. Like every memory-mapped loader, this assumes no
        // other process truncates or rewrites the file while it is open.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| io("cannot memory-map", e))?;
        let (format, header, gguf_values) = if map.starts_with(MAGIC) || named_gguf {
            let g = parse_gguf(&map, &path)?;
            (FileFormat::Gguf, g.header, g.values)
        } else {
            (
                FileFormat::Safetensors,
                parse_header(&map, &path)?,
                BTreeMap::new(),
            )
        };
        let position = header
            .tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name().to_string(), i))
            .collect();
        Ok(Self {
            path,
            map,
            format,
            gguf_values,
            tensors: header.tensors,
            position,
            metadata: header.metadata,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every tensor's header entry, sorted by name.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// Tensor names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.iter().map(TensorInfo::name)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.position.contains_key(name)
    }

    pub fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.position.get(name).map(|&i| &self.tensors[i])
    }

    pub fn format(&self) -> FileFormat {
        self.format
    }

    /// A GGUF metadata value (`general.architecture`, `tokenizer.ggml.tokens`...); None for
    /// safetensors files and absent keys.
    pub fn gguf_value(&self, key: &str) -> Option<&GgufValue> {
        self.gguf_values.get(key)
    }

    /// The header's `__metadata__` strings; for GGUF, the metadata as text.
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// The tensor called `name`.
    pub fn get(&self, name: &str) -> Result<TensorView<'_>> {
        let info = self.info(name).ok_or_else(|| WeightError::Missing {
            path: self.path.clone(),
            tensor: name.to_string(),
            hint: String::new(),
        })?;
        // The header parser bounded every range by the file size; `get` keeps that a checked
        // fact rather than an assumption.
        let bytes = self
            .map
            .get(info.byte_range())
            .ok_or_else(|| WeightError::BadTensor {
                path: self.path.clone(),
                tensor: name.to_string(),
                reason: "its bytes lie outside the file".into(),
            })?;
        Ok(TensorView::new(info, bytes, &self.path))
    }
}
