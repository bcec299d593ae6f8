//! The fused attention entry [`flash_attention`]: softmax over a strided key range plus an
//! optional linear term, on the fastest of the three flash kernels that fits.

use crate::error::{shape_err, Result};
use crate::gpu::Gpu;
use crate::param_block::ParamBytes;
use crate::policy::FlashKernel;
use crate::profiler::Cost;
use crate::recorder::{Dispatch, Recorder};
use crate::tensor::{DType, Tensor};

use super::*;

crate::param_block! {
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
pub(super) fn qkv_shape(
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

/// The flash kernel a call runs.
enum Picked {
    Cooperative(FlashCoopLayout),
    Vector(FlashVecTiles),
    General,
}

/// Tensor cores where they fit (the wide layout first), else the vectorised kernel, else the
/// general one (any head dim up to 512); a kernel the policy names wherever it fits.
fn pick_flash_kernel(
    choice: FlashKernel,
    gpu: &Gpu,
    d: usize,
    dtype: DType,
    nq: usize,
    k_count: usize,
) -> Picked {
    let coop = |layout: FlashCoopLayout| {
        flash_coop_fits(gpu, layout, d, dtype, nq, k_count).then_some(layout)
    };
    // The wide single pass is the fastest (153 ms against 229 for the two-pass kernel at
    // N = 32760 on the H200); the narrow layout serves fewer than 16 query rows. The narrow
    // single pass is not picked: `vdit selftest` checks it only as an experimental variant.
    let (wide, narrow) = (
        FlashCoopLayout {
            wide: true,
            single_pass: true,
        },
        FlashCoopLayout {
            wide: false,
            single_pass: false,
        },
    );
    let vector = || flash_vec_tiles(gpu, d, dtype);
    let auto = || {
        coop(wide)
            .or_else(|| coop(narrow))
            .map(Picked::Cooperative)
            .or_else(|| vector().map(Picked::Vector))
            .unwrap_or(Picked::General)
    };
    match choice {
        FlashKernel::Auto => auto(),
        FlashKernel::Cooperative(layout) => {
            coop(layout).map(Picked::Cooperative).unwrap_or_else(auto)
        }
        FlashKernel::Vector => vector().map(Picked::Vector).unwrap_or_else(auto),
        FlashKernel::General => Picked::General,
    }
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
    let kernel = pick_flash_kernel(rec.policy().flash, gpu, d, q.dtype(), nq, args.k_count);
    let kernel_name = match kernel {
        Picked::Cooperative(_) => " coop",
        Picked::Vector(_) => " vec",
        Picked::General => " general",
    };
    let (shader, defines, bq) = match kernel {
        Picked::Cooperative(layout) => (
            &ATTENTION_FLASH_COOP,
            flash_coop_defines(layout, linear),
            layout.bq(),
        ),
        Picked::Vector(t) => (
            &ATTENTION_FLASH_VEC,
            flash_vec_defines(q.dtype(), &t, linear),
            t.bq(),
        ),
        Picked::General => {
            let t = flash_tiles(gpu, d, q.dtype())?;
            (
                &ATTENTION_FLASH,
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
        params: ParamBytes::of(&params),
        tensors: &tensors,
        workgroups,
        label: format!(
            "attention {what}{} {}q x {}k x {h}h x {d} {}",
            kernel_name,
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
