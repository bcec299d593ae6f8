//! The optimiser on the GPU: column sums of small tables ([`column_sums`]: a step's loss, the
//! squared norms of the gradients) and AdamW with global-norm clipping ([`adamw_update`]).

use crate::error::{shape_err, Result};
use crate::kernels::{folded_grid, to_u32};
use crate::param_block::ParamBytes;
use crate::profiler::Cost;
use crate::recorder::{Dispatch, Recorder};
use crate::shader::{defines, Defines};
use crate::tensor::{DType, Tensor};

/// AdamW settings; the defaults are LoLCATs' (lr 1e-2, betas 0.9 / 0.999, no weight decay,
/// clipping at global norm 1).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamW {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    /// Decoupled weight decay (theta -= lr * wd * theta).
    pub weight_decay: f32,
    /// The global gradient norm is clipped to this; 0 turns clipping off.
    pub clip: f32,
}

impl Default for AdamW {
    fn default() -> Self {
        Self {
            lr: 1e-2,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            clip: 1.0,
        }
    }
}

impl AdamW {
    pub fn validate(&self) -> Result<()> {
        let ok = self.lr.is_finite()
            && self.lr >= 0.0
            && (0.0..1.0).contains(&self.beta1)
            && (0.0..1.0).contains(&self.beta2)
            && self.eps > 0.0
            && self.weight_decay >= 0.0
            && self.clip >= 0.0;
        if !ok {
            return Err(shape_err("adamw", format!("invalid settings {self:?}")));
        }
        Ok(())
    }
}

crate::param_block! {
    struct ReduceParams {
        rows: u32,
        width: u32,
        slot: u32,
        _pad0: u32,
    }
}

fn reduce_defines(square: bool) -> Defines {
    if square {
        defines(&[("SQUARE", "1")])
    } else {
        Defines::new()
    }
}

pub fn reduce_variants() -> Vec<Defines> {
    vec![reduce_defines(false), reduce_defines(true)]
}

/// Records `out[slot + c] = sum_r x[r, c]` (of squares when `square`) over the first `rows`
/// rows of `x` seen as `[.., width]` f32. One workgroup: for small tables (a step's loss parts,
/// a gradient).
pub fn column_sums(
    rec: &mut Recorder,
    x: &Tensor,
    rows: usize,
    width: usize,
    square: bool,
    out: &Tensor,
    slot: usize,
) -> Result<()> {
    let op = "distill column sums";
    if x.dtype() != DType::F32 || out.dtype() != DType::F32 {
        return Err(shape_err(op, "x and out must be f32"));
    }
    if width == 0 || rows * width > x.numel() || slot + width > out.numel() {
        return Err(shape_err(
            op,
            format!("{rows} x {width} values of {x:?} into slot {slot} of {out:?}"),
        ));
    }
    let params = ReduceParams {
        rows: to_u32(op, rows)?,
        width: width as u32,
        slot: slot as u32,
        _pad0: 0,
    };
    rec.dispatch(Dispatch {
        shader: &DISTILL_REDUCE,
        entry: "main",
        defines: reduce_defines(square),
        constants: vec![],
        params: ParamBytes::of(&params),
        tensors: &[x, out],
        workgroups: [1, 1, 1],
        label: format!(
            "distill {} {rows} x {width}",
            if square { "sum of squares" } else { "sum" }
        )
        .into(),
        cost: Cost::new((2 * rows * width) as f64, (rows * width * 4) as f64),
    })
}

crate::param_block! {
    struct AdamParams {
        count: u32,
        cols: u32,
        gstride: u32,
        goff: u32,
        slots: u32,
        grid_x: u32,
        _pad0: u32,
        _pad1: u32,
        lr: f32,
        beta1: f32,
        beta2: f32,
        eps: f32,
        wd: f32,
        clip: f32,
        bc1: f32,
        bc2: f32,
    }
}

pub fn adamw_variants() -> Vec<Defines> {
    vec![Defines::new()]
}

/// Where a parameter's gradient lives: element e of the parameter is
/// `grad[(e / cols) * stride + offset + e % cols]` (a weight and its bias share a `(dW | db)`
/// table: the weight with `cols = D, stride = D + 1, offset = 0`, the bias with `cols = 1,
/// stride = D + 1, offset = D`).
#[derive(Clone, Copy, Debug)]
pub struct GradView<'a> {
    pub grad: &'a Tensor,
    pub cols: usize,
    pub stride: usize,
    pub offset: usize,
}

impl<'a> GradView<'a> {
    /// A gradient laid out exactly as its parameter.
    pub fn dense(grad: &'a Tensor) -> Self {
        let n = grad.numel().max(1);
        Self {
            grad,
            cols: n,
            stride: n,
            offset: 0,
        }
    }
}

/// The optimiser's moments of one parameter.
#[derive(Clone, Debug)]
pub struct Moments {
    pub m: Tensor,
    pub v: Tensor,
}

/// Records one AdamW update of `theta` (f32) at step `t` (1-based) with its gradient `g`,
/// clipped by the global norm whose squared parts are the first `slots` values of `norms`.
#[allow(clippy::too_many_arguments)]
pub fn adamw_update(
    rec: &mut Recorder,
    settings: &AdamW,
    t: u64,
    theta: &Tensor,
    g: GradView,
    moments: &Moments,
    norms: &Tensor,
    slots: usize,
) -> Result<()> {
    let op = "adamw";
    settings.validate()?;
    let count = theta.numel();
    let f32s = [theta, g.grad, &moments.m, &moments.v, norms];
    if f32s.iter().any(|t| t.dtype() != DType::F32) {
        return Err(shape_err(
            op,
            "parameters, gradients, moments and norms must be f32",
        ));
    }
    if moments.m.numel() != count || moments.v.numel() != count {
        return Err(shape_err(op, "the moments must match the parameter"));
    }
    if t == 0 {
        return Err(shape_err(op, "steps count from 1"));
    }
    let last = if count == 0 {
        0
    } else {
        ((count - 1) / g.cols.max(1)) * g.stride + g.offset + (count - 1) % g.cols.max(1)
    };
    if g.cols == 0 || (count > 0 && last >= g.grad.numel()) || slots > norms.numel() {
        return Err(shape_err(
            op,
            format!("gradient view {g:?} does not fit {count} parameters"),
        ));
    }
    let workgroups = folded_grid(rec.gpu(), count.div_ceil(256));
    let ti = t.min(i32::MAX as u64) as i32;
    let params = AdamParams {
        count: to_u32(op, count)?,
        cols: to_u32(op, g.cols)?,
        gstride: to_u32(op, g.stride)?,
        goff: to_u32(op, g.offset)?,
        slots: slots as u32,
        grid_x: workgroups[0],
        _pad0: 0,
        _pad1: 0,
        lr: settings.lr,
        beta1: settings.beta1,
        beta2: settings.beta2,
        eps: settings.eps,
        wd: settings.weight_decay,
        clip: settings.clip,
        // In f64, then rounded: 1 - b^t loses digits in f32 for small t.
        bc1: (1.0 - (settings.beta1 as f64).powi(ti)) as f32,
        bc2: (1.0 - (settings.beta2 as f64).powi(ti)) as f32,
    };
    rec.dispatch(Dispatch {
        shader: &DISTILL_ADAMW,
        entry: "main",
        defines: Defines::new(),
        constants: vec![],
        params: ParamBytes::of(&params),
        tensors: &[g.grad, norms, theta, &moments.m, &moments.v],
        workgroups,
        label: format!("distill adamw {count}").into(),
        cost: Cost::new(count as f64 * 14.0, count as f64 * 28.0),
    })
}

/// The CPU reference of [`adamw_update`] (f64 arithmetic, f32 storage), for tests and resumes.
#[allow(clippy::too_many_arguments)]
pub fn adamw_reference(
    s: &AdamW,
    t: u64,
    theta: &mut [f32],
    grad: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    global_norm: f64,
) {
    let scale = if s.clip > 0.0 {
        (s.clip as f64 / (global_norm + 1e-6)).min(1.0)
    } else {
        1.0
    };
    let (b1, b2) = (s.beta1 as f64, s.beta2 as f64);
    let bc1 = 1.0 - b1.powi(t as i32);
    let bc2 = 1.0 - b2.powi(t as i32);
    for i in 0..theta.len() {
        let g = grad[i] as f64 * scale;
        let mn = b1 * m[i] as f64 + (1.0 - b1) * g;
        let vn = b2 * v[i] as f64 + (1.0 - b2) * g * g;
        m[i] = mn as f32;
        v[i] = vn as f32;
        let th = theta[i] as f64;
        theta[i] = (th
            - s.lr as f64
                * ((mn / bc1) / ((vn / bc2).sqrt() + s.eps as f64) + s.weight_decay as f64 * th))
            as f32;
    }
}

/// `shaders/distill_reduce.wgsl`.
pub static DISTILL_REDUCE: crate::shader::ShaderFile =
    crate::shader_file!("distill_reduce", reduce_variants);

/// `shaders/distill_adamw.wgsl`.
pub static DISTILL_ADAMW: crate::shader::ShaderFile =
    crate::shader_file!("distill_adamw", adamw_variants);
