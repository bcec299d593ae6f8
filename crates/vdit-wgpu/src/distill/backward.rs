//! The backward past the query pass (DISTILL.md, Backward): the key side dg_j = dS v_j + dz
//! ([`key_grad`]) and the hedgehog backward du from phi and its upstream gradient
//! ([`hedgehog_du`]). The reductions over rows, (dS | dz) = sum_i f_i (u_i | delta_i)^T and
//! (dW | db) = sum du (x | 1)^T, are the linear-state kernel's product phi^T (V | 1) and run on
//! [`crate::attention::linear_state`].

use crate::error::{shape_err, Result};
use crate::kernels::{folded_grid, require_f16_support, to_u32};
use crate::param_block::ParamBytes;
use crate::profiler::Cost;
use crate::recorder::{Dispatch, Recorder};
use crate::shader::{defines, Defines};
use crate::tensor::{DType, Tensor};

crate::param_block! {
    struct KeysParams {
        heads: u32,
        d: u32,
        df: u32,
        k_lo: u32,
        k_count: u32,
        rate: u32,
        has_state: u32,
        grid_x: u32,
        ktiles: u32,
        ftiles: u32,
        _pad0: u32,
        _pad1: u32,
    }
}

pub fn keys_variants() -> Vec<Defines> {
    vec![
        defines(&[("IO_T", DType::F32.wgsl())]),
        defines(&[("IO_T", DType::F16.wgsl())]),
    ]
}

/// Records dg for keys `k_lo..k_hi` into rows of `dg` `[Nk, H, DF]` f32 from v `[Nk, H, D]`
/// and `dsz` `[H, DF, D + 2]` f32 (dS | dz | unused). Keys with `j % exclude_rate == 0`
/// (`exclude_rate > 0`), or all of them when `dsz` is `None`, get zeros.
pub fn key_grad(
    rec: &mut Recorder,
    v: &Tensor,
    dsz: Option<&Tensor>,
    k_lo: usize,
    k_hi: usize,
    exclude_rate: usize,
    dg: &Tensor,
) -> Result<()> {
    let op = "distill key gradient";
    let [nk, h, d] = match v.shape() {
        [a, b, c] => [*a, *b, *c],
        s => return Err(shape_err(op, format!("v must be [Nk, H, D], got {s:?}"))),
    };
    let df = match dg.shape() {
        [n, hh, f] if *n == nk && *hh == h && dg.dtype() == DType::F32 => *f,
        s => {
            return Err(shape_err(
                op,
                format!("dg must be f32 [{nk}, {h}, DF], got {s:?}"),
            ))
        }
    };
    if let Some(t) = dsz {
        if t.shape() != [h, df, d + 2] || t.dtype() != DType::F32 {
            return Err(shape_err(
                op,
                format!("dsz must be f32 [{h}, {df}, {}], got {t:?}", d + 2),
            ));
        }
    }
    if k_lo > k_hi || k_hi > nk {
        return Err(shape_err(
            op,
            format!("keys {k_lo}..{k_hi} outside 0..{nk}"),
        ));
    }
    let gpu = rec.gpu();
    require_f16_support(gpu, "f16 distillation", &[v])?;
    let count = k_hi - k_lo;
    let (ktiles, ftiles) = (count.div_ceil(64), df.div_ceil(64));
    let workgroups = folded_grid(gpu, ktiles * ftiles * h);
    let params = KeysParams {
        heads: h as u32,
        d: d as u32,
        df: df as u32,
        k_lo: to_u32(op, k_lo)?,
        k_count: to_u32(op, count)?,
        rate: exclude_rate as u32,
        has_state: dsz.is_some() as u32,
        grid_x: workgroups[0],
        ktiles: ktiles as u32,
        ftiles: ftiles as u32,
        _pad0: 0,
        _pad1: 0,
    };
    // Without a state the kernel reads no table: any f32 tensor may stand in.
    let table = dsz.unwrap_or(dg);
    let n = (count * h) as f64;
    rec.dispatch(Dispatch {
        shader: &DISTILL_KEYS,
        entry: "main",
        defines: defines(&[("IO_T", v.dtype().wgsl())]),
        constants: vec![],
        params: ParamBytes::of(&params),
        tensors: &[v, table, dg],
        workgroups,
        label: format!("distill key gradient {count}k x {h}h x {d} x {df}").into(),
        cost: Cost::new(
            n * 2.0 * df as f64 * (d as f64 + 1.0),
            n * (d as f64 * v.dtype().size() as f64 + df as f64 * 4.0)
                + (h * df * (d + 2) * 4) as f64,
        ),
    })
}

crate::param_block! {
    struct HedgehogParams {
        heads: u32,
        half: u32,
        count: u32,
        grid_x: u32,
    }
}

pub fn hedgehog_variants() -> Vec<Defines> {
    vec![Defines::new()]
}

/// Records du `[rows, H, F]` of a hedgehog map from its outputs `phi` and upstream `dphi`
/// (both `[rows, H, 2F]` f32), for the first `count` rows.
pub fn hedgehog_du(
    rec: &mut Recorder,
    phi: &Tensor,
    dphi: &Tensor,
    count: usize,
    du: &Tensor,
) -> Result<()> {
    let op = "distill hedgehog backward";
    let [rows, h, df] = match phi.shape() {
        [a, b, c] if *c % 2 == 0 && *c > 0 => [*a, *b, *c],
        s => {
            return Err(shape_err(
                op,
                format!("phi must be [rows, H, 2F], got {s:?}"),
            ))
        }
    };
    let half = df / 2;
    let ok = |t: &Tensor, shape: &[usize]| t.shape() == shape && t.dtype() == DType::F32;
    if !ok(phi, &[rows, h, df])
        || !ok(dphi, &[rows, h, df])
        || du.dtype() != DType::F32
        || du.shape().len() != 3
        || du.shape()[1..] != [h, half]
        || du.shape()[0] < count
        || count > rows
    {
        return Err(shape_err(
            op,
            format!("phi {phi:?}, dphi {dphi:?} and du {du:?} do not fit {count} rows"),
        ));
    }
    let gpu = rec.gpu();
    let n = count * h;
    let workgroups = folded_grid(gpu, n.div_ceil(64));
    let params = HedgehogParams {
        heads: h as u32,
        half: half as u32,
        count: to_u32(op, count)?,
        grid_x: workgroups[0],
    };
    rec.dispatch(Dispatch {
        shader: &DISTILL_HEDGEHOG,
        entry: "main",
        defines: Defines::new(),
        constants: vec![],
        params: ParamBytes::of(&params),
        tensors: &[phi, dphi, du],
        workgroups,
        label: format!("distill hedgehog backward {count} x {h}h x {df}").into(),
        cost: Cost::new(
            n as f64 * 8.0 * half as f64,
            n as f64 * 10.0 * half as f64 * 4.0,
        ),
    })
}

crate::param_block! {
    struct PolyParams {
        heads: u32,
        d: u32,
        hid: u32,
        df: u32,
        d1: u32,
        count: u32,
        grid_x: u32,
        _pad0: u32,
    }
}

pub fn poly_variants() -> Vec<Defines> {
    keys_variants()
}

/// One stage of the poly backward (see `distill_poly.wgsl`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PolyStage {
    /// pre = W1 x + b1, a = gelu(pre)
    Hidden,
    /// dpsi = p psi^(p - 1) dphi
    Dpsi,
    /// dpre = gelu'(pre) W2^T dpsi
    Dpre,
}

/// The tensors of the poly backward of one map: inputs x `[rows, H, D]`, f32 weights
/// (w1 `[H, HID, D]`, b1 `[H, HID]`, w2 `[H, DF, HID]`, b2 `[H, DF]`), upstream dphi
/// `[rows, H, DF]`; f32 scratch pre, a, dpre `[rows, H, HID]` and dpsi `[rows, H, DF]`.
#[derive(Clone, Copy, Debug)]
pub struct PolyBuffers<'a> {
    pub x: &'a Tensor,
    pub w1: &'a Tensor,
    pub b1: &'a Tensor,
    pub w2: &'a Tensor,
    pub b2: &'a Tensor,
    pub dphi: &'a Tensor,
    pub pre: &'a Tensor,
    pub a: &'a Tensor,
    pub dpsi: &'a Tensor,
    pub dpre: &'a Tensor,
    /// Values per part: DF = P * D1.
    pub d1: usize,
}

/// Records one stage of the poly backward for rows `0..count`.
pub fn poly_stage(
    rec: &mut Recorder,
    stage: PolyStage,
    b: &PolyBuffers,
    count: usize,
) -> Result<()> {
    let op = "distill poly backward";
    let [rows, h, d] = match b.x.shape() {
        [r, hh, dd] => [*r, *hh, *dd],
        s => return Err(shape_err(op, format!("x must be [rows, H, D], got {s:?}"))),
    };
    let (hid, df) = match (b.w1.shape(), b.w2.shape()) {
        ([hh, c, dd], [h2, f, c2]) if *hh == h && *dd == d && *h2 == h && c2 == c => (*c, *f),
        (s1, s2) => {
            return Err(shape_err(
                op,
                format!("w1 {s1:?} and w2 {s2:?} do not fit x {:?}", b.x.shape()),
            ))
        }
    };
    let f32_shape = |t: &Tensor, shape: &[usize]| t.dtype() == DType::F32 && t.shape() == shape;
    let ok = f32_shape(b.w1, &[h, hid, d])
        && f32_shape(b.w2, &[h, df, hid])
        && f32_shape(b.b1, &[h, hid])
        && f32_shape(b.b2, &[h, df])
        && [b.dphi, b.dpsi]
            .iter()
            .all(|t| t.dtype() == DType::F32 && t.shape().len() == 3 && t.shape()[1..] == [h, df])
        && [b.pre, b.a, b.dpre]
            .iter()
            .all(|t| t.dtype() == DType::F32 && t.shape().len() == 3 && t.shape()[1..] == [h, hid])
        && [b.dphi, b.dpsi, b.pre, b.a, b.dpre]
            .iter()
            .all(|t| t.shape()[0] >= count)
        && count <= rows
        && b.d1 > 0
        && df % b.d1 == 0;
    if !ok {
        return Err(shape_err(
            op,
            format!(
                "the poly buffers do not fit {count} rows of {:?}: {b:?}",
                b.x.shape()
            ),
        ));
    }
    let gpu = rec.gpu();
    require_f16_support(gpu, "f16 distillation", &[b.x])?;
    let (entry, width) = match stage {
        PolyStage::Hidden => ("hidden_main", hid),
        PolyStage::Dpsi => ("dpsi_main", df),
        PolyStage::Dpre => ("dpre_main", hid),
    };
    let n = count * h * width;
    let workgroups = folded_grid(gpu, n.div_ceil(256));
    let params = PolyParams {
        heads: h as u32,
        d: d as u32,
        hid: hid as u32,
        df: df as u32,
        d1: b.d1 as u32,
        count: to_u32(op, count)?,
        grid_x: workgroups[0],
        _pad0: 0,
    };
    let inner = match stage {
        PolyStage::Hidden => d,
        PolyStage::Dpsi => hid,
        PolyStage::Dpre => df,
    };
    rec.dispatch(Dispatch {
        shader: &DISTILL_POLY,
        entry,
        defines: defines(&[("IO_T", b.x.dtype().wgsl())]),
        constants: vec![],
        params: ParamBytes::of(&params),
        tensors: &[
            b.x, b.w1, b.b1, b.w2, b.b2, b.dphi, b.pre, b.a, b.dpsi, b.dpre,
        ],
        workgroups,
        label: format!("distill poly backward {stage:?} {count} x {h}h x {width}").into(),
        cost: Cost::new(
            2.0 * n as f64 * inner as f64,
            n as f64 * (inner as f64 + 2.0) * 4.0,
        ),
    })
}

/// `shaders/distill_keys.wgsl`.
pub static DISTILL_KEYS: crate::shader::ShaderFile =
    crate::shader_file!("distill_keys", keys_variants);

/// `shaders/distill_hedgehog.wgsl`.
pub static DISTILL_HEDGEHOG: crate::shader::ShaderFile =
    crate::shader_file!("distill_hedgehog", hedgehog_variants);

/// `shaders/distill_poly.wgsl`.
pub static DISTILL_POLY: crate::shader::ShaderFile =
    crate::shader_file!("distill_poly", poly_variants);
