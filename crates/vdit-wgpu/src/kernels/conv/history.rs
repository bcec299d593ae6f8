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
        _pad: u32,
    }
}

/// Records the update of a causal convolution's history for its next call, in place: `history`
/// [P, H, W, C] becomes the last P frames of [`history`, `x` (T frames)]; the valid count
/// becomes `min(P, valid + T)`. No second buffer: where T >= P a buffer copy of x's last frames
/// does the same ([`Recorder::copy_frames`]); this kernel covers T < P, the frames shifting.
pub fn update_history(rec: &mut Recorder, history: &Tensor, x: &Tensor) -> Result<()> {
    let op = "update_history";
    let (Some((&past, frame)), Some((&t, x_frame))) =
        (history.shape().split_first(), x.shape().split_first())
    else {
        return Err(shape_err(
            op,
            format!("history {history:?} and x {x:?} must be frames"),
        ));
    };
    if frame != x_frame {
        return Err(shape_err(
            op,
            format!("history {history:?} and x {x:?} must hold frames of one size"),
        ));
    }
    if history.dtype() != x.dtype() {
        return Err(shape_err(
            op,
            format!("history {history:?} and x {x:?} must share a storage type"),
        ));
    }
    if t == 0 {
        return Err(shape_err(op, format!("x {x:?} has no frames")));
    }
    require_distinct(op, history, x)?;
    require_f16_support(rec.gpu(), "an f16 history", &[x])?;
    let frame_elems: usize = frame.iter().product();
    let params = HistoryParams {
        frame_elems: to_u32(op, frame_elems)?,
        past: to_u32(op, past)?,
        t: to_u32(op, t)?,
        _pad: 0,
    };
    rec.dispatch(Dispatch {
        shader: &CONV_CACHE,
        entry: "main",
        defines: defines(&[("X_T", x.dtype().wgsl())]),
        constants: vec![],
        params: ParamBytes::of(&params),
        tensors: &[history, x],
        workgroups: folded_grid(rec.gpu(), frame_elems.div_ceil(256)),
        label: format!("conv history {past}x{frame_elems} {}", x.dtype()).into(),
        cost: Cost::new(0.0, 2.0 * history.bytes() as f64),
    })
}

/// `shaders/conv_cache.wgsl`.
pub static CONV_CACHE: crate::shader::ShaderFile =
    crate::shader_file!("conv_cache", history_variants);
