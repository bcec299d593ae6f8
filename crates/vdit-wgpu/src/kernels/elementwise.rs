//! Elementwise kernels: activations, add and multiply with a repeating second operand, the
//! per-channel modulation `x * (1 + scale) + shift`, the linear combination `alpha x + beta y`
//! of schedulers, and storage conversion. Each tensor may be f32 or f16; arithmetic is f32.
//! The `_in_place` launchers update their first tensor and bind it once, read-write.

use super::{folded_grid, require_distinct, require_f16_support, to_u32, Modulation};
use crate::error::{shape_err, Result};
use crate::param_block::ParamBytes;
use crate::profiler::Cost;
use crate::recorder::{Dispatch, Recorder};
use crate::shader::{defines, Defines};
use crate::tensor::{DType, Tensor};

/// A function applied to each element.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Unary {
    Silu,
    GeluTanh,
}

/// An operation of two tensors, the second repeating along the leading dimensions of the first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Binary {
    Add,
    Mul,
}

/// The operation a define set of `elementwise.wgsl` computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Unary(Unary),
    Binary(Binary),
    Modulate,
    Axpby,
    Cast,
}

impl Op {
    fn flag(self) -> &'static str {
        match self {
            Op::Unary(Unary::Silu) => "OP_SILU",
            Op::Unary(Unary::GeluTanh) => "OP_GELU_TANH",
            Op::Binary(Binary::Add) => "OP_ADD",
            Op::Binary(Binary::Mul) => "OP_MUL",
            Op::Modulate => "OP_MODULATE",
            Op::Axpby => "OP_AXPBY",
            Op::Cast => "OP_CAST",
        }
    }
    fn name(self) -> &'static str {
        match self {
            Op::Unary(Unary::Silu) => "silu",
            Op::Unary(Unary::GeluTanh) => "gelu_tanh",
            Op::Binary(Binary::Add) => "add",
            Op::Binary(Binary::Mul) => "mul",
            Op::Modulate => "modulate",
            Op::Axpby => "axpby",
            Op::Cast => "cast",
        }
    }
    fn has_b(self) -> bool {
        matches!(self, Op::Binary(_) | Op::Axpby)
    }
    fn flops_per_element(self) -> f64 {
        match self {
            Op::Unary(_) => 8.0,
            Op::Binary(_) => 1.0,
            Op::Modulate | Op::Axpby => 3.0,
            Op::Cast => 0.0,
        }
    }
    const ALL: [Op; 7] = [
        Op::Unary(Unary::Silu),
        Op::Unary(Unary::GeluTanh),
        Op::Binary(Binary::Add),
        Op::Binary(Binary::Mul),
        Op::Modulate,
        Op::Axpby,
        Op::Cast,
    ];
}

crate::param_block! {
    struct Params {
        n: u32,
        inner: u32,
        scale_offset: u32,
        shift_offset: u32,
        alpha: f32,
        beta: f32,
        _pad: [u32; 2],
    }
}

/// Elements one workgroup covers: 256 threads, 4 elements each (elementwise.wgsl).
const ELEMENTS_PER_WORKGROUP: usize = 1024;

/// Defines of one variant; `x` is `None` in place (y holds x).
fn elementwise_defines(op: Op, x: Option<DType>, b: Option<DType>, y: DType) -> Defines {
    let mut d = defines(&[(op.flag(), "1"), ("Y_T", y.wgsl())]);
    match x {
        Some(x) => drop(d.insert("X_T".into(), x.wgsl().into())),
        None => drop(d.insert("IN_PLACE".into(), "1".into())),
    }
    if let Some(b) = b {
        d.insert("HAS_B".into(), "1".into());
        d.insert("B_T".into(), b.wgsl().into());
    }
    d
}

/// The define sets the portability test compiles: every storage combination of every operation.
pub fn variants() -> Vec<Defines> {
    let mut v = Vec::new();
    for op in Op::ALL {
        let operands = 1 + usize::from(op.has_b());
        for types in super::dtype_combinations(operands + 1) {
            let b = op.has_b().then_some(types[1]);
            v.push(elementwise_defines(op, Some(types[0]), b, types[operands]));
        }
        if op != Op::Cast {
            for types in super::dtype_combinations(operands) {
                let b = op.has_b().then_some(types[0]);
                v.push(elementwise_defines(op, None, b, types[operands - 1]));
            }
        }
    }
    v
}

/// One launch: `x` is `None` in place (then `y` holds x on entry).
struct Launch<'a> {
    op: Op,
    x: Option<&'a Tensor>,
    b: Option<&'a Tensor>,
    modulation: Option<(&'a Tensor, &'a Tensor)>,
    y: &'a Tensor,
    params: Params,
}

fn launch(rec: &mut Recorder, l: Launch<'_>) -> Result<()> {
    let op = l.op;
    let mut tensors: Vec<&Tensor> = Vec::new();
    tensors.extend(l.x);
    tensors.extend(l.b);
    if let Some((scale, shift)) = l.modulation {
        tensors.extend([scale, shift]);
    }
    for input in &tensors {
        require_distinct(op.name(), input, l.y)?;
    }
    tensors.push(l.y);
    require_f16_support(rec.gpu(), &format!("an f16 {}", op.name()), &tensors)?;
    let n = l.y.numel();
    let mut params = l.params;
    params.n = to_u32(op.name(), n)?;
    let x_type = l.x.map(Tensor::dtype);
    let bytes = n as f64
        * (x_type.unwrap_or(l.y.dtype()).size() as f64
            + l.y.dtype().size() as f64 * if l.x.is_none() { 2.0 } else { 1.0 })
        + l.b.map_or(0.0, |b| b.bytes() as f64);
    let label = format!(
        "{} {n} {}{}",
        op.name(),
        if l.x.is_none() { "in place " } else { "" },
        l.y.dtype()
    );
    let grid = folded_grid(rec.gpu(), n.div_ceil(ELEMENTS_PER_WORKGROUP));
    rec.dispatch(Dispatch {
        shader: &ELEMENTWISE,
        entry: "main",
        defines: elementwise_defines(op, x_type, l.b.map(Tensor::dtype), l.y.dtype()),
        constants: vec![],
        params: ParamBytes::of(&params),
        tensors: &tensors,
        workgroups: grid,
        label: label.into(),
        cost: Cost::new(n as f64 * op.flops_per_element(), bytes),
    })
}

fn require_same_shape(op: &'static str, what: &str, a: &Tensor, b: &Tensor) -> Result<()> {
    if a.shape() != b.shape() {
        return Err(shape_err(
            op,
            format!("{what}: {a:?} and {b:?} differ in shape"),
        ));
    }
    Ok(())
}

/// Records `y = f(x)`; `x` and `y` have the same shape.
pub fn unary(rec: &mut Recorder, f: Unary, x: &Tensor, y: &Tensor) -> Result<()> {
    let op = Op::Unary(f);
    require_same_shape(op.name(), "x and y", x, y)?;
    launch(
        rec,
        Launch {
            op,
            x: Some(x),
            b: None,
            modulation: None,
            y,
            params: Params::default(),
        },
    )
}

/// Records `x = f(x)`.
pub fn unary_in_place(rec: &mut Recorder, f: Unary, x: &Tensor) -> Result<()> {
    launch(
        rec,
        Launch {
            op: Op::Unary(f),
            x: None,
            b: None,
            modulation: None,
            y: x,
            params: Params::default(),
        },
    )
}

/// The number of elements after which `b` repeats in `a op b`: `b`'s shape, leading ones
/// dropped, must end `a`'s shape ([C] with [N, C], [N, C] with [F, N, C] or [N, C]).
fn repeat_period(op: Op, a: &Tensor, b: &Tensor) -> Result<u32> {
    let b_dims: Vec<usize> = b.shape().iter().copied().skip_while(|&d| d == 1).collect();
    if b_dims.len() > a.shape().len() || !a.shape().ends_with(&b_dims) {
        return Err(shape_err(
            op.name(),
            format!(
                "b {:?} must match the trailing dimensions of a {:?}",
                b.shape(),
                a.shape()
            ),
        ));
    }
    to_u32(op.name(), b.numel().max(1))
}

/// Records `y = a op b`; `y` has `a`'s shape, `b` repeats along `a`'s leading dimensions
/// (its shape is a suffix of `a`'s: a per-channel vector [C] for `a` [N, C], or `a`'s own shape).
pub fn binary(rec: &mut Recorder, f: Binary, a: &Tensor, b: &Tensor, y: &Tensor) -> Result<()> {
    let op = Op::Binary(f);
    require_same_shape(op.name(), "a and y", a, y)?;
    let inner = repeat_period(op, a, b)?;
    launch(
        rec,
        Launch {
            op,
            x: Some(a),
            b: Some(b),
            modulation: None,
            y,
            params: Params {
                inner,
                ..Params::default()
            },
        },
    )
}

/// Records `a = a op b`, `b` repeating as in [`binary`].
pub fn binary_in_place(rec: &mut Recorder, f: Binary, a: &Tensor, b: &Tensor) -> Result<()> {
    let op = Op::Binary(f);
    let inner = repeat_period(op, a, b)?;
    launch(
        rec,
        Launch {
            op,
            x: None,
            b: Some(b),
            modulation: None,
            y: a,
            params: Params {
                inner,
                ..Params::default()
            },
        },
    )
}

fn modulation_params(x: &Tensor, m: Modulation<'_>) -> Result<Params> {
    let op = "modulate";
    let channels = *x
        .shape()
        .last()
        .ok_or_else(|| shape_err(op, "x is a scalar"))?;
    let (scale_offset, shift_offset) = m.offsets(op, channels)?;
    Ok(Params {
        inner: to_u32(op, channels)?,
        scale_offset,
        shift_offset,
        ..Params::default()
    })
}

/// Records `y = x * (1 + scale) + shift` with per-channel f32 vectors along `x`'s last
/// dimension C (rows of [.., C] tensors); `y` has `x`'s shape.
pub fn modulate(rec: &mut Recorder, x: &Tensor, m: Modulation<'_>, y: &Tensor) -> Result<()> {
    require_same_shape("modulate", "x and y", x, y)?;
    let params = modulation_params(x, m)?;
    launch(
        rec,
        Launch {
            op: Op::Modulate,
            x: Some(x),
            b: None,
            modulation: Some((m.scale.tensor, m.shift.tensor)),
            y,
            params,
        },
    )
}

/// Records `x = x * (1 + scale) + shift`, as [`modulate`].
pub fn modulate_in_place(rec: &mut Recorder, x: &Tensor, m: Modulation<'_>) -> Result<()> {
    let params = modulation_params(x, m)?;
    launch(
        rec,
        Launch {
            op: Op::Modulate,
            x: None,
            b: None,
            modulation: Some((m.scale.tensor, m.shift.tensor)),
            y: x,
            params,
        },
    )
}

/// Records `out = alpha * x + beta * y`; all three have one shape.
pub fn axpby(
    rec: &mut Recorder,
    alpha: f32,
    x: &Tensor,
    beta: f32,
    y: &Tensor,
    out: &Tensor,
) -> Result<()> {
    require_same_shape("axpby", "x and y", x, y)?;
    require_same_shape("axpby", "x and out", x, out)?;
    launch(
        rec,
        Launch {
            op: Op::Axpby,
            x: Some(x),
            b: Some(y),
            modulation: None,
            y: out,
            params: Params {
                alpha,
                beta,
                ..Params::default()
            },
        },
    )
}

/// Records `x = alpha * x + beta * y`.
pub fn axpby_in_place(
    rec: &mut Recorder,
    alpha: f32,
    x: &Tensor,
    beta: f32,
    y: &Tensor,
) -> Result<()> {
    require_same_shape("axpby", "x and y", x, y)?;
    launch(
        rec,
        Launch {
            op: Op::Axpby,
            x: None,
            b: Some(y),
            modulation: None,
            y: x,
            params: Params {
                alpha,
                beta,
                ..Params::default()
            },
        },
    )
}

/// Records `y = x` converted to `y`'s storage type (f32 <-> f16, or a plain copy).
pub fn cast(rec: &mut Recorder, x: &Tensor, y: &Tensor) -> Result<()> {
    require_same_shape("cast", "x and y", x, y)?;
    launch(
        rec,
        Launch {
            op: Op::Cast,
            x: Some(x),
            b: None,
            modulation: None,
            y,
            params: Params::default(),
        },
    )
}

/// CPU float64 reference of [`unary`].
pub fn unary_reference(f: Unary, x: &[f32]) -> Vec<f64> {
    let f = match f {
        Unary::Silu => super::silu_f64,
        Unary::GeluTanh => super::gelu_tanh_f64,
    };
    x.iter().map(|&v| f(v as f64)).collect()
}

/// CPU float64 reference of [`binary`]: `b` repeats every `b.len()` elements.
pub fn binary_reference(f: Binary, a: &[f32], b: &[f32]) -> Vec<f64> {
    a.iter()
        .enumerate()
        .map(|(i, &v)| {
            let w = b[i % b.len()] as f64;
            match f {
                Binary::Add => v as f64 + w,
                Binary::Mul => v as f64 * w,
            }
        })
        .collect()
}

/// CPU float64 reference of [`modulate`]; `scale` and `shift` hold C values, C = their length.
pub fn modulate_reference(x: &[f32], scale: &[f32], shift: &[f32]) -> Vec<f64> {
    let c = scale.len();
    x.iter()
        .enumerate()
        .map(|(i, &v)| v as f64 * (1.0 + scale[i % c] as f64) + shift[i % c] as f64)
        .collect()
}

/// CPU float64 reference of [`axpby`].
pub fn axpby_reference(alpha: f32, x: &[f32], beta: f32, y: &[f32]) -> Vec<f64> {
    x.iter()
        .zip(y)
        .map(|(&a, &b)| alpha as f64 * a as f64 + beta as f64 * b as f64)
        .collect()
}

/// `shaders/elementwise.wgsl`.
pub static ELEMENTWISE: crate::shader::ShaderFile = crate::shader_file!("elementwise", variants);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::Row;
    use crate::testing::*;
    use DType::{F16, F32};

    /// Uploads `v` in storage `t`, returning the values the GPU really holds.
    fn upload(shape: &[usize], v: &[f32], t: DType) -> (Tensor, Vec<f32>) {
        let gpu = test_gpu();
        let held = if t == F16 { round_f16(v) } else { v.to_vec() };
        (Tensor::from_f32(gpu, shape, &held, t).unwrap(), held)
    }

    fn output(shape: &[usize], t: DType) -> Tensor {
        let gpu = test_gpu();
        let y = Tensor::empty(gpu, shape, t).unwrap();
        y.poison(gpu);
        y
    }

    fn tol(types: &[DType]) -> f64 {
        if types.contains(&F16) {
            2e-3
        } else {
            1e-5
        }
    }

    fn skip_f16(types: &[DType]) -> bool {
        let skip = types.contains(&F16) && !test_gpu().caps.shader_f16;
        if skip {
            eprintln!("skipping f16 case: adapter lacks SHADER_F16");
        }
        skip
    }

    fn run(record: impl FnOnce(&mut Recorder) -> Result<()>) {
        let mut rec = Recorder::new(test_gpu());
        record(&mut rec).unwrap();
        rec.run().unwrap();
    }

    /// `scale` is the inputs' standard deviation.
    fn check_unary(f: Unary, shape: &[usize], scale: f32, xt: DType, yt: DType, in_place: bool) {
        if skip_f16(&[xt, yt]) {
            return;
        }
        let gpu = test_gpu();
        let seed = seed();
        let mut rng = Rng::new(seed);
        let n: usize = shape.iter().product();
        let (x, xv) = upload(shape, &rng.vec_normal(n, scale), xt);
        let y = if in_place {
            x.clone()
        } else {
            output(shape, yt)
        };
        run(|rec| {
            if in_place {
                unary_in_place(rec, f, &x)
            } else {
                unary(rec, f, &x, &y)
            }
        });
        let got = y.to_vec_f32(gpu).unwrap();
        let case = format!("{f:?} {shape:?} {xt}->{yt} in_place:{in_place}");
        assert_close(&case, seed, &got, &unary_reference(f, &xv), tol(&[xt, yt]));
    }

    #[test]
    fn activations_match_reference() {
        for f in [Unary::Silu, Unary::GeluTanh] {
            check_unary(f, &[3, 1031], 3.0, F32, F32, false);
            check_unary(f, &[5, 77], 3.0, F32, F32, true);
            check_unary(f, &[5, 77], 3.0, F16, F16, true);
            check_unary(f, &[2, 999], 3.0, F32, F16, false);
            check_unary(f, &[2, 999], 3.0, F16, F32, false);
            // One value is its own relative error: keep it out of the far tail, where f32 exp
            // alone is a few ULP times |x| off.
            check_unary(f, &[1], 1.0, F32, F32, false);
        }
    }

    fn check_binary(
        f: Binary,
        a_shape: &[usize],
        b_shape: &[usize],
        types: [DType; 3],
        in_place: bool,
    ) {
        if skip_f16(&types) {
            return;
        }
        let [at, bt, yt] = types;
        let gpu = test_gpu();
        let seed = seed();
        let mut rng = Rng::new(seed);
        let n: usize = a_shape.iter().product();
        let m: usize = b_shape.iter().product();
        let (a, av) = upload(a_shape, &rng.vec_normal(n, 1.0), at);
        let (b, bv) = upload(b_shape, &rng.vec_normal(m, 1.0), bt);
        let y = if in_place {
            a.clone()
        } else {
            output(a_shape, yt)
        };
        run(|rec| {
            if in_place {
                binary_in_place(rec, f, &a, &b)
            } else {
                binary(rec, f, &a, &b, &y)
            }
        });
        let got = y.to_vec_f32(gpu).unwrap();
        let case = format!("{f:?} {a_shape:?} {b_shape:?} {types:?} in_place:{in_place}");
        assert_close(
            &case,
            seed,
            &got,
            &binary_reference(f, &av, &bv),
            tol(&types),
        );
    }

    #[test]
    fn add_and_mul_broadcast_trailing_dims() {
        for f in [Binary::Add, Binary::Mul] {
            check_binary(f, &[7, 33], &[33], [F32; 3], false);
            check_binary(f, &[3, 5, 33], &[1, 5, 33], [F32; 3], false);
            check_binary(f, &[1100], &[1100], [F32; 3], false);
            check_binary(f, &[9, 13], &[13], [F32; 3], true);
            check_binary(f, &[9, 13], &[9, 13], [F16, F32, F16], true);
            check_binary(f, &[7, 33], &[33], [F16, F16, F32], false);
            check_binary(f, &[7, 33], &[7, 33], [F32, F16, F16], false);
        }
    }

    #[test]
    fn binary_rejects_a_non_trailing_operand() {
        let gpu = test_gpu();
        let a = Tensor::empty(gpu, &[4, 8], F32).unwrap();
        let b = Tensor::empty(gpu, &[4], F32).unwrap();
        let mut rec = Recorder::new(gpu);
        let err = binary(&mut rec, Binary::Add, &a, &b, &a.clone()).unwrap_err();
        assert!(err.to_string().contains("trailing dimensions"), "{err}");
    }

    #[test]
    fn out_of_place_launchers_reject_aliased_output() {
        let gpu = test_gpu();
        let a = Tensor::empty(gpu, &[4, 8], F32).unwrap();
        let mut rec = Recorder::new(gpu);
        let err = unary(&mut rec, Unary::Silu, &a, &a).unwrap_err();
        assert!(err.to_string().contains("in-place"), "{err}");
    }

    fn check_modulate(rows: usize, c: usize, xt: DType, yt: DType, in_place: bool) {
        if skip_f16(&[xt, yt]) {
            return;
        }
        let gpu = test_gpu();
        let seed = seed();
        let mut rng = Rng::new(seed);
        let (x, xv) = upload(&[rows, c], &rng.vec_normal(rows * c, 1.0), xt);
        // A [6, C] table: shift in row 3, scale in row 4, as a modulation table holds them.
        let table_v = rng.vec_normal(6 * c, 0.5);
        let table = Tensor::from_f32(gpu, &[6, c], &table_v, F32).unwrap();
        let m = Modulation {
            scale: Row::of(&table, 4),
            shift: Row::of(&table, 3),
        };
        let y = if in_place {
            x.clone()
        } else {
            output(&[rows, c], yt)
        };
        run(|rec| {
            if in_place {
                modulate_in_place(rec, &x, m)
            } else {
                modulate(rec, &x, m, &y)
            }
        });
        let got = y.to_vec_f32(gpu).unwrap();
        let want = modulate_reference(&xv, &table_v[4 * c..5 * c], &table_v[3 * c..4 * c]);
        let case = format!("modulate [{rows}, {c}] {xt}->{yt} in_place:{in_place}");
        assert_close(&case, seed, &got, &want, tol(&[xt, yt]));
    }

    #[test]
    fn modulate_reads_rows_of_a_table() {
        check_modulate(11, 37, F32, F32, false);
        check_modulate(11, 37, F32, F16, false);
        check_modulate(40, 29, F32, F32, true);
        check_modulate(40, 29, F16, F16, true);
    }

    #[test]
    fn modulate_rejects_a_row_past_the_table() {
        let gpu = test_gpu();
        let x = Tensor::empty(gpu, &[4, 8], F32).unwrap();
        let table = Tensor::empty(gpu, &[2, 8], F32).unwrap();
        let mut rec = Recorder::new(gpu);
        let m = Modulation {
            scale: Row::of(&table, 2),
            shift: Row::whole(&table),
        };
        let err = modulate_in_place(&mut rec, &x, m).unwrap_err();
        assert!(err.to_string().contains("scale must be row 2"), "{err}");
    }

    fn check_axpby(n: usize, types: [DType; 3], in_place: bool) {
        if skip_f16(&types) {
            return;
        }
        let [xt, yt, ot] = types;
        let gpu = test_gpu();
        let seed = seed();
        let mut rng = Rng::new(seed);
        let (alpha, beta) = (rng.uniform() * 2.0, rng.uniform() * 2.0);
        let (x, xv) = upload(&[n], &rng.vec_normal(n, 1.0), xt);
        let (y, yv) = upload(&[n], &rng.vec_normal(n, 1.0), yt);
        let out = if in_place {
            x.clone()
        } else {
            output(&[n], ot)
        };
        run(|rec| {
            if in_place {
                axpby_in_place(rec, alpha, &x, beta, &y)
            } else {
                axpby(rec, alpha, &x, beta, &y, &out)
            }
        });
        let got = out.to_vec_f32(gpu).unwrap();
        let case = format!("axpby {n} {types:?} in_place:{in_place}");
        assert_close(
            &case,
            seed,
            &got,
            &axpby_reference(alpha, &xv, beta, &yv),
            tol(&types),
        );
    }

    #[test]
    fn axpby_matches_reference() {
        check_axpby(2051, [F32; 3], false);
        check_axpby(2051, [F32; 3], true);
        check_axpby(333, [F16, F32, F16], true);
        check_axpby(333, [F32, F16, F32], false);
    }

    #[test]
    fn cast_converts_storage() {
        let gpu = test_gpu();
        if skip_f16(&[F16]) {
            return;
        }
        let seed = seed();
        let mut rng = Rng::new(seed);
        let v = rng.vec_normal(1029, 10.0);
        let x = Tensor::from_f32(gpu, &[3, 343], &v, F32).unwrap();
        let h = output(&[3, 343], F16);
        let back = output(&[3, 343], F32);
        run(|rec| {
            cast(rec, &x, &h)?;
            cast(rec, &h, &back)
        });
        // WGSL lets f32 -> f16 round either way; f16 -> f32 is exact.
        let want: Vec<f64> = v.iter().map(|&v| v as f64).collect();
        let halves = h.to_vec_f32(gpu).unwrap();
        assert_close("cast f32->f16", seed, &halves, &want, 1e-3);
        let halves: Vec<f64> = halves.iter().map(|&v| v as f64).collect();
        assert_close(
            "cast f16->f32",
            seed,
            &back.to_vec_f32(gpu).unwrap(),
            &halves,
            0.0,
        );
    }

    #[test]
    fn folded_grid_reaches_every_element() {
        // 5 workgroups of 1024 elements laid out as 3 x 2 with one spare.
        super::super::with_fold_limit(3, || {
            check_unary(Unary::Silu, &[4321], 1.0, F32, F32, false);
            check_axpby(5000, [F32; 3], true);
        });
    }
}
