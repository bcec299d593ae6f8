//! What a running generation tells its caller and what the caller can tell it: progress per
//! stage (with latent previews) and cancellation between steps. Shared by the denoising loop and
//! the whole-generation pipeline, which otherwise know nothing of each other's internals.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use vdit_wgpu::Tensor;

use crate::error::{ModelError, Result};

/// The stages a generation reports progress for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    EncodingPrompt,
    Denoising,
    Decoding,
}

/// Progress callbacks; every method has a default that ignores it.
pub trait Progress {
    /// A stage starts with `total` units of work.
    fn begin(&mut self, _stage: Stage, _total: usize) {}
    /// `done` of the stage's units are finished.
    fn advance(&mut self, _stage: Stage, _done: usize) {}
    fn end(&mut self, _stage: Stage) {}
    /// After each denoising step: the current latent [16, F, H/8, W/8] (f32, on the GPU), for
    /// apps that show previews. Decoding it with the VAE is the caller's choice.
    fn preview(&mut self, _step: usize, _latent: &Tensor) {}
}

/// Progress that reports nothing.
pub struct Silent;
impl Progress for Silent {}

/// A flag another thread sets to stop a generation between two steps.
#[derive(Clone, Debug, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
    pub(crate) fn check(&self) -> Result<()> {
        if self.is_cancelled() {
            Err(ModelError::Cancelled)
        } else {
            Ok(())
        }
    }
}
