//! The backward past the query pass (DISTILL.md, Backward): the key side dg_j = dS v_j + dz
//! ([`key_grad`]) and the hedgehog backward du from phi and its upstream gradient
//! ([`hedgehog_du`]). The reductions over rows, (dS | dz) = sum_i f_i (u_i | delta_i)^T and
//! (dW | db) = sum du (x | 1)^T, are the linear-state kernel's product phi^T (V | 1) and run on
//! [`crate::attention::linear_state`].

use bytemuck::{Pod, Zeroable};

use crate::error::{shape_err, Result};
use crate::kernels::{folded_grid, require_f16_support, to_u32};
use crate::profiler::Cost;
use crate::recorder::{Dispatch, Recorder};
use crate::shader::{defines, Defines};
use crate::tensor::{DType, Tensor};

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct KeysParams {
    heads: u32,
    d: u32,
    df: u32,
    k_lo: u32,
    k_count: u32,
    rate: u32,
    has_state: u32,
    grid_x: u32,
}

pub fn keys_variants() -> Vec<Defines> {
    vec![
        defines(&[("IO_T", DType::F32.wgsl())]),
        defines(&[("IO_T", DType::F16.wgsl())]),
    ]
}

/// Records dg for keys `k_lo..k_hi` into rows of `dg` `[Nk, H, DF]` f32 from v `[Nk, H, D]`
/// and `dsz` `[H, DF, D + 2]` f32 (dS | dz | unused). Keys with `j % exclude_rate == 0`
/// (`exclude_rate > 1`), or all of them when `dsz` is `None`, get zeros.
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
    if d > 512 {
        return Err(shape_err(op, format!("head dim {d} above 512")));
    }
    let gpu = rec.gpu();
    require_f16_support(gpu, "f16 distillation", &[v])?;
    let count = k_hi - k_lo;
    let workgroups = folded_grid(gpu, count * h);
    let params = KeysParams {
        heads: h as u32,
        d: d as u32,
        df: df as u32,
        k_lo: to_u32(op, k_lo)?,
        k_count: to_u32(op, count)?,
        rate: exclude_rate as u32,
        has_state: dsz.is_some() as u32,
        grid_x: workgroups[0],
    };
    // Without a state the kernel reads no table: any f32 tensor may stand in.
    let table = dsz.unwrap_or(dg);
    let n = (count * h) as f64;
    rec.dispatch(Dispatch {
        shader: "distill_keys",
        entry: "main",
        defines: defines(&[("IO_T", v.dtype().wgsl())]),
        constants: vec![],
        params: bytemuck::bytes_of(&params),
        tensors: &[v, table, dg],
        workgroups,
        label: format!("distill key gradient {count}k x {h}h x {d} x {df}").into(),
        cost: Cost::new(
            n * 2.0 * df as f64 * (d as f64 + 1.0),
            n * (d as f64 * v.dtype().size() as f64 + df as f64 * 4.0),
        ),
    })
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct HedgehogParams {
    heads: u32,
    half: u32,
    count: u32,
    grid_x: u32,
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
        shader: "distill_hedgehog",
        entry: "main",
        defines: Defines::new(),
        constants: vec![],
        params: bytemuck::bytes_of(&params),
        tensors: &[phi, dphi, du],
        workgroups,
        label: format!("distill hedgehog backward {count} x {h}h x {df}").into(),
        cost: Cost::new(
            n as f64 * 8.0 * half as f64,
            n as f64 * 10.0 * half as f64 * 4.0,
        ),
    })
}
