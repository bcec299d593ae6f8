//! The float64 reference of the causal convolution (tests and `vdit selftest`).

use super::*;

/// PyTorch's Conv3d weight [N, Cin, kt, kh, kw] reordered taps-major, [N, kt * kh * kw * Cin],
/// so that the kernel reads consecutive channels of one input pixel.
pub fn taps_major_weight(w: &[f32], n: usize, cin: usize, kernel: [usize; 3]) -> Vec<f32> {
    let taps = kernel.iter().product::<usize>();
    let mut out = vec![0.0; n * taps * cin];
    for o in 0..n {
        for c in 0..cin {
            for tap in 0..taps {
                out[(o * taps + tap) * cin + c] = w[(o * cin + c) * taps + tap];
            }
        }
    }
    out
}

/// The inputs of [`conv_reference`]: frames channels-last, weight in PyTorch's layout
/// [N, Cin, kt, kh, kw].
pub struct ConvReference<'a> {
    pub x: &'a [f32],
    /// (T, H, W, Cin) of `x`.
    pub x_shape: [usize; 4],
    /// The kt - 1 previous frames and how many of the last of them are real.
    pub history: Option<(&'a [f32], usize)>,
    pub weight: &'a [f32],
    pub bias: Option<&'a [f32]>,
    pub n: usize,
    pub kernel: [usize; 3],
    pub padding: [usize; 2],
    pub upsample: bool,
}

/// CPU float64 reference of [`causal_conv3d`]: the output as channels-last frames
/// [T, out_h, out_w, N], before any layout, residual or clamp.
pub fn conv_reference(r: &ConvReference<'_>) -> Vec<f64> {
    let [t, h, w, cin] = r.x_shape;
    let [kt, kh, kw] = r.kernel;
    let past = kt - 1;
    let up = usize::from(r.upsample);
    let (vh, vw) = (h << up, w << up);
    let out_h = vh + 2 * r.padding[0] + 1 - kh;
    let out_w = vw + 2 * r.padding[1] + 1 - kw;
    let frame = h * w * cin;
    // The virtual input frame v (history first), or None where it is zero padding.
    let frame_at = |v: usize| -> Option<&[f32]> {
        if v < past {
            let (hist, valid) = r.history?;
            (v + valid >= past).then(|| &hist[v * frame..(v + 1) * frame])
        } else {
            Some(&r.x[(v - past) * frame..(v - past + 1) * frame])
        }
    };
    let mut out = vec![0.0f64; t * out_h * out_w * r.n];
    for ot in 0..t {
        for oy in 0..out_h {
            for ox in 0..out_w {
                let base = ((ot * out_h + oy) * out_w + ox) * r.n;
                for o in 0..r.n {
                    let mut acc = r.bias.map_or(0.0, |b| b[o] as f64);
                    for dt in 0..kt {
                        let Some(src) = frame_at(ot + dt) else {
                            continue;
                        };
                        for dy in 0..kh {
                            let iy = (oy + dy) as isize - r.padding[0] as isize;
                            if iy < 0 || iy >= vh as isize {
                                continue;
                            }
                            for dx in 0..kw {
                                let ix = (ox + dx) as isize - r.padding[1] as isize;
                                if ix < 0 || ix >= vw as isize {
                                    continue;
                                }
                                let pix = ((iy as usize) >> up) * w + ((ix as usize) >> up);
                                for c in 0..cin {
                                    let wi = (((o * cin + c) * kt + dt) * kh + dy) * kw + dx;
                                    acc += r.weight[wi] as f64 * src[pix * cin + c] as f64;
                                }
                            }
                        }
                    }
                    out[base + o] = acc;
                }
            }
        }
    }
    out
}

/// Where element (t, pixel, channel) of channels-last frames [T, HW, N] lands in an output of
/// `layout` holding `frames` frames (for [`OutputLayout::ChannelFirst`]).
pub fn output_index(
    layout: OutputLayout,
    (t, pix, c): (usize, usize, usize),
    (hw, n, frames): (usize, usize, usize),
) -> usize {
    match layout {
        OutputLayout::Frames => (t * hw + pix) * n + c,
        OutputLayout::InterleavedTime => {
            let half = n / 2;
            ((2 * t + c / half) * hw + pix) * half + c % half
        }
        OutputLayout::ChannelFirst { first_frame } => (c * frames + first_frame + t) * hw + pix,
    }
}
