//! The error type of the model crate.

use thiserror::Error;
use vdit_wgpu::GpuError;

use crate::weights::WeightError;

#[derive(Debug, Error)]
pub enum ModelError {
    #[error(transparent)]
    Weights(#[from] WeightError),
    #[error(transparent)]
    Gpu(#[from] GpuError),
    /// A user-supplied input (latent, context, timestep, size) that the model cannot take.
    #[error("{what}: {message}")]
    Input { what: String, message: String },
    /// An attention plan that is malformed or does not fit the model.
    #[error("attention plan {path}: {message}")]
    Plan { path: String, message: String },
    #[error("cancelled")]
    Cancelled,
}

pub type Result<T, E = ModelError> = std::result::Result<T, E>;

pub(crate) fn input_err(what: impl Into<String>, message: impl Into<String>) -> ModelError {
    ModelError::Input {
        what: what.into(),
        message: message.into(),
    }
}
