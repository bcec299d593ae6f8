//! Decoding a latent video one latent frame at a time, whole or in spatial tiles.

use vdit_wgpu::kernels::conv::{ConvOutput, OutputLayout};
use vdit_wgpu::kernels::crop::crop;
use vdit_wgpu::kernels::elementwise::{unary_in_place, Unary};
use vdit_wgpu::kernels::layout::channels_last;
use vdit_wgpu::kernels::matmul::{matmul, Epilogue};
use vdit_wgpu::kernels::tile_blend::{blend_tile, TilePlacement};
use vdit_wgpu::{DType, Gpu, Profiler, Recorder, Tensor};

use super::layers::{Histories, Step};
use super::tiling::{self, VaeTiling};
use super::WanVae;
use crate::error::{input_err, Result};

/// The scale a latent is given in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LatentScale {
    /// As the sampler produces it: the decoder first applies `z * std + mean` per channel.
    #[default]
    Normalized,
    /// Already `z * std + mean` (what diffusers' `vae.decode` receives).
    Denormalized,
}

/// How [`WanVae::decode_with`] decodes.
#[derive(Default)]
pub struct DecodeOptions<'p> {
    pub scale: LatentScale,
    /// Overlapping spatial tiles, each decoded on its own and blended into the video (as
    /// diffusers' tiled decode), when the latent is larger than one tile: the activations are
    /// then those of one tile, whatever the frame size.
    pub tiling: Option<VaeTiling>,
    /// Times every kernel of the decode (each submission then waits for the GPU).
    pub profiler: Option<&'p mut Profiler>,
}

/// Receives decoded frames as they come: a video [3, n, H, W] on the GPU and how many of its
/// first frames are new (see [`WanVae::decode_streamed`]).
pub type FrameSink<'a> = dyn FnMut(&Tensor, usize) -> Result<()> + 'a;

/// Where the frames each latent frame gives go.
enum Sink<'a> {
    /// Straight into the video [3, F, H, W], clamped to [-1, 1] unless `clamp` is off.
    Video { video: &'a Tensor, clamp: bool },
    /// Into one tile's frames, added with `weights` into the video at `placement`.
    Tile {
        video: &'a Tensor,
        weights: &'a Tensor,
        placement: TilePlacement,
    },
}

/// Frames of a channel-first video from `first_frame`.
fn channel_first(y: &Tensor, first_frame: usize, clamp_unit: bool) -> ConvOutput<'_> {
    ConvOutput {
        y,
        layout: OutputLayout::ChannelFirst { first_frame },
        accumulate: false,
        clamp_unit,
    }
}

/// Submits recordings, through the profiler if there is one.
#[derive(Default)]
struct Submitter<'p> {
    profiler: Option<&'p mut Profiler>,
}

impl Submitter<'_> {
    fn submit(&mut self, rec: Recorder) -> Result<()> {
        Ok(rec.submit(self.profiler.as_deref_mut())?)
    }
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
        self.decode_with(
            gpu,
            latent,
            DecodeOptions {
                scale,
                ..Default::default()
            },
        )
    }

    /// [`decode`](Self::decode) with options: spatial tiling and a profiler.
    pub fn decode_with(
        &self,
        gpu: &Gpu,
        latent: &Tensor,
        options: DecodeOptions<'_>,
    ) -> Result<Tensor> {
        let out_shape = self.output_shape(latent.shape())?;
        if latent.dtype() != DType::F32 {
            return Err(input_err("latent", format!("must be f32, got {latent:?}")));
        }
        if let Some(t) = &options.tiling {
            t.validate().map_err(|e| input_err("VAE tiling", e))?;
        }
        let mut submitter = Submitter {
            profiler: options.profiler,
        };
        let video = Tensor::empty(gpu, &out_shape, DType::F32)?;
        let [h, w] = [latent.shape()[2], latent.shape()[3]];
        match options.tiling {
            Some(t) if t.splits(h, w) => {
                self.decode_tiles(gpu, latent, options.scale, t, &video, &mut submitter)?
            }
            _ => {
                let sink = Sink::Video {
                    video: &video,
                    clamp: true,
                };
                self.decode_frames(gpu, latent, options.scale, &sink, &mut submitter, None)?
            }
        }
        Ok(video)
    }

    /// Decodes `latent` as [`decode_with`](Self::decode_with) does, handing the frames to
    /// `on_frames` as each latent frame gives them (1 frame, then 4 per latent frame): `frames`
    /// [3, 4, H, W] holds them from frame 0 until the call returns (it is overwritten by the next
    /// latent frame), so no tensor of the whole video exists. With tiles that split the frame, the
    /// whole video is decoded first (the tiles blend across it) and handed over in one call.
    pub fn decode_streamed(
        &self,
        gpu: &Gpu,
        latent: &Tensor,
        options: DecodeOptions<'_>,
        on_frames: &mut FrameSink,
    ) -> Result<()> {
        let [_, frames, height, width] = self.output_shape(latent.shape())?;
        let [h, w] = [latent.shape()[2], latent.shape()[3]];
        if options.tiling.is_some_and(|t| t.splits(h, w)) {
            let video = self.decode_with(gpu, latent, options)?;
            return on_frames(&video, frames);
        }
        if latent.dtype() != DType::F32 {
            return Err(input_err("latent", format!("must be f32, got {latent:?}")));
        }
        let mut submitter = Submitter {
            profiler: options.profiler,
        };
        let per_latent_frame = self.config.output_frames(2) - self.config.output_frames(1);
        let chunk = Tensor::empty(gpu, &[3, per_latent_frame, height, width], DType::F32)?;
        let sink = Sink::Video {
            video: &chunk,
            clamp: true,
        };
        self.decode_frames(
            gpu,
            latent,
            options.scale,
            &sink,
            &mut submitter,
            Some(on_frames),
        )
    }

    /// Decodes tile after tile, row by row (the order the tiles' placements assume). Each tile's
    /// latent is cut on the host and decodes the whole clip with fresh histories.
    fn decode_tiles(
        &self,
        gpu: &Gpu,
        latent: &Tensor,
        scale: LatentScale,
        tiling: VaeTiling,
        video: &Tensor,
        submitter: &mut Submitter,
    ) -> Result<()> {
        let [z, frames, h, w] = [
            latent.shape()[0],
            latent.shape()[1],
            latent.shape()[2],
            latent.shape()[3],
        ];
        let mut last_size = None;
        for tile in tiling::plan(tiling, h, w, self.config.spatial_scale()) {
            let (th, tw) = (tile.rows.len(), tile.cols.len());
            // The pool reuses only buffers of the same size: before a tile of another size, the
            // pool's free buffers go back to the driver (once the GPU is done with them), so
            // that one tile's activations are held, not one set per tile size.
            if last_size.is_some_and(|s| s != (th, tw)) {
                gpu.wait()?;
                gpu.trim_pool();
            }
            last_size = Some((th, tw));
            // The tile's latent is cut on the GPU: no download of the latent, no upload per tile.
            let part = Tensor::empty(gpu, &[z, frames, th, tw], DType::F32)?;
            let mut rec = Recorder::new(gpu);
            crop(
                &mut rec,
                latent,
                tile.rows.clone(),
                tile.cols.clone(),
                &part,
            )?;
            submitter.submit(rec)?;
            let s = self.config.spatial_scale();
            let weights = Tensor::from_f32(gpu, &[s * th, s * tw], &tile.weights, DType::F32)?;
            let sink = Sink::Tile {
                video,
                weights: &weights,
                placement: tile.placement,
            };
            self.decode_frames(gpu, &part, scale, &sink, submitter, None)?;
        }
        Ok(())
    }

    /// Decodes every frame of `latent` (f32 [z, F, h, w]) into `sink`, with histories of its own.
    /// With `each`, every latent frame's frames go to the start of the sink's video, which is
    /// handed to `each` with their count once they are recorded.
    fn decode_frames(
        &self,
        gpu: &Gpu,
        latent: &Tensor,
        scale: LatentScale,
        sink: &Sink,
        submitter: &mut Submitter,
        mut each: Option<&mut FrameSink>,
    ) -> Result<()> {
        let [z, frames, h, w] = [
            latent.shape()[0],
            latent.shape()[1],
            latent.shape()[2],
            latent.shape()[3],
        ];
        let act = self.precision.dtype();
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
            let mut step = Step {
                rec: &mut rec,
                histories: &mut histories,
                act,
            };
            let at = if each.is_some() { 0 } else { first_frame };
            let made = self.decode_frame(&mut step, submitter, x, i == 0, sink, at)?;
            submitter.submit(rec)?;
            first_frame += made;
            if let (Some(each), Sink::Video { video, .. }) = (each.as_mut(), sink) {
                each(video, made)?;
            }
        }
        debug_assert_eq!(first_frame, self.config.output_frames(frames));
        Ok(())
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
    /// writes its output frames into `sink` from `first_frame`; returns how many it wrote.
    fn decode_frame(
        &self,
        st: &mut Step,
        submitter: &mut Submitter,
        x: Tensor,
        first_chunk: bool,
        sink: &Sink,
        first_frame: usize,
    ) -> Result<usize> {
        let [_, h, w, _] = [x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]];
        let y = st.empty(&[1, h, w, self.conv_in.cout])?;
        self.conv_in.causal(st, &x, ConvOutput::frames(&y))?;
        let (res0, attn, res1) = &self.mid;
        let mut x = res0.forward(st, y)?;
        x = attn.forward(st, x)?;
        x = res1.forward(st, x)?;
        self.decode_stages(st, submitter, x, 0, first_chunk, sink, first_frame)
    }

    /// Records the up stages from `from` and the output layers on `x` [T, h, w, c]. Once a
    /// temporal upsampler has made more than one frame, the frames go through the rest one at
    /// a time: every later layer is causal in time and otherwise acts on each frame alone (the
    /// norms are over channels, the only attention is in the mid block), so this gives the same
    /// video while the larger stages hold one frame's activations instead of two or four.
    /// The recorder is submitted and replaced after each block, so that each block's
    /// intermediates go back to the pool before the next allocates.
    #[allow(clippy::too_many_arguments)]
    fn decode_stages(
        &self,
        st: &mut Step,
        submitter: &mut Submitter,
        mut x: Tensor,
        from: usize,
        first_chunk: bool,
        sink: &Sink,
        first_frame: usize,
    ) -> Result<usize> {
        let gpu = st.rec.gpu();
        for (i, stage) in self.stages.iter().enumerate().skip(from) {
            let [t, h, w, c] = [x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]];
            // Buffer copies move whole 4-byte words: odd f16 frames stay together.
            if t > 1 && (h * w * c * x.dtype().size()) % 4 == 0 {
                let histories_at = st.histories.position();
                let mut made = 0;
                for j in 0..t {
                    st.histories.seek(histories_at);
                    let frame = st.empty(&[1, h, w, c])?;
                    st.rec.copy_frames(&x, j, &frame)?;
                    made += self.decode_stages(
                        st,
                        submitter,
                        frame,
                        i,
                        first_chunk,
                        sink,
                        first_frame + made,
                    )?;
                }
                return Ok(made);
            }
            // A recording holds every buffer it uses until it is submitted: one recording per
            // stage kept all of its blocks' intermediates (a third more memory at 480p).
            for block in &stage.resnets {
                x = block.forward(st, x)?;
                submitter.submit(std::mem::replace(st.rec, Recorder::new(gpu)))?;
            }
            if let Some(up) = &stage.upsampler {
                x = up.forward(st, x, first_chunk)?;
                submitter.submit(std::mem::replace(st.rec, Recorder::new(gpu)))?;
            }
        }
        let [t, oh, ow, c] = [x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]];
        let a = st.empty(&[t, oh, ow, c])?;
        self.norm_out.forward(st.rec, &x, &a)?;
        unary_in_place(st.rec, Unary::Silu, &a)?;
        match sink {
            Sink::Video { video, clamp } => {
                self.conv_out
                    .causal(st, &a, channel_first(video, first_frame, *clamp))?;
            }
            Sink::Tile {
                video,
                weights,
                placement,
            } => {
                // Unclamped: the blend clamps each pixel once its sum is complete.
                let frames = Tensor::empty(gpu, &[self.conv_out.cout, t, oh, ow], DType::F32)?;
                self.conv_out
                    .causal(st, &a, channel_first(&frames, 0, false))?;
                let at = TilePlacement {
                    frame: first_frame,
                    ..*placement
                };
                blend_tile(st.rec, &frames, weights, video, &at)?;
            }
        }
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use vdit_wgpu::testing::{assert_close, test_gpu, Rng};

    use super::*;
    use crate::dit::Precision;

    /// Frames handed over as each latent frame gives them, put back together, equal the whole
    /// decode bit for bit; with tiles that split the frame, one call hands over the whole video.
    #[test]
    fn streamed_decode_equals_the_whole_decode() {
        let gpu = test_gpu();
        let dir = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../assets/goldens/vae/tiny/diffusers"
        );
        let vae = WanVae::load(gpu, Path::new(dir), Precision::F32).unwrap();
        let [z, f, h, w] = [16, 3, 4, 5];
        let host = Rng::new(12).vec_normal(z * f * h * w, 1.0);
        let latent = Tensor::from_f32(gpu, &[z, f, h, w], &host, DType::F32).unwrap();
        let whole = vae.decode(gpu, &latent, LatentScale::Normalized).unwrap();
        let [_, frames, oh, ow] = whole.shape().try_into().unwrap();
        let whole = whole.to_vec_f32(gpu).unwrap();
        let frame_len = oh * ow;
        for tiling in [None, Some(VaeTiling::new(3, 1).unwrap())] {
            // Per channel, the frames in the order they came.
            let mut got = vec![Vec::new(); 3];
            let mut calls = Vec::new();
            let options = DecodeOptions {
                tiling,
                ..Default::default()
            };
            vae.decode_streamed(gpu, &latent, options, &mut |chunk, n| {
                let held = chunk.shape()[1];
                let data = chunk.to_vec_f32(gpu)?;
                for (c, out) in got.iter_mut().enumerate() {
                    out.extend_from_slice(&data[c * held * frame_len..][..n * frame_len]);
                }
                calls.push(n);
                Ok(())
            })
            .unwrap();
            let got: Vec<f32> = got.concat();
            if tiling.is_none() {
                assert_eq!(calls, [1, 4, 4], "frames per latent frame");
                assert!(
                    got.iter()
                        .zip(&whole)
                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                    "streamed frames differ from the whole decode"
                );
            } else {
                assert_eq!(calls, [frames], "one call with the tiled video");
                assert_eq!(got.len(), whole.len());
            }
        }
        // An error from the receiver stops the decode and comes back.
        let mut seen = 0;
        let err = vae
            .decode_streamed(gpu, &latent, DecodeOptions::default(), &mut |_, _| {
                seen += 1;
                Err(crate::error::ModelError::Cancelled)
            })
            .unwrap_err();
        assert!(matches!(err, crate::error::ModelError::Cancelled));
        assert_eq!(seen, 1);
    }

    /// The tiled decode against its definition: each tile's latent cut on the host and decoded
    /// alone by the untiled path (unclamped), the tiles blended on the host in f64 step by step
    /// as diffusers' tiled_decode does, then clamped. On the tiny golden VAE.
    #[test]
    fn tiled_decode_equals_tiles_decoded_alone_and_blended() {
        let gpu = test_gpu();
        let dir = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../assets/goldens/vae/tiny/diffusers"
        );
        let vae = WanVae::load(gpu, Path::new(dir), Precision::F32).unwrap();
        let [z, f, h, w] = [16, 2, 5, 7];
        let host = Rng::new(11).vec_normal(z * f * h * w, 1.0);
        let latent = Tensor::from_f32(gpu, &[z, f, h, w], &host, DType::F32).unwrap();
        let frames = vae.config.output_frames(f);
        for (tile, overlap) in [(4, 1), (4, 2), (3, 0)] {
            let tiling = VaeTiling::new(tile, overlap).unwrap();
            let options = DecodeOptions {
                tiling: Some(tiling),
                ..Default::default()
            };
            let got = vae.decode_with(gpu, &latent, options).unwrap();
            assert_eq!(got.shape(), [3, frames, 8 * h, 8 * w]);
            let got = got.to_vec_f32(gpu).unwrap();

            let stride = tile - overlap;
            let (starts_v, starts_h): (Vec<usize>, Vec<usize>) = (
                (0..h).step_by(stride).collect(),
                (0..w).step_by(stride).collect(),
            );
            let mut tiles = Vec::new();
            for &y0 in &starts_v {
                let mut row = Vec::new();
                for &x0 in &starts_h {
                    let (th, tw) = (tile.min(h - y0), tile.min(w - x0));
                    let mut part = Vec::new();
                    for plane in host.chunks_exact(h * w) {
                        for y in y0..y0 + th {
                            part.extend_from_slice(&plane[y * w + x0..y * w + x0 + tw]);
                        }
                    }
                    let part = Tensor::from_f32(gpu, &[z, f, th, tw], &part, DType::F32).unwrap();
                    let out = Tensor::empty(gpu, &[3, frames, 8 * th, 8 * tw], DType::F32).unwrap();
                    let sink = Sink::Video {
                        video: &out,
                        clamp: false,
                    };
                    vae.decode_frames(
                        gpu,
                        &part,
                        LatentScale::Normalized,
                        &sink,
                        &mut Submitter::default(),
                        None,
                    )
                    .unwrap();
                    let out = out.to_vec_f32(gpu).unwrap();
                    row.push(out.into_iter().map(f64::from).collect::<Vec<_>>());
                }
                tiles.push(row);
            }
            let px = |starts: &[usize], n: usize| -> Vec<usize> {
                starts.iter().map(|&s| 8 * tile.min(n - s)).collect()
            };
            let blended = tiling::reference_blend(
                tiles,
                &px(&starts_v, h),
                &px(&starts_h, w),
                3 * frames,
                8 * stride,
                8 * overlap,
            );
            let want: Vec<f64> = blended.iter().map(|v| v.clamp(-1.0, 1.0)).collect();
            let worst = got
                .iter()
                .zip(&want)
                .map(|(&g, &v)| (g as f64 - v).abs())
                .fold(0.0, f64::max);
            eprintln!("tiling {tiling}: largest difference {worst:.3e}");
            assert_close(&format!("tiled decode {tiling}"), 0, &got, &want, 1e-5);
        }
    }

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
        let mut rng = vdit_wgpu::rng::Rng::new(1);
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
