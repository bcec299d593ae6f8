//! Parsing and validating a safetensors header.
//!
//! Layout of the format: an u64 little-endian header length N, N bytes of JSON mapping each tensor
//! name to `{dtype, shape, data_offsets: [begin, end]}` (offsets relative to the data section that
//! follows the header), and an optional `__metadata__` map of strings. Everything a header says is
//! checked against the file size here, so that later reads can never leave the file.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;

use serde_json::Value;

use super::dtype::StoredDType;
use super::error::{Result, WeightError};

/// One tensor of a file: its name, element type, shape and where its bytes lie.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    name: String,
    dtype: StoredDType,
    shape: Vec<usize>,
    /// Byte range inside the whole file (not the data section).
    bytes: Range<usize>,
}

impl TensorInfo {
    /// An entry whose byte range the caller has checked against the file.
    pub(crate) fn new(
        name: String,
        dtype: StoredDType,
        shape: Vec<usize>,
        bytes: Range<usize>,
    ) -> Self {
        Self {
            name,
            dtype,
            shape,
            bytes,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn dtype(&self) -> StoredDType {
        self.dtype
    }
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    pub fn numel(&self) -> usize {
        // Validated not to overflow when the header was parsed.
        self.shape.iter().product()
    }
    /// Bytes the tensor occupies in the file.
    pub fn byte_len(&self) -> usize {
        self.bytes.len()
    }
    pub(crate) fn byte_range(&self) -> Range<usize> {
        self.bytes.clone()
    }
}

/// A parsed header: the tensors in name order and the free-form metadata.
pub(crate) struct Header {
    pub tensors: Vec<TensorInfo>,
    pub metadata: BTreeMap<String, String>,
}

const LENGTH_FIELD: usize = 8;

/// Parses the header of `file` (the whole file's bytes) and checks every entry against its size.
pub(crate) fn parse_header(file: &[u8], path: &Path) -> Result<Header> {
    let malformed = |reason: String| WeightError::Malformed {
        path: path.to_path_buf(),
        reason,
    };
    let Some(length_bytes) = file.first_chunk::<LENGTH_FIELD>() else {
        return Err(malformed(format!(
            "the file has {} bytes, fewer than the 8-byte header length",
            file.len()
        )));
    };
    let header_len = u64::from_le_bytes(*length_bytes);
    let available = (file.len() - LENGTH_FIELD) as u64;
    if header_len > available {
        return Err(malformed(format!(
            "the header length field says {header_len} bytes but only {available} follow it (truncated or not safetensors)"
        )));
    }
    let data_start = LENGTH_FIELD + header_len as usize;
    let text = std::str::from_utf8(&file[LENGTH_FIELD..data_start])
        .map_err(|e| malformed(format!("the header is not UTF-8 text: {e}")))?;
    let json: Value = serde_json::from_str(text)
        .map_err(|e| malformed(format!("the header is not valid JSON: {e}")))?;
    let Value::Object(entries) = json else {
        return Err(malformed("the header is not a JSON object".into()));
    };

    let data_len = file.len() - data_start;
    let mut tensors = Vec::with_capacity(entries.len());
    let mut metadata = BTreeMap::new();
    for (name, entry) in entries {
        if name == "__metadata__" {
            metadata = parse_metadata(entry).map_err(malformed)?;
            continue;
        }
        let info = parse_entry(&name, &entry, data_start, data_len).map_err(|reason| {
            WeightError::BadTensor {
                path: path.to_path_buf(),
                tensor: name.clone(),
                reason,
            }
        })?;
        tensors.push(info);
    }
    tensors.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Header { tensors, metadata })
}

fn parse_metadata(entry: Value) -> Result<BTreeMap<String, String>, String> {
    let Value::Object(map) = entry else {
        return Err("__metadata__ is not a JSON object".into());
    };
    // Values are strings by the format's rules; anything else is kept as its JSON text.
    Ok(map
        .into_iter()
        .map(|(k, v)| match v {
            Value::String(s) => (k, s),
            other => (k, other.to_string()),
        })
        .collect())
}

fn parse_entry(
    name: &str,
    entry: &Value,
    data_start: usize,
    data_len: usize,
) -> Result<TensorInfo, String> {
    let Value::Object(fields) = entry else {
        return Err("the header entry is not a JSON object".into());
    };
    let dtype_name = fields
        .get("dtype")
        .and_then(Value::as_str)
        .ok_or("the header entry has no string 'dtype'")?;
    let dtype =
        StoredDType::parse(dtype_name).ok_or_else(|| format!("unknown dtype '{dtype_name}'"))?;
    let shape = usize_list(fields.get("shape"), "shape")?;
    let offsets = usize_list(fields.get("data_offsets"), "data_offsets")?;
    let [begin, end] = offsets[..] else {
        return Err(format!("data_offsets has {} entries, not 2", offsets.len()));
    };
    if begin > end {
        return Err(format!("data_offsets [{begin}, {end}] run backwards"));
    }
    if end > data_len {
        return Err(format!(
            "data_offsets [{begin}, {end}] reach beyond the {data_len} bytes of data in the file (truncated or lying header)"
        ));
    }
    let numel = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| format!("shape {shape:?} has more elements than can be counted"))?;
    let bits = numel
        .checked_mul(dtype.bits())
        .ok_or_else(|| format!("shape {shape:?} of {dtype} is too large"))?;
    if bits % 8 != 0 {
        return Err(format!(
            "shape {shape:?} of {dtype} does not fill whole bytes"
        ));
    }
    if end - begin != bits / 8 {
        return Err(format!(
            "shape {shape:?} of {dtype} needs {} bytes but data_offsets [{begin}, {end}] hold {}",
            bits / 8,
            end - begin
        ));
    }
    Ok(TensorInfo {
        name: name.to_string(),
        dtype,
        shape,
        bytes: data_start + begin..data_start + end,
    })
}

/// A JSON array of non-negative integers that fit in usize.
fn usize_list(value: Option<&Value>, field: &str) -> Result<Vec<usize>, String> {
    let Some(Value::Array(items)) = value else {
        return Err(format!("the header entry has no array '{field}'"));
    };
    items
        .iter()
        .map(|v| {
            v.as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| format!("{field} holds {v}, not a non-negative integer"))
        })
        .collect()
}
