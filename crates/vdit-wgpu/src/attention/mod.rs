//! Attention kernels: softmax (flash-style), linear, hybrid and chunk-recurrent hybrid, exactly
//! as ARCHITECTURE.md, Attention modes writes them.
//!
//! Tensors: q `[Nq, H, D]`, k and v `[Nk, H, D]`, output `[Nq, H, D]`, all f32 or all f16;
//! arithmetic in f32. One entry, [`attention`], runs any [`AttentionMode`] with a workspace built
//! once per shape ([`AttentionWorkspace`]); the per-kernel launchers are public too:
//! - [`flash_attention`]: softmax over a strided key range, plus an optional linear term;
//!   softmax, the linear apply pass, hybrid and rehyat chunks all use it. It runs
//!   `attention_flash_coop.wgsl` on cooperative matrices where they fit (f16, head dim 128; two
//!   passes over the keys), else `attention_flash_vec.wgsl` (head dims up to 128) or
//!   `attention_flash.wgsl` (up to 512), both with an online softmax.
//! - [`softmax_attention`]: plain softmax; one head wider than 128 goes through [`explicit`]
//!   (scores in memory, two matmuls).
//! - [`feature_map`]: phi of hedgehog / poly / elu1 into an f32 buffer (`feature_map.wgsl`).
//! - [`linear_state`]: the chunked state update S = sum phi_k v^T, z = sum phi_k
//!   (`attention_state.wgsl`, two passes).
//!
//! Feature-map weight shapes (per head, f32 or f16, all of one type):
//! - hedgehog: `w [H, DF/2, D]`, `b [H, DF/2]`; phi = [softmax(W x + b), softmax(-(W x + b))].
//! - poly: `w1 [H, HID, D]`, `b1 [H, HID]`, `w2 [H, P*D1, HID]`, `b2 [H, P*D1]`, activation GELU
//!   (tanh form) between the layers; phi = [psi_1, psi_2^2, .., psi_P^P], DF = P*D1.
//! - elu1: no weights, DF = D.

pub mod explicit;
pub mod reference;
#[cfg(test)]
mod tests;

use bytemuck::{Pod, Zeroable};

use crate::error::{shape_err, GpuError, Result};
use crate::gpu::Gpu;
use crate::profiler::Cost;
use crate::recorder::{Dispatch, Recorder};
use crate::shader::{defines, Defines, ShaderFile};
use crate::tensor::{DType, Tensor};

/// The shader files of the attention kernels.
pub fn shaders() -> Vec<ShaderFile> {
    vec![
        crate::shader_file!("attention_flash", flash_variants),
        crate::shader_file!("attention_flash_vec", flash_vec_variants),
        crate::shader_file!("attention_flash_coop", flash_coop_variants),
        crate::shader_file!("attention_state", state_variants),
        crate::shader_file!("feature_map", feature_map_variants),
    ]
}

/// Which attention a layer runs (ARCHITECTURE.md, Attention modes).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum AttentionMode {
    Softmax,
    /// o = phi_q(q) S / (phi_q(q) z + eps).
    Linear {
        eps: f32,
    },
    /// Softmax over keys j % rate == 0, linear over the others, one shared normalizer.
    Hybrid {
        rate: u32,
    },
    /// Chunk-recurrent hybrid over latent frames of `frame_tokens` tokens: queries of chunk t
    /// (frames [t*tc, (t+1)*tc)) see softmax keys of frames [max(t*tc - to, 0), (t+1)*tc) and the
    /// linear state of all earlier frames. Self-attention only (Nq == Nk).
    Rehyat {
        chunk_frames: u32,
        overlap_frames: u32,
        frame_tokens: u32,
    },
}

impl AttentionMode {
    pub fn needs_features(&self) -> bool {
        match self {
            AttentionMode::Softmax => false,
            AttentionMode::Hybrid { rate } => *rate > 1,
            _ => true,
        }
    }

    pub fn name(&self) -> String {
        match self {
            AttentionMode::Softmax => "softmax".into(),
            AttentionMode::Linear { .. } => "linear".into(),
            AttentionMode::Hybrid { rate } => format!("hybrid R={rate}"),
            AttentionMode::Rehyat {
                chunk_frames,
                overlap_frames,
                ..
            } => format!("rehyat tc={chunk_frames} to={overlap_frames}"),
        }
    }
}

/// The epsilon of linear attention's denominator unless a caller picks another.
pub const LINEAR_EPS: f32 = 1e-6;

/// One feature map phi with its weights (shapes in the module docs).
#[derive(Clone, Debug)]
pub enum FeatureMap {
    Hedgehog {
        w: Tensor,
        b: Tensor,
    },
    Poly {
        w1: Tensor,
        b1: Tensor,
        w2: Tensor,
        b2: Tensor,
        /// P, the number of powers; DF = P * D1.
        powers: usize,
    },
    Elu1,
}

/// The kind of a feature map, without weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FeatureMapKind {
    Hedgehog,
    Poly,
    Elu1,
}

impl FeatureMap {
    pub fn kind(&self) -> FeatureMapKind {
        match self {
            FeatureMap::Hedgehog { .. } => FeatureMapKind::Hedgehog,
            FeatureMap::Poly { .. } => FeatureMapKind::Poly,
            FeatureMap::Elu1 => FeatureMapKind::Elu1,
        }
    }

    /// DF, the output size for inputs of size `d`.
    pub fn out_dim(&self, d: usize) -> usize {
        match self {
            FeatureMap::Hedgehog { w, .. } => 2 * w.shape().get(1).copied().unwrap_or(0),
            FeatureMap::Poly { w2, .. } => w2.shape().get(1).copied().unwrap_or(0),
            FeatureMap::Elu1 => d,
        }
    }

    /// Checks the weight shapes against `heads` and `d`; returns DF.
    pub fn validate(&self, heads: usize, d: usize) -> Result<usize> {
        let op = "feature_map";
        let want = |t: &Tensor, shape: &[usize], name: &str| -> Result<()> {
            if t.shape() != shape {
                return Err(shape_err(
                    op,
                    format!("{name} must be {shape:?}, got {:?}", t.shape()),
                ));
            }
            Ok(())
        };
        match self {
            FeatureMap::Hedgehog { w, b } => {
                let half = match w.shape() {
                    [hh, f, dd] if *hh == heads && *dd == d && *f > 0 => *f,
                    s => {
                        return Err(shape_err(
                            op,
                            format!("hedgehog w must be [{heads}, DF/2, {d}], got {s:?}"),
                        ))
                    }
                };
                want(b, &[heads, half], "hedgehog b")?;
                same_dtype(op, &[w, b])?;
                if half > 512 {
                    return Err(shape_err(op, "hedgehog DF/2 above 512 is not supported"));
                }
                Ok(2 * half)
            }
            FeatureMap::Poly {
                w1,
                b1,
                w2,
                b2,
                powers,
            } => {
                let hid = match w1.shape() {
                    [hh, c, dd] if *hh == heads && *dd == d && *c > 0 => *c,
                    s => {
                        return Err(shape_err(
                            op,
                            format!("poly w1 must be [{heads}, HID, {d}], got {s:?}"),
                        ))
                    }
                };
                want(b1, &[heads, hid], "poly b1")?;
                let df = match w2.shape() {
                    [hh, f, c] if *hh == heads && *c == hid && *f > 0 => *f,
                    s => {
                        return Err(shape_err(
                            op,
                            format!("poly w2 must be [{heads}, P*D1, {hid}], got {s:?}"),
                        ))
                    }
                };
                want(b2, &[heads, df], "poly b2")?;
                same_dtype(op, &[w1, b1, w2, b2])?;
                if *powers == 0 || df % powers != 0 {
                    return Err(shape_err(
                        op,
                        format!("poly output {df} is not a multiple of P = {powers}"),
                    ));
                }
                if hid > 1024 {
                    return Err(shape_err(
                        op,
                        "poly hidden size above 1024 is not supported",
                    ));
                }
                Ok(df)
            }
            FeatureMap::Elu1 => Ok(d),
        }
    }

    fn weights(&self) -> Vec<&Tensor> {
        match self {
            FeatureMap::Hedgehog { w, b } => vec![w, b],
            FeatureMap::Poly { w1, b1, w2, b2, .. } => vec![w1, b1, w2, b2],
            FeatureMap::Elu1 => vec![],
        }
    }
}

/// phi_q and phi_k of one layer; both must have the same DF.
#[derive(Clone, Debug)]
pub struct FeatureMapWeights {
    pub phi_q: FeatureMap,
    pub phi_k: FeatureMap,
}

impl FeatureMapWeights {
    /// Validates both maps; returns DF.
    pub fn validate(&self, heads: usize, d: usize) -> Result<usize> {
        let dq = self.phi_q.validate(heads, d)?;
        let dk = self.phi_k.validate(heads, d)?;
        if dq != dk {
            return Err(shape_err(
                "attention",
                format!("phi_q gives {dq} features but phi_k gives {dk}"),
            ));
        }
        Ok(dq)
    }
}

fn same_dtype(op: &'static str, ts: &[&Tensor]) -> Result<()> {
    if ts.windows(2).any(|w| w[0].dtype() != w[1].dtype()) {
        return Err(shape_err(
            op,
            format!("tensors must share one storage type: {ts:?}"),
        ));
    }
    Ok(())
}

fn need_f16(gpu: &Gpu, what: &str, ts: &[&Tensor]) -> Result<()> {
    if ts.iter().any(|t| t.dtype() == DType::F16) && !gpu.caps.shader_f16 {
        return Err(GpuError::MissingFeature(what.into(), "SHADER_F16"));
    }
    Ok(())
}

/// A flat grid of `n` workgroups folded into 2D when one dimension would exceed the limit.
fn fold_grid(gpu: &Gpu, n: usize) -> Result<([u32; 3], u32)> {
    let max = gpu.limits.max_compute_workgroups_per_dimension as usize;
    if n <= max {
        return Ok(([n as u32, 1, 1], n.max(1) as u32));
    }
    let y = n.div_ceil(max);
    if y > max {
        return Err(GpuError::OverLimit {
            what: "an attention grid".into(),
            needed: n as u64,
            limit: (max * max) as u64,
            limit_name: "max_compute_workgroups_per_dimension squared",
        });
    }
    let x = n.div_ceil(y);
    Ok(([x as u32, y as u32, 1], x as u32))
}

// ---------------------------------------------------------------------------------------------
// flash kernel

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct FlashParams {
    heads: u32,
    d: u32,
    df: u32,
    tiles: u32,
    q_lo: u32,
    q_count: u32,
    k_lo: u32,
    k_count: u32,
    k_stride: u32,
    grid_x: u32,
    phi_lo: u32,
    _pad0: u32,
    scale_log2: f32,
    eps: f32,
    q_rows: u32,
    _pad2: u32,
}

/// Tile shape of the flash kernel: 16 x `ty` threads, `rq` query rows per thread, `bk` keys per
/// tile, head dim padded to `dp`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlashTiles {
    pub ty: u32,
    pub rq: u32,
    pub bk: u32,
    pub dp: u32,
}

impl FlashTiles {
    pub fn bq(&self) -> u32 {
        self.ty * self.rq
    }
    /// Workgroup memory in bytes with `sh` bytes per staged element.
    pub fn shared_bytes(&self, sh: u32) -> u32 {
        (self.bq() + self.bk) * self.dp * sh + (self.bq() * self.bk + self.bq() * 16) * 4
    }
}

/// The largest tiles that fit the adapter's workgroup memory and invocation limits.
pub fn flash_tiles(gpu: &Gpu, d: usize, dtype: DType) -> Result<FlashTiles> {
    let dp = d.div_ceil(16).max(1) as u32 * 16;
    let sh = dtype.size() as u32;
    let mem = gpu.limits.max_compute_workgroup_storage_size;
    let inv = gpu.limits.max_compute_invocations_per_workgroup;
    let max_y = gpu.limits.max_compute_workgroup_size_y;
    const CANDIDATES: [(u32, u32, u32); 8] = [
        (16, 4, 32),
        (8, 4, 32),
        (8, 4, 16),
        (4, 4, 16),
        (4, 2, 16),
        (2, 2, 16),
        (1, 2, 16),
        (1, 1, 16),
    ];
    CANDIDATES
        .iter()
        .map(|&(ty, rq, bk)| FlashTiles { ty, rq, bk, dp })
        .find(|t| t.shared_bytes(sh) <= mem && 16 * t.ty <= inv && t.ty <= max_y)
        .ok_or_else(|| GpuError::OverLimit {
            what: format!("attention with head dim {d} ({dtype})"),
            needed: FlashTiles {
                ty: 1,
                rq: 1,
                bk: 16,
                dp,
            }
            .shared_bytes(sh) as u64,
            limit: mem as u64,
            limit_name: "max_compute_workgroup_storage_size",
        })
}

fn flash_defines(dtype: DType, t: &FlashTiles, linear: bool) -> Defines {
    let mut d = defines(&[
        ("IO_T", dtype.wgsl().to_string()),
        ("SH_T", dtype.wgsl().to_string()),
        ("DP", format!("{}u", t.dp)),
        ("TY", format!("{}u", t.ty)),
        ("RQ", format!("{}u", t.rq)),
        ("BK", format!("{}u", t.bk)),
        ("QS_SIZE", (t.bq() * t.dp).to_string()),
        ("KV_SIZE", (t.bk * t.dp).to_string()),
        ("PS_SIZE", (t.bq() * t.bk).to_string()),
        ("RED_SIZE", (t.bq() * 16).to_string()),
    ]);
    if linear {
        d.insert("HAS_LINEAR".into(), "1".into());
    }
    d
}

/// The define sets the portability test compiles.
pub fn flash_variants() -> Vec<Defines> {
    let mut v = Vec::new();
    for dtype in [DType::F32, DType::F16] {
        for (ty, rq, bk, dp) in [
            (16, 4, 32, 128),
            (8, 4, 32, 128),
            (8, 4, 16, 64),
            (2, 2, 16, 384),
            (1, 1, 16, 48),
        ] {
            for linear in [false, true] {
                v.push(flash_defines(dtype, &FlashTiles { ty, rq, bk, dp }, linear));
            }
        }
    }
    v
}

/// Tile shape of the vectorised flash kernel (head dims up to 128): DP / 8 x `ty` threads,
/// 4 query rows per thread, 2 * DP / 8 keys per tile, head dim padded to `dp` (a multiple of 8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlashVecTiles {
    pub ty: u32,
    pub dp: u32,
}

impl FlashVecTiles {
    pub fn tx(&self) -> u32 {
        self.dp / 8
    }
    pub fn bq(&self) -> u32 {
        4 * self.ty
    }
    pub fn bk(&self) -> u32 {
        2 * self.tx()
    }
    /// Element counts of the workgroup arrays: (qs vec4, kt vec2, vs vec4, ps vec4, red vec4).
    fn sizes(&self) -> [u32; 5] {
        [
            self.dp * self.ty,
            self.dp * self.tx(),
            self.bk() * self.dp / 4,
            self.bk() * self.ty,
            self.tx() * self.ty,
        ]
    }
    pub fn shared_bytes(&self, sh: u32) -> u32 {
        let [qs, kt, vs, ps, red] = self.sizes();
        qs * 4 * sh + kt * 2 * sh + vs * 4 * sh + (ps + red) * 16
    }
}

/// The vectorised kernel's tiles for this head dim, when it has some that fit the adapter.
pub fn flash_vec_tiles(gpu: &Gpu, d: usize, dtype: DType) -> Option<FlashVecTiles> {
    let dp = d.div_ceil(8).max(1) as u32 * 8;
    if dp > 128 {
        return None;
    }
    let sh = dtype.size() as u32;
    let mem = gpu.limits.max_compute_workgroup_storage_size;
    let inv = gpu.limits.max_compute_invocations_per_workgroup.min(256);
    let (max_x, max_y) = (
        gpu.limits.max_compute_workgroup_size_x,
        gpu.limits.max_compute_workgroup_size_y,
    );
    [32u32, 16, 8, 4, 2, 1]
        .into_iter()
        .map(|ty| FlashVecTiles { ty, dp })
        .find(|t| {
            t.shared_bytes(sh) <= mem && t.tx() * t.ty <= inv && t.tx() <= max_x && t.ty <= max_y
        })
}

fn flash_vec_defines(dtype: DType, t: &FlashVecTiles, linear: bool) -> Defines {
    let [qs, kt, vs, ps, red] = t.sizes();
    let mut d = defines(&[
        ("IO_T", dtype.wgsl().to_string()),
        ("SH_T", dtype.wgsl().to_string()),
        ("DP", format!("{}u", t.dp)),
        ("TY", format!("{}u", t.ty)),
        ("QS_SIZE", qs.to_string()),
        ("KT_SIZE", kt.to_string()),
        ("VS_SIZE", vs.to_string()),
        ("PS_SIZE", ps.to_string()),
        ("RED_SIZE", red.to_string()),
    ]);
    if linear {
        d.insert("HAS_LINEAR".into(), "1".into());
    }
    d
}

/// The define sets of the vectorised kernel the portability test compiles.
pub fn flash_vec_variants() -> Vec<Defines> {
    let mut v = Vec::new();
    for dtype in [DType::F32, DType::F16] {
        for (ty, dp) in [(16, 128), (8, 128), (4, 128), (32, 64), (16, 64), (8, 40)] {
            for linear in [false, true] {
                v.push(flash_vec_defines(dtype, &FlashVecTiles { ty, dp }, linear));
            }
        }
    }
    v
}

/// Layouts of `attention_flash_coop.wgsl`: 4 subgroups with Q staged in workgroup memory, or
/// (`wide`) 8 subgroups sharing each key tile with Q read straight from the buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FlashCoopLayout {
    wide: bool,
}

impl FlashCoopLayout {
    /// The default (wide), or `VDIT_FLASH_COOP` (`wide` or `narrow`) to compare them; read once.
    fn chosen() -> Self {
        static CHOSEN: std::sync::OnceLock<FlashCoopLayout> = std::sync::OnceLock::new();
        #[cfg(test)]
        if let Some(forced) = tests::FORCED_FLASH_LAYOUT.get() {
            return forced;
        }
        *CHOSEN.get_or_init(|| match std::env::var("VDIT_FLASH_COOP").as_deref() {
            Ok("narrow") => Self { wide: false },
            Ok("wide") | Err(_) => Self { wide: true },
            Ok(other) => {
                log::warn!("VDIT_FLASH_COOP={other}: expected wide or narrow; using wide");
                Self { wide: true }
            }
        })
    }
    fn subgroups(&self) -> u32 {
        if self.wide {
            8
        } else {
            4
        }
    }
    fn bq(&self) -> u32 {
        16 * self.subgroups()
    }
    /// Workgroup memory in bytes: staged Q (narrow only), K and V tiles of 32 x 136 halves,
    /// per-subgroup scores (f32) and probabilities (f16), per-lane statistics, denominators.
    fn shared_bytes(&self) -> u32 {
        let q = if self.wide { 0 } else { self.bq() * 136 * 2 };
        let s = self.subgroups();
        q + 2 * 32 * 136 * 2 + s * 512 * (4 + 2) + 2 * 32 * s * 4 + self.bq() * 4
    }
}

/// Whether the cooperative-matrix kernel can run this attention: f16, head dim 128, some
/// softmax keys, 16x16 f16 cooperative matrices, subgroups of exactly 32, enough workgroup memory.
/// The wide layout also needs at least 16 query rows.
fn flash_coop_fits(
    gpu: &Gpu,
    d: usize,
    dtype: DType,
    nq: usize,
    k_count: usize,
) -> Option<FlashCoopLayout> {
    let caps = &gpu.caps;
    let usable = caps.coop_f16_16x16()
        && caps.subgroup_min_size == 32
        && caps.subgroup_max_size == 32
        && dtype == DType::F16
        && d == 128
        && k_count > 0;
    if !usable {
        return None;
    }
    let fits = |l: &FlashCoopLayout| {
        gpu.limits.max_compute_workgroup_storage_size >= l.shared_bytes()
            && gpu.limits.max_compute_invocations_per_workgroup >= 32 * l.subgroups()
            && (!l.wide || nq >= 16)
    };
    let chosen = FlashCoopLayout::chosen();
    [chosen, FlashCoopLayout { wide: false }]
        .into_iter()
        .find(fits)
}

fn flash_coop_defines(layout: FlashCoopLayout, linear: bool) -> Defines {
    let mut d = defines(&[("IO_T", "f16")]);
    if linear {
        d.insert("HAS_LINEAR".into(), "1".into());
    }
    if layout.wide {
        d.insert("WIDE_Q".into(), "1".into());
    }
    d
}

/// The define sets of the cooperative-matrix kernel the portability test compiles.
pub fn flash_coop_variants() -> Vec<Defines> {
    let mut v = Vec::new();
    for wide in [false, true] {
        for linear in [false, true] {
            v.push(flash_coop_defines(FlashCoopLayout { wide }, linear));
        }
    }
    v
}

/// The linear term of [`flash_attention`]: phi_q rows and the (S | z) state.
#[derive(Clone, Copy, Debug)]
pub struct LinearTerm<'a> {
    /// `[rows, H, DF]` f32; query i reads row `i - phi_lo`.
    pub phi_q: &'a Tensor,
    pub phi_lo: usize,
    /// `[H, DF, D + 1]` f32: S in columns 0..D, z in column D.
    pub state: &'a Tensor,
    /// Added to the denominator (linear attention's eps; 0 for the hybrids).
    pub eps: f32,
}

/// What [`flash_attention`] computes: queries `q_lo .. q_lo + q_count`, softmax keys
/// `k_lo + t * k_stride` for `t < k_count`, and an optional linear term.
#[derive(Clone, Copy, Debug)]
pub struct FlashArgs<'a> {
    pub scale: f32,
    pub q_lo: usize,
    pub q_count: usize,
    pub k_lo: usize,
    pub k_count: usize,
    pub k_stride: usize,
    pub linear: Option<LinearTerm<'a>>,
}

impl<'a> FlashArgs<'a> {
    /// Plain softmax attention of all queries over all keys.
    pub fn softmax(scale: f32, nq: usize, nk: usize) -> Self {
        Self {
            scale,
            q_lo: 0,
            q_count: nq,
            k_lo: 0,
            k_count: nk,
            k_stride: 1,
            linear: None,
        }
    }
}

/// `(nq, nk, heads, d)` of q/k/v/out, checked.
fn qkv_shape(
    op: &'static str,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    out: &Tensor,
) -> Result<[usize; 4]> {
    let [nq, h, d] = match q.shape() {
        [a, b, c] => [*a, *b, *c],
        s => return Err(shape_err(op, format!("q must be [Nq, H, D], got {s:?}"))),
    };
    let nk = match k.shape() {
        [a, b, c] if *b == h && *c == d => *a,
        s => {
            return Err(shape_err(
                op,
                format!(
                    "k must be [Nk, {h}, {d}] to match q {:?}, got {s:?}",
                    q.shape()
                ),
            ))
        }
    };
    if v.shape() != k.shape() {
        return Err(shape_err(
            op,
            format!("v must match k {:?}, got {:?}", k.shape(), v.shape()),
        ));
    }
    if out.shape() != q.shape() {
        return Err(shape_err(
            op,
            format!("out must match q {:?}, got {:?}", q.shape(), out.shape()),
        ));
    }
    same_dtype(op, &[q, k, v, out])?;
    if h == 0 || d == 0 {
        return Err(shape_err(op, "heads and head dim must be positive"));
    }
    if d > 512 {
        return Err(shape_err(
            op,
            format!("head dim {d} above 512 is not supported"),
        ));
    }
    Ok([nq, nk, h, d])
}

/// Records the fused attention kernel (see [`FlashArgs`]). `out` rows outside the query range
/// are left untouched.
pub fn flash_attention(
    rec: &mut Recorder,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    out: &Tensor,
    args: &FlashArgs,
) -> Result<()> {
    #[cfg(test)]
    if tests::FORCE_PORTABLE.get() {
        return flash_attention_on(rec, q, k, v, out, args, false);
    }
    flash_attention_on(rec, q, k, v, out, args, true)
}

/// [`flash_attention`], with the cooperative-matrix kernel allowed or not (tests run both).
pub(crate) fn flash_attention_on(
    rec: &mut Recorder,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    out: &Tensor,
    args: &FlashArgs,
    allow_coop: bool,
) -> Result<()> {
    let op = "flash_attention";
    let [nq, nk, h, d] = qkv_shape(op, q, k, v, out)?;
    if args.q_lo + args.q_count > nq {
        return Err(shape_err(
            op,
            format!(
                "queries {}..{} past Nq = {nq}",
                args.q_lo,
                args.q_lo + args.q_count
            ),
        ));
    }
    if args.k_count > 0 {
        let last = args.k_lo + (args.k_count - 1) * args.k_stride.max(1);
        if last >= nk {
            return Err(shape_err(op, format!("softmax key {last} past Nk = {nk}")));
        }
    }
    let mut df = 0;
    if let Some(lin) = &args.linear {
        df = match lin.state.shape() {
            [hh, f, c] if *hh == h && *c == d + 1 && *f > 0 => *f,
            s => {
                return Err(shape_err(
                    op,
                    format!("the state must be [{h}, DF, {}], got {s:?}", d + 1),
                ))
            }
        };
        let rows = match lin.phi_q.shape() {
            [r, hh, f] if *hh == h && *f == df => *r,
            s => {
                return Err(shape_err(
                    op,
                    format!("phi_q must be [rows, {h}, {df}], got {s:?}"),
                ))
            }
        };
        if args.q_count > 0
            && (args.q_lo < lin.phi_lo || args.q_lo + args.q_count - lin.phi_lo > rows)
        {
            return Err(shape_err(
                op,
                format!(
                    "phi_q rows {}..{} do not cover queries {}..{}",
                    lin.phi_lo,
                    lin.phi_lo + rows,
                    args.q_lo,
                    args.q_lo + args.q_count
                ),
            ));
        }
        if lin.state.dtype() != DType::F32 || lin.phi_q.dtype() != DType::F32 {
            return Err(shape_err(op, "phi_q and the state must be f32"));
        }
    } else if args.k_count == 0 && args.q_count > 0 {
        return Err(shape_err(
            op,
            "no softmax keys and no linear term: nothing to attend to",
        ));
    }
    let gpu = rec.gpu();
    need_f16(gpu, "f16 attention", &[q])?;
    let linear = args.linear.is_some();
    // Tensor cores where they fit, else the vectorised kernel, else the general one (any head
    // dim up to 512).
    let coop_layout = flash_coop_fits(gpu, d, q.dtype(), nq, args.k_count).filter(|_| allow_coop);
    let coop = coop_layout.is_some();
    let (shader, defines, bq) = match (coop_layout, flash_vec_tiles(gpu, d, q.dtype())) {
        (Some(layout), _) => (
            "attention_flash_coop",
            flash_coop_defines(layout, linear),
            layout.bq(),
        ),
        (None, Some(t)) if std::env::var_os("VDIT_ATTENTION_GENERAL").is_none() => (
            "attention_flash_vec",
            flash_vec_defines(q.dtype(), &t, linear),
            t.bq(),
        ),
        _ => {
            let t = flash_tiles(gpu, d, q.dtype())?;
            (
                "attention_flash",
                flash_defines(q.dtype(), &t, linear),
                t.bq(),
            )
        }
    };
    let ntiles = args.q_count.div_ceil(bq as usize);
    let (workgroups, grid_x) = fold_grid(gpu, ntiles * h)?;
    let params = FlashParams {
        heads: h as u32,
        d: d as u32,
        df: df as u32,
        tiles: ntiles as u32,
        q_lo: args.q_lo as u32,
        q_count: args.q_count as u32,
        k_lo: args.k_lo as u32,
        k_count: args.k_count as u32,
        k_stride: args.k_stride.max(1) as u32,
        grid_x,
        phi_lo: args.linear.map(|l| l.phi_lo as u32).unwrap_or(0),
        _pad0: 0,
        scale_log2: args.scale * std::f32::consts::LOG2_E,
        eps: args.linear.map(|l| l.eps).unwrap_or(0.0),
        q_rows: nq as u32,
        _pad2: 0,
    };
    let mut tensors: Vec<&Tensor> = vec![q, k, v];
    if let Some(lin) = &args.linear {
        tensors.push(lin.phi_q);
        tensors.push(lin.state);
    }
    tensors.push(out);
    let (qn, kn, hf, df_f, dd) = (
        args.q_count as f64,
        args.k_count as f64,
        h as f64,
        df as f64,
        d as f64,
    );
    let el = q.dtype().size() as f64;
    let flops = hf * (4.0 * qn * kn * dd + 2.0 * qn * df_f * (dd + 1.0));
    let bytes = hf * (2.0 * qn * dd * el + 2.0 * kn * dd * el + qn * df_f * 4.0);
    let what = match (args.k_count > 0, args.linear.is_some()) {
        (true, false) => "softmax",
        (true, true) => "hybrid",
        _ => "linear apply",
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
            "attention {what}{} {}q x {}k x {h}h x {d} {}",
            if coop { " coop" } else { "" },
            args.q_count,
            args.k_count,
            q.dtype()
        )
        .into(),
        cost: Cost::new(flops, bytes),
    })
}

/// Softmax attention of all queries over all keys (also cross-attention, Nq != Nk). One head
/// wider than 128 goes through explicit scores ([`explicit`]), the rest through the flash kernels.
pub fn softmax_attention(
    rec: &mut Recorder,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f32,
    out: &Tensor,
) -> Result<()> {
    let [nq, nk, h, d] = qkv_shape("softmax_attention", q, k, v, out)?;
    if explicit::takes(rec.gpu(), nq, nk, h, d, q.dtype()) {
        return explicit::explicit_attention(rec, q, k, v, scale, out);
    }
    flash_attention(rec, q, k, v, out, &FlashArgs::softmax(scale, nq, nk))
}

// ---------------------------------------------------------------------------------------------
// feature maps

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct FeatureParams {
    heads: u32,
    d: u32,
    df: u32,
    hid: u32,
    tok_lo: u32,
    tok_count: u32,
    d1: u32,
    tiles: u32,
    grid_x: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

fn feature_defines(
    kind: FeatureMapKind,
    x: DType,
    w: DType,
    tt: usize,
    xs: usize,
    hs: usize,
) -> Defines {
    let mut d = defines(&[
        ("IO_T", x.wgsl().to_string()),
        ("W_T", w.wgsl().to_string()),
        ("TT", format!("{tt}u")),
        ("XS_SIZE", xs.max(1).to_string()),
        ("HS_SIZE", hs.max(1).to_string()),
    ]);
    let flag = match kind {
        FeatureMapKind::Hedgehog => "HEDGEHOG",
        FeatureMapKind::Poly => "POLY",
        FeatureMapKind::Elu1 => "ELU1",
    };
    d.insert(flag.into(), "1".into());
    d
}

pub fn feature_map_variants() -> Vec<Defines> {
    let mut v = Vec::new();
    for x in [DType::F32, DType::F16] {
        for w in [DType::F32, DType::F16] {
            v.push(feature_defines(
                FeatureMapKind::Hedgehog,
                x,
                w,
                8,
                8 * 128,
                8 * 64,
            ));
            v.push(feature_defines(
                FeatureMapKind::Poly,
                x,
                w,
                8,
                8 * 128,
                8 * 256,
            ));
        }
        v.push(feature_defines(FeatureMapKind::Elu1, x, x, 8, 0, 0));
    }
    v
}

/// Records phi of tokens `tok_lo .. tok_lo + tok_count` of `x` `[rows, H, D]` into `out`
/// `[>= tok_count, H, DF]` f32 (token `tok_lo + t` lands in row `t`).
pub fn feature_map(
    rec: &mut Recorder,
    fm: &FeatureMap,
    x: &Tensor,
    tok_lo: usize,
    tok_count: usize,
    out: &Tensor,
) -> Result<()> {
    let op = "feature_map";
    let [rows, h, d] = match x.shape() {
        [a, b, c] => [*a, *b, *c],
        s => return Err(shape_err(op, format!("x must be [N, H, D], got {s:?}"))),
    };
    let df = fm.validate(h, d)?;
    if tok_lo + tok_count > rows {
        return Err(shape_err(
            op,
            format!("tokens {tok_lo}..{} past {rows} rows", tok_lo + tok_count),
        ));
    }
    match out.shape() {
        [r, hh, f] if *r >= tok_count && *hh == h && *f == df && out.dtype() == DType::F32 => {}
        s => {
            return Err(shape_err(
                op,
                format!(
                    "out must be f32 [>= {tok_count}, {h}, {df}], got {s:?} {}",
                    out.dtype()
                ),
            ))
        }
    }
    let weights = fm.weights();
    let gpu = rec.gpu();
    let mut all = weights.clone();
    all.push(x);
    need_f16(gpu, "an f16 feature map", &all)?;
    let wdt = weights.first().map(|w| w.dtype()).unwrap_or(x.dtype());
    let hid = match fm {
        FeatureMap::Poly { w1, .. } => w1.shape()[1],
        FeatureMap::Hedgehog { .. } => df / 2,
        FeatureMap::Elu1 => 0,
    };
    let d1 = match fm {
        FeatureMap::Poly { powers, .. } => df / powers,
        _ => df,
    };
    let mem = gpu.limits.max_compute_workgroup_storage_size as usize;
    let kind = fm.kind();
    let tt = [16usize, 8, 4, 2, 1]
        .into_iter()
        .find(|&tt| kind == FeatureMapKind::Elu1 || tt * (d + hid + 2) * 4 + 256 <= mem)
        .ok_or_else(|| GpuError::OverLimit {
            what: format!("a feature map of {d} -> {hid} values"),
            needed: ((d + hid) * 4 + 256) as u64,
            limit: mem as u64,
            limit_name: "max_compute_workgroup_storage_size",
        })?;
    let (xs, hs) = match kind {
        FeatureMapKind::Elu1 => (0, 0),
        _ => (tt * (d + 1), tt * (hid + 1)),
    };
    let ntiles = tok_count.div_ceil(tt);
    let (workgroups, grid_x) = fold_grid(gpu, ntiles * h)?;
    let params = FeatureParams {
        heads: h as u32,
        d: d as u32,
        df: df as u32,
        hid: hid as u32,
        tok_lo: tok_lo as u32,
        tok_count: tok_count as u32,
        d1: d1 as u32,
        tiles: ntiles as u32,
        grid_x,
        _pad0: 0,
        _pad1: 0,
        _pad2: 0,
    };
    let mut tensors = vec![x];
    tensors.extend(weights);
    tensors.push(out);
    let n = tok_count as f64 * h as f64;
    let flops = n * match kind {
        FeatureMapKind::Hedgehog => 2.0 * d as f64 * hid as f64 + 4.0 * df as f64,
        FeatureMapKind::Poly => 2.0 * (d * hid + hid * df) as f64,
        FeatureMapKind::Elu1 => d as f64,
    };
    rec.dispatch(Dispatch {
        shader: "feature_map",
        entry: "main",
        defines: feature_defines(kind, x.dtype(), wdt, tt, xs, hs),
        constants: vec![],
        params: bytemuck::bytes_of(&params),
        tensors: &tensors,
        workgroups,
        label: format!("feature map {kind:?} {tok_count} x {h}h x {d}->{df}").into(),
        cost: Cost::new(
            flops,
            n * (d as f64 * x.dtype().size() as f64 + df as f64 * 4.0),
        ),
    })
}

// ---------------------------------------------------------------------------------------------
// linear state

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct StateParams {
    heads: u32,
    d: u32,
    df: u32,
    chunk: u32,
    k_lo: u32,
    k_hi: u32,
    rate: u32,
    phi_lo: u32,
    ftiles: u32,
    etiles: u32,
    nchunks: u32,
    grid_x: u32,
    accumulate: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

fn state_defines(v: DType) -> Defines {
    defines(&[("IO_T", v.wgsl())])
}

pub fn state_variants() -> Vec<Defines> {
    vec![state_defines(DType::F32), state_defines(DType::F16)]
}

/// Keys per chunk of the state's first pass: enough chunks to fill a large GPU, at most
/// `max_chunks` of them.
pub fn state_chunk(keys: usize, max_chunks: usize) -> usize {
    let chunks = keys.div_ceil(256).clamp(1, max_chunks.max(1));
    keys.div_ceil(chunks).max(1).div_ceil(16) * 16
}

/// The (S | z) state over keys `k_lo .. k_hi`, skipping `j % exclude_rate == 0` when
/// `exclude_rate > 1`. `phi_k`: `[rows, H, DF]` f32 with key j in row `j - phi_lo`; `v`:
/// `[Nk, H, D]`; `partial`: `[chunks, H, DF, D + 1]` f32 scratch; `state`: `[H, DF, D + 1]` f32,
/// overwritten, or added to when `accumulate`.
#[allow(clippy::too_many_arguments)]
pub fn linear_state(
    rec: &mut Recorder,
    phi_k: &Tensor,
    phi_lo: usize,
    v: &Tensor,
    k_lo: usize,
    k_hi: usize,
    exclude_rate: usize,
    partial: &Tensor,
    state: &Tensor,
    accumulate: bool,
) -> Result<()> {
    let op = "linear_state";
    let [nk, h, d] = match v.shape() {
        [a, b, c] => [*a, *b, *c],
        s => return Err(shape_err(op, format!("v must be [Nk, H, D], got {s:?}"))),
    };
    let df = match state.shape() {
        [hh, f, c] if *hh == h && *c == d + 1 && *f > 0 => *f,
        s => {
            return Err(shape_err(
                op,
                format!("the state must be [{h}, DF, {}], got {s:?}", d + 1),
            ))
        }
    };
    let rows = match phi_k.shape() {
        [r, hh, f] if *hh == h && *f == df => *r,
        s => {
            return Err(shape_err(
                op,
                format!("phi_k must be [rows, {h}, {df}], got {s:?}"),
            ))
        }
    };
    let max_chunks = match partial.shape() {
        [c, hh, f, e] if *hh == h && *f == df && *e == d + 1 && *c > 0 => *c,
        s => {
            return Err(shape_err(
                op,
                format!("partial must be [chunks, {h}, {df}, {}], got {s:?}", d + 1),
            ))
        }
    };
    if k_hi > nk || k_lo > k_hi {
        return Err(shape_err(
            op,
            format!("keys {k_lo}..{k_hi} outside 0..{nk}"),
        ));
    }
    if k_hi > k_lo && (k_lo < phi_lo || k_hi - phi_lo > rows) {
        return Err(shape_err(
            op,
            format!(
                "phi_k rows {phi_lo}..{} do not cover keys {k_lo}..{k_hi}",
                phi_lo + rows
            ),
        ));
    }
    if [phi_k, partial, state]
        .iter()
        .any(|t| t.dtype() != DType::F32)
    {
        return Err(shape_err(op, "phi_k, partial and state must be f32"));
    }
    let gpu = rec.gpu();
    need_f16(gpu, "an f16 linear state", &[v])?;
    let keys = k_hi - k_lo;
    let chunk = state_chunk(keys, max_chunks);
    let nchunks = keys.div_ceil(chunk).max(1);
    let (ftiles, etiles) = (df.div_ceil(64), d.div_ceil(64));
    let (wg1, gx1) = fold_grid(gpu, nchunks * ftiles * etiles * h)?;
    let total = h * df * (d + 1);
    let (wg2, gx2) = fold_grid(gpu, total.div_ceil(256))?;
    let mut params = StateParams {
        heads: h as u32,
        d: d as u32,
        df: df as u32,
        chunk: chunk as u32,
        k_lo: k_lo as u32,
        k_hi: k_hi as u32,
        rate: exclude_rate as u32,
        phi_lo: phi_lo as u32,
        ftiles: ftiles as u32,
        etiles: etiles as u32,
        nchunks: nchunks as u32,
        grid_x: gx1,
        accumulate: accumulate as u32,
        _pad0: 0,
        _pad1: 0,
        _pad2: 0,
    };
    let tensors = [phi_k, v, partial, state];
    let (kf, hf, dff, dd) = (keys as f64, h as f64, df as f64, d as f64);
    rec.dispatch(Dispatch {
        shader: "attention_state",
        entry: "partial_main",
        defines: state_defines(v.dtype()),
        constants: vec![],
        params: bytemuck::bytes_of(&params),
        tensors: &tensors,
        workgroups: wg1,
        label: format!("linear state {keys}k x {h}h {df}x{d}").into(),
        cost: Cost::new(
            2.0 * kf * hf * dff * (dd + 1.0),
            kf * hf * (dff * 4.0 + dd * v.dtype().size() as f64)
                + nchunks as f64 * total as f64 * 4.0,
        ),
    })?;
    params.grid_x = gx2;
    rec.dispatch(Dispatch {
        shader: "attention_state",
        entry: "reduce_main",
        defines: state_defines(v.dtype()),
        constants: vec![],
        params: bytemuck::bytes_of(&params),
        tensors: &tensors,
        workgroups: wg2,
        label: format!("linear state reduce {nchunks}c x {h}h {df}x{d}").into(),
        cost: Cost::new(
            nchunks as f64 * total as f64,
            (nchunks as f64 + 2.0) * total as f64 * 4.0,
        ),
    })
}

// ---------------------------------------------------------------------------------------------
// the entry

/// At most this many partial states per head in the state's first pass.
const MAX_STATE_CHUNKS: usize = 32;

/// Buffers a mode needs for one shape, built once and reused by every call of that shape.
pub struct AttentionWorkspace {
    mode: AttentionMode,
    shape: [usize; 4],
    df: usize,
    phi_q: Option<Tensor>,
    phi_k: Option<Tensor>,
    partial: Option<Tensor>,
    state: Option<Tensor>,
}

impl std::fmt::Debug for AttentionWorkspace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "AttentionWorkspace({:?}, nq/nk/h/d {:?}, df {}, {} bytes)",
            self.mode,
            self.shape,
            self.df,
            self.bytes()
        )
    }
}

impl AttentionWorkspace {
    /// Sizes the buffers of `mode` for q `[nq, heads, d]`, k/v `[nk, heads, d]` and feature
    /// dimension `df` (ignored by softmax). Rehyat's buffers hold one chunk, whatever the length.
    pub fn new(
        gpu: &Gpu,
        mode: &AttentionMode,
        nq: usize,
        nk: usize,
        heads: usize,
        d: usize,
        df: usize,
    ) -> Result<Self> {
        let mut ws = Self {
            mode: *mode,
            shape: [nq, nk, heads, d],
            df,
            phi_q: None,
            phi_k: None,
            partial: None,
            state: None,
        };
        if !mode.needs_features() {
            return Ok(ws);
        }
        if df == 0 {
            return Err(shape_err(
                "attention workspace",
                "the feature dimension must be positive",
            ));
        }
        let (q_rows, k_rows) = match *mode {
            AttentionMode::Rehyat {
                chunk_frames,
                frame_tokens,
                ..
            } => {
                let c = (chunk_frames as usize * frame_tokens as usize).max(1);
                (c.min(nq.max(1)), c.min(nk.max(1)))
            }
            _ => (nq.max(1), nk.max(1)),
        };
        let chunks = k_rows.div_ceil(state_chunk(k_rows, MAX_STATE_CHUNKS));
        ws.phi_q = Some(Tensor::empty(gpu, &[q_rows, heads, df], DType::F32)?);
        ws.phi_k = Some(Tensor::empty(gpu, &[k_rows, heads, df], DType::F32)?);
        ws.partial = Some(Tensor::empty(gpu, &[chunks, heads, df, d + 1], DType::F32)?);
        ws.state = Some(Tensor::empty(gpu, &[heads, df, d + 1], DType::F32)?);
        Ok(ws)
    }

    /// Bytes held on the GPU.
    pub fn bytes(&self) -> u64 {
        [&self.phi_q, &self.phi_k, &self.partial, &self.state]
            .iter()
            .filter_map(|t| t.as_ref().map(|t| t.bytes()))
            .sum()
    }

    /// The (S | z) state `[H, DF, D + 1]` after the last call (for tests and inspection).
    pub fn state(&self) -> Option<&Tensor> {
        self.state.as_ref()
    }
}

/// Records attention of `mode` with score scale `scale` (1/sqrt(D) for the DiT, 1 for umT5).
/// q `[Nq, H, D]`, k/v `[Nk, H, D]`, out `[Nq, H, D]`; `features` for every mode but softmax
/// (and hybrid with rate 1); `ws` built for this mode and shape.
#[allow(clippy::too_many_arguments)]
pub fn attention(
    rec: &mut Recorder,
    mode: &AttentionMode,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f32,
    features: Option<&FeatureMapWeights>,
    out: &Tensor,
    ws: &AttentionWorkspace,
) -> Result<()> {
    let op = "attention";
    let [nq, nk, h, d] = qkv_shape(op, q, k, v, out)?;
    if ws.mode != *mode || ws.shape != [nq, nk, h, d] {
        return Err(shape_err(
            op,
            format!(
                "the workspace was built for {:?} with nq/nk/h/d {:?}, called with {mode:?} {:?}",
                ws.mode,
                ws.shape,
                [nq, nk, h, d]
            ),
        ));
    }
    if nq == 0 {
        return Ok(());
    }
    if nk == 0 {
        return Err(shape_err(op, "no keys"));
    }
    let feats = if mode.needs_features() {
        let f = features
            .ok_or_else(|| shape_err(op, format!("{} needs feature-map weights", mode.name())))?;
        let df = f.validate(h, d)?;
        if df != ws.df {
            return Err(shape_err(
                op,
                format!("the workspace holds {} features, the maps give {df}", ws.df),
            ));
        }
        Some(f)
    } else {
        None
    };
    let bufs = || {
        (
            ws.phi_q.as_ref().unwrap(),
            ws.phi_k.as_ref().unwrap(),
            ws.partial.as_ref().unwrap(),
            ws.state.as_ref().unwrap(),
        )
    };
    match *mode {
        AttentionMode::Softmax | AttentionMode::Hybrid { rate: 0 | 1 } => {
            softmax_attention(rec, q, k, v, scale, out)
        }
        AttentionMode::Linear { eps } => {
            let f = feats.unwrap();
            let (pq, pk, partial, state) = bufs();
            feature_map(rec, &f.phi_k, k, 0, nk, pk)?;
            linear_state(rec, pk, 0, v, 0, nk, 0, partial, state, false)?;
            feature_map(rec, &f.phi_q, q, 0, nq, pq)?;
            let linear = Some(LinearTerm {
                phi_q: pq,
                phi_lo: 0,
                state,
                eps,
            });
            flash_attention(
                rec,
                q,
                k,
                v,
                out,
                &FlashArgs {
                    scale,
                    q_lo: 0,
                    q_count: nq,
                    k_lo: 0,
                    k_count: 0,
                    k_stride: 1,
                    linear,
                },
            )
        }
        AttentionMode::Hybrid { rate } => {
            let rate = rate as usize;
            let f = feats.unwrap();
            let (pq, pk, partial, state) = bufs();
            feature_map(rec, &f.phi_k, k, 0, nk, pk)?;
            linear_state(rec, pk, 0, v, 0, nk, rate, partial, state, false)?;
            feature_map(rec, &f.phi_q, q, 0, nq, pq)?;
            flash_attention(
                rec,
                q,
                k,
                v,
                out,
                &FlashArgs {
                    scale,
                    q_lo: 0,
                    q_count: nq,
                    k_lo: 0,
                    k_count: nk.div_ceil(rate),
                    k_stride: rate,
                    linear: Some(LinearTerm {
                        phi_q: pq,
                        phi_lo: 0,
                        state,
                        eps: 0.0,
                    }),
                },
            )
        }
        AttentionMode::Rehyat {
            chunk_frames,
            overlap_frames,
            frame_tokens,
        } => {
            if nq != nk {
                return Err(shape_err(op, "rehyat is self-attention: Nq must equal Nk"));
            }
            if chunk_frames == 0 || frame_tokens == 0 {
                return Err(shape_err(
                    op,
                    "rehyat needs chunk_frames and frame_tokens > 0",
                ));
            }
            let f = feats.unwrap();
            let (pq, pk, partial, state) = bufs();
            let (tc, to, ft) = (
                chunk_frames as usize,
                overlap_frames as usize,
                frame_tokens as usize,
            );
            let frames = nq.div_ceil(ft);
            // Keys already folded into the state.
            let mut linear_hi = 0usize;
            let mut t = 0;
            while t * tc < frames {
                let q_lo = t * tc * ft;
                let q_hi = ((t + 1) * tc * ft).min(nq);
                let win_lo = (t * tc).saturating_sub(to) * ft;
                if win_lo > linear_hi {
                    // The keys leaving the softmax window join the state.
                    feature_map(rec, &f.phi_k, k, linear_hi, win_lo - linear_hi, pk)?;
                    linear_state(
                        rec,
                        pk,
                        linear_hi,
                        v,
                        linear_hi,
                        win_lo,
                        0,
                        partial,
                        state,
                        linear_hi > 0,
                    )?;
                }
                let has_state = win_lo > 0;
                linear_hi = win_lo;
                if has_state {
                    feature_map(rec, &f.phi_q, q, q_lo, q_hi - q_lo, pq)?;
                }
                flash_attention(
                    rec,
                    q,
                    k,
                    v,
                    out,
                    &FlashArgs {
                        scale,
                        q_lo,
                        q_count: q_hi - q_lo,
                        k_lo: win_lo,
                        k_count: q_hi - win_lo,
                        k_stride: 1,
                        linear: has_state.then_some(LinearTerm {
                            phi_q: pq,
                            phi_lo: q_lo,
                            state,
                            eps: 0.0,
                        }),
                    },
                )?;
                t += 1;
            }
            Ok(())
        }
    }
}

/// Self-attention FLOPs of one call per the attention cost model (ARCHITECTURE.md) (all heads), including
/// feature maps and the state.
pub fn attention_flops(
    mode: &AttentionMode,
    nq: usize,
    nk: usize,
    h: usize,
    d: usize,
    df: usize,
    fm_flops_per_token: f64,
) -> f64 {
    let (nq, nk, h, d, df) = (nq as f64, nk as f64, h as f64, d as f64, df as f64);
    let linear = |keys: f64, queries: f64| 2.0 * keys * df * d + 2.0 * queries * df * d;
    h * match *mode {
        AttentionMode::Softmax | AttentionMode::Hybrid { rate: 0 | 1 } => 4.0 * nq * nk * d,
        AttentionMode::Linear { .. } => linear(nk, nq) + (nq + nk) * fm_flops_per_token,
        AttentionMode::Hybrid { rate } => {
            4.0 * nq * (nk / rate as f64).ceil() * d
                + linear(nk, nq)
                + (nq + nk) * fm_flops_per_token
        }
        AttentionMode::Rehyat {
            chunk_frames,
            overlap_frames,
            frame_tokens,
        } => {
            // softmax: each chunk's queries against its window; linear: every key once, every
            // query of a chunk with a state once.
            let (tc, to, ft) = (
                chunk_frames as f64,
                overlap_frames as f64,
                frame_tokens as f64,
            );
            let frames = (nq / ft).ceil();
            let mut soft = 0.0;
            let mut t = 0.0;
            while t * tc < frames {
                let qn = ((t + 1.0) * tc * ft).min(nq) - t * tc * ft;
                let lo = (t * tc - to).max(0.0) * ft;
                soft += 4.0 * qn * (((t + 1.0) * tc * ft).min(nk) - lo) * d;
                t += 1.0;
            }
            soft + linear(nk, nq) + (nq + nk) * fm_flops_per_token
        }
    }
}
