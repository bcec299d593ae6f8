//! One safetensors, GGUF or PyTorch file, memory-mapped, its header validated before any tensor is
//! touched; or tensors held in memory or drawn at random, read the same way.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::dtype::StoredDType;
use super::error::{Result, WeightError};
use super::gguf::{parse_gguf, GgufValue, MAGIC};
use super::header::{parse_header, TensorInfo};
use super::random::{InitRule, RandomValues};
use super::view::TensorView;
use crate::pth::PthFile;

/// The container format of a weight file, told by its first bytes (or its extension).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileFormat {
    Safetensors,
    Gguf,
    /// A PyTorch checkpoint (`torch.save`'s zip format), read through `crate::pth`.
    Pth,
    /// f32 tensors held in memory ([`WeightFile::from_f32`]).
    Memory,
    /// Seeded random f32 tensors, drawn as they are read ([`WeightFile::random`]).
    Random,
}

/// The first bytes of a zip archive, which torch.save writes.
const ZIP_MAGIC: &[u8; 4] = b"PK\x03\x04";

/// Where a file's tensor bytes come from.
enum Backing {
    /// safetensors and GGUF: every tensor is a range of the mapping.
    Mapped(Mmap),
    /// Tensors held in memory ([`WeightFile::from_f32`]), each a range of one buffer.
    Owned(Vec<u8>),
    /// Random weights ([`WeightFile::random`]): each tensor's bytes are drawn at each read and
    /// owned by its view.
    Random(RandomValues),
    /// A PyTorch checkpoint: tensors are views into its storages. A view whose elements are not
    /// adjacent (a transposed tensor) is gathered at each read into bytes its view owns, and
    /// dropped with it: nothing of the checkpoint stays in host memory after its upload.
    Pth(PthFile),
}

/// A memory-mapped safetensors, GGUF or PyTorch file.
pub struct WeightFile {
    path: PathBuf,
    backing: Backing,
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
        let extension = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        let named_gguf = extension == "gguf";
        let mut magic = [0u8; 4];
        let read_magic = std::io::Read::read_exact(&mut &file, &mut magic).is_ok();
        if (read_magic && &magic == ZIP_MAGIC) || matches!(extension, "pth" | "pt") {
            return Ok(Self::from_pth(PthFile::open(&path)?));
        }
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
        Ok(Self::new(
            path,
            Backing::Mapped(map),
            format,
            header.tensors,
            header.metadata,
            gguf_values,
        ))
    }

    /// A PyTorch checkpoint seen as a weight file: the same tensors, read through its views.
    pub fn from_pth(file: PthFile) -> Self {
        let tensors: Vec<TensorInfo> = file
            .names()
            .filter_map(|name| file.info(name))
            .map(|t| {
                TensorInfo::new(
                    t.name().to_string(),
                    t.dtype().stored(),
                    t.shape().to_vec(),
                    t.byte_range(),
                )
            })
            .collect();
        Self::new(
            file.path().to_path_buf(),
            Backing::Pth(file),
            FileFormat::Pth,
            tensors,
            BTreeMap::new(),
            BTreeMap::new(),
        )
    }

    /// f32 tensors held in memory (renamed or computed tensors, tests), seen as a file called
    /// `origin`; an error naming a tensor whose values do not fill its shape.
    pub fn from_f32(
        origin: impl Into<PathBuf>,
        tensors: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
    ) -> Result<Self> {
        let path = origin.into();
        let mut buffer = Vec::new();
        let mut infos = Vec::with_capacity(tensors.len());
        for (name, (shape, values)) in tensors {
            let numel = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
            if numel != Some(values.len()) {
                return Err(WeightError::BadTensor {
                    path,
                    tensor: name,
                    reason: format!("{} values do not fill the shape {shape:?}", values.len()),
                });
            }
            let start = buffer.len();
            buffer.extend(values.iter().flat_map(|v| v.to_le_bytes()));
            infos.push(TensorInfo::new(
                name,
                StoredDType::F32,
                shape,
                start..buffer.len(),
            ));
        }
        Ok(Self::new(
            path,
            Backing::Owned(buffer),
            FileFormat::Memory,
            infos,
            BTreeMap::new(),
            BTreeMap::new(),
        ))
    }

    /// Seeded random f32 tensors of these names and shapes, seen as a file called `origin`.
    /// Nothing but the names is held: a tensor's values are drawn from (`seed`, its name), in
    /// the distribution `rule` gives it, each time it is read (see [`super::random`]).
    pub fn random(
        origin: impl Into<PathBuf>,
        seed: u64,
        shapes: impl IntoIterator<Item = (String, Vec<usize>)>,
        rule: InitRule,
    ) -> Self {
        let mut infos: Vec<TensorInfo> = shapes
            .into_iter()
            .map(|(name, shape)| {
                // The range only sizes the tensor: there is no buffer to index.
                let len = shape.iter().product::<usize>() * 4;
                TensorInfo::new(name, StoredDType::F32, shape, 0..len)
            })
            .collect();
        infos.sort_by(|a, b| a.name().cmp(b.name()));
        Self::new(
            origin.into(),
            Backing::Random(RandomValues::new(seed, rule)),
            FileFormat::Random,
            infos,
            BTreeMap::new(),
            BTreeMap::new(),
        )
    }

    fn new(
        path: PathBuf,
        backing: Backing,
        format: FileFormat,
        tensors: Vec<TensorInfo>,
        metadata: BTreeMap<String, String>,
        gguf_values: BTreeMap<String, GgufValue>,
    ) -> Self {
        let position = tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name().to_string(), i))
            .collect();
        Self {
            path,
            backing,
            format,
            gguf_values,
            tensors,
            position,
            metadata,
        }
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

    /// The header's `__metadata__` strings; for GGUF, the metadata as text; none for `.pth`.
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// The tensor called `name`.
    pub fn get(&self, name: &str) -> Result<TensorView<'_>> {
        let missing = || WeightError::Missing {
            path: self.path.clone(),
            tensor: name.to_string(),
            hint: String::new(),
        };
        let &at = self.position.get(name).ok_or_else(missing)?;
        let info = &self.tensors[at];
        let bytes = match &self.backing {
            // The header parser bounded every range by the file size; `get` keeps that a
            // checked fact rather than an assumption.
            Backing::Mapped(map) => Cow::Borrowed(Self::slice(map, info, &self.path)?),
            Backing::Owned(buffer) => Cow::Borrowed(Self::slice(buffer, info, &self.path)?),
            Backing::Random(values) => Cow::Owned(values.bytes(name, info.shape())),
            Backing::Pth(file) => file.get(name)?.bytes(),
        };
        Ok(TensorView::new(info, bytes, &self.path))
    }

    fn slice<'a>(all: &'a [u8], info: &TensorInfo, path: &Path) -> Result<&'a [u8]> {
        all.get(info.byte_range())
            .ok_or_else(|| WeightError::BadTensor {
                path: path.to_path_buf(),
                tensor: info.name().to_string(),
                reason: "its bytes lie outside the file".into(),
            })
    }
}
