//! Measuring a plan against softmax: each block's attention-output error along the plan's own
//! sampling, and the GPU time of one DiT forward with either.

use std::path::Path;

use vdit_wgpu::{DType, Gpu, Profiler, Recorder, Tensor};

use super::measure::{relative_l1, softmax_of};
use crate::dit::tap::flush;
use crate::dit::{AttentionTap, BlockAttention, Precision, WanDit};
use crate::error::Result;
use crate::plan::{AttentionPlan, LayerAttention};

/// Per block, the relative L1 error of its planned output against softmax on the same q, k, v,
/// summed over every forward it hears (softmax blocks are 0 and not measured).
#[derive(Default)]
pub struct BlockErrors {
    /// Per block: (sum of errors, forwards).
    pub sums: Vec<(f64, usize)>,
}

impl BlockErrors {
    /// Mean error per block (0 for blocks never measured).
    pub fn means(&self) -> Vec<f64> {
        self.sums
            .iter()
            .map(|&(s, n)| if n == 0 { 0.0 } else { s / n as f64 })
            .collect()
    }
}

impl AttentionTap for BlockErrors {
    fn block_attention(&mut self, rec: &mut Recorder, seen: &BlockAttention<'_>) -> Result<()> {
        if self.sums.len() <= seen.block {
            self.sums.resize(seen.block + 1, (0.0, 0));
        }
        if seen.mode == LayerAttention::Softmax {
            return Ok(());
        }
        let y = softmax_of(rec, seen)?;
        flush(rec)?;
        let gpu = rec.gpu();
        let e = relative_l1(&seen.output.to_vec_f32(gpu)?, &y.to_vec_f32(gpu)?);
        let s = &mut self.sums[seen.block];
        s.0 += e;
        s.1 += 1;
        Ok(())
    }
}

/// GPU milliseconds (the timestamp profiler's kernel sum) of one DiT forward at `latent_shape`
/// with `plan` (softmax without), after a warm-up forward. The context is zeros: the time does
/// not depend on the prompt.
pub fn dit_forward_ms(
    gpu: &Gpu,
    dit_path: &Path,
    plan: Option<&Path>,
    precision: Precision,
    latent_shape: [usize; 4],
) -> Result<f64> {
    let mut dit = WanDit::load(gpu, dit_path, precision)?;
    if let Some(p) = plan {
        let plan = AttentionPlan::load(gpu, p, &dit.config, precision.dtype())?;
        dit.set_plan(plan)?;
    }
    let c = dit.config.clone();
    let runner = dit.runner(gpu, latent_shape)?;
    let numel: usize = latent_shape.iter().product();
    let latent = Tensor::from_f32(gpu, &latent_shape, &vec![0.1; numel], DType::F32)?;
    let context = Tensor::from_f32(
        gpu,
        &[c.text_len, c.text_dim],
        &vec![0.0; c.text_len * c.text_dim],
        DType::F32,
    )?;
    let [_, f, h, w] = latent_shape;
    let velocity = Tensor::empty(gpu, &[c.out_channels, f, h, w], DType::F32)?;
    let mut rec = Recorder::new(gpu);
    let cache = dit.prepare_context(&mut rec, &context)?;
    runner.forward(&mut rec, &latent, 500.0, &cache, &velocity)?;
    rec.run()?;
    let mut profiler = Profiler::new(gpu);
    let mut rec = Recorder::new(gpu);
    runner.forward(&mut rec, &latent, 500.0, &cache, &velocity)?;
    rec.submit(Some(&mut profiler))?;
    gpu.wait()?;
    Ok(profiler.total_ms())
}
