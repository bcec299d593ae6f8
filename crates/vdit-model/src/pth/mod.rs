//! PyTorch checkpoints (`torch.save` of a state dict, the zip format of torch >= 1.6) read
//! without Python and without running anything from the file.
//!
//! A checkpoint is a zip archive (entries stored uncompressed) holding `<name>/data.pkl`, a
//! pickle describing the state dict, and one `<name>/data/<key>` entry per storage. The pickle
//! goes through a restricted unpickler ([`pickle`]) that understands only what a tensor state
//! dict needs and refuses everything else by name (`os.system`, `builtins.eval`, any other
//! global, any call of a non-allowed callable, any opcode that builds arbitrary objects).
//! Storages are memory-mapped; each tensor is a view (dtype, shape, strides, storage offset)
//! into one, checked to lie inside it. Non-contiguous views are gathered on read.

pub mod pickle;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use thiserror::Error;
use vdit_wgpu::{DType, Gpu, GpuError, Tensor};

pub use pickle::{PickleError, StorageDType};

use crate::error::ModelError;

/// Why a checkpoint could not be read. Every variant names the file.
#[derive(Debug, Error)]
pub enum PthError {
    #[error("{}: {action}: {source}", .path.display())]
    Io {
        path: PathBuf,
        action: &'static str,
        source: std::io::Error,
    },
    /// Not a zip archive of the expected shape (truncated, legacy format, missing entries).
    #[error("{}: not a readable PyTorch zip checkpoint: {reason}", .path.display())]
    Archive { path: PathBuf, reason: String },
    /// The pickle was refused or is malformed; nothing of it was executed.
    #[error("{}: data.pkl: {source}", .path.display())]
    Pickle { path: PathBuf, source: PickleError },
    #[error("{}: tensor '{tensor}': {reason}", .path.display())]
    BadTensor {
        path: PathBuf,
        tensor: String,
        reason: String,
    },
    #[error("{}: no tensor '{tensor}'", .path.display())]
    Missing { path: PathBuf, tensor: String },
    #[error("{}: tensor '{tensor}' has shape {found:?}, expected {expected:?}", .path.display())]
    Shape {
        path: PathBuf,
        tensor: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error("{}: uploading tensor '{tensor}': {source}", .path.display())]
    Gpu {
        path: PathBuf,
        tensor: String,
        source: GpuError,
    },
}

impl From<PthError> for ModelError {
    fn from(e: PthError) -> Self {
        match e {
            // Running out of GPU memory is not a fault of the file: it keeps its own variant.
            PthError::Gpu {
                source: source @ GpuError::OutOfMemory { .. },
                ..
            } => ModelError::Gpu(source),
            e => ModelError::Input {
                what: "PyTorch checkpoint".into(),
                message: e.to_string(),
            },
        }
    }
}

pub type Result<T, E = PthError> = std::result::Result<T, E>;

/// One tensor of a checkpoint: a strided view into a storage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PthTensor {
    name: String,
    dtype: StorageDType,
    shape: Vec<usize>,
    /// In elements.
    stride: Vec<usize>,
    /// In elements, from the start of the storage.
    offset: usize,
    /// The storage's bytes in the file.
    storage: Range<usize>,
    /// The storage entry's name in the archive.
    storage_entry: String,
}

impl PthTensor {
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn dtype(&self) -> StorageDType {
        self.dtype
    }
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    pub fn stride(&self) -> &[usize] {
        &self.stride
    }
    /// Offset of the first element in its storage, in elements.
    pub fn storage_offset(&self) -> usize {
        self.offset
    }
    /// The archive entry holding the storage (`<name>/data/<key>`).
    pub fn storage_entry(&self) -> &str {
        &self.storage_entry
    }
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    /// The bytes of the elements in the file when they lie row-major and adjacent (else the
    /// start of the storage and the length the elements take once gathered).
    pub(crate) fn byte_range(&self) -> Range<usize> {
        let es = self.dtype.size();
        let start = match self.is_contiguous() {
            true => self.storage.start + self.offset * es,
            false => self.storage.start,
        };
        start..start + self.numel() * es
    }

    /// Whether the elements lie row-major and adjacent in the storage.
    pub fn is_contiguous(&self) -> bool {
        let mut expected = 1usize;
        for (&n, &s) in self.shape.iter().zip(&self.stride).rev() {
            if n != 1 && s != expected {
                return false;
            }
            expected = expected.saturating_mul(n);
        }
        true
    }
}

/// A memory-mapped PyTorch checkpoint and its tensors by name.
pub struct PthFile {
    path: PathBuf,
    map: Mmap,
    tensors: BTreeMap<String, PthTensor>,
}

impl std::fmt::Debug for PthFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "PthFile({}, {} tensors)",
            self.path.display(),
            self.tensors.len()
        )
    }
}

/// A zip entry stored uncompressed: where its bytes are in the file.
struct Entry {
    range: Range<usize>,
    stored: bool,
}

impl PthFile {
    /// Maps the file, reads the archive's directory and the pickle, and checks every tensor's
    /// view against its storage. No tensor data is read.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = std::fs::File::open(&path).map_err(|source| PthError::Io {
            path: path.clone(),
            action: "cannot open",
            source,
        })?;
        // SAFETY: the mapping is read-only; a checkpoint modified while mapped is the caller's
        // problem, as for every memory-mapped weight file.
        let map = unsafe { Mmap::map(&file) }.map_err(|source| PthError::Io {
            path: path.clone(),
            action: "cannot map",
            source,
        })?;
        let archive_err = |reason: String| PthError::Archive {
            path: path.clone(),
            reason,
        };
        if map.len() >= 2 && map[0] == 0x80 && !map.starts_with(b"PK") {
            return Err(archive_err(
                "this is the legacy (pre-zip) torch.save format, which is not supported; \
                 re-save it with torch >= 1.6"
                    .into(),
            ));
        }
        let entries = read_directory(&map).map_err(archive_err)?;
        let pkl_names: Vec<&String> = entries
            .keys()
            .filter(|n| {
                n.as_str() == "data.pkl"
                    || (n.ends_with("/data.pkl") && n.matches('/').count() == 1)
            })
            .collect();
        let pkl_name = match pkl_names.as_slice() {
            [one] => (*one).clone(),
            [] => return Err(archive_err("no data.pkl entry".into())),
            many => {
                return Err(archive_err(format!(
                    "several data.pkl entries: {}",
                    many.iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )))
            }
        };
        let prefix = pkl_name.strip_suffix("data.pkl").unwrap_or("").to_string();
        let entry_bytes = |name: &str| -> Result<&[u8]> {
            let e = entries
                .get(name)
                .ok_or_else(|| archive_err(format!("no entry '{name}'")))?;
            if !e.stored {
                return Err(archive_err(format!(
                    "entry '{name}' is compressed; torch.save stores entries uncompressed"
                )));
            }
            Ok(&map[e.range.clone()])
        };
        if entries.contains_key(&format!("{prefix}byteorder")) {
            let order = entry_bytes(&format!("{prefix}byteorder"))?;
            if order != b"little" {
                return Err(archive_err(format!(
                    "byte order '{}' (only little-endian checkpoints are read)",
                    String::from_utf8_lossy(order)
                )));
            }
        }
        let root =
            pickle::unpickle(entry_bytes(&pkl_name)?).map_err(|source| PthError::Pickle {
                path: path.clone(),
                source,
            })?;
        let refs = pickle::collect_tensors(root).map_err(|reason| PthError::Pickle {
            path: path.clone(),
            source: PickleError::Malformed { offset: 0, reason },
        })?;
        let mut tensors = BTreeMap::new();
        for (name, t) in refs {
            let bad = |reason: String| PthError::BadTensor {
                path: path.clone(),
                tensor: name.clone(),
                reason,
            };
            let storage_entry = format!("{prefix}data/{}", t.storage.key);
            let e = entries.get(&storage_entry).ok_or_else(|| {
                bad(format!(
                    "its storage '{storage_entry}' is not in the archive"
                ))
            })?;
            if !e.stored {
                return Err(bad(format!("its storage '{storage_entry}' is compressed")));
            }
            let es = t.storage.dtype.size() as u64;
            let needed = t.storage.numel.checked_mul(es);
            if needed.is_none_or(|n| n > e.range.len() as u64) {
                return Err(bad(format!(
                    "its storage of {} {} elements needs more than the {} bytes of '{storage_entry}'",
                    t.storage.numel,
                    t.storage.dtype.name(),
                    e.range.len()
                )));
            }
            let to_usize = |v: &[u64]| -> Option<Vec<usize>> {
                v.iter().map(|&x| usize::try_from(x).ok()).collect()
            };
            let (Some(shape), Some(stride), Ok(offset)) = (
                to_usize(&t.shape),
                to_usize(&t.stride),
                usize::try_from(t.offset),
            ) else {
                return Err(bad("sizes do not fit this machine".into()));
            };
            // The last element's index, which must lie inside the storage.
            let numel = shape
                .iter()
                .try_fold(1usize, |a, &n| a.checked_mul(n))
                .ok_or_else(|| bad("element count overflows".into()))?;
            // Only overlapping strides (an expanded view) give more elements than the
            // storage holds; reading one would gather far more bytes than the file has.
            if numel as u64 > t.storage.numel {
                return Err(bad(format!(
                    "its view of {numel} elements (shape {shape:?}, stride {stride:?}) is larger \
                     than its storage of {}: overlapping strides are not weights",
                    t.storage.numel
                )));
            }
            if numel > 0 {
                let last = shape
                    .iter()
                    .zip(&stride)
                    .try_fold(offset, |a, (&n, &s)| a.checked_add((n - 1).checked_mul(s)?))
                    .ok_or_else(|| bad("view extent overflows".into()))?;
                if last as u64 >= t.storage.numel {
                    return Err(bad(format!(
                        "view (shape {shape:?}, stride {stride:?}, offset {offset}) reaches \
                         element {last} of a storage of {}",
                        t.storage.numel
                    )));
                }
            }
            let begin = e.range.start;
            let storage = begin..begin + (t.storage.numel * es) as usize;
            tensors.insert(
                name.clone(),
                PthTensor {
                    name,
                    dtype: t.storage.dtype,
                    shape,
                    stride,
                    offset,
                    storage,
                    storage_entry,
                },
            );
        }
        Ok(Self { path, map, tensors })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Tensor names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    pub fn info(&self, name: &str) -> Option<&PthTensor> {
        self.tensors.get(name)
    }

    /// The tensor called `name`.
    pub fn get(&self, name: &str) -> Result<PthView<'_>> {
        let tensor = self.tensors.get(name).ok_or_else(|| PthError::Missing {
            path: self.path.clone(),
            tensor: name.to_string(),
        })?;
        Ok(PthView { file: self, tensor })
    }
}

/// One tensor of an open checkpoint.
#[derive(Clone, Copy)]
pub struct PthView<'a> {
    file: &'a PthFile,
    tensor: &'a PthTensor,
}

impl std::fmt::Debug for PthView<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "PthView({}: {} {:?})",
            self.name(),
            self.dtype().name(),
            self.shape()
        )
    }
}

impl<'a> PthView<'a> {
    pub fn info(&self) -> &'a PthTensor {
        self.tensor
    }
    pub fn name(&self) -> &'a str {
        &self.tensor.name
    }
    pub fn shape(&self) -> &'a [usize] {
        &self.tensor.shape
    }
    pub fn dtype(&self) -> StorageDType {
        self.tensor.dtype
    }
    pub fn path(&self) -> &'a Path {
        &self.file.path
    }

    /// The elements in row-major order as stored (little-endian), borrowed from the mapping
    /// when the view is contiguous, gathered otherwise.
    pub fn bytes(&self) -> Cow<'a, [u8]> {
        let t = self.tensor;
        let es = t.dtype.size();
        let storage = &self.file.map[t.storage.clone()];
        let numel = t.numel();
        if t.is_contiguous() {
            return Cow::Borrowed(&storage[t.offset * es..(t.offset + numel) * es]);
        }
        let mut out = Vec::with_capacity(numel * es);
        let mut index = vec![0usize; t.shape.len()];
        for _ in 0..numel {
            let at = t.offset
                + index
                    .iter()
                    .zip(&t.stride)
                    .map(|(&i, &s)| i * s)
                    .sum::<usize>();
            out.extend_from_slice(&storage[at * es..(at + 1) * es]);
            for d in (0..index.len()).rev() {
                index[d] += 1;
                if index[d] < t.shape[d] {
                    break;
                }
                index[d] = 0;
            }
        }
        Cow::Owned(out)
    }

    /// Fails unless the shape is exactly `expected`.
    pub fn check_shape(&self, expected: &[usize]) -> Result<()> {
        if self.shape() == expected {
            Ok(())
        } else {
            Err(PthError::Shape {
                path: self.file.path.clone(),
                tensor: self.name().to_string(),
                expected: expected.to_vec(),
                found: self.shape().to_vec(),
            })
        }
    }

    /// The elements as f32.
    pub fn to_f32(&self) -> Vec<f32> {
        to_f32_values(&self.bytes(), self.dtype())
    }

    /// The elements as little-endian bytes of a GPU storage type (borrowed when nothing changes).
    pub fn to_storage(&self, storage: DType) -> Cow<'a, [u8]> {
        let bytes = self.bytes();
        match (storage, self.dtype()) {
            (DType::F32, StorageDType::F32) | (DType::F16, StorageDType::F16) => bytes,
            (storage, d) => Cow::Owned(
                crate::weights::to_storage_bytes(&bytes, d.stored(), storage)
                    .expect("every .pth storage is a float"),
            ),
        }
    }

    /// Checks the shape, converts to `storage` and uploads.
    pub fn upload(&self, gpu: &Gpu, expected_shape: &[usize], storage: DType) -> Result<Tensor> {
        self.check_shape(expected_shape)?;
        let bytes = self.to_storage(storage);
        Tensor::from_bytes(gpu, expected_shape, storage, &bytes).map_err(|source| PthError::Gpu {
            path: self.file.path.clone(),
            tensor: self.name().to_string(),
            source,
        })
    }
}

/// Stored little-endian elements as f32 values.
pub fn to_f32_values(bytes: &[u8], dtype: StorageDType) -> Vec<f32> {
    crate::weights::to_f32_values(bytes, dtype.stored()).expect("every .pth storage is a float")
}

/// torch.save's archives keep their central directory right before the end record (or before
/// the zip64 end record, where a zip64 locator precedes the end record). Anything else is a file
/// with bytes inserted or removed, on which the zip crate would read entry records from wherever
/// the directory seems to be, allocating for each name, extra field and comment it finds there.
fn check_directory_position(map: &[u8]) -> std::result::Result<(), String> {
    let corrupt =
        |what: &str| format!("{what}: the file is truncated, or bytes were inserted or removed");
    let tail = map.len().saturating_sub(22 + 0xFFFF);
    let eocd = map[tail..]
        .windows(4)
        .rposition(|w| w == b"PK\x05\x06")
        .map(|i| i + tail)
        .ok_or_else(|| corrupt("no zip end record"))?;
    let rec = map
        .get(eocd..eocd + 22)
        .ok_or_else(|| corrupt("the zip end record is cut off"))?;
    let le = |b: &[u8]| b.iter().rev().fold(0u64, |v, &x| v << 8 | x as u64);
    // (disk, directory's disk, entries on this disk, entries in all, size, offset)
    let classic = [
        le(&rec[4..6]),
        le(&rec[6..8]),
        le(&rec[8..10]),
        le(&rec[10..12]),
        le(&rec[12..16]),
        le(&rec[16..20]),
    ];
    let mut fields = classic;
    let mut end = eocd as u64;
    let locator = eocd
        .checked_sub(20)
        .and_then(|l| map.get(l..eocd))
        .filter(|l| l.starts_with(b"PK\x06\x07"));
    if let Some(loc) = locator {
        let at = le(&loc[8..16]);
        let z = usize::try_from(at)
            .ok()
            .and_then(|z| map.get(z..z.checked_add(56)?))
            .filter(|r| r.starts_with(b"PK\x06\x06"))
            .ok_or_else(|| corrupt("the zip64 end record is not where its locator says"))?;
        fields = [
            le(&z[16..20]),
            le(&z[20..24]),
            le(&z[24..32]),
            le(&z[32..40]),
            le(&z[40..48]),
            le(&z[48..56]),
        ];
        end = at;
        // A classic field either repeats the zip64 one or says "see zip64" (all ones); the
        // zip crate reads some fields from each record, so they must not disagree.
        let widths = [2, 2, 2, 2, 4, 4];
        let agree = classic
            .iter()
            .zip(fields)
            .zip(widths)
            .all(|((&c, z), w)| c == z || c == (1u64 << (8 * w)) - 1);
        if !agree {
            return Err(corrupt(
                "the zip end record and the zip64 end record disagree",
            ));
        }
    }
    let [disk, directory_disk, on_this_disk, entries, size, offset] = fields;
    if disk != 0 || directory_disk != 0 {
        return Err(format!(
            "the zip archive spans several files (disk {disk}); torch.save writes one file"
        ));
    }
    // Every directory record takes at least 46 bytes: a count beyond that is a corrupt count,
    // and the zip crate reserves memory for each entry it is told of.
    if on_this_disk != entries || entries.saturating_mul(46) > size {
        return Err(corrupt(&format!(
            "the zip end record counts {on_this_disk} and {entries} entries in a directory \
             of {size} bytes"
        )));
    }
    let starts_with_entry = usize::try_from(offset)
        .ok()
        .and_then(|o| map.get(o..o.checked_add(4)?))
        == Some(b"PK\x01\x02".as_slice());
    if offset.checked_add(size) != Some(end) || (entries > 0 && !starts_with_entry) {
        return Err(corrupt(&format!(
            "the zip directory ({entries} entries, {size} bytes at {offset}) does not end where \
             the end record is ({end})"
        )));
    }
    Ok(())
}

/// The archive's entries by name. Errors (a truncated or corrupt archive) are messages.
fn read_directory(map: &[u8]) -> std::result::Result<BTreeMap<String, Entry>, String> {
    check_directory_position(map)?;
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(map))
        .map_err(|e| format!("cannot read the zip directory ({e}); the file may be truncated"))?;
    let mut entries = BTreeMap::new();
    for i in 0..archive.len() {
        let f = archive
            .by_index_raw(i)
            .map_err(|e| format!("zip entry {i}: {e}"))?;
        let name = f.name().to_string();
        let start = f.data_start();
        let size = f.compressed_size();
        let stored = f.compression() == zip::CompressionMethod::Stored && size == f.size();
        let end = start
            .checked_add(size)
            .filter(|&e| e <= map.len() as u64)
            .ok_or_else(|| {
                format!(
                    "entry '{name}' runs past the end of the file ({} bytes); the file is truncated",
                    map.len()
                )
            })?;
        entries.insert(
            name,
            Entry {
                range: start as usize..end as usize,
                stored,
            },
        );
    }
    Ok(entries)
}

#[cfg(test)]
mod tests;
