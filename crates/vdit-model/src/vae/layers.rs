//! The decoder's modules, one struct per module of the reference. Activations are channels-last
//! frames [T, H, W, C]; each `forward` records its kernels and returns the output frames.

use vdit_wgpu::attention::softmax_attention;
use vdit_wgpu::kernels::conv::{
    causal_conv3d, taps_major_weight, update_history, Conv, ConvOutput, History,
};
use vdit_wgpu::kernels::elementwise::{unary_in_place, Unary};
use vdit_wgpu::kernels::matmul::{matmul, Epilogue};
use vdit_wgpu::kernels::norm::{rms_norm, rms_norm_in_place};
use vdit_wgpu::{DType, Gpu, Recorder, Tensor};

use super::source::VaeTensors;
use crate::error::{input_err, Result};

/// Uploads decoder tensors by their diffusers names.
pub(crate) struct Loader<'a> {
    pub gpu: &'a Gpu,
    pub tensors: &'a VaeTensors<'a>,
    /// Storage of weights and activations.
    pub dtype: DType,
}

impl Loader<'_> {
    /// The values of `name` (diffusers naming), checked to be `shape`.
    pub(crate) fn read(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        self.tensors.read(name, shape)
    }

    fn upload(&self, shape: &[usize], data: &[f32], dtype: DType) -> Result<Tensor> {
        Ok(Tensor::from_f32(self.gpu, shape, data, dtype)?)
    }
}

/// The state a decode carries from one latent frame to the next: every causal convolution's
/// last input frames, in the order the convolutions run (each call takes the next slot).
#[derive(Default)]
pub(crate) struct Histories {
    slots: Vec<Option<HistorySlot>>,
    cursor: usize,
}

struct HistorySlot {
    frames: Tensor,
    valid: usize,
}

impl Histories {
    /// Starts the next latent frame: slots are taken again from the first.
    pub fn rewind(&mut self) {
        self.cursor = 0;
    }

    /// Where the next convolution's slot is taken: [`Histories::seek`] returns there, so that
    /// frames decoded one at a time through the same layers use the same histories.
    pub fn position(&self) -> usize {
        self.cursor
    }

    pub fn seek(&mut self, position: usize) {
        self.cursor = position;
    }

    /// The next convolution's slot index.
    fn next_slot(&mut self) -> usize {
        self.cursor += 1;
        if self.slots.len() < self.cursor {
            self.slots.push(None);
        }
        self.cursor - 1
    }
}

/// The recorder and the history of one latent frame's decode.
pub(crate) struct Step<'r, 'g> {
    pub rec: &'r mut Recorder<'g>,
    pub histories: &'r mut Histories,
    /// Activation storage.
    pub act: DType,
}

impl Step<'_, '_> {
    pub(crate) fn empty(&self, shape: &[usize]) -> Result<Tensor> {
        Ok(Tensor::empty(self.rec.gpu(), shape, self.act)?)
    }
}

fn frame_shape(x: &Tensor, what: &str) -> Result<[usize; 4]> {
    x.shape().try_into().map_err(|_| {
        input_err(
            what.to_string(),
            format!("expects frames [T, H, W, C], got {x:?}"),
        )
    })
}

/// A causal Conv3d (or a Conv2d, kernel depth 1) with "same" spatial padding.
pub struct CausalConv {
    weight: Tensor,
    bias: Tensor,
    kernel: [usize; 3],
    pub cin: usize,
    pub cout: usize,
}

impl CausalConv {
    /// A Conv3d: `name.weight` [cout, cin, kt, kh, kw], `name.bias` [cout].
    pub(crate) fn load(
        ld: &Loader,
        name: &str,
        cin: usize,
        cout: usize,
        kernel: [usize; 3],
    ) -> Result<Self> {
        Self::load_stored(ld, name, cin, cout, kernel, &kernel)
    }

    /// A Conv2d: `name.weight` [cout, cin, kh, kw], a causal convolution of depth 1.
    pub(crate) fn load_2d(
        ld: &Loader,
        name: &str,
        cin: usize,
        cout: usize,
        kernel: [usize; 2],
    ) -> Result<Self> {
        Self::load_stored(ld, name, cin, cout, [1, kernel[0], kernel[1]], &kernel)
    }

    fn load_stored(
        ld: &Loader,
        name: &str,
        cin: usize,
        cout: usize,
        kernel: [usize; 3],
        stored_kernel: &[usize],
    ) -> Result<Self> {
        let mut shape = vec![cout, cin];
        shape.extend_from_slice(stored_kernel);
        let w = ld.read(&format!("{name}.weight"), &shape)?;
        let b = ld.read(&format!("{name}.bias"), &[cout])?;
        let taps: usize = kernel.iter().product();
        let w = taps_major_weight(&w, cout, cin, kernel);
        Ok(Self {
            weight: ld.upload(&[cout, taps * cin], &w, ld.dtype)?,
            bias: ld.upload(&[cout], &b, ld.dtype)?,
            kernel,
            cin,
            cout,
        })
    }

    fn conv(&self, upsample: bool) -> Conv<'_> {
        Conv {
            weight: &self.weight,
            bias: Some(&self.bias),
            kernel: self.kernel,
            padding: [self.kernel[1] / 2, self.kernel[2] / 2],
            upsample,
        }
    }

    /// Records the convolution of the new frames `x` after the frames earlier calls saw (from
    /// the step's next history slot), and keeps the last of them for the next call.
    pub(crate) fn causal(&self, st: &mut Step, x: &Tensor, out: ConvOutput<'_>) -> Result<()> {
        let slot = st.histories.next_slot();
        let [t, h, w, c] = frame_shape(x, "causal convolution")?;
        let past = self.kernel[0] - 1;
        if past == 0 {
            return Ok(causal_conv3d(st.rec, x, None, &self.conv(false), out)?);
        }
        let want = [past, h, w, c];
        let fits = st.histories.slots[slot]
            .as_ref()
            .is_some_and(|s| s.frames.shape() == want && s.frames.dtype() == x.dtype());
        if !fits {
            let gpu = st.rec.gpu();
            st.histories.slots[slot] = Some(HistorySlot {
                frames: Tensor::empty(gpu, &want, x.dtype())?,
                valid: 0,
            });
        }
        let s = st.histories.slots[slot]
            .as_mut()
            .expect("slot filled above");
        let history = History {
            frames: &s.frames,
            valid: s.valid,
        };
        causal_conv3d(st.rec, x, Some(history), &self.conv(false), out)?;
        // The next history, written over this one once the convolution has read it (recorded
        // ops run in order). One persistent buffer per convolution: with a second to swap in,
        // the histories took twice their size for the whole decode.
        let copied = t >= past && st.rec.copy_frames(x, t - past, &s.frames)?;
        if !copied {
            // Fewer new frames than the history holds: the old frames shift, in place.
            update_history(st.rec, &s.frames, x)?;
        }
        s.valid = (s.valid + t).min(past);
        Ok(())
    }
}

/// A 1x1 convolution, i.e. a Linear over channels: weight [cout, cin], bias [cout].
pub struct Pointwise {
    weight: Tensor,
    bias: Tensor,
}

impl Pointwise {
    /// `name.weight` (any trailing 1x1 dims) and `name.bias`; `rows` picks a block of output
    /// channels (the q, k or v third of a fused projection).
    pub(crate) fn load(
        ld: &Loader,
        name: &str,
        cin: usize,
        cout: usize,
        rows: Option<(usize, usize)>,
    ) -> Result<Self> {
        let (lo, n, total) = match rows {
            Some((lo, total)) => (lo, cout, total),
            None => (0, cout, cout),
        };
        let w = ld.read(&format!("{name}.weight"), &[total, cin])?;
        let b = ld.read(&format!("{name}.bias"), &[total])?;
        Ok(Self {
            weight: ld.upload(&[n, cin], &w[lo * cin..(lo + n) * cin], ld.dtype)?,
            bias: ld.upload(&[n], &b[lo..lo + n], ld.dtype)?,
        })
    }

    fn forward(&self, rec: &mut Recorder, x: &Tensor, y: &Tensor, e: Epilogue) -> Result<()> {
        Ok(matmul(rec, x, &self.weight, Some(&self.bias), y, e)?)
    }
}

/// The VAE's RMS_norm over channels: `x / max(||x||, 1e-12) * sqrt(C) * gamma`, i.e.
/// `x / sqrt(mean(x^2)) * gamma`; the epsilon is the same floor moved inside the root.
pub struct ChannelRmsNorm {
    gamma: Tensor,
    eps: f32,
}

impl ChannelRmsNorm {
    pub(crate) fn load(ld: &Loader, name: &str, c: usize) -> Result<Self> {
        let g = ld.read(&format!("{name}.gamma"), &[c])?;
        Ok(Self {
            gamma: ld.upload(&[c], &g, DType::F32)?,
            eps: (1e-24 / c as f64) as f32,
        })
    }

    pub(crate) fn forward(&self, rec: &mut Recorder, x: &Tensor, y: &Tensor) -> Result<()> {
        Ok(rms_norm(rec, x, Some(&self.gamma), self.eps, y)?)
    }

    fn forward_in_place(&self, rec: &mut Recorder, x: &Tensor) -> Result<()> {
        Ok(rms_norm_in_place(rec, x, Some(&self.gamma), self.eps)?)
    }
}

/// RMS_norm, SiLU, CausalConv 3x3x3, RMS_norm, SiLU, CausalConv 3x3x3, plus the input (through
/// a 1x1x1 convolution when the width changes).
pub struct ResidualBlock {
    norm1: ChannelRmsNorm,
    conv1: CausalConv,
    norm2: ChannelRmsNorm,
    conv2: CausalConv,
    shortcut: Option<Pointwise>,
}

impl ResidualBlock {
    pub(crate) fn load(ld: &Loader, name: &str, cin: usize, cout: usize) -> Result<Self> {
        Ok(Self {
            norm1: ChannelRmsNorm::load(ld, &format!("{name}.norm1"), cin)?,
            conv1: CausalConv::load(ld, &format!("{name}.conv1"), cin, cout, [3, 3, 3])?,
            norm2: ChannelRmsNorm::load(ld, &format!("{name}.norm2"), cout)?,
            conv2: CausalConv::load(ld, &format!("{name}.conv2"), cout, cout, [3, 3, 3])?,
            shortcut: if cin != cout {
                Some(Pointwise::load(
                    ld,
                    &format!("{name}.conv_shortcut"),
                    cin,
                    cout,
                    None,
                )?)
            } else {
                None
            },
        })
    }

    /// Consumes `x`: without a shortcut convolution the output is accumulated in its buffer.
    pub(crate) fn forward(&self, st: &mut Step, x: Tensor) -> Result<Tensor> {
        let [t, h, w, cin] = frame_shape(&x, "residual block")?;
        let cout = self.conv1.cout;
        let out = match &self.shortcut {
            Some(sc) => {
                let y = st.empty(&[t, h, w, cout])?;
                sc.forward(st.rec, &x, &y, Epilogue::None)?;
                y
            }
            None => x.clone(),
        };
        let a = st.empty(&[t, h, w, cin])?;
        self.norm1.forward(st.rec, &x, &a)?;
        unary_in_place(st.rec, Unary::Silu, &a)?;
        let b = st.empty(&[t, h, w, cout])?;
        self.conv1.causal(st, &a, ConvOutput::frames(&b))?;
        self.norm2.forward_in_place(st.rec, &b)?;
        unary_in_place(st.rec, Unary::Silu, &b)?;
        let residual = ConvOutput {
            accumulate: true,
            ..ConvOutput::frames(&out)
        };
        self.conv2.causal(st, &b, residual)?;
        Ok(out)
    }
}

/// Self-attention within each frame, one head over the H x W positions:
/// x + proj(SDPA(q, k, v)) with q, k, v 1x1 projections of RMS_norm(x).
pub struct AttentionBlock {
    norm: ChannelRmsNorm,
    q: Pointwise,
    k: Pointwise,
    v: Pointwise,
    proj: Pointwise,
    dim: usize,
}

impl AttentionBlock {
    pub(crate) fn load(ld: &Loader, name: &str, dim: usize) -> Result<Self> {
        let qkv = format!("{name}.to_qkv");
        Ok(Self {
            norm: ChannelRmsNorm::load(ld, &format!("{name}.norm"), dim)?,
            q: Pointwise::load(ld, &qkv, dim, dim, Some((0, 3 * dim)))?,
            k: Pointwise::load(ld, &qkv, dim, dim, Some((dim, 3 * dim)))?,
            v: Pointwise::load(ld, &qkv, dim, dim, Some((2 * dim, 3 * dim)))?,
            proj: Pointwise::load(ld, &format!("{name}.proj"), dim, dim, None)?,
            dim,
        })
    }

    /// Updates `x` (one frame) in place.
    pub(crate) fn forward(&self, st: &mut Step, x: Tensor) -> Result<Tensor> {
        let [t, h, w, c] = frame_shape(&x, "attention block")?;
        if t != 1 || c != self.dim {
            return Err(input_err(
                "attention block",
                format!("expects one frame of {} channels, got {x:?}", self.dim),
            ));
        }
        let n = h * w;
        let normed = st.empty(&[n, c])?;
        self.norm.forward(st.rec, &x.reshape(&[n, c])?, &normed)?;
        let q = st.empty(&[n, 1, c])?;
        let k = st.empty(&[n, 1, c])?;
        let v = st.empty(&[n, 1, c])?;
        for (proj, out) in [(&self.q, &q), (&self.k, &k), (&self.v, &v)] {
            proj.forward(st.rec, &normed, out, Epilogue::None)?;
        }
        let o = st.empty(&[n, 1, c])?;
        softmax_attention(st.rec, &q, &k, &v, 1.0 / (c as f32).sqrt(), &o)?;
        self.proj.forward(
            st.rec,
            &o.reshape(&[n, c])?,
            &x.reshape(&[n, c])?,
            Epilogue::Residual,
        )?;
        Ok(x)
    }
}

/// Nearest x2 spatial upsampling and a 3x3 Conv2d halving the channels, after (upsample3d) a
/// causal time convolution to 2C channels whose halves become frames 2t and 2t + 1.
pub struct Upsampler {
    time_conv: Option<CausalConv>,
    resample: CausalConv,
}

impl Upsampler {
    pub(crate) fn load(ld: &Loader, name: &str, dim: usize, temporal: bool) -> Result<Self> {
        Ok(Self {
            time_conv: if temporal {
                Some(CausalConv::load(
                    ld,
                    &format!("{name}.time_conv"),
                    dim,
                    2 * dim,
                    [3, 1, 1],
                )?)
            } else {
                None
            },
            resample: CausalConv::load_2d(ld, &format!("{name}.resample.1"), dim, dim / 2, [3, 3])?,
        })
    }

    /// The first latent frame skips the time convolution (one frame stays one frame); its
    /// history starts with the second.
    pub(crate) fn forward(&self, st: &mut Step, x: Tensor, first_chunk: bool) -> Result<Tensor> {
        let x = match &self.time_conv {
            Some(tc) if !first_chunk => {
                let [t, h, w, c] = frame_shape(&x, "temporal upsampler")?;
                let y = st.empty(&[2 * t, h, w, c])?;
                let out = ConvOutput {
                    layout: vdit_wgpu::kernels::conv::OutputLayout::InterleavedTime,
                    ..ConvOutput::frames(&y)
                };
                tc.causal(st, &x, out)?;
                y
            }
            Some(_) => {
                st.histories.next_slot();
                x
            }
            None => x,
        };
        let [t, h, w, _] = frame_shape(&x, "upsampler")?;
        let y = st.empty(&[t, 2 * h, 2 * w, self.resample.cout])?;
        causal_conv3d(
            st.rec,
            &x,
            None,
            &self.resample.conv(true),
            ConvOutput::frames(&y),
        )?;
        Ok(y)
    }
}

/// One up stage: residual blocks, then an upsampler (all stages but the last).
pub struct UpStage {
    pub resnets: Vec<ResidualBlock>,
    pub upsampler: Option<Upsampler>,
}
