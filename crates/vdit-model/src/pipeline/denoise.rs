//! The denoising loop shared by `Pipeline::generate` and the generation benchmark: from noise
//! to a denoised latent, with classifier-free guidance, on the GPU from start to end.

use vdit_wgpu::{DType, Gpu, Recorder, Tensor};

use super::generate::{CancelToken, Progress, Stage};
use super::request::GenerateRequest;
use crate::dit::{ContextCache, DitRunner};
use crate::error::{input_err, Result};
use crate::scheduler::{guide_in_place, needs_uncond, Sampler};

/// Runs every step of `request` on `latent` (noise on entry, the denoised latent on return).
/// `caches[0]` is the prompt's context, `caches[1]` the negative prompt's (needed when
/// guidance > 1). One command buffer per step: a step is the unit of progress and cancellation.
pub fn denoise(
    gpu: &Gpu,
    runner: &DitRunner<'_>,
    caches: &[ContextCache],
    latent: &Tensor,
    request: &GenerateRequest,
    progress: &mut dyn Progress,
    cancel: &CancelToken,
) -> Result<()> {
    let guided = needs_uncond(request.guidance);
    let needed = 1 + guided as usize;
    if caches.len() < needed {
        return Err(input_err(
            "denoise",
            format!(
                "guidance {} needs {needed} prompt contexts, {} given",
                request.guidance,
                caches.len()
            ),
        ));
    }
    let shape = latent.shape().to_vec();
    let v_cond = Tensor::empty(gpu, &shape, DType::F32)?;
    let v_uncond = if guided {
        Some(Tensor::empty(gpu, &shape, DType::F32)?)
    } else {
        None
    };
    let mut sampler = Sampler::new(request.sampler, request.steps, request.flow_shift as f64)?;
    let timesteps = sampler.timesteps().to_vec();
    progress.begin(Stage::Denoising, timesteps.len());
    for (step, &t) in timesteps.iter().enumerate() {
        cancel.check()?;
        let mut rec = Recorder::new(gpu);
        runner.forward(&mut rec, latent, t, &caches[0], &v_cond)?;
        if let Some(v_uncond) = &v_uncond {
            runner.forward(&mut rec, latent, t, &caches[1], v_uncond)?;
            guide_in_place(&mut rec, &v_cond, v_uncond, request.guidance)?;
        }
        sampler.step(&mut rec, &v_cond, latent)?;
        rec.run()?;
        progress.advance(Stage::Denoising, step + 1);
        progress.preview(step, latent);
    }
    progress.end(Stage::Denoising);
    Ok(())
}
