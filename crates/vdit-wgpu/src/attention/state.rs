//! `attention_state.wgsl`: the linear attention state S = sum phi_k v^T, z = sum phi_k.

use crate::error::{shape_err, Result};
use crate::param_block::ParamBytes;
use crate::profiler::Cost;
use crate::recorder::{Dispatch, Recorder};
use crate::shader::{defines, Defines};
use crate::tensor::{DType, Tensor};

use super::*;

crate::param_block! {
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
/// `exclude_rate > 0` (0: every key). `phi_k`: `[rows, H, DF]` f32 with key j in row `j - phi_lo`; `v`:
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
        shader: &ATTENTION_STATE,
        entry: "partial_main",
        defines: state_defines(v.dtype()),
        constants: vec![],
        params: ParamBytes::of(&params),
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
        shader: &ATTENTION_STATE,
        entry: "reduce_main",
        defines: state_defines(v.dtype()),
        constants: vec![],
        params: ParamBytes::of(&params),
        tensors: &tensors,
        workgroups: wg2,
        label: format!("linear state reduce {nchunks}c x {h}h {df}x{d}").into(),
        cost: Cost::new(
            nchunks as f64 * total as f64,
            (nchunks as f64 + 2.0) * total as f64 * 4.0,
        ),
    })
}

/// `shaders/attention_state.wgsl`.
pub static ATTENTION_STATE: crate::shader::ShaderFile =
    crate::shader_file!("attention_state", state_variants);
