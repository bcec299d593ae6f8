//! Causal 3D convolutions (and 2D ones, kernel depth 1) over channels-last frames, as an
//! implicit GEMM with f32 accumulation: the video decoders' convolution.
//!
//! Causality: output frame t sees input frames t - kt + 1 ..= t. The `kt - 1` frames before the
//! first new one come from a [`History`] (the frames of earlier calls) or are zeros, so decoding
//! a video chunk by chunk gives what one call over all frames would. [`update_history`] keeps the
//! history for the next call. A nearest x2 upsampling of the input can be folded into the
//! convolution, and the output can be written as channels-last frames, as the two time halves of
//! a temporal upsampler interleaved (frames 2t, 2t + 1), or as channel-first video.
//! Where the adapter has 16x16 f16 cooperative matrices, f16 convolutions run on them
//! (`conv_coop.wgsl`). Elsewhere up to 32 output channels run on a direct kernel (4 pixels x 4, 8
//! or 16 channels per thread) instead of 64 x 64 GEMM tiles.

mod history;
mod reference;
#[cfg(test)]
mod tests;
mod variants;

pub use history::*;
pub use reference::*;
pub use variants::*;

use super::{require_distinct, require_f16_support, to_u32};
use crate::error::{shape_err, Result};
use crate::param_block::ParamBytes;
use crate::profiler::Cost;
use crate::recorder::{Dispatch, Recorder};
use crate::tensor::Tensor;

/// A convolution's weights and geometry. `weight` is [N, kt * kh * kw * Cin], taps-major (see
/// [`taps_major_weight`]); `bias` is [N].
#[derive(Clone, Copy, Debug)]
pub struct Conv<'a> {
    pub weight: &'a Tensor,
    pub bias: Option<&'a Tensor>,
    /// (kt, kh, kw).
    pub kernel: [usize; 3],
    /// Zero padding of (height, width) on both sides.
    pub padding: [usize; 2],
    /// Reads the input through a nearest x2 spatial upsampling.
    pub upsample: bool,
}

/// The `kt - 1` input frames before the new ones: [kt - 1, H, W, Cin], of which only the last
/// `valid` are real (the ones before are the causal zero padding).
#[derive(Clone, Copy, Debug)]
pub struct History<'a> {
    pub frames: &'a Tensor,
    pub valid: usize,
}

/// Where the output of frame t, pixel p, channel c goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputLayout {
    /// y [T, H, W, N].
    Frames,
    /// y [2T, H, W, N / 2]: channels [0, N/2) become frame 2t, [N/2, N) frame 2t + 1.
    InterleavedTime,
    /// y [N, F, H, W]: frame `first_frame + t` of a channel-first video.
    ChannelFirst { first_frame: usize },
}

/// The output tensor, its layout, and what happens to each value after the bias.
#[derive(Clone, Copy, Debug)]
pub struct ConvOutput<'a> {
    pub y: &'a Tensor,
    pub layout: OutputLayout,
    /// `y += conv(x)`: y holds a residual on entry.
    pub accumulate: bool,
    /// Clamps the result to [-1, 1].
    pub clamp_unit: bool,
}

impl<'a> ConvOutput<'a> {
    /// Plain channels-last frames.
    pub fn frames(y: &'a Tensor) -> Self {
        Self {
            y,
            layout: OutputLayout::Frames,
            accumulate: false,
            clamp_unit: false,
        }
    }
}

crate::param_block! {
    struct Params {
        m: u32,
        n: u32,
        k: u32,
        cin: u32,
        in_h: u32,
        in_w: u32,
        out_h: u32,
        out_w: u32,
        kh: u32,
        kw: u32,
        pad_h: u32,
        pad_w: u32,
        up_shift: u32,
        past: u32,
        valid: u32,
        n_group: u32,
        groups: u32,
        f0: u32,
        frame_stride: u32,
        pix_stride: u32,
        chan_stride: u32,
        _pad: [u32; 3],
    }
}

/// The spatial size of the output for an input of `in_hw`.
pub fn output_size(conv: &Conv, in_hw: [usize; 2]) -> Option<[usize; 2]> {
    let up = usize::from(conv.upsample);
    let size = |n: usize, pad: usize, k: usize| ((n << up) + 2 * pad + 1).checked_sub(k);
    Some([
        size(in_hw[0], conv.padding[0], conv.kernel[1]).filter(|&v| v > 0)?,
        size(in_hw[1], conv.padding[1], conv.kernel[2]).filter(|&v| v > 0)?,
    ])
}

/// Records `output = conv(x)` over the new frames `x` [T, H, W, Cin], preceded by `history`
/// (zeros where it is `None` or not yet full).
pub fn causal_conv3d(
    rec: &mut Recorder,
    x: &Tensor,
    history: Option<History<'_>>,
    conv: &Conv<'_>,
    out: ConvOutput<'_>,
) -> Result<()> {
    let op = "causal_conv3d";
    let &[t, in_h, in_w, cin] = x.shape() else {
        return Err(shape_err(
            op,
            format!("x must be [T, H, W, Cin], got {x:?}"),
        ));
    };
    let [kt, kh, kw] = conv.kernel;
    if kt == 0 || kh == 0 || kw == 0 {
        return Err(shape_err(op, format!("kernel {:?} is empty", conv.kernel)));
    }
    let k = kt * kh * kw * cin;
    let w = conv.weight;
    if w.shape().len() != 2 || w.shape()[1] != k {
        return Err(shape_err(
            op,
            format!("a {kt}x{kh}x{kw} kernel over {cin} channels needs weight [N, {k}], got {w:?}"),
        ));
    }
    let n = w.shape()[0];
    if let Some(b) = conv.bias {
        if b.numel() != n || b.dtype() != w.dtype() {
            return Err(shape_err(
                op,
                format!(
                    "bias must be [{n}] of the weight's {}, got {b:?}",
                    w.dtype()
                ),
            ));
        }
    }
    let past = kt - 1;
    let valid = match history {
        Some(h) => {
            let want = [past, in_h, in_w, cin];
            if past == 0 || h.frames.shape() != want || h.frames.dtype() != x.dtype() {
                return Err(shape_err(
                    op,
                    format!(
                        "history must be {} {want:?} for a kernel of depth {kt}, got {:?}",
                        x.dtype(),
                        h.frames
                    ),
                ));
            }
            if h.valid > past {
                return Err(shape_err(
                    op,
                    format!("history holds {past} frames, {} said valid", h.valid),
                ));
            }
            h.valid
        }
        None => 0,
    };
    let [out_h, out_w] = output_size(conv, [in_h, in_w]).ok_or_else(|| {
        shape_err(
            op,
            format!("a {kh}x{kw} kernel does not fit a {in_h}x{in_w} input"),
        )
    })?;
    let y = out.y;
    let hw = out_h * out_w;
    // (expected shape, channels per group, groups, first frame, strides)
    let (want, n_group, groups, f0, strides) = match out.layout {
        OutputLayout::Frames => (vec![t, out_h, out_w, n], n, 1, 0, [hw * n, n, 1]),
        OutputLayout::InterleavedTime => {
            if n % 2 != 0 {
                return Err(shape_err(
                    op,
                    format!("interleaving time halves needs an even N, got {n}"),
                ));
            }
            let c = n / 2;
            (vec![2 * t, out_h, out_w, c], c, 2, 0, [hw * c, c, 1])
        }
        OutputLayout::ChannelFirst { first_frame } => {
            let frames = y.shape().get(1).copied().unwrap_or(0);
            if first_frame + t > frames {
                return Err(shape_err(
                    op,
                    format!(
                        "frames {first_frame}..{} past the output's {frames}",
                        first_frame + t
                    ),
                ));
            }
            (
                vec![n, frames, out_h, out_w],
                n,
                1,
                first_frame,
                [hw, 1, frames * hw],
            )
        }
    };
    if y.shape() != want {
        return Err(shape_err(
            op,
            format!("y must be {want:?} for {:?}, got {y:?}", out.layout),
        ));
    }
    let mut inputs: Vec<&Tensor> = vec![x];
    inputs.extend(history.map(|h| h.frames));
    inputs.push(w);
    inputs.extend(conv.bias);
    for input in &inputs {
        require_distinct(op, input, y)?;
    }
    let mut tensors = inputs;
    tensors.push(y);
    require_f16_support(rec.gpu(), "an f16 convolution", &tensors)?;
    let m = t * hw;
    to_u32(op, y.numel().max(x.numel()).max(n * k))?;
    let params = Params {
        m: to_u32(op, m)?,
        n: to_u32(op, n)?,
        k: to_u32(op, k)?,
        cin: to_u32(op, cin)?,
        in_h: in_h as u32,
        in_w: in_w as u32,
        out_h: out_h as u32,
        out_w: out_w as u32,
        kh: kh as u32,
        kw: kw as u32,
        pad_h: conv.padding[0] as u32,
        pad_w: conv.padding[1] as u32,
        up_shift: u32::from(conv.upsample),
        past: past as u32,
        valid: valid as u32,
        n_group: n_group as u32,
        groups,
        f0: f0 as u32,
        frame_stride: strides[0] as u32,
        pix_stride: strides[1] as u32,
        chan_stride: strides[2] as u32,
        _pad: [0; 3],
    };
    let variant = Variant {
        x: x.dtype(),
        w: w.dtype(),
        y: y.dtype(),
        cache: history.is_some(),
        bias: conv.bias.is_some(),
        residual: out.accumulate,
        clamp: out.clamp_unit,
    };
    let el = |t: &Tensor| t.dtype().size() as f64;
    let bytes = x.numel() as f64 * el(x)
        + w.numel() as f64 * el(w)
        + (m * n) as f64 * el(y) * if out.accumulate { 2.0 } else { 1.0 };
    let coop = coop_fits(rec.gpu(), &tensors[..tensors.len() - 1], cin);
    let (shader, defines, workgroups) = match tiling(rec.policy().conv, n, coop) {
        Tiling::Gemm => (
            &CONV,
            conv_defines(variant),
            [n.div_ceil(64) as u32, m.div_ceil(64) as u32, 1],
        ),
        Tiling::Coop => (
            &CONV_COOP,
            coop_defines(variant),
            [n.div_ceil(128) as u32, m.div_ceil(128) as u32, 1],
        ),
        Tiling::Direct(co) => {
            // 64 threads of 4 pixels of one output row each.
            let quads = t * out_h * out_w.div_ceil(4);
            (
                &CONV_DIRECT,
                direct_defines(variant, co),
                [quads.div_ceil(64) as u32, n.div_ceil(co) as u32, 1],
            )
        }
    };
    rec.dispatch(Dispatch {
        shader,
        entry: "main",
        defines,
        constants: vec![],
        params: ParamBytes::of(&params),
        tensors: &tensors,
        workgroups,
        label: format!(
            "{} {kt}x{kh}x{kw}{} {t}x{out_h}x{out_w} {cin}->{n} {}",
            shader.name,
            if conv.upsample { " up2" } else { "" },
            w.dtype()
        )
        .into(),
        cost: Cost::new(2.0 * m as f64 * n as f64 * k as f64, bytes),
    })
}
