//! The one error type of weight loading: every variant names the file, and the tensor where
//! one is involved, so that a user can find what is wrong without a debugger.

use std::path::PathBuf;

use thiserror::Error;
use vdit_wgpu::GpuError;

#[derive(Debug, Error)]
pub enum WeightError {
    #[error("{}: {action}: {source}", .path.display())]
    Io {
        path: PathBuf,
        action: &'static str,
        source: std::io::Error,
    },
    /// The file is not a readable safetensors file (too short, header out of bounds, bad JSON).
    #[error("{}: not a valid safetensors file: {reason}", .path.display())]
    Malformed { path: PathBuf, reason: String },
    /// The file is not a readable GGUF file (bad magic or version, counts or offsets out of bounds).
    #[error("{}: not a valid GGUF file: {reason}", .path.display())]
    Gguf { path: PathBuf, reason: String },
    /// One header entry is unusable: unknown dtype, offsets out of the data, size not matching the shape.
    #[error("{}: tensor '{tensor}': {reason}", .path.display())]
    BadTensor {
        path: PathBuf,
        tensor: String,
        reason: String,
    },
    /// A valid dtype this loader cannot convert to floats (integers, fp8, fp4...).
    #[error("{}: tensor '{tensor}' is stored as {dtype}, which cannot be read as floats (f64, f32, f16, bf16, F8_E4M3, F8_E5M2 and GGUF's {} can)", .path.display(), super::quant::QuantType::readable_names())]
    UnsupportedDType {
        path: PathBuf,
        tensor: String,
        dtype: String,
    },
    #[error("{}: no tensor '{tensor}'{hint}", .path.display())]
    Missing {
        path: PathBuf,
        tensor: String,
        /// Where it was looked for, when the stored name differs from the one asked for.
        hint: String,
    },
    #[error("{}: tensor '{tensor}' has shape {found:?}, expected {expected:?}", .path.display())]
    Shape {
        path: PathBuf,
        tensor: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error("{}: {} tensor(s) the model does not use: {}", .path.display(), .names.len(), list_some(.names))]
    Unexpected { path: PathBuf, names: Vec<String> },
    /// Several missing, misshapen or unexpected tensors found while checking against a config.
    #[error("{}: the weights do not match the model config ({} problem(s)): {}", .path.display(), .problems.len(), list_some(.problems))]
    Mismatch {
        path: PathBuf,
        problems: Vec<String>,
    },
    #[error("{}: sharded checkpoint index: {reason}", .path.display())]
    Index { path: PathBuf, reason: String },
    #[error("{}: cannot find the weights: {reason}", .path.display())]
    NotFound { path: PathBuf, reason: String },
    #[error("{}: key layout: {reason}", .path.display())]
    Layout { path: PathBuf, reason: String },
    #[error("{}: model config: {reason}", .path.display())]
    Config { path: PathBuf, reason: String },
    /// A PyTorch checkpoint that cannot be read (its error names the file).
    #[error(transparent)]
    Pth(#[from] crate::pth::PthError),
    #[error("{}: uploading tensor '{tensor}': {source}", .path.display())]
    Gpu {
        path: PathBuf,
        tensor: String,
        source: GpuError,
    },
}

pub type Result<T, E = WeightError> = std::result::Result<T, E>;

/// The first few entries of a list and a count of the rest: long lists would bury the message.
fn list_some(items: &[String]) -> String {
    const SHOWN: usize = 8;
    let mut text = items
        .iter()
        .take(SHOWN)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join("; ");
    if items.len() > SHOWN {
        text.push_str(&format!("; and {} more", items.len() - SHOWN));
    }
    text
}
