//! The denoising loop shared by `Pipeline::generate` and the generation benchmark: from noise
//! to a denoised latent, with classifier-free guidance, on the GPU from start to end.

use vdit_wgpu::{DType, Gpu, Recorder, Tensor};

use super::progress::{CancelToken, Progress, Stage};
use super::request::GenerateRequest;
use crate::dit::tap::reborrow;
use crate::dit::{AttentionTap, Branch, ContextCache, DitRunner, Pass};
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
    denoise_tapped(gpu, runner, caches, latent, request, progress, cancel, None)
}

/// [`denoise`], handing every block's self-attention of every forward to `tap`, told before
/// each forward which step and guidance branch it computes.
#[allow(clippy::too_many_arguments)]
pub fn denoise_tapped(
    gpu: &Gpu,
    runner: &DitRunner<'_>,
    caches: &[ContextCache],
    latent: &Tensor,
    request: &GenerateRequest,
    progress: &mut dyn Progress,
    cancel: &CancelToken,
    mut tap: Option<&mut dyn AttentionTap>,
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
        let mut pass = Pass {
            step,
            timestep: t,
            branch: Branch::Cond,
        };
        if let Some(tap) = reborrow(&mut tap) {
            tap.forward_begins(pass);
        }
        runner.forward_tapped(&mut rec, latent, t, &caches[0], &v_cond, reborrow(&mut tap))?;
        if let Some(v_uncond) = &v_uncond {
            pass.branch = Branch::Uncond;
            if let Some(tap) = reborrow(&mut tap) {
                tap.forward_begins(pass);
            }
            runner.forward_tapped(
                &mut rec,
                latent,
                t,
                &caches[1],
                v_uncond,
                reborrow(&mut tap),
            )?;
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
