//! Parsing and validating a GGUF file (versions 2 and 3, little-endian), the format of
//! llama.cpp, stable-diffusion.cpp and ComfyUI-GGUF.
//!
//! Layout: the magic `GGUF`, a u32 version, u64 counts of tensors and metadata entries, the
//! metadata (key string, u32 value type, value), then per tensor its name, u32 dimension count,
//! u64 dimensions innermost first, u32 GGML type and u64 offset into the data section, which
//! starts at the next multiple of `general.alignment` (32 by default). Every count, length and
//! offset is checked against the file size before anything is allocated for it.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use super::dtype::StoredDType;
use super::error::{Result, WeightError};
use super::header::{Header, TensorInfo};
use super::quant::QuantType;

pub(crate) const MAGIC: &[u8; 4] = b"GGUF";

/// Where ComfyUI-GGUF records the PyTorch shape of a tensor it stored reshaped (GGML tensors
/// have at most 4 dimensions; Wan's patch embedding has 5).
const ORIGINAL_SHAPE_PREFIX: &str = "comfy.gguf.orig_shape.";
const ALIGNMENT_KEY: &str = "general.alignment";
const DEFAULT_ALIGNMENT: u64 = 32;
/// More dimensions than any weight has; bounds the per-tensor allocation.
const MAX_DIMS: u64 = 8;

/// One metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum GgufValue {
    Int(i64),
    /// u64 values beyond i64.
    UInt(u64),
    Float(f64),
    Bool(bool),
    String(String),
    Array(Vec<GgufValue>),
}

impl GgufValue {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            GgufValue::Int(v) => u64::try_from(v).ok(),
            GgufValue::UInt(v) => Some(v),
            _ => None,
        }
    }

    /// The value as metadata text: strings as they are, everything else as JSON-like text.
    fn to_text(&self) -> String {
        match self {
            GgufValue::Int(v) => v.to_string(),
            GgufValue::UInt(v) => v.to_string(),
            GgufValue::Float(v) => v.to_string(),
            GgufValue::Bool(v) => v.to_string(),
            GgufValue::String(s) => s.clone(),
            // Long arrays (a tokenizer's vocabulary) are summarised, not spelled out.
            GgufValue::Array(items) if items.len() > 64 => format!("[{} items]", items.len()),
            GgufValue::Array(items) => {
                let inner: Vec<String> = items
                    .iter()
                    .map(|v| match v {
                        GgufValue::String(s) => format!("{s:?}"),
                        other => other.to_text(),
                    })
                    .collect();
                format!("[{}]", inner.join(", "))
            }
        }
    }
}

/// A parsed GGUF header: the tensors (PyTorch shapes, outermost first) and the metadata.
pub(crate) struct GgufHeader {
    pub header: Header,
    pub values: BTreeMap<String, GgufValue>,
}

/// Reads values off the front of the file, every read bounded by what is left.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn left(&self) -> usize {
        self.bytes.len() - self.at
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        if n > self.left() {
            return Err(format!(
                "{what} at byte {} needs {n} bytes, but the file ends {} bytes later \
                 (truncated or not GGUF)",
                self.at,
                self.left()
            ));
        }
        let s = &self.bytes[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }

    fn u32(&mut self, what: &str) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into().unwrap()))
    }

    fn u64(&mut self, what: &str) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8, what)?.try_into().unwrap()))
    }

    fn string(&mut self, what: &str) -> Result<String, String> {
        let len = self.u64(what)?;
        let len = usize::try_from(len)
            .ok()
            .filter(|&n| n <= self.left())
            .ok_or_else(|| format!("{what} at byte {} claims {len} bytes", self.at))?;
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| format!("{what} is not UTF-8"))
    }

    /// A value of GGUF value type `ty`; `depth` bounds arrays of arrays.
    fn value(&mut self, ty: u32, what: &str, depth: u32) -> Result<GgufValue, String> {
        let int = |b: &[u8]| b.iter().rev().fold(0u64, |v, &x| v << 8 | x as u64);
        Ok(match ty {
            0 => GgufValue::Int(self.take(1, what)?[0] as i64),
            1 => GgufValue::Int(self.take(1, what)?[0] as i8 as i64),
            2 => GgufValue::Int(int(self.take(2, what)?) as i64),
            3 => GgufValue::Int(int(self.take(2, what)?) as u16 as i16 as i64),
            4 => GgufValue::Int(self.u32(what)? as i64),
            5 => GgufValue::Int(self.u32(what)? as i32 as i64),
            6 => GgufValue::Float(f32::from_bits(self.u32(what)?) as f64),
            7 => match self.take(1, what)?[0] {
                0 => GgufValue::Bool(false),
                1 => GgufValue::Bool(true),
                b => return Err(format!("{what} is a bool of value {b}")),
            },
            8 => GgufValue::String(self.string(what)?),
            9 => {
                if depth > 2 {
                    return Err(format!("{what} nests arrays more than 2 deep"));
                }
                let item = self.u32(what)?;
                let count = self.u64(what)?;
                // Every item takes at least one byte: a larger count is a lie.
                if count > self.left() as u64 {
                    return Err(format!(
                        "{what} claims {count} items with {} bytes left in the file",
                        self.left()
                    ));
                }
                let mut items = Vec::with_capacity((count as usize).min(1 << 16));
                for _ in 0..count {
                    items.push(self.value(item, what, depth + 1)?);
                }
                GgufValue::Array(items)
            }
            10 => {
                let v = self.u64(what)?;
                i64::try_from(v).map_or(GgufValue::UInt(v), GgufValue::Int)
            }
            11 => GgufValue::Int(self.u64(what)? as i64),
            12 => GgufValue::Float(f64::from_bits(self.u64(what)?)),
            other => return Err(format!("{what} has the unknown value type {other}")),
        })
    }
}

/// The element type a GGML type id stands for.
fn stored_dtype(id: u32) -> Option<StoredDType> {
    Some(match id {
        0 => StoredDType::F32,
        1 => StoredDType::F16,
        24 => StoredDType::I8,
        25 => StoredDType::I16,
        26 => StoredDType::I32,
        27 => StoredDType::I64,
        28 => StoredDType::F64,
        30 => StoredDType::BF16,
        other => StoredDType::Quant(QuantType::from_ggml_id(other)?),
    })
}

/// Parses the GGUF file `file` (all its bytes) and checks every tensor against its size.
pub(crate) fn parse_gguf(file: &[u8], path: &Path) -> Result<GgufHeader> {
    let malformed = |reason: String| WeightError::Gguf {
        path: path.to_path_buf(),
        reason,
    };
    let mut c = Cursor { bytes: file, at: 0 };
    if c.take(4, "the magic").map_err(malformed)? != MAGIC {
        return Err(malformed("it does not start with 'GGUF'".into()));
    }
    let version = c.u32("the version").map_err(malformed)?;
    match version {
        2 | 3 => {}
        1 => {
            return Err(malformed(
                "GGUF version 1 (32-bit counts) is not read; convert the file again".into(),
            ))
        }
        v if v.swap_bytes() == 2 || v.swap_bytes() == 3 => {
            return Err(malformed(
                "the file is big-endian GGUF; only little-endian files are read".into(),
            ))
        }
        v => return Err(malformed(format!("unknown GGUF version {v}"))),
    }
    let tensor_count = c.u64("the tensor count").map_err(malformed)?;
    let kv_count = c.u64("the metadata count").map_err(malformed)?;
    // A metadata entry takes at least 8 + 4 + 1 bytes and a tensor entry 8 + 4 + 4 + 8.
    if kv_count.saturating_mul(13) > c.left() as u64
        || tensor_count.saturating_mul(24) > c.left() as u64
    {
        return Err(malformed(format!(
            "it claims {tensor_count} tensors and {kv_count} metadata entries, more than its {} \
             bytes can hold",
            file.len()
        )));
    }
    let mut values = BTreeMap::new();
    for i in 0..kv_count {
        let key = c
            .string(&format!("the key of metadata entry {i}"))
            .map_err(malformed)?;
        let what = format!("metadata '{key}'");
        let ty = c.u32(&what).map_err(malformed)?;
        let value = c.value(ty, &what, 0).map_err(malformed)?;
        if values.insert(key.clone(), value).is_some() {
            return Err(malformed(format!("metadata '{key}' appears twice")));
        }
    }
    let alignment = match values.get(ALIGNMENT_KEY) {
        None => DEFAULT_ALIGNMENT,
        Some(v) => v
            .as_u64()
            .filter(|a| a.is_power_of_two() && *a <= 1 << 20)
            .ok_or_else(|| malformed(format!("{ALIGNMENT_KEY} is {v:?}, not a power of two")))?,
    };

    struct Entry {
        name: String,
        dims: Vec<u64>,
        id: u32,
        offset: u64,
    }
    let mut entries = Vec::with_capacity(tensor_count as usize);
    let mut names = HashSet::new();
    for i in 0..tensor_count {
        let name = c
            .string(&format!("the name of tensor {i}"))
            .map_err(malformed)?;
        let what = format!("tensor '{name}'");
        let n_dims = c.u32(&what).map_err(malformed)? as u64;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(bad_tensor(path, &name, format!("{n_dims} dimensions")));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(c.u64(&what).map_err(malformed)?);
        }
        let id = c.u32(&what).map_err(malformed)?;
        let offset = c.u64(&what).map_err(malformed)?;
        if !names.insert(name.clone()) {
            return Err(malformed(format!("tensor '{name}' appears twice")));
        }
        entries.push(Entry {
            name,
            dims,
            id,
            offset,
        });
    }
    let data_start = (c.at as u64).div_ceil(alignment) * alignment;
    let data_len = (file.len() as u64).checked_sub(data_start).ok_or_else(|| {
        malformed("the file ends before its data section (truncated)".to_string())
    })?;

    let mut tensors = Vec::with_capacity(entries.len());
    for e in entries {
        let bad = |reason: String| bad_tensor(path, &e.name, reason);
        let dtype = stored_dtype(e.id).ok_or_else(|| {
            bad(format!(
                "GGML type {} is not one vdit knows (it reads F32, F16, BF16, {})",
                e.id,
                QuantType::readable_names()
            ))
        })?;
        let (block_elems, block_bytes) = match dtype {
            StoredDType::Quant(q) => (q.elements() as u64, q.bytes() as u64),
            d => (1, (d.bits() / 8) as u64),
        };
        // Blocks run along the innermost dimension, which must hold whole blocks.
        if e.dims[0] % block_elems != 0 {
            return Err(bad(format!(
                "its rows of {} values do not fill whole {dtype} blocks of {block_elems}",
                e.dims[0]
            )));
        }
        // Blocks in all, then bytes.
        let size = e
            .dims
            .iter()
            .skip(1)
            .try_fold(e.dims[0] / block_elems, |a, &d| a.checked_mul(d))
            .and_then(|blocks| blocks.checked_mul(block_bytes))
            .ok_or_else(|| bad(format!("dimensions {:?} overflow", e.dims)))?;
        if e.offset % alignment != 0 {
            return Err(bad(format!(
                "its data offset {} is not a multiple of the alignment {alignment}",
                e.offset
            )));
        }
        let end = e.offset.checked_add(size).filter(|&end| end <= data_len);
        let Some(end) = end else {
            return Err(bad(format!(
                "its {size} bytes at data offset {} reach beyond the {data_len} bytes of data \
                 (truncated or lying offsets)",
                e.offset
            )));
        };
        // With a zero dimension the size is 0 whatever the others are; bounding the product of
        // the non-zero ones keeps every partial product of the shape, in any order, countable.
        let counted = |dims: &[u64]| {
            dims.iter()
                .filter(|&&d| d != 0)
                .try_fold(1u64, |a, &d| a.checked_mul(d))
                .is_some_and(|n| usize::try_from(n).is_ok())
        };
        if !counted(&e.dims) {
            return Err(bad(format!("dimensions {:?} overflow", e.dims)));
        }
        let numel = e.dims.iter().product::<u64>();
        let mut shape: Vec<usize> = e.dims.iter().rev().map(|&d| d as usize).collect();
        if let Some(original) = values.get(&format!("{ORIGINAL_SHAPE_PREFIX}{}", e.name)) {
            let dims = match original {
                GgufValue::Array(items) => items.iter().map(GgufValue::as_u64).collect(),
                _ => None,
            };
            let dims: Vec<u64> = dims.filter(|d: &Vec<u64>| !d.is_empty()).ok_or_else(|| {
                bad(format!(
                    "its {ORIGINAL_SHAPE_PREFIX} entry is not a list of sizes"
                ))
            })?;
            if !counted(&dims) || dims.iter().product::<u64>() != numel {
                return Err(bad(format!(
                    "its original shape {dims:?} does not hold its {numel} values"
                )));
            }
            shape = dims.iter().map(|&d| d as usize).collect();
        }
        let begin = (data_start + e.offset) as usize;
        tensors.push(TensorInfo::new(
            e.name,
            dtype,
            shape,
            begin..begin + (end - e.offset) as usize,
        ));
    }
    tensors.sort_by(|a, b| a.name().cmp(b.name()));
    let metadata = values
        .iter()
        .filter(|(k, _)| !k.starts_with(ORIGINAL_SHAPE_PREFIX))
        .map(|(k, v)| (k.clone(), v.to_text()))
        .collect();
    Ok(GgufHeader {
        header: Header { tensors, metadata },
        values,
    })
}

fn bad_tensor(path: &Path, tensor: &str, reason: String) -> WeightError {
    WeightError::BadTensor {
        path: path.to_path_buf(),
        tensor: tensor.to_string(),
        reason,
    }
}
