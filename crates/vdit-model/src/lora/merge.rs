//! The GPU side of a merge: a low-rank product or a full delta added to a tensor in place.

use vdit_wgpu::kernels::elementwise::axpby_in_place;
use vdit_wgpu::kernels::matmul::{matmul, Epilogue};
use vdit_wgpu::{Gpu, Recorder, Tensor};

use crate::error::Result;

/// `weight += scale x up @ down` for `up` [out, rank] and `down` [rank, in] (row-major f32),
/// `weight` any tensor of out x in elements (a Linear's [out, in], the patch embedding's 5-D
/// kernel). One matmul with the residual epilogue: the product is accumulated in f32 and the
/// weight rounded to its storage type once.
pub(crate) fn add_low_rank(
    gpu: &Gpu,
    weight: &Tensor,
    up: &[f32],
    down: &[f32],
    rank: usize,
    scale: f32,
) -> Result<()> {
    let out = weight.shape()[0];
    let inp = weight.numel() / out;
    let scaled_up: Vec<f32> = up.iter().map(|v| v * scale).collect();
    // The matmul computes x w^T with w [N, K]: w is down transposed, [in, rank].
    let mut down_t = vec![0.0f32; inp * rank];
    for r in 0..rank {
        for i in 0..inp {
            down_t[i * rank + r] = down[r * inp + i];
        }
    }
    let dtype = weight.dtype();
    let x = Tensor::from_f32(gpu, &[out, rank], &scaled_up, dtype)?;
    let w = Tensor::from_f32(gpu, &[inp, rank], &down_t, dtype)?;
    let y = weight.reshape(&[out, inp])?;
    let mut rec = Recorder::new(gpu);
    matmul(&mut rec, &x, &w, None, &y, Epilogue::Residual)?;
    rec.run()?;
    Ok(())
}

/// `target += strength x delta`, `delta` holding the target's elements in order.
pub(crate) fn add_delta(gpu: &Gpu, target: &Tensor, delta: &[f32], strength: f32) -> Result<()> {
    let delta = Tensor::from_f32(gpu, target.shape(), delta, target.dtype())?;
    let mut rec = Recorder::new(gpu);
    axpby_in_place(&mut rec, 1.0, target, strength, &delta)?;
    rec.run()?;
    Ok(())
}
