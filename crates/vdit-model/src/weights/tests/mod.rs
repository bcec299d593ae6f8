//! Tests of weight loading; they write small safetensors files into a temporary folder.

mod config;
mod fp8;
mod gguf;
mod goldens;
mod layout;
mod malformed;
mod random;
mod roundtrip;
mod sharded;
mod upload;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use half::{bf16, f16};
use safetensors::Dtype;

use super::{DitConfig, KeyLayout};

/// A fresh folder under the system temp dir, removed when dropped.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub fn new(label: &str) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("vdit-weights-{}-{label}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("creating a temp folder");
        Self(path)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A tensor to write: name, dtype, shape, raw bytes.
pub(crate) struct Raw {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub bytes: Vec<u8>,
}

impl Raw {
    pub fn f32(name: &str, shape: &[usize], values: &[f32]) -> Self {
        Self::new(name, Dtype::F32, shape, f32_bytes(values))
    }
    pub fn new(name: &str, dtype: Dtype, shape: &[usize], bytes: Vec<u8>) -> Self {
        Self {
            name: name.into(),
            dtype,
            shape: shape.to_vec(),
            bytes,
        }
    }
}

/// Writes a safetensors file with the reference implementation's serializer.
pub(crate) fn write_safetensors(path: &Path, tensors: &[Raw]) {
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|t| {
            let view = safetensors::tensor::TensorView::new(t.dtype, t.shape.clone(), &t.bytes)
                .expect("a consistent test tensor");
            (t.name.clone(), view)
        })
        .collect();
    let bytes = safetensors::serialize(views, None).expect("serializing a test file");
    std::fs::write(path, bytes).expect("writing a test file");
}

/// Writes a file by hand: the length field, `header` verbatim, then `data`.
pub(crate) fn write_raw_file(path: &Path, header: &str, data: &[u8]) {
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(data);
    std::fs::write(path, bytes).expect("writing a test file");
}

pub(crate) fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}
pub(crate) fn f16_bytes(values: &[f32]) -> Vec<u8> {
    values
        .iter()
        .flat_map(|&v| f16::from_f32(v).to_le_bytes())
        .collect()
}
pub(crate) fn bf16_bytes(values: &[f32]) -> Vec<u8> {
    values
        .iter()
        .flat_map(|&v| bf16::from_f32(v).to_le_bytes())
        .collect()
}

/// Deterministic values with a fractional part, distinct per tensor and position.
pub(crate) fn pattern(n: usize, seed: usize) -> Vec<f32> {
    (0..n)
        .map(|i| (((i * 7 + seed * 13) % 97) as f32 - 48.0) / 16.0)
        .collect()
}

/// A DiT small enough to write in a test: 2 blocks, dim 64 of 2 heads.
pub(crate) fn tiny_config() -> DitConfig {
    DitConfig {
        dim: 64,
        ffn_dim: 96,
        freq_dim: 16,
        heads: 2,
        head_dim: 32,
        layers: 2,
        in_channels: 4,
        out_channels: 4,
        text_dim: 24,
        ..DitConfig::wan21_t2v_1_3b()
    }
}

/// Writes every tensor of `config` as f32 under the names `layout` uses, plus `extra` tensors.
/// Each tensor's values follow `pattern` seeded by its position in the canonical list.
pub(crate) fn write_model(path: &Path, config: &DitConfig, layout: &KeyLayout, extra: Vec<Raw>) {
    let mut tensors: Vec<Raw> = config
        .tensor_shapes()
        .into_iter()
        .enumerate()
        .map(|(seed, (canonical, shape))| {
            let n = shape.iter().product();
            Raw::f32(&layout.stored_name(&canonical), &shape, &pattern(n, seed))
        })
        .collect();
    tensors.extend(extra);
    write_safetensors(path, &tensors);
}

/// The message of an error, which must name each of `parts`.
/// Writes `bytes` as `<label>.<extension>`, opens it, and returns the error message, which must
/// name the file and `parts`.
pub(crate) fn open_file_error(
    label: &str,
    extension: &str,
    bytes: &[u8],
    parts: &[&str],
) -> String {
    let dir = TempDir::new(label);
    let path = dir.join(&format!("{label}.{extension}"));
    std::fs::write(&path, bytes).unwrap();
    let path_text = path.display().to_string();
    let mut all = vec![path_text.as_str()];
    all.extend_from_slice(parts);
    assert_names(crate::weights::WeightFile::open(&path), &all)
}

pub(crate) fn assert_names<T: std::fmt::Debug>(
    result: Result<T, super::WeightError>,
    parts: &[&str],
) -> String {
    let message = result.expect_err("expected an error").to_string();
    for part in parts {
        assert!(
            message.contains(part),
            "error message does not name '{part}': {message}"
        );
    }
    message
}
