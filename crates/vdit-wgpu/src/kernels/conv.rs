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

use bytemuck::{Pod, Zeroable};

use super::{folded_grid, require_distinct, require_f16_support, to_u32};
use crate::error::{shape_err, Result};
use crate::profiler::Cost;
use crate::recorder::{Dispatch, Recorder};
use crate::shader::{defines, Defines};
use crate::tensor::{DType, Tensor};

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

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable, Default)]
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

/// The storage types and options of one compiled variant.
#[derive(Clone, Copy, Debug)]
struct Variant {
    x: DType,
    w: DType,
    y: DType,
    cache: bool,
    bias: bool,
    residual: bool,
    clamp: bool,
}

/// How a call is computed: the 64 x 64 GEMM tiles of `conv.wgsl`, the 128 x 128 cooperative-
/// matrix tiles of `conv_coop.wgsl`, or `conv_direct.wgsl` with this many output channels per
/// thread (4, 8 or 16).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tiling {
    Gemm,
    Coop,
    Direct(usize),
}

/// The direct kernel serves convolutions with at most this many output channels, where most of
/// a 64-wide output tile would be idle.
const DIRECT_MAX_N: usize = 32;

fn tiling(n: usize, coop: bool) -> Tiling {
    #[cfg(test)]
    if let Some(forced) = FORCED_TILING.get() {
        return forced;
    }
    // With cooperative matrices every width goes to tensor cores: on the H100 the Wan-VAE's last
    // conv (96 -> 3 channels at 480 x 832) took 87 ms per call on the direct kernel, while the
    // cooperative kernel ran the 96 -> 96 conv of the same size and K, on the same single
    // 128-wide column tile, in 15 ms.
    match n {
        _ if coop => Tiling::Coop,
        0..=4 => Tiling::Direct(4),
        5..=8 => Tiling::Direct(8),
        _ if n <= DIRECT_MAX_N => Tiling::Direct(16),
        _ => Tiling::Gemm,
    }
}

/// Whether `conv_coop.wgsl` can run a call: f16 input, history and weights, Cin a multiple of
/// 4 (it fetches 4 channels at once), 16x16 f16 -> f32 cooperative matrices and subgroups of
/// exactly 32.
fn coop_fits(gpu: &crate::gpu::Gpu, inputs: &[&Tensor], cin: usize) -> bool {
    let caps = &gpu.caps;
    caps.coop_f16_16x16()
        && caps.subgroup_min_size == 32
        && caps.subgroup_max_size == 32
        && cin % 4 == 0
        && inputs.iter().all(|t| t.dtype() == DType::F16)
        && super::matmul::coop_gemm_fits_limits(gpu, CONV_COOP_SHARED_BYTES)
        && !conv_coop_refused()
}

/// Workgroup memory of `conv_coop.wgsl`: X and W tiles of 128 rows of 72 halves, and one 16 x 16
/// f32 fragment per subgroup.
const CONV_COOP_SHARED_BYTES: u32 = 2 * 128 * 72 * 2 + 8 * 256 * 4;

/// `VDIT_NO_CONV_COOP` (any value) keeps convolutions on the portable kernels; read once.
fn conv_coop_refused() -> bool {
    static REFUSED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *REFUSED.get_or_init(|| std::env::var_os("VDIT_NO_CONV_COOP").is_some())
}

#[cfg(test)]
thread_local! {
    /// Set by tests to run a case through one particular kernel.
    static FORCED_TILING: std::cell::Cell<Option<Tiling>> = const { std::cell::Cell::new(None) };
}

/// The defines of `conv_direct.wgsl` for `co` output channels per thread.
fn direct_defines(v: Variant, co: usize) -> Defines {
    let mut d = conv_defines(v);
    if co >= 8 {
        d.insert("CO_8".into(), "1".into());
    }
    if co >= 16 {
        d.insert("CO_16".into(), "1".into());
    }
    d
}

fn conv_defines(v: Variant) -> Defines {
    let mut d = defines(&[
        ("X_T", v.x.wgsl()),
        ("W_T", v.w.wgsl()),
        ("Y_T", v.y.wgsl()),
    ]);
    for (flag, on) in [
        ("HAS_CACHE", v.cache),
        ("HAS_BIAS", v.bias),
        ("HAS_RESIDUAL", v.residual),
        ("CLAMP_UNIT", v.clamp),
    ] {
        if on {
            d.insert(flag.into(), "1".into());
        }
    }
    d
}

/// The define sets of `conv.wgsl` the portability test compiles.
pub fn variants() -> Vec<Defines> {
    all_variants().into_iter().map(conv_defines).collect()
}

/// The define sets of `conv_coop.wgsl`: f16 operands.
pub fn coop_variants() -> Vec<Defines> {
    all_variants()
        .into_iter()
        .filter(|v| v.x == DType::F16 && v.w == DType::F16)
        .map(conv_defines)
        .collect()
}

/// The define sets of `conv_direct.wgsl`.
pub fn direct_variants() -> Vec<Defines> {
    all_variants()
        .into_iter()
        .flat_map(|v| [4, 8, 16].map(|co| direct_defines(v, co)))
        .collect()
}

fn all_variants() -> Vec<Variant> {
    use DType::*;
    let mut v = Vec::new();
    for (x, w, y) in [
        (F32, F32, F32),
        (F16, F16, F16),
        (F32, F16, F32),
        (F16, F16, F32),
    ] {
        for cache in [false, true] {
            for (bias, residual, clamp) in [
                (true, false, false),
                (true, true, false),
                (true, false, true),
                (false, false, false),
            ] {
                v.push(Variant {
                    x,
                    w,
                    y,
                    cache,
                    bias,
                    residual,
                    clamp,
                });
            }
        }
    }
    v
}

/// The define sets of `conv_cache.wgsl`.
pub fn history_variants() -> Vec<Defines> {
    [DType::F32, DType::F16]
        .iter()
        .map(|t| defines(&[("X_T", t.wgsl())]))
        .collect()
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
    let (shader, defines, workgroups) = match tiling(n, coop) {
        Tiling::Gemm => (
            "conv",
            conv_defines(variant),
            [n.div_ceil(64) as u32, m.div_ceil(64) as u32, 1],
        ),
        Tiling::Coop => (
            "conv_coop",
            conv_defines(variant),
            [n.div_ceil(128) as u32, m.div_ceil(128) as u32, 1],
        ),
        Tiling::Direct(co) => {
            // 64 threads of 4 pixels of one output row each.
            let quads = t * out_h * out_w.div_ceil(4);
            (
                "conv_direct",
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
        params: bytemuck::bytes_of(&params),
        tensors: &tensors,
        workgroups,
        label: format!(
            "{shader} {kt}x{kh}x{kw}{} {t}x{out_h}x{out_w} {cin}->{n} {}",
            if conv.upsample { " up2" } else { "" },
            w.dtype()
        )
        .into(),
        cost: Cost::new(2.0 * m as f64 * n as f64 * k as f64, bytes),
    })
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct HistoryParams {
    frame_elems: u32,
    past: u32,
    t: u32,
    n: u32,
}

/// Records `updated` = the last P frames of [`old` (P frames), `x` (T frames)], the history the
/// next call of a causal convolution needs. `old` and `updated` are distinct [P, H, W, C]
/// tensors (swap them afterwards); the valid count becomes `min(P, valid + T)`.
pub fn update_history(
    rec: &mut Recorder,
    old: &Tensor,
    x: &Tensor,
    updated: &Tensor,
) -> Result<()> {
    let op = "update_history";
    let (Some((&past, frame)), Some((&t, x_frame))) =
        (old.shape().split_first(), x.shape().split_first())
    else {
        return Err(shape_err(
            op,
            format!("old {old:?} and x {x:?} must be frames"),
        ));
    };
    if frame != x_frame || updated.shape() != old.shape() {
        return Err(shape_err(
            op,
            format!("old {old:?}, x {x:?} and updated {updated:?} must hold frames of one size"),
        ));
    }
    if old.dtype() != x.dtype() || updated.dtype() != x.dtype() {
        return Err(shape_err(
            op,
            format!("old {old:?}, x {x:?} and updated {updated:?} must share a storage type"),
        ));
    }
    require_distinct(op, old, updated)?;
    require_distinct(op, x, updated)?;
    require_f16_support(rec.gpu(), "an f16 history", &[x])?;
    let frame_elems: usize = frame.iter().product();
    let n = updated.numel();
    let params = HistoryParams {
        frame_elems: to_u32(op, frame_elems)?,
        past: to_u32(op, past)?,
        t: to_u32(op, t)?,
        n: to_u32(op, n)?,
    };
    rec.dispatch(Dispatch {
        shader: "conv_cache",
        entry: "main",
        defines: defines(&[("X_T", x.dtype().wgsl())]),
        constants: vec![],
        params: bytemuck::bytes_of(&params),
        tensors: &[old, x, updated],
        workgroups: folded_grid(rec.gpu(), n.div_ceil(256)),
        label: format!("conv history {past}x{frame_elems} {}", x.dtype()).into(),
        cost: Cost::new(0.0, 2.0 * updated.bytes() as f64),
    })
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;
    use DType::{F16, F32};

    struct Case {
        x_shape: [usize; 4],
        n: usize,
        kernel: [usize; 3],
        padding: [usize; 2],
        upsample: bool,
        /// Valid frames of a history, if any.
        history: Option<usize>,
        layout: OutputLayout,
        accumulate: bool,
        clamp: bool,
        bias: bool,
        types: [DType; 3],
    }

    impl Case {
        fn new(x_shape: [usize; 4], n: usize, kernel: [usize; 3]) -> Self {
            let pad = |k: usize| k / 2;
            Self {
                x_shape,
                n,
                kernel,
                padding: [pad(kernel[1]), pad(kernel[2])],
                upsample: false,
                history: None,
                layout: OutputLayout::Frames,
                accumulate: false,
                clamp: false,
                bias: true,
                types: [F32; 3],
            }
        }
    }

    fn held(v: Vec<f32>, t: DType) -> Vec<f32> {
        if t == F16 {
            round_f16(&v)
        } else {
            v
        }
    }

    fn check(c: Case) {
        let gpu = test_gpu();
        let [xt, wt, yt] = c.types;
        if c.types.contains(&F16) && !gpu.caps.shader_f16 {
            eprintln!("skipping f16 case: adapter lacks SHADER_F16");
            return;
        }
        let seed = seed();
        let mut rng = Rng::new(seed);
        let [t, h, w, cin] = c.x_shape;
        let [kt, kh, kw] = c.kernel;
        let past = kt - 1;
        let k = kt * kh * kw * cin;
        let xv = held(rng.vec_normal(t * h * w * cin, 1.0), xt);
        let hv = held(rng.vec_normal(past.max(1) * h * w * cin, 1.0), xt);
        let wv = held(rng.vec_normal(c.n * k, 1.0 / (k as f32).sqrt()), wt);
        let bv = held(rng.vec_normal(c.n, 0.5), wt);
        let conv_ref = ConvReference {
            x: &xv,
            x_shape: c.x_shape,
            history: c.history.map(|valid| (&hv[..], valid)),
            weight: &wv,
            bias: c.bias.then_some(&bv[..]),
            n: c.n,
            kernel: c.kernel,
            padding: c.padding,
            upsample: c.upsample,
        };
        let frames_out = conv_reference(&conv_ref);
        let x = Tensor::from_f32(gpu, &c.x_shape, &xv, xt).unwrap();
        let hist = Tensor::from_f32(gpu, &[past.max(1), h, w, cin], &hv, xt).unwrap();
        let weight = Tensor::from_f32(
            gpu,
            &[c.n, k],
            &taps_major_weight(&wv, c.n, cin, c.kernel),
            wt,
        )
        .unwrap();
        let bias = Tensor::from_f32(gpu, &[c.n], &bv, wt).unwrap();
        let conv = Conv {
            weight: &weight,
            bias: c.bias.then_some(&bias),
            kernel: c.kernel,
            padding: c.padding,
            upsample: c.upsample,
        };
        let [out_h, out_w] = output_size(&conv, [h, w]).unwrap();
        let hw = out_h * out_w;
        let extra_frames = 2;
        let y_shape = match c.layout {
            OutputLayout::Frames => vec![t, out_h, out_w, c.n],
            OutputLayout::InterleavedTime => vec![2 * t, out_h, out_w, c.n / 2],
            OutputLayout::ChannelFirst { .. } => vec![c.n, t + extra_frames, out_h, out_w],
        };
        let total: usize = y_shape.iter().product();
        let frames_total = t + extra_frames;
        // Residual contents, or NaN everywhere (outside a channel-first window it must stay NaN).
        let residual = held(rng.vec_normal(total, 1.0), yt);
        let mut want: Vec<f64> = if c.accumulate {
            residual.iter().map(|&v| v as f64).collect()
        } else {
            vec![f64::NAN; total]
        };
        for tt in 0..t {
            for pix in 0..hw {
                for o in 0..c.n {
                    let i = output_index(c.layout, (tt, pix, o), (hw, c.n, frames_total));
                    let mut v = frames_out[(tt * hw + pix) * c.n + o];
                    if c.accumulate {
                        v += want[i];
                    }
                    if c.clamp {
                        v = v.clamp(-1.0, 1.0);
                    }
                    want[i] = v;
                }
            }
        }
        let tol = if c.types.contains(&F16) { 2e-3 } else { 1e-5 };
        let case = format!(
            "conv x{:?} -> {} k{:?} pad{:?} up:{} hist:{:?} {:?} acc:{} clamp:{} {:?}",
            c.x_shape,
            c.n,
            c.kernel,
            c.padding,
            c.upsample,
            c.history,
            c.layout,
            c.accumulate,
            c.clamp,
            c.types
        );
        // The kernel the launcher picks, then each of them (the cooperative one where it can run).
        let mut tilings = vec![
            None,
            Some(Tiling::Gemm),
            Some(Tiling::Direct(4)),
            Some(Tiling::Direct(8)),
            Some(Tiling::Direct(16)),
        ];
        if coop_fits(gpu, &[&x, &hist, &weight], cin) {
            tilings.push(Some(Tiling::Coop));
        }
        for forced in tilings {
            let y = if c.accumulate {
                Tensor::from_f32(gpu, &y_shape, &residual, yt).unwrap()
            } else {
                let y = Tensor::empty(gpu, &y_shape, yt).unwrap();
                y.poison(gpu);
                y
            };
            FORCED_TILING.set(forced);
            let mut rec = Recorder::new(gpu);
            let launched = causal_conv3d(
                &mut rec,
                &x,
                c.history.map(|valid| History {
                    frames: &hist,
                    valid,
                }),
                &conv,
                ConvOutput {
                    y: &y,
                    layout: c.layout,
                    accumulate: c.accumulate,
                    clamp_unit: c.clamp,
                },
            );
            FORCED_TILING.set(None);
            launched.unwrap();
            rec.run().unwrap();
            let got = y.to_vec_f32(gpu).unwrap();
            let kernel = forced.map_or("picked".to_string(), |t| format!("{t:?}"));
            compare(&format!("{case} {kernel}"), seed, total, &got, &want, tol);
        }
    }

    /// Compares the written positions (where `want` is not NaN) and checks that the others
    /// stayed NaN.
    fn compare(case: &str, seed: u64, total: usize, got: &[f32], want: &[f64], tol: f64) {
        // Untouched (NaN) positions must be exactly the expected NaNs; compare the rest.
        let written: Vec<usize> = (0..total).filter(|&i| !want[i].is_nan()).collect();
        for i in 0..total {
            if want[i].is_nan() {
                assert!(
                    got[i].is_nan(),
                    "element {i} outside the output window was written"
                );
            }
        }
        let got_w: Vec<f32> = written.iter().map(|&i| got[i]).collect();
        let want_w: Vec<f64> = written.iter().map(|&i| want[i]).collect();
        assert_close(case, seed, &got_w, &want_w, tol);
    }

    #[test]
    fn conv3d_causal_padding_and_history() {
        // No history: two zero frames in front.
        check(Case::new([3, 5, 7, 6], 9, [3, 3, 3]));
        // A full history, a partly valid one, and an empty one.
        for valid in [2, 1, 0] {
            check(Case {
                history: Some(valid),
                ..Case::new([1, 6, 5, 11], 13, [3, 3, 3])
            });
        }
        check(Case {
            history: Some(2),
            ..Case::new([2, 3, 9, 17], 70, [3, 3, 3])
        });
        // A time-only kernel (the temporal upsampler's) and a pointwise one.
        check(Case {
            history: Some(1),
            ..Case::new([2, 4, 5, 7], 10, [3, 1, 1])
        });
        check(Case::new([2, 5, 3, 19], 67, [1, 1, 1]));
    }

    #[test]
    fn conv2d_with_fused_upsampling() {
        check(Case {
            upsample: true,
            ..Case::new([2, 3, 5, 7], 5, [1, 3, 3])
        });
        check(Case {
            upsample: true,
            ..Case::new([1, 4, 2, 33], 17, [1, 3, 3])
        });
        check(Case {
            padding: [0, 2],
            bias: false,
            ..Case::new([1, 6, 4, 3], 4, [1, 3, 3])
        });
    }

    #[test]
    fn conv_output_layouts_and_epilogues() {
        check(Case {
            history: Some(1),
            layout: OutputLayout::InterleavedTime,
            ..Case::new([2, 3, 4, 5], 14, [3, 1, 1])
        });
        check(Case {
            layout: OutputLayout::ChannelFirst { first_frame: 1 },
            clamp: true,
            ..Case::new([2, 5, 6, 4], 3, [3, 3, 3])
        });
        check(Case {
            history: Some(2),
            accumulate: true,
            ..Case::new([2, 4, 3, 9], 9, [3, 3, 3])
        });
    }

    #[test]
    fn conv_f16_storage() {
        check(Case {
            history: Some(2),
            types: [F16, F16, F16],
            ..Case::new([1, 5, 6, 20], 24, [3, 3, 3])
        });
        check(Case {
            upsample: true,
            accumulate: true,
            types: [F32, F16, F32],
            ..Case::new([1, 3, 4, 16], 8, [1, 3, 3])
        });
        check(Case {
            layout: OutputLayout::ChannelFirst { first_frame: 0 },
            clamp: true,
            types: [F16, F16, F32],
            ..Case::new([2, 3, 5, 8], 3, [3, 3, 3])
        });
        // Sizes across the cooperative kernel's 128 x 128 tiles, K ending mid-step.
        check(Case {
            upsample: true,
            accumulate: true,
            types: [F16, F16, F16],
            ..Case::new([1, 5, 7, 12], 40, [1, 3, 3])
        });
        check(Case {
            history: Some(2),
            layout: OutputLayout::InterleavedTime,
            types: [F16, F16, F32],
            ..Case::new([2, 9, 10, 12], 160, [3, 3, 3])
        });
    }

    /// Times the convolutions of one latent frame of the embedded default model's decoder
    /// (latent 12 x 20, after the first frame) with the profiler:
    /// `cargo test --release -p vdit-wgpu conv_decoder_timing -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn conv_decoder_timing() {
        let gpu = test_gpu();
        // (x [T, H, W, Cin], N, kernel, upsample, calls per latent frame)
        type Shape = ([usize; 4], usize, [usize; 3], bool, usize);
        let shapes: [Shape; 13] = [
            ([1, 12, 20, 16], 16, [3, 3, 3], false, 11),
            ([1, 12, 20, 16], 32, [3, 1, 1], false, 1),
            ([2, 12, 20, 16], 8, [1, 3, 3], true, 1),
            ([2, 24, 40, 8], 16, [3, 3, 3], false, 1),
            ([2, 24, 40, 16], 16, [3, 3, 3], false, 5),
            ([2, 24, 40, 16], 32, [3, 1, 1], false, 1),
            ([4, 24, 40, 16], 8, [1, 3, 3], true, 1),
            ([4, 48, 80, 8], 8, [3, 3, 3], false, 6),
            ([4, 48, 80, 8], 4, [1, 3, 3], true, 1),
            ([4, 96, 160, 2], 4, [3, 3, 3], false, 1),
            ([4, 96, 160, 4], 4, [3, 3, 3], false, 5),
            ([4, 96, 160, 4], 3, [3, 3, 3], false, 1),
            ([1, 96, 160, 384], 192, [1, 3, 3], false, 0),
        ];
        let types: Vec<DType> = if gpu.caps.shader_f16 {
            vec![F32, F16]
        } else {
            vec![F32]
        };
        for dtype in types {
            let mut tensors = Vec::new();
            for &(x_shape, n, kernel, upsample, calls) in &shapes {
                if calls == 0 && gpu.is_cpu() {
                    continue;
                }
                let [t, h, w, cin] = x_shape;
                let k = kernel.iter().product::<usize>() * cin;
                let mut rng = Rng::new(1);
                let x =
                    Tensor::from_f32(gpu, &x_shape, &rng.vec_normal(t * h * w * cin, 1.0), dtype)
                        .unwrap();
                let past = kernel[0] - 1;
                let hist = (past > 0).then(|| {
                    let v = rng.vec_normal(past * h * w * cin, 1.0);
                    Tensor::from_f32(gpu, &[past, h, w, cin], &v, dtype).unwrap()
                });
                let wt =
                    Tensor::from_f32(gpu, &[n, k], &rng.vec_normal(n * k, 0.1), dtype).unwrap();
                let b = Tensor::from_f32(gpu, &[n], &rng.vec_normal(n, 0.1), dtype).unwrap();
                let up = usize::from(upsample);
                let y = Tensor::empty(gpu, &[t, h << up, w << up, n], dtype).unwrap();
                tensors.push((x, hist, wt, b, y, kernel, upsample, calls.max(1)));
            }
            let record = |rec: &mut Recorder| {
                for (x, hist, wt, b, y, kernel, upsample, calls) in &tensors {
                    let conv = Conv {
                        weight: wt,
                        bias: Some(b),
                        kernel: *kernel,
                        padding: [kernel[1] / 2, kernel[2] / 2],
                        upsample: *upsample,
                    };
                    let history = hist.as_ref().map(|h| History {
                        frames: h,
                        valid: h.shape()[0],
                    });
                    for _ in 0..*calls {
                        causal_conv3d(rec, x, history, &conv, ConvOutput::frames(y)).unwrap();
                    }
                }
            };
            let mut rec = Recorder::new(gpu);
            record(&mut rec);
            rec.run().unwrap();
            for run in 0..2 {
                let mut prof = crate::profiler::Profiler::new(gpu);
                let mut rec = Recorder::new(gpu);
                record(&mut rec);
                rec.submit(Some(&mut prof)).unwrap();
                println!(
                    "{dtype} run {run}: {:.1} ms\n{}",
                    prof.total_ms(),
                    prof.table()
                );
            }
        }
    }

    fn check_history(past: usize, t: usize, frame: [usize; 3], dtype: DType) {
        let gpu = test_gpu();
        if dtype == F16 && !gpu.caps.shader_f16 {
            return;
        }
        let seed = seed();
        let mut rng = Rng::new(seed);
        let fe: usize = frame.iter().product();
        let ov = held(rng.vec_normal(past * fe, 1.0), dtype);
        let xv = held(rng.vec_normal(t * fe, 1.0), dtype);
        let shape = |f: usize| vec![f, frame[0], frame[1], frame[2]];
        let old = Tensor::from_f32(gpu, &shape(past), &ov, dtype).unwrap();
        let x = Tensor::from_f32(gpu, &shape(t), &xv, dtype).unwrap();
        let updated = Tensor::empty(gpu, &shape(past), dtype).unwrap();
        updated.poison(gpu);
        let mut rec = Recorder::new(gpu);
        update_history(&mut rec, &old, &x, &updated).unwrap();
        rec.run().unwrap();
        let seq: Vec<f32> = ov.iter().chain(&xv).copied().collect();
        let want: Vec<f64> = seq[t * fe..].iter().map(|&v| v as f64).collect();
        let got = updated.to_vec_f32(gpu).unwrap();
        let case = format!("history {past} + {t} frames of {frame:?} {dtype}");
        assert_close(&case, seed, &got, &want, 0.0);
    }

    #[test]
    fn conv_history_keeps_the_last_frames() {
        check_history(2, 1, [3, 5, 7], F32);
        check_history(2, 2, [3, 5, 7], F32);
        check_history(2, 4, [1, 9, 3], F32);
        check_history(2, 1, [5, 5, 3], F16);
    }

    #[test]
    fn conv_rejects_bad_shapes() {
        let gpu = test_gpu();
        let x = Tensor::empty(gpu, &[1, 4, 4, 8], F32).unwrap();
        let w = Tensor::empty(gpu, &[5, 27 * 7], F32).unwrap();
        let y = Tensor::empty(gpu, &[1, 4, 4, 5], F32).unwrap();
        let conv = Conv {
            weight: &w,
            bias: None,
            kernel: [3, 3, 3],
            padding: [1, 1],
            upsample: false,
        };
        let mut rec = Recorder::new(gpu);
        let err = causal_conv3d(&mut rec, &x, None, &conv, ConvOutput::frames(&y)).unwrap_err();
        assert!(err.to_string().contains("weight [N, 216]"), "{err}");
        let w = Tensor::empty(gpu, &[5, 27 * 8], F32).unwrap();
        let conv = Conv { weight: &w, ..conv };
        let hist = Tensor::empty(gpu, &[1, 4, 4, 8], F32).unwrap();
        let h = History {
            frames: &hist,
            valid: 1,
        };
        let err = causal_conv3d(&mut rec, &x, Some(h), &conv, ConvOutput::frames(&y)).unwrap_err();
        assert!(err.to_string().contains("history must be"), "{err}");
        let bad_y = Tensor::empty(gpu, &[1, 4, 4, 6], F32).unwrap();
        let err = causal_conv3d(&mut rec, &x, None, &conv, ConvOutput::frames(&bad_y)).unwrap_err();
        assert!(err.to_string().contains("y must be [1, 4, 4, 5]"), "{err}");
    }
}
