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
    Array(GgufArray),
}

/// A metadata array, kept compact: a tokenizer's 256k scores or token types are the file's
/// bytes, not one [`GgufValue`] per item, and a string array holds its strings alone.
#[derive(Clone, Debug, PartialEq)]
pub enum GgufArray {
    /// Numbers (or bools, 0 or 1) of one GGUF value type, little-endian as the file stores them.
    Numbers {
        ty: u32,
        bytes: Vec<u8>,
    },
    Strings(Vec<String>),
    Arrays(Vec<GgufArray>),
}

/// The width in bytes of a numeric (or bool) GGUF value type; None for strings, arrays and
/// unknown types.
fn number_width(ty: u32) -> Option<usize> {
    match ty {
        0 | 1 | 7 => Some(1),
        2 | 3 => Some(2),
        4..=6 => Some(4),
        10..=12 => Some(8),
        _ => None,
    }
}

/// A numeric value of type `ty` from its `number_width(ty)` little-endian bytes.
fn number(ty: u32, b: &[u8]) -> GgufValue {
    let int = b.iter().rev().fold(0u64, |v, &x| v << 8 | x as u64);
    match ty {
        0 | 2 | 4 => GgufValue::Int(int as i64),
        1 => GgufValue::Int(int as u8 as i8 as i64),
        3 => GgufValue::Int(int as u16 as i16 as i64),
        5 => GgufValue::Int(int as u32 as i32 as i64),
        6 => GgufValue::Float(f32::from_bits(int as u32) as f64),
        7 => GgufValue::Bool(int != 0),
        10 => i64::try_from(int).map_or(GgufValue::UInt(int), GgufValue::Int),
        11 => GgufValue::Int(int as i64),
        _ => GgufValue::Float(f64::from_bits(int)),
    }
}

impl GgufArray {
    pub fn len(&self) -> usize {
        match self {
            GgufArray::Numbers { ty, bytes } => bytes.len() / number_width(*ty).unwrap_or(1),
            GgufArray::Strings(items) => items.len(),
            GgufArray::Arrays(items) => items.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The numbers as values (None for strings and arrays).
    pub fn numbers(&self) -> Option<impl Iterator<Item = GgufValue> + '_> {
        let GgufArray::Numbers { ty, bytes } = self else {
            return None;
        };
        let width = number_width(*ty)?;
        Some(bytes.chunks_exact(width).map(|b| number(*ty, b)))
    }

    /// Every item as a non-negative integer; None unless all are.
    pub fn to_u64s(&self) -> Option<Vec<u64>> {
        self.numbers()?.map(|v| v.as_u64()).collect()
    }

    /// Every item as a float (integers converted); None unless all are numbers.
    pub fn to_f64s(&self) -> Option<Vec<f64>> {
        self.numbers()?.map(|v| v.as_f64()).collect()
    }

    /// The bytes of an array of u8 or i8.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            GgufArray::Numbers { ty: 0 | 1, bytes } => Some(bytes),
            _ => None,
        }
    }

    pub fn as_strings(&self) -> Option<&[String]> {
        match self {
            GgufArray::Strings(items) => Some(items),
            _ => None,
        }
    }

    fn to_text(&self) -> String {
        // Long arrays (a tokenizer's vocabulary) are summarised, not spelled out.
        if self.len() > 64 {
            return format!("[{} items]", self.len());
        }
        let inner: Vec<String> = match self {
            GgufArray::Numbers { .. } => self
                .numbers()
                .into_iter()
                .flatten()
                .map(|v| v.to_text())
                .collect(),
            GgufArray::Strings(items) => items.iter().map(|s| format!("{s:?}")).collect(),
            GgufArray::Arrays(items) => items.iter().map(GgufArray::to_text).collect(),
        };
        format!("[{}]", inner.join(", "))
    }
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

    /// A number as f64 (integers converted).
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            GgufValue::Int(v) => Some(v as f64),
            GgufValue::UInt(v) => Some(v as f64),
            GgufValue::Float(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            GgufValue::Bool(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&GgufArray> {
        match self {
            GgufValue::Array(a) => Some(a),
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
            GgufValue::Array(a) => a.to_text(),
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

    /// A value of GGUF value type `ty`.
    fn value(&mut self, ty: u32, what: &str) -> Result<GgufValue, String> {
        if let Some(width) = number_width(ty) {
            let b = self.take(width, what)?;
            if ty == 7 && b[0] > 1 {
                return Err(format!("{what} is a bool of value {}", b[0]));
            }
            return Ok(number(ty, b));
        }
        match ty {
            8 => Ok(GgufValue::String(self.string(what)?)),
            9 => Ok(GgufValue::Array(self.array(what, 0)?)),
            other => Err(format!("{what} has the unknown value type {other}")),
        }
    }

    /// An array (item type, count, items); `depth` bounds arrays of arrays. Every count is
    /// checked against the bytes left before anything is reserved for it.
    fn array(&mut self, what: &str, depth: u32) -> Result<GgufArray, String> {
        if depth > 2 {
            return Err(format!("{what} nests arrays more than 2 deep"));
        }
        let item = self.u32(what)?;
        let count = self.u64(what)?;
        // The fewest bytes an item takes: a number its width, a string its length, an array
        // its item type and count.
        let least = match item {
            8 => 8,
            9 => 12,
            ty => number_width(ty)
                .ok_or_else(|| format!("{what} holds items of the unknown value type {ty}"))?
                as u64,
        };
        if count.saturating_mul(least) > self.left() as u64 {
            return Err(format!(
                "{what} claims {count} items with {} bytes left in the file",
                self.left()
            ));
        }
        let count = count as usize;
        Ok(match item {
            8 => {
                let mut items = Vec::with_capacity(count);
                for _ in 0..count {
                    items.push(self.string(what)?);
                }
                GgufArray::Strings(items)
            }
            9 => {
                let mut items = Vec::with_capacity(count);
                for _ in 0..count {
                    items.push(self.array(what, depth + 1)?);
                }
                GgufArray::Arrays(items)
            }
            ty => {
                let bytes = self.take(count * least as usize, what)?;
                if ty == 7 && bytes.iter().any(|&b| b > 1) {
                    return Err(format!("{what} holds a bool that is neither 0 nor 1"));
                }
                GgufArray::Numbers {
                    ty,
                    bytes: bytes.to_vec(),
                }
            }
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
        let value = c.value(ty, &what).map_err(malformed)?;
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
            let dims = original.as_array().and_then(GgufArray::to_u64s);
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
