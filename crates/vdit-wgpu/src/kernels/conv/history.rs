//! `conv_cache.wgsl`: the frames a causal convolution keeps for its next call.

use crate::error::{shape_err, Result};
use crate::kernels::{folded_grid, require_distinct, require_f16_support, to_u32};
use crate::param_block::ParamBytes;
use crate::profiler::Cost;
use crate::recorder::{Dispatch, Recorder};
use crate::shader::{defines, Defines};
use crate::tensor::{DType, Tensor};

/// The define sets of `conv_cache.wgsl`.
pub fn history_variants() -> Vec<Defines> {
    [DType::F32, DType::F16]
        .iter()
        .map(|t| defines(&[("X_T", t.wgsl())]))
        .collect()
}

crate::param_block! {
    struct HistoryParams {
        frame_elems: u32,
        past: u32,
        t: u32,
        n: u32,
    }
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
        shader: &CONV_CACHE,
        entry: "main",
        defines: defines(&[("X_T", x.dtype().wgsl())]),
        constants: vec![],
        params: ParamBytes::of(&params),
        tensors: &[old, x, updated],
        workgroups: folded_grid(rec.gpu(), n.div_ceil(256)),
        label: format!("conv history {past}x{frame_elems} {}", x.dtype()).into(),
        cost: Cost::new(0.0, 2.0 * updated.bytes() as f64),
    })
}

/// `shaders/conv_cache.wgsl`.
pub static CONV_CACHE: crate::shader::ShaderFile =
    crate::shader_file!("conv_cache", history_variants);
