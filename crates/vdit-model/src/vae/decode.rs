//! Decoding a latent video one latent frame at a time.

use vdit_wgpu::kernels::conv::{ConvOutput, OutputLayout};
use vdit_wgpu::kernels::elementwise::{unary_in_place, Unary};
use vdit_wgpu::kernels::layout::channels_last;
use vdit_wgpu::kernels::matmul::{matmul, Epilogue};
use vdit_wgpu::{DType, Gpu, Recorder, Tensor};

use super::layers::{Histories, Step};
use super::WanVae;
use crate::error::{input_err, Result};

/// The scale a latent is given in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LatentScale {
    /// As the sampler produces it: the decoder first applies `z * std + mean` per channel.
    Normalized,
    /// Already `z * std + mean` (what diffusers' `vae.decode` receives).
    Denormalized,
}

impl WanVae {
    /// The output shape [3, frames, H, W] of a latent of shape [z, F, h, w].
    pub fn output_shape(&self, latent_shape: &[usize]) -> Result<[usize; 4]> {
        let c = &self.config;
        match *latent_shape {
            [z, f, h, w] if z == c.z_dim && f > 0 && h > 0 && w > 0 => {
                let s = c.spatial_scale();
                Ok([3, c.output_frames(f), s * h, s * w])
            }
            _ => Err(input_err(
                "latent",
                format!(
                    "must be [{}, F, H, W] with F, H, W positive, got {latent_shape:?}",
                    c.z_dim
                ),
            )),
        }
    }

    /// Decodes `latent` (f32 [z, F, H, W] on the GPU) to video frames, f32
    /// [3, 4(F-1)+1, 8H, 8W] clamped to [-1, 1], left on the GPU. Work is submitted stage by
    /// stage; the result is complete once the queue is idle (a download waits for it).
    pub fn decode(&self, gpu: &Gpu, latent: &Tensor, scale: LatentScale) -> Result<Tensor> {
        let out_shape = self.output_shape(latent.shape())?;
        if latent.dtype() != DType::F32 {
            return Err(input_err("latent", format!("must be f32, got {latent:?}")));
        }
        let [z, frames, h, w] = [
            latent.shape()[0],
            latent.shape()[1],
            latent.shape()[2],
            latent.shape()[3],
        ];
        let act = self.precision.dtype();
        let video = Tensor::empty(gpu, &out_shape, DType::F32)?;
        let (pq_weight, pq_bias) = self.post_quant_folded(scale);
        let pq_weight = Tensor::from_f32(gpu, &[z, z], &pq_weight, act)?;
        let pq_bias = Tensor::from_f32(gpu, &[z], &pq_bias, act)?;
        let mut histories = Histories::default();
        let mut first_frame = 0;
        for i in 0..frames {
            histories.rewind();
            let mut rec = Recorder::new(gpu);
            let raw = Tensor::empty(gpu, &[1, h, w, z], act)?;
            channels_last(&mut rec, latent, i, &raw)?;
            let x = Tensor::empty(gpu, &[1, h, w, z], act)?;
            matmul(
                &mut rec,
                &raw,
                &pq_weight,
                Some(&pq_bias),
                &x,
                Epilogue::None,
            )?;
            let made =
                self.decode_frame(&mut rec, &mut histories, x, i == 0, &video, first_frame)?;
            rec.submit(None)?;
            first_frame += made;
        }
        debug_assert_eq!(first_frame, out_shape[1]);
        Ok(video)
    }

    /// post_quant_conv with the de-normalisation folded in:
    /// W (z * std + mean) + b = (W diag(std)) z + (W mean + b).
    fn post_quant_folded(&self, scale: LatentScale) -> (Vec<f32>, Vec<f32>) {
        let (w, b) = &self.post_quant;
        let c = &self.config;
        let n = c.z_dim;
        if scale == LatentScale::Denormalized {
            return (w.clone(), b.clone());
        }
        let mut wf = vec![0.0f32; n * n];
        let mut bf = vec![0.0f32; n];
        for o in 0..n {
            let mut acc = b[o] as f64;
            for i in 0..n {
                let wi = w[o * n + i] as f64;
                wf[o * n + i] = (wi * c.latents_std[i] as f64) as f32;
                acc += wi * c.latents_mean[i] as f64;
            }
            bf[o] = acc as f32;
        }
        (wf, bf)
    }

    /// Records the decoder on one latent frame `x` [1, h, w, z] (after post_quant_conv) and
    /// writes its output frames into `video` from `first_frame`; returns how many it wrote.
    /// The recorder is submitted and replaced between stages, so that each stage's
    /// intermediates go back to the pool before the next, larger, stage allocates.
    fn decode_frame<'g>(
        &self,
        rec: &mut Recorder<'g>,
        histories: &mut Histories,
        x: Tensor,
        first_chunk: bool,
        video: &Tensor,
        first_frame: usize,
    ) -> Result<usize> {
        let act = self.precision.dtype();
        let gpu = rec.gpu();
        let [_, h, w, _] = [x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]];
        let mut step = Step {
            rec,
            histories,
            act,
        };
        let st = &mut step;
        let y = Tensor::empty(gpu, &[1, h, w, self.conv_in.cout], act)?;
        self.conv_in.causal(st, &x, ConvOutput::frames(&y))?;
        let (res0, attn, res1) = &self.mid;
        let mut x = res0.forward(st, y)?;
        x = attn.forward(st, x)?;
        x = res1.forward(st, x)?;
        for stage in &self.stages {
            for block in &stage.resnets {
                x = block.forward(st, x)?;
            }
            if let Some(up) = &stage.upsampler {
                x = up.forward(st, x, first_chunk)?;
            }
            flush(st)?;
        }
        let [t, oh, ow, c] = [x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]];
        let a = Tensor::empty(gpu, &[t, oh, ow, c], act)?;
        self.norm_out.forward(st.rec, &x, &a)?;
        unary_in_place(st.rec, Unary::Silu, &a)?;
        let out = ConvOutput {
            y: video,
            layout: OutputLayout::ChannelFirst { first_frame },
            accumulate: false,
            clamp_unit: true,
        };
        self.conv_out.causal(st, &a, out)?;
        Ok(t)
    }
}

/// Submits what was recorded and starts a new recording.
fn flush(st: &mut Step) -> Result<()> {
    let gpu = st.rec.gpu();
    std::mem::replace(st.rec, Recorder::new(gpu)).submit(None)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dit::Precision;

    /// Wall time of decoding a random latent [16, 3, 12, 20] with the embedded default model, in
    /// f16 storage where the adapter has it; the first decode also compiles the pipelines:
    /// `cargo test --release -p vdit-model vae_decode_timing -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn vae_decode_timing() {
        let gpu = vdit_wgpu::testing::test_gpu();
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../assets/default-model");
        let precision = if gpu.caps.shader_f16 {
            Precision::F16
        } else {
            Precision::F32
        };
        let vae = WanVae::load(gpu, std::path::Path::new(root), precision).unwrap();
        let shape = [16, 3, 12, 20];
        let mut rng = vdit_wgpu::testing::Rng::new(1);
        let data = rng.vec_normal(shape.iter().product(), 1.0);
        let latent = Tensor::from_f32(gpu, &shape, &data, DType::F32).unwrap();
        for run in 0..3 {
            let started = std::time::Instant::now();
            let video = vae.decode(gpu, &latent, LatentScale::Normalized).unwrap();
            gpu.wait().unwrap();
            println!(
                "decode {run} ({precision:?}): {:.1} ms, {:?}",
                started.elapsed().as_secs_f64() * 1e3,
                video.shape()
            );
        }
    }
}
