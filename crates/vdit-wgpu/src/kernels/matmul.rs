//! `Y = X W^T + b` (PyTorch's Linear) with fused epilogues. The launcher picks the variant from
//! the tensors' storage types; accumulation is always f32.

use bytemuck::{Pod, Zeroable};

use crate::error::{shape_err, GpuError, Result};
use crate::profiler::Cost;
use crate::recorder::{Dispatch, Recorder};
use crate::shader::{defines, Defines};
use crate::tensor::{DType, Tensor};

/// What happens to each output after the bias.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Epilogue {
    None,
    GeluTanh,
    Silu,
    /// `y = y + gate * (x W^T + b)`: the output tensor holds the residual and is updated in place.
    /// The gate is an f32 vector of length N.
    ResidualGate,
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    m: u32,
    n: u32,
    k: u32,
    _pad: u32,
}

fn matmul_defines(x: DType, w: DType, b: Option<DType>, y: DType, epi: Epilogue) -> Defines {
    let mut d = defines(&[("X_T", x.wgsl()), ("W_T", w.wgsl()), ("Y_T", y.wgsl())]);
    if let Some(b) = b {
        d.insert("HAS_BIAS".into(), "1".into());
        d.insert("B_T".into(), b.wgsl().into());
    }
    match epi {
        Epilogue::None => {}
        Epilogue::GeluTanh => drop(d.insert("EPI_GELU".into(), "1".into())),
        Epilogue::Silu => drop(d.insert("EPI_SILU".into(), "1".into())),
        Epilogue::ResidualGate => drop(d.insert("HAS_GATE".into(), "1".into())),
    }
    d
}

/// The define sets the portability test compiles.
pub fn variants() -> Vec<Defines> {
    use DType::*;
    let mut v = Vec::new();
    for (x, w, y) in [
        (F32, F32, F32),
        (F16, F16, F16),
        (F32, F16, F32),
        (F16, F16, F32),
    ] {
        for epi in [
            Epilogue::None,
            Epilogue::GeluTanh,
            Epilogue::Silu,
            Epilogue::ResidualGate,
        ] {
            v.push(matmul_defines(x, w, Some(w), y, epi));
        }
        v.push(matmul_defines(x, w, None, y, Epilogue::None));
    }
    v
}

/// Records `y = epilogue(x w^T + bias)`. `x`: [.., K] (any leading dims, M rows), `w`: [N, K],
/// `bias`: [N], `y`: [.., N] with the same rows. With `ResidualGate`, `gate`: [N] f32 and `y`
/// holds the residual on entry.
pub fn matmul(
    rec: &mut Recorder,
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    gate: Option<&Tensor>,
    y: &Tensor,
    epilogue: Epilogue,
) -> Result<()> {
    let op = "matmul";
    let (&k, x_rows) = x
        .shape()
        .split_last()
        .ok_or_else(|| shape_err(op, "x is a scalar"))?;
    let m: usize = x_rows.iter().product();
    if w.shape().len() != 2 || w.shape()[1] != k {
        return Err(shape_err(
            op,
            format!("x {:?} needs w [N, {k}], got {:?}", x.shape(), w.shape()),
        ));
    }
    let n = w.shape()[0];
    if y.numel() != m * n || y.shape().last() != Some(&n) {
        return Err(shape_err(
            op,
            format!("y must be [{m}, {n}], got {:?}", y.shape()),
        ));
    }
    if let Some(b) = bias {
        if b.numel() != n {
            return Err(shape_err(
                op,
                format!("bias must have {n} values, got {:?}", b.shape()),
            ));
        }
    }
    let needs_gate = epilogue == Epilogue::ResidualGate;
    match (gate, needs_gate) {
        (Some(g), true) if g.numel() == n && g.dtype() == DType::F32 => {}
        (Some(g), true) => {
            return Err(shape_err(
                op,
                format!("gate must be {n} f32 values, got {g:?}"),
            ))
        }
        (None, true) => return Err(shape_err(op, "the residual epilogue needs a gate")),
        (Some(_), false) => return Err(shape_err(op, "a gate needs the residual epilogue")),
        (None, false) => {}
    }
    let gpu = rec.gpu();
    let any_f16 = [Some(x), Some(w), bias, Some(y)]
        .into_iter()
        .flatten()
        .any(|t| t.dtype() == DType::F16);
    if any_f16 && !gpu.caps.shader_f16 {
        return Err(GpuError::MissingFeature(
            "an f16 matmul".into(),
            "SHADER_F16",
        ));
    }
    let params = Params {
        m: m as u32,
        n: n as u32,
        k: k as u32,
        _pad: 0,
    };
    let mut tensors: Vec<&Tensor> = vec![x, w];
    tensors.extend(bias);
    tensors.extend(gate);
    tensors.push(y);
    let el = |t: &Tensor| t.dtype().size() as f64;
    let bytes = m as f64 * k as f64 * el(x)
        + n as f64 * k as f64 * el(w)
        + m as f64 * n as f64 * el(y) * if needs_gate { 2.0 } else { 1.0 };
    rec.dispatch(Dispatch {
        shader: "matmul",
        entry: "main",
        defines: matmul_defines(
            x.dtype(),
            w.dtype(),
            bias.map(|b| b.dtype()),
            y.dtype(),
            epilogue,
        ),
        constants: vec![],
        params: bytemuck::bytes_of(&params),
        tensors: &tensors,
        workgroups: [n.div_ceil(64) as u32, m.div_ceil(64) as u32, 1],
        label: format!("matmul {}x{}x{} {}w", m, n, k, w.dtype()).into(),
        cost: Cost::new(2.0 * m as f64 * n as f64 * k as f64, bytes),
    })
}

/// CPU float64 reference of `matmul`.
pub fn matmul_reference(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    gate: Option<&[f32]>,
    residual: Option<&[f32]>,
    m: usize,
    n: usize,
    k: usize,
    epilogue: Epilogue,
) -> Vec<f64> {
    let mut out = vec![0.0f64; m * n];
    for r in 0..m {
        for c in 0..n {
            let mut acc = 0.0f64;
            for i in 0..k {
                acc += x[r * k + i] as f64 * w[c * k + i] as f64;
            }
            if let Some(b) = bias {
                acc += b[c] as f64;
            }
            out[r * n + c] = match epilogue {
                Epilogue::None => acc,
                Epilogue::GeluTanh => crate::kernels::gelu_tanh_f64(acc),
                Epilogue::Silu => acc / (1.0 + (-acc).exp()),
                Epilogue::ResidualGate => {
                    residual.unwrap()[r * n + c] as f64 + gate.unwrap()[c] as f64 * acc
                }
            };
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    fn check(
        m: usize,
        n: usize,
        k: usize,
        xt: DType,
        wt: DType,
        yt: DType,
        epi: Epilogue,
        bias: bool,
    ) {
        let gpu = test_gpu();
        if [xt, wt, yt].contains(&DType::F16) && !gpu.caps.shader_f16 {
            eprintln!("skipping f16 case: adapter lacks SHADER_F16");
            return;
        }
        let seed = seed();
        let mut rng = Rng::new(seed);
        let mut xv = rng.vec_normal(m * k, 1.0);
        let mut wv = rng.vec_normal(n * k, 1.0 / (k as f32).sqrt());
        let mut bv = rng.vec_normal(n, 0.5);
        let gv = rng.vec_normal(n, 1.0);
        let mut rv = rng.vec_normal(m * n, 1.0);
        // The reference sees exactly the values the GPU stores.
        if xt == DType::F16 {
            xv = round_f16(&xv);
        }
        if wt == DType::F16 {
            wv = round_f16(&wv);
            bv = round_f16(&bv);
        }
        if yt == DType::F16 {
            rv = round_f16(&rv);
        }
        let x = Tensor::from_f32(gpu, &[m, k], &xv, xt).unwrap();
        let w = Tensor::from_f32(gpu, &[n, k], &wv, wt).unwrap();
        let b = Tensor::from_f32(gpu, &[n], &bv, wt).unwrap();
        let g = Tensor::from_f32(gpu, &[n], &gv, DType::F32).unwrap();
        let y = if epi == Epilogue::ResidualGate {
            Tensor::from_f32(gpu, &[m, n], &rv, yt).unwrap()
        } else {
            let y = Tensor::empty(gpu, &[m, n], yt).unwrap();
            y.poison(gpu);
            y
        };
        let mut rec = Recorder::new(gpu);
        let gate = (epi == Epilogue::ResidualGate).then_some(&g);
        matmul(&mut rec, &x, &w, bias.then_some(&b), gate, &y, epi).unwrap();
        rec.run().unwrap();
        let got = y.to_vec_f32(gpu).unwrap();
        let want = matmul_reference(
            &xv,
            &wv,
            bias.then_some(&bv[..]),
            Some(&gv),
            Some(&rv),
            m,
            n,
            k,
            epi,
        );
        let tol = if yt == DType::F16 || xt == DType::F16 {
            2e-3
        } else {
            1e-5
        };
        assert_close(
            &format!("matmul {m}x{n}x{k} x:{xt} w:{wt} y:{yt} {epi:?} bias:{bias}"),
            seed,
            &got,
            &want,
            tol,
        );
    }

    #[test]
    fn matmul_f32_odd_sizes_all_epilogues() {
        for epi in [
            Epilogue::None,
            Epilogue::GeluTanh,
            Epilogue::Silu,
            Epilogue::ResidualGate,
        ] {
            check(67, 45, 33, DType::F32, DType::F32, DType::F32, epi, true);
        }
        check(
            1,
            1,
            1,
            DType::F32,
            DType::F32,
            DType::F32,
            Epilogue::None,
            false,
        );
        check(
            130,
            77,
            129,
            DType::F32,
            DType::F32,
            DType::F32,
            Epilogue::None,
            false,
        );
    }

    #[test]
    fn matmul_f16_storage() {
        check(
            67,
            45,
            33,
            DType::F16,
            DType::F16,
            DType::F16,
            Epilogue::GeluTanh,
            true,
        );
        check(
            70,
            129,
            50,
            DType::F32,
            DType::F16,
            DType::F32,
            Epilogue::ResidualGate,
            true,
        );
        check(
            65,
            64,
            17,
            DType::F16,
            DType::F16,
            DType::F32,
            Epilogue::None,
            true,
        );
    }

    #[test]
    fn matmul_rejects_mismatched_shapes() {
        let gpu = test_gpu();
        let x = Tensor::empty(gpu, &[4, 8], DType::F32).unwrap();
        let w = Tensor::empty(gpu, &[5, 7], DType::F32).unwrap();
        let y = Tensor::empty(gpu, &[4, 5], DType::F32).unwrap();
        let mut rec = Recorder::new(gpu);
        let err = matmul(&mut rec, &x, &w, None, None, &y, Epilogue::None).unwrap_err();
        assert!(err.to_string().contains("w [N, 8]"), "{err}");
    }
}
