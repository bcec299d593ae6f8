//! The one error type of the compute backend.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum GpuError {
    #[error("no GPU adapter found{0}; on Linux install a Vulkan driver (for a CPU fallback: Mesa's lavapipe, Debian package mesa-vulkan-drivers)")]
    NoAdapter(String),
    #[error("unknown backend '{0}': expected one of vulkan, metal, dx12, gl")]
    UnknownBackend(String),
    #[error("could not open the device on adapter '{adapter}': {message}")]
    RequestDevice { adapter: String, message: String },
    #[error("{what} needs {needed} but the adapter allows at most {limit} ({limit_name})")]
    OverLimit {
        what: String,
        needed: u64,
        limit: u64,
        limit_name: &'static str,
    },
    #[error("{0} needs the adapter feature {1}, which this adapter lacks")]
    MissingFeature(String, &'static str),
    #[error("shape mismatch in {op}: {message}")]
    Shape { op: &'static str, message: String },
    #[error("shader '{shader}' failed to compile: {message}")]
    Shader { shader: String, message: String },
    /// A buffer the memory limit (`--max-gpu-memory`) or the device itself could not give.
    #[error(
        "out of GPU memory: {what} needs {} more while {} are held{}",
        crate::size::format_size(*.requested),
        crate::size::format_size(*.held),
        .limit.map(|l| format!(" (limit {})", crate::size::format_size(l))).unwrap_or_else(|| " (the device refused)".into())
    )]
    OutOfMemory {
        what: String,
        requested: u64,
        held: u64,
        /// The pool's limit, or `None` when the driver itself ran out.
        limit: Option<u64>,
    },
    #[error("the GPU device was lost: {0}")]
    DeviceLost(String),
    /// A bad option or argument given to the backend (the message names it).
    #[error("{0}")]
    InvalidArgument(String),
    #[error("GPU error: {0}")]
    Wgpu(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T, E = GpuError> = std::result::Result<T, E>;

/// Shorthand for a shape error.
pub(crate) fn shape_err(op: &'static str, message: impl Into<String>) -> GpuError {
    GpuError::Shape {
        op,
        message: message.into(),
    }
}
