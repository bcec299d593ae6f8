//! The forward of the student (DISTILL.md, Forward): which keys of a mode are softmax and which
//! linear ([`Segments`]), the constant softmax part of a capture ([`softmax_part`]), the gather
//! of a step's queries ([`gather_rows`]) and the query pass ([`query_pass`]: y_hat, the loss and
//! the query side of the backward in one kernel).

use crate::attention::AttentionMode;
use crate::error::{shape_err, Result};
use crate::kernels::{folded_grid, require_f16_support, to_u32};
use crate::param_block::ParamBytes;
use crate::profiler::Cost;
use crate::recorder::{Dispatch, Recorder};
use crate::shader::{defines, Defines};
use crate::tensor::{DType, Tensor};

use super::Loss;

/// Queries that share one linear state: queries `q_lo..q_hi` see the linear keys
/// `0..lin_hi` (less the softmax keys of hybrid, `j % exclude_rate == 0`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub q_lo: usize,
    pub q_hi: usize,
    pub lin_hi: usize,
}

/// How a mode splits the keys of a capture into softmax keys and linear keys.
/// Hybrid and linear have one segment over all queries; rehyat one per chunk, each with the
/// prefix state of the frames before its softmax window (`lin_hi` never decreases).
#[derive(Clone, Debug, PartialEq)]
pub struct Segments {
    pub mode: AttentionMode,
    pub nq: usize,
    pub nk: usize,
    pub list: Vec<Segment>,
    /// Hybrid's rate (its softmax keys stay out of the state); 0 for the other modes.
    pub exclude_rate: usize,
    /// Tokens per latent frame (rehyat; 0 for the other modes).
    pub frame_tokens: usize,
}

impl Segments {
    /// The segments of `mode` for `nq` queries and `nk` keys; rehyat counts frames of
    /// `frame_tokens` tokens (the mode's own `frame_tokens` must be 0 or the same).
    pub fn new(mode: &AttentionMode, nq: usize, nk: usize, frame_tokens: usize) -> Result<Self> {
        let op = "distill mode";
        let mut s = Self {
            mode: *mode,
            nq,
            nk,
            list: vec![],
            exclude_rate: 0,
            frame_tokens: 0,
        };
        match mode.normalized() {
            AttentionMode::Softmax => {
                return Err(shape_err(
                    op,
                    format!("{} has no linear part to distil", mode.name()),
                ))
            }
            AttentionMode::Linear { .. } => s.list.push(Segment {
                q_lo: 0,
                q_hi: nq,
                lin_hi: nk,
            }),
            AttentionMode::Hybrid { rate } => {
                s.exclude_rate = rate as usize;
                s.list.push(Segment {
                    q_lo: 0,
                    q_hi: nq,
                    lin_hi: nk,
                });
            }
            AttentionMode::Rehyat {
                chunk_frames,
                overlap_frames,
                frame_tokens: ft_mode,
            } => {
                if nq != nk {
                    return Err(shape_err(op, "rehyat is self-attention: Nq must equal Nk"));
                }
                if ft_mode != 0 && ft_mode as usize != frame_tokens {
                    return Err(shape_err(
                        op,
                        format!(
                            "the mode says {ft_mode} tokens per frame, the capture {frame_tokens}"
                        ),
                    ));
                }
                let (tc, to, ft) = (chunk_frames as usize, overlap_frames as usize, frame_tokens);
                if tc == 0 || ft == 0 {
                    return Err(shape_err(
                        op,
                        "rehyat needs chunk_frames and frame_tokens > 0",
                    ));
                }
                s.frame_tokens = ft;
                let mut t = 0;
                while t * tc * ft < nq {
                    s.list.push(Segment {
                        q_lo: t * tc * ft,
                        q_hi: ((t + 1) * tc * ft).min(nq),
                        lin_hi: ((t * tc).saturating_sub(to) * ft).min(nk),
                    });
                    t += 1;
                }
            }
        }
        Ok(s)
    }

    /// The linear-attention epsilon of the denominator (linear mode only; 0 for the hybrids).
    pub fn eps(&self) -> f32 {
        match self.mode {
            AttentionMode::Linear { eps } => eps,
            _ => 0.0,
        }
    }

    /// The last key any state holds: keys at or past it get no gradient.
    pub fn lin_end(&self) -> usize {
        self.list.last().map(|s| s.lin_hi).unwrap_or(0)
    }

    /// For sorted query indices, the compact row range of each segment.
    pub fn row_ranges(&self, sorted: &[u32]) -> Vec<(usize, usize)> {
        self.list
            .iter()
            .map(|s| {
                let lo = sorted.partition_point(|&i| (i as usize) < s.q_lo);
                let hi = sorted.partition_point(|&i| (i as usize) < s.q_hi);
                (lo, hi)
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// the softmax part

crate::param_block! {
    struct SoftmaxParams {
        nq: u32,
        nk: u32,
        heads: u32,
        d: u32,
        kind: u32,
        rate: u32,
        tc: u32,
        to: u32,
        ft: u32,
        tiles: u32,
        grid_x: u32,
        _pad0: u32,
        scale: f32,
        eps: f32,
        _pad1: u32,
        _pad2: u32,
    }
}

fn softmax_defines(dtype: DType, d: usize) -> Defines {
    defines(&[
        ("IO_T", dtype.wgsl().to_string()),
        ("DP", format!("{}u", d.div_ceil(16).max(1) * 16)),
    ])
}

/// Query rows per workgroup of `distill_softmax_tiled.wgsl` at head dim `d`, if it fits
/// (head dims up to 128).
fn softmax_tiled_rows(gpu: &crate::gpu::Gpu, d: usize) -> Option<usize> {
    let dp = d.div_ceil(16).max(1) * 16;
    if dp > 128 {
        return None;
    }
    let mem = gpu.limits.max_compute_workgroup_storage_size as usize;
    let inv = gpu.limits.max_compute_invocations_per_workgroup as usize;
    let max_y = gpu.limits.max_compute_workgroup_size_y as usize;
    [8usize, 4, 2, 1]
        .into_iter()
        .find(|&bq| softmax_tiled_bytes(bq, dp) <= mem && 16 * bq <= inv && bq <= max_y)
}

fn softmax_tiled_bytes(bq: usize, dp: usize) -> usize {
    (bq * dp + 16 * (dp + 1) + 2 * bq * 16) * 4
}

fn softmax_tiled_defines(dtype: DType, bq: usize, d: usize) -> Defines {
    let dp = d.div_ceil(16).max(1) * 16;
    defines(&[
        ("IO_T", dtype.wgsl().to_string()),
        ("DP", format!("{dp}u")),
        ("BQ", format!("{bq}u")),
        ("QS_SIZE", (bq * dp).to_string()),
        ("KV_SIZE", (16 * (dp + 1)).to_string()),
        ("PS_SIZE", (bq * 16).to_string()),
    ])
}

pub fn softmax_tiled_variants() -> Vec<Defines> {
    let mut v = Vec::new();
    for dtype in [DType::F32, DType::F16] {
        for (bq, d) in [(8, 128), (8, 16), (4, 64), (1, 128)] {
            v.push(softmax_tiled_defines(dtype, bq, d));
        }
    }
    v
}

pub fn softmax_variants() -> Vec<Defines> {
    let mut v = Vec::new();
    for dtype in [DType::F32, DType::F16] {
        for d in [16, 64, 128, 512] {
            v.push(softmax_defines(dtype, d));
        }
    }
    v
}

/// The `[Nq, H, D + 2]` f32 shape of a capture's softmax part (A | alpha | m).
pub fn softmax_part_shape(nq: usize, heads: usize, d: usize) -> [usize; 3] {
    [nq, heads, d + 2]
}

/// Records the constant softmax part of every query for the mode of `seg` (see
/// `distill_softmax_tiled.wgsl`, or `distill_softmax.wgsl` for heads wider than 128) into
/// `soft` `[Nq, H, D + 2]` f32.
pub fn softmax_part(
    rec: &mut Recorder,
    seg: &Segments,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f32,
    soft: &Tensor,
) -> Result<()> {
    let op = "distill softmax part";
    let [nq, h, d] = match q.shape() {
        [a, b, c] => [*a, *b, *c],
        s => return Err(shape_err(op, format!("q must be [Nq, H, D], got {s:?}"))),
    };
    let nk = k.shape()[0];
    if k.shape() != [nk, h, d] || v.shape() != k.shape() || nq != seg.nq || nk != seg.nk {
        return Err(shape_err(
            op,
            format!(
                "q {:?}, k {:?}, v {:?} do not match segments of {} x {}",
                q.shape(),
                k.shape(),
                v.shape(),
                seg.nq,
                seg.nk
            ),
        ));
    }
    if d > 512 {
        return Err(shape_err(op, format!("head dim {d} above 512")));
    }
    if soft.shape() != softmax_part_shape(nq, h, d) || soft.dtype() != DType::F32 {
        return Err(shape_err(
            op,
            format!("soft must be f32 {:?}", softmax_part_shape(nq, h, d)),
        ));
    }
    if q.dtype() != k.dtype() || k.dtype() != v.dtype() {
        return Err(shape_err(op, "q, k and v must share one storage type"));
    }
    let gpu = rec.gpu();
    require_f16_support(gpu, "f16 distillation", &[q])?;
    let (kind, rate, tc, to, ft, keys) = match seg.mode {
        AttentionMode::Hybrid { rate } => (0, rate, 0, 0, 0, nk.div_ceil(rate as usize)),
        AttentionMode::Rehyat {
            chunk_frames,
            overlap_frames,
            ..
        } => {
            // The window of a chunk: its own frames and the overlap.
            let ft = to_u32(op, seg.frame_tokens)?;
            let win = (chunk_frames + overlap_frames) as usize * seg.frame_tokens;
            (1, 0, chunk_frames, overlap_frames, ft, win.min(nk))
        }
        _ => (2, 0, 0, 0, 0, 0),
    };
    let tiled = softmax_tiled_rows(gpu, d);
    let (shader, defines, rows) = match tiled {
        Some(bq) => (
            &DISTILL_SOFTMAX_TILED,
            softmax_tiled_defines(q.dtype(), bq, d),
            bq,
        ),
        None => (&DISTILL_SOFTMAX, softmax_defines(q.dtype(), d), 64),
    };
    let tiles = nq.div_ceil(rows);
    let workgroups = folded_grid(gpu, tiles * h);
    let params = SoftmaxParams {
        nq: to_u32(op, nq)?,
        nk: to_u32(op, nk)?,
        heads: h as u32,
        d: d as u32,
        kind,
        rate,
        tc,
        to,
        ft,
        tiles: tiles as u32,
        grid_x: workgroups[0],
        _pad0: 0,
        scale,
        eps: seg.eps(),
        _pad1: 0,
        _pad2: 0,
    };
    let (qn, kn, hf, dd) = (nq as f64, keys as f64, h as f64, d as f64);
    let el = q.dtype().size() as f64;
    rec.dispatch(Dispatch {
        shader,
        entry: "main",
        defines,
        constants: vec![],
        params: ParamBytes::of(&params),
        tensors: &[q, k, v, soft],
        workgroups,
        label: format!("distill softmax part {nq}q x {keys}k x {h}h x {d}").into(),
        cost: Cost::new(
            hf * 4.0 * qn * kn * dd,
            hf * (qn * dd * el + 2.0 * kn * dd * el + qn * (dd + 2.0) * 4.0),
        ),
    })
}

// ---------------------------------------------------------------------------------------------
// gather

crate::param_block! {
    struct GatherParams {
        rows: u32,
        hd: u32,
        idx_lo: u32,
        grid_x: u32,
    }
}

fn io_defines(dtype: DType) -> Defines {
    defines(&[("IO_T", dtype.wgsl())])
}

pub fn gather_variants() -> Vec<Defines> {
    vec![io_defines(DType::F32), io_defines(DType::F16)]
}

/// Query indices as a tensor: u32 values stored in an "f32" buffer of the same byte size
/// (the kernels read it as `array<u32>`).
pub fn upload_indices(gpu: &crate::gpu::Gpu, idx: &[u32]) -> Result<Tensor> {
    let padded: Vec<u32> = if idx.is_empty() {
        vec![0]
    } else {
        idx.to_vec()
    };
    Tensor::from_bytes(
        gpu,
        &[padded.len()],
        DType::F32,
        bytemuck::cast_slice(&padded),
    )
}

/// Records `out[r] = f32(x[idx[idx_lo + r]])` for `r < rows`: x `[N, H, D]`, out
/// `[>= rows, H, D]` f32.
pub fn gather_rows(
    rec: &mut Recorder,
    idx: &Tensor,
    idx_lo: usize,
    rows: usize,
    x: &Tensor,
    out: &Tensor,
) -> Result<()> {
    let op = "distill gather";
    let [_, h, d] = match x.shape() {
        [a, b, c] => [*a, *b, *c],
        s => return Err(shape_err(op, format!("x must be [N, H, D], got {s:?}"))),
    };
    match out.shape() {
        [r, hh, dd] if *r >= rows && *hh == h && *dd == d && out.dtype() == DType::F32 => {}
        s => {
            return Err(shape_err(
                op,
                format!("out must be f32 [>= {rows}, {h}, {d}], got {s:?}"),
            ))
        }
    }
    if idx_lo + rows > idx.numel() {
        return Err(shape_err(op, "index range past the index buffer"));
    }
    let gpu = rec.gpu();
    require_f16_support(gpu, "f16 distillation", &[x])?;
    let n = rows * h * d;
    let workgroups = folded_grid(gpu, n.div_ceil(256));
    let params = GatherParams {
        rows: to_u32(op, rows)?,
        hd: (h * d) as u32,
        idx_lo: to_u32(op, idx_lo)?,
        grid_x: workgroups[0],
    };
    rec.dispatch(Dispatch {
        shader: &DISTILL_GATHER,
        entry: "main",
        defines: io_defines(x.dtype()),
        constants: vec![],
        params: ParamBytes::of(&params),
        tensors: &[idx, x, out],
        workgroups,
        label: format!("distill gather {rows} x {h}h x {d}").into(),
        cost: Cost::new(0.0, n as f64 * (4.0 + x.dtype().size() as f64)),
    })
}

// ---------------------------------------------------------------------------------------------
// the query pass

crate::param_block! {
    struct QueryParams {
        heads: u32,
        d: u32,
        df: u32,
        r_lo: u32,
        r_count: u32,
        idx_lo: u32,
        mse: u32,
        write_yhat: u32,
        grid_x: u32,
        tiles: u32,
        inv_count: f32,
        _pad1: u32,
    }
}

/// The query pass's defines for `qr` rows per workgroup.
fn query_defines(dtype: DType, qr: usize, d: usize, df: usize) -> Defines {
    defines(&[
        ("IO_T", dtype.wgsl().to_string()),
        ("QR", format!("{qr}u")),
        ("FS_SIZE", (qr * df).to_string()),
        ("US_SIZE", (qr * d).to_string()),
        ("RED_SIZE", (3 * qr * 64).to_string()),
    ])
}

/// Workgroup memory of the query pass with `qr` rows.
fn query_shared_bytes(qr: usize, d: usize, df: usize) -> usize {
    (qr * (df + d + 3 * 64 + 2)) * 4
}

pub fn query_variants() -> Vec<Defines> {
    let mut v = Vec::new();
    for dtype in [DType::F32, DType::F16] {
        for (qr, d, df) in [(8, 128, 128), (8, 16, 10), (4, 512, 256), (1, 512, 1024)] {
            v.push(query_defines(dtype, qr, d, df));
        }
    }
    v
}

/// The buffers of [`query_pass`]: inputs of a capture and of a step, and its outputs.
#[derive(Clone, Copy, Debug)]
pub struct QueryPass<'a> {
    /// The step's sorted query indices (all steps of a submission, one after another).
    pub idx: &'a Tensor,
    pub idx_lo: usize,
    /// This segment's compact rows `r_lo..r_hi` of the step.
    pub r_lo: usize,
    pub r_hi: usize,
    /// Mean over this many values (rows of the whole step x H x D).
    pub count: usize,
    pub loss: Loss,
    /// `[Nq, H, D + 2]` f32
    pub soft: &'a Tensor,
    /// `[Nq, H, D]` teacher output
    pub y: &'a Tensor,
    /// `[rows, H, DF]` f32 phi_q of the gathered queries
    pub fq: &'a Tensor,
    /// `[H, DF, D + 1]` f32 (S | z) of this segment
    pub state: &'a Tensor,
    /// outputs: `[rows, H, D + 1]` (u | delta), `[rows, H, DF]` df, `[rows * H, 2]` loss parts,
    /// `[rows, H, D]` y_hat (written when `write_yhat`)
    pub ud: &'a Tensor,
    pub dfq: &'a Tensor,
    pub parts: &'a Tensor,
    pub yhat: &'a Tensor,
    pub write_yhat: bool,
}

/// Records the query pass of one segment (see `distill_query.wgsl`).
pub fn query_pass(rec: &mut Recorder, a: &QueryPass) -> Result<()> {
    let op = "distill query pass";
    let [nq, h, d2] = match a.soft.shape() {
        [x, y, z] if *z >= 2 => [*x, *y, *z],
        s => {
            return Err(shape_err(
                op,
                format!("soft must be [Nq, H, D + 2], got {s:?}"),
            ))
        }
    };
    let d = d2 - 2;
    let df = match a.state.shape() {
        [hh, f, c] if *hh == h && *c == d + 1 => *f,
        s => {
            return Err(shape_err(
                op,
                format!("the state must be [{h}, DF, {}], got {s:?}", d + 1),
            ))
        }
    };
    let rows = a.fq.shape().first().copied().unwrap_or(0);
    let want = |t: &Tensor, shape: &[usize], name: &str| -> Result<()> {
        if t.shape() != shape || t.dtype() != DType::F32 {
            return Err(shape_err(
                op,
                format!("{name} must be f32 {shape:?}, got {t:?}"),
            ));
        }
        Ok(())
    };
    want(a.fq, &[rows, h, df], "fq")?;
    want(a.ud, &[rows, h, d + 1], "ud")?;
    want(a.dfq, &[rows, h, df], "dfq")?;
    want(a.parts, &[rows * h, 2], "parts")?;
    want(a.yhat, &[rows, h, d], "yhat")?;
    want(a.soft, &[nq, h, d + 2], "soft")?;
    want(a.state, &[h, df, d + 1], "state")?;
    if a.y.shape() != [nq, h, d] {
        return Err(shape_err(op, format!("y must be [{nq}, {h}, {d}]")));
    }
    if a.r_lo > a.r_hi || a.r_hi > rows || a.idx_lo + a.r_hi > a.idx.numel() {
        return Err(shape_err(
            op,
            format!(
                "rows {}..{} past {rows} rows or the indices",
                a.r_lo, a.r_hi
            ),
        ));
    }
    if d > 512 || df > 1024 {
        return Err(shape_err(op, "head dim above 512 or features above 1024"));
    }
    if a.count == 0 {
        return Err(shape_err(op, "the mean needs a positive count"));
    }
    let gpu = rec.gpu();
    require_f16_support(gpu, "f16 distillation", &[a.y])?;
    let r_count = a.r_hi - a.r_lo;
    // As many rows per workgroup (each state value read serves them all) as memory allows.
    let mem = gpu.limits.max_compute_workgroup_storage_size as usize;
    let qr = [8usize, 4, 2, 1]
        .into_iter()
        .find(|&qr| query_shared_bytes(qr, d, df) <= mem)
        .ok_or_else(|| crate::error::GpuError::OverLimit {
            what: format!("the distillation query pass at D = {d}, DF = {df}"),
            needed: query_shared_bytes(1, d, df) as u64,
            limit: mem as u64,
            limit_name: "max_compute_workgroup_storage_size",
        })?;
    let tiles = r_count.div_ceil(qr);
    let workgroups = folded_grid(gpu, tiles * h);
    let params = QueryParams {
        heads: h as u32,
        d: d as u32,
        df: df as u32,
        r_lo: a.r_lo as u32,
        r_count: r_count as u32,
        idx_lo: to_u32(op, a.idx_lo)?,
        mse: (a.loss == Loss::Mse) as u32,
        write_yhat: a.write_yhat as u32,
        grid_x: workgroups[0],
        tiles: tiles as u32,
        inv_count: 1.0 / a.count as f32,
        _pad1: 0,
    };
    let n = (r_count * h) as f64;
    let (dd, dff) = (d as f64, df as f64);
    rec.dispatch(Dispatch {
        shader: &DISTILL_QUERY,
        entry: "main",
        defines: query_defines(a.y.dtype(), qr, d, df),
        constants: vec![],
        params: ParamBytes::of(&params),
        tensors: &[
            a.idx, a.soft, a.y, a.fq, a.state, a.ud, a.dfq, a.parts, a.yhat,
        ],
        workgroups,
        label: format!("distill query pass {r_count}q x {h}h x {d} x {df}").into(),
        cost: Cost::new(
            n * 4.0 * dff * (dd + 1.0),
            n * (dd * 4.0 * 3.0 + dff * 8.0) + (tiles * h) as f64 * dff * (dd + 1.0) * 8.0,
        ),
    })
}

/// `shaders/distill_softmax.wgsl`.
pub static DISTILL_SOFTMAX: crate::shader::ShaderFile =
    crate::shader_file!("distill_softmax", softmax_variants);

/// `shaders/distill_softmax_tiled.wgsl`.
pub static DISTILL_SOFTMAX_TILED: crate::shader::ShaderFile =
    crate::shader_file!("distill_softmax_tiled", softmax_tiled_variants);

/// `shaders/distill_gather.wgsl`.
pub static DISTILL_GATHER: crate::shader::ShaderFile =
    crate::shader_file!("distill_gather", gather_variants);

/// `shaders/distill_query.wgsl`.
pub static DISTILL_QUERY: crate::shader::ShaderFile =
    crate::shader_file!("distill_query", query_variants);
