//! `Y = X W^T + b` (PyTorch's Linear) with fused epilogues. The launcher picks the variant from
//! the tensors' storage types; accumulation is always f32. With f16 operands on an adapter that
//! has 16x16 f16 cooperative matrices it runs `matmul_coop.wgsl` (tensor cores); otherwise the
//! portable `matmul.wgsl`. Both are checked against the same float64 reference. W may be dense
//! or quantised (Q8_0, Q4_K: dequantised by the kernels as they load it).

use crate::error::{shape_err, GpuError, Result};
use crate::kernels::q4k::Q4KWeight;
use crate::kernels::q8::Q8Weight;
use crate::kernels::{require_distinct, to_u32, Row};
use crate::param_block::ParamBytes;
use crate::policy::{CoopTiles, MatmulKernel};
use crate::profiler::Cost;
use crate::recorder::{Dispatch, Recorder};
use crate::shader::{defines, Defines};
use crate::tensor::{DType, Tensor};

/// A Linear weight matrix [N, K] on the GPU: dense, or Q8_0 / Q4_K dequantised inside the
/// kernels.
pub enum Weight {
    Dense(Tensor),
    Q8(Q8Weight),
    Q4K(Q4KWeight),
}

/// A borrowed [`Weight`], or any dense tensor used as one.
#[derive(Clone, Copy, Debug)]
pub enum WeightRef<'a> {
    Dense(&'a Tensor),
    Q8(&'a Q8Weight),
    Q4K(&'a Q4KWeight),
}

impl Weight {
    pub fn as_ref(&self) -> WeightRef<'_> {
        match self {
            Weight::Dense(t) => WeightRef::Dense(t),
            Weight::Q8(q) => WeightRef::Q8(q),
            Weight::Q4K(q) => WeightRef::Q4K(q),
        }
    }
    /// GPU bytes.
    pub fn bytes(&self) -> u64 {
        match self {
            Weight::Dense(t) => t.bytes(),
            Weight::Q8(q) => q.bytes(),
            Weight::Q4K(q) => q.bytes(),
        }
    }
    /// The GPU tensors it is made of.
    pub fn tensors(&self) -> Vec<&Tensor> {
        match self {
            Weight::Dense(t) => vec![t],
            Weight::Q8(q) => q.tensors().to_vec(),
            Weight::Q4K(q) => q.tensors().to_vec(),
        }
    }
}

impl WeightRef<'_> {
    /// The shape as a tensor ([N, K]; a dense one may have any shape, checked by the launcher).
    fn shape(&self) -> Vec<usize> {
        match self {
            WeightRef::Dense(t) => t.shape().to_vec(),
            WeightRef::Q8(q) => q.shape().to_vec(),
            WeightRef::Q4K(q) => q.shape().to_vec(),
        }
    }
    /// The storage's name in profiler labels.
    fn type_name(&self) -> String {
        match self {
            WeightRef::Dense(t) => t.dtype().to_string(),
            WeightRef::Q8(_) => "q8_0".into(),
            WeightRef::Q4K(_) => "q4_k".into(),
        }
    }
    fn bytes(&self) -> f64 {
        match self {
            WeightRef::Dense(t) => t.bytes() as f64,
            WeightRef::Q8(q) => q.bytes() as f64,
            WeightRef::Q4K(q) => q.bytes() as f64,
        }
    }
}

/// The storage of W as the kernels' defines see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WeightStorage {
    Dense(DType),
    Q8,
    Q4K,
}

/// What happens to each output after the bias.
#[derive(Clone, Copy, Debug)]
pub enum Epilogue<'a> {
    None,
    GeluTanh,
    Silu,
    /// `y = y + (x W^T + b)`: the output tensor holds the residual and is updated in place.
    Residual,
    /// `y = y + gate * (x W^T + b)`, the gate an f32 row of N values (e.g. a row of a modulation
    /// table); the output tensor holds the residual and is updated in place.
    ResidualGate(Row<'a>),
}

impl Epilogue<'_> {
    fn name(&self) -> &'static str {
        match self {
            Epilogue::None => "",
            Epilogue::GeluTanh => "+gelu",
            Epilogue::Silu => "+silu",
            Epilogue::Residual => "+residual",
            Epilogue::ResidualGate(_) => "+gated residual",
        }
    }
    fn reads_output(&self) -> bool {
        matches!(self, Epilogue::Residual | Epilogue::ResidualGate(_))
    }
}

/// The epilogue kinds, without their operands (variant selection and tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EpilogueKind {
    None,
    GeluTanh,
    Silu,
    Residual,
    ResidualGate,
}

impl From<&Epilogue<'_>> for EpilogueKind {
    fn from(e: &Epilogue<'_>) -> Self {
        match e {
            Epilogue::None => Self::None,
            Epilogue::GeluTanh => Self::GeluTanh,
            Epilogue::Silu => Self::Silu,
            Epilogue::Residual => Self::Residual,
            Epilogue::ResidualGate(_) => Self::ResidualGate,
        }
    }
}

crate::param_block! {
    struct Params {
        m: u32,
        n: u32,
        k: u32,
        gate_offset: u32,
    }
}

fn matmul_defines(
    x: DType,
    w: WeightStorage,
    b: Option<DType>,
    y: DType,
    epi: EpilogueKind,
) -> Defines {
    let mut d = defines(&[("X_T", x.wgsl()), ("Y_T", y.wgsl())]);
    match w {
        WeightStorage::Dense(w) => d.insert("W_T".into(), w.wgsl().into()),
        WeightStorage::Q8 => d.insert("W_Q8".into(), "1".into()),
        WeightStorage::Q4K => d.insert("W_Q4K".into(), "1".into()),
    };
    if let Some(b) = b {
        d.insert("HAS_BIAS".into(), "1".into());
        d.insert("B_T".into(), b.wgsl().into());
    }
    let flag = match epi {
        EpilogueKind::None => None,
        EpilogueKind::GeluTanh => Some("EPI_GELU"),
        EpilogueKind::Silu => Some("EPI_SILU"),
        EpilogueKind::Residual => Some("HAS_RESIDUAL"),
        EpilogueKind::ResidualGate => Some("HAS_GATE"),
    };
    if let Some(flag) = flag {
        d.insert(flag.into(), "1".into());
    }
    if epi == EpilogueKind::ResidualGate {
        d.insert("HAS_RESIDUAL".into(), "1".into());
    }
    d
}

/// Workgroup memory of `matmul_coop.wgsl` with these tiles: the X and W tiles (128 rows of
/// BK + 8 halves each) and one 16 x 16 f32 fragment per subgroup.
pub fn coop_shared_bytes(tiles: CoopTiles) -> u32 {
    let bk = if tiles.wide_k && !tiles.wide_tile {
        64
    } else {
        32
    };
    (coop_rows(tiles) + 128) * (bk + 8) * 2 + 8 * 256 * 4
}

/// Output rows of one workgroup of `matmul_coop.wgsl`.
fn coop_rows(tiles: CoopTiles) -> u32 {
    if tiles.wide_tile {
        256
    } else {
        128
    }
}

/// Makes `matmul.wgsl`'s defines those of `matmul_coop.wgsl`: the tile options, and no operand
/// types (f16 there by construction).
fn add_tile_defines(tiles: CoopTiles, d: &mut Defines) {
    d.remove("X_T");
    d.remove("W_T");
    if tiles.wide_tile {
        d.insert("WIDE_TILE".into(), "1".into());
    } else if tiles.wide_k {
        d.insert("WIDE_K".into(), "1".into());
    }
    if tiles.vec_tiles {
        d.insert("VEC_TILES".into(), "1".into());
    }
}

/// The define sets of `matmul_coop.wgsl`: f16 operands, any epilogue, f16 or f32 output, every
/// tile option.
pub fn coop_variants() -> Vec<Defines> {
    use DType::*;
    let mut v = Vec::new();
    for (wide_k, vec_tiles, wide_tile) in [
        (false, false, false),
        (true, false, false),
        (false, true, false),
        (true, true, false),
        (false, true, true),
        (false, false, true),
    ] {
        for y in [F16, F32] {
            let mut add = |mut d: Defines| {
                add_tile_defines(
                    CoopTiles {
                        wide_k,
                        vec_tiles,
                        wide_tile,
                    },
                    &mut d,
                );
                v.push(d);
            };
            for epi in [
                EpilogueKind::None,
                EpilogueKind::GeluTanh,
                EpilogueKind::Silu,
                EpilogueKind::Residual,
                EpilogueKind::ResidualGate,
            ] {
                for w in [
                    WeightStorage::Dense(F16),
                    WeightStorage::Q8,
                    WeightStorage::Q4K,
                ] {
                    add(matmul_defines(F16, w, Some(F16), y, epi));
                }
            }
            add(matmul_defines(
                F16,
                WeightStorage::Dense(F16),
                None,
                y,
                EpilogueKind::None,
            ));
        }
    }
    v
}

/// Whether `matmul_coop.wgsl` can run this product: f16 operands with K a multiple of 4 (it
/// loads 4-vectors), 16x16 f16 -> f32 cooperative matrices, and subgroups of exactly 32.
pub(crate) fn coop_fits(
    gpu: &crate::gpu::Gpu,
    tiles: CoopTiles,
    x: &Tensor,
    w: WeightRef<'_>,
    k: usize,
) -> bool {
    let caps = &gpu.caps;
    let w_fits = match w {
        WeightRef::Dense(w) => w.dtype() == DType::F16,
        // K is a multiple of 32 (Q8_0) or 256 (Q4_K) by construction.
        WeightRef::Q8(_) | WeightRef::Q4K(_) => true,
    };
    caps.coop_f16_16x16()
        && caps.subgroup_min_size == 32
        && caps.subgroup_max_size == 32
        && x.dtype() == DType::F16
        && w_fits
        && k % 4 == 0
        && coop_gemm_fits_limits(gpu, coop_shared_bytes(tiles))
}

/// Whether the device's limits (which an application's own device may set low) admit a
/// cooperative GEMM workgroup: 256 invocations and `shared_bytes` of workgroup memory.
pub(crate) fn coop_gemm_fits_limits(gpu: &crate::gpu::Gpu, shared_bytes: u32) -> bool {
    gpu.limits.max_compute_invocations_per_workgroup >= 256
        && gpu.limits.max_compute_workgroup_size_x >= 256
        && gpu.limits.max_compute_workgroup_storage_size >= shared_bytes
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
            EpilogueKind::None,
            EpilogueKind::GeluTanh,
            EpilogueKind::Silu,
            EpilogueKind::Residual,
            EpilogueKind::ResidualGate,
        ] {
            v.push(matmul_defines(x, WeightStorage::Dense(w), Some(w), y, epi));
            // Quantised weights with the bias in the activations' type.
            v.push(matmul_defines(x, WeightStorage::Q8, Some(x), y, epi));
            v.push(matmul_defines(x, WeightStorage::Q4K, Some(x), y, epi));
        }
        v.push(matmul_defines(
            x,
            WeightStorage::Dense(w),
            None,
            y,
            EpilogueKind::None,
        ));
    }
    v
}

/// Records `y = epilogue(x w^T + bias)`. `x`: [.., K] (any leading dims, M rows), `w`: [N, K],
/// `bias`: [N], `y`: [.., N] with the same rows. With the residual epilogues `y` holds the
/// residual on entry and is updated in place.
pub fn matmul(
    rec: &mut Recorder,
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    y: &Tensor,
    epilogue: Epilogue<'_>,
) -> Result<()> {
    matmul_weight(rec, x, WeightRef::Dense(w), bias, y, epilogue)
}

/// [`matmul`] with W dense or quantised.
pub fn matmul_weight(
    rec: &mut Recorder,
    x: &Tensor,
    w: WeightRef<'_>,
    bias: Option<&Tensor>,
    y: &Tensor,
    epilogue: Epilogue<'_>,
) -> Result<()> {
    let op = "matmul";
    let (&k, x_rows) = x
        .shape()
        .split_last()
        .ok_or_else(|| shape_err(op, "x is a scalar"))?;
    let m: usize = x_rows.iter().product();
    let w_shape = w.shape();
    if w_shape.len() != 2 || w_shape[1] != k {
        return Err(shape_err(
            op,
            format!("x {:?} needs w [N, {k}], got {w_shape:?}", x.shape()),
        ));
    }
    let n = w_shape[0];
    // The W tensors as bound: the matrix (binding 2) and, quantised, its scales (binding 6).
    let (w_main, w_scales, w_storage) = match w {
        WeightRef::Dense(t) => (t, None, WeightStorage::Dense(t.dtype())),
        WeightRef::Q8(q) => (&q.quants, Some(&q.scales), WeightStorage::Q8),
        WeightRef::Q4K(q) => (&q.quants, Some(&q.scales), WeightStorage::Q4K),
    };
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
    let (gate, gate_offset) = match &epilogue {
        Epilogue::ResidualGate(row) => (Some(row.tensor), row.offset(op, "gate", n)?),
        _ => (None, 0),
    };
    for input in [x, w_main]
        .into_iter()
        .chain(w_scales)
        .chain(bias)
        .chain(gate)
    {
        require_distinct(op, input, y)?;
    }
    let gpu = rec.gpu();
    let dense_w = matches!(w, WeightRef::Dense(_)).then_some(w_main);
    let any_f16 = [Some(x), dense_w, bias, Some(y)]
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
        m: to_u32(op, m)?,
        n: to_u32(op, n)?,
        k: to_u32(op, k)?,
        gate_offset,
    };
    to_u32(op, m * k.max(n))?;
    let mut tensors: Vec<&Tensor> = vec![x, w_main];
    tensors.extend(bias);
    tensors.extend(gate);
    tensors.push(y);
    tensors.extend(w_scales);
    let el = |t: &Tensor| t.dtype().size() as f64;
    let bytes = m as f64 * k as f64 * el(x)
        + w.bytes()
        + m as f64 * n as f64 * el(y) * if epilogue.reads_output() { 2.0 } else { 1.0 };
    let on_cpu = gpu.info.device_type == wgpu::DeviceType::Cpu;
    let (coop, direct) = match rec.policy().matmul {
        MatmulKernel::Auto if coop_fits(gpu, CoopTiles::TUNED, x, w, k) => {
            (Some(CoopTiles::TUNED), false)
        }
        MatmulKernel::Auto => (None, on_cpu),
        MatmulKernel::Portable => (None, false),
        MatmulKernel::Direct => (None, true),
        MatmulKernel::Cooperative(tiles) if coop_fits(gpu, tiles, x, w, k) => (Some(tiles), false),
        MatmulKernel::Cooperative(_) => (None, on_cpu),
    };
    let (shader, path) = match (coop, direct) {
        (Some(_), _) => (&MATMUL_COOP, " coop"),
        (None, true) => (&MATMUL_DIRECT, " direct"),
        (None, false) => (&MATMUL, ""),
    };
    let workgroups = match (coop, direct) {
        (Some(t), _) => [
            n.div_ceil(128) as u32,
            m.div_ceil(coop_rows(t) as usize) as u32,
            1,
        ],
        // 64 invocations of 4 x 4 outputs per workgroup.
        (None, true) => {
            crate::kernels::folded_grid(gpu, (m.div_ceil(4) * n.div_ceil(4)).div_ceil(64))
        }
        (None, false) => [n.div_ceil(64) as u32, m.div_ceil(64) as u32, 1],
    };
    let mut defines = matmul_defines(
        x.dtype(),
        w_storage,
        bias.map(|b| b.dtype()),
        y.dtype(),
        EpilogueKind::from(&epilogue),
    );
    if let Some(tiles) = coop {
        add_tile_defines(tiles, &mut defines);
    }
    rec.dispatch(Dispatch {
        shader,
        entry: "main",
        defines,
        constants: vec![],
        params: ParamBytes::of(&params),
        tensors: &tensors,
        workgroups,
        label: format!(
            "matmul{}{path} {m}x{n}x{k} {}",
            epilogue.name(),
            w.type_name()
        )
        .into(),
        cost: Cost::new(2.0 * m as f64 * n as f64 * k as f64, bytes),
    })
}

/// The epilogue of `matmul_reference`, with its operands as host slices.
#[derive(Clone, Copy, Debug)]
pub enum ReferenceEpilogue<'a> {
    None,
    GeluTanh,
    Silu,
    Residual {
        residual: &'a [f32],
    },
    ResidualGate {
        residual: &'a [f32],
        gate: &'a [f32],
    },
}

/// CPU float64 reference of `matmul`.
pub fn matmul_reference(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    (m, n, k): (usize, usize, usize),
    epilogue: ReferenceEpilogue<'_>,
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
                ReferenceEpilogue::None => acc,
                ReferenceEpilogue::GeluTanh => crate::kernels::gelu_tanh_f64(acc),
                ReferenceEpilogue::Silu => crate::kernels::silu_f64(acc),
                ReferenceEpilogue::Residual { residual } => residual[r * n + c] as f64 + acc,
                ReferenceEpilogue::ResidualGate { residual, gate } => {
                    residual[r * n + c] as f64 + gate[c] as f64 * acc
                }
            };
        }
    }
    out
}

/// `shaders/matmul_direct.wgsl`.
pub static MATMUL_DIRECT: crate::shader::ShaderFile =
    crate::shader_file!("matmul_direct", variants);

/// `shaders/matmul.wgsl`.
pub static MATMUL: crate::shader::ShaderFile = crate::shader_file!("matmul", variants);

/// `shaders/matmul_coop.wgsl`.
pub static MATMUL_COOP: crate::shader::ShaderFile =
    crate::shader_file!("matmul_coop", coop_variants);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::KernelPolicy;
    use crate::testing::*;

    struct Case {
        m: usize,
        n: usize,
        k: usize,
        x: DType,
        w: DType,
        y: DType,
        epi: EpilogueKind,
        bias: bool,
    }

    fn check(c: Case) {
        let Case {
            m, n, k, epi, bias, ..
        } = c;
        let gpu = test_gpu();
        if [c.x, c.w, c.y].contains(&DType::F16) && !gpu.caps.shader_f16 {
            eprintln!("skipping f16 case: adapter lacks SHADER_F16");
            return;
        }
        let seed = seed();
        let mut rng = Rng::new(seed);
        let mut xv = rng.vec_normal(m * k, 1.0);
        let mut wv = rng.vec_normal(n * k, 1.0 / (k as f32).sqrt());
        let mut bv = rng.vec_normal(n, 0.5);
        // Gates live in row 1 of a [2, N] table, as in a modulation table.
        let gv = rng.vec_normal(2 * n, 1.0);
        let mut rv = rng.vec_normal(m * n, 1.0);
        // The reference sees exactly the values the GPU stores.
        if c.x == DType::F16 {
            xv = round_f16(&xv);
        }
        if c.w == DType::F16 {
            wv = round_f16(&wv);
            bv = round_f16(&bv);
        }
        if c.y == DType::F16 {
            rv = round_f16(&rv);
        }
        let x = Tensor::from_f32(gpu, &[m, k], &xv, c.x).unwrap();
        let w = Tensor::from_f32(gpu, &[n, k], &wv, c.w).unwrap();
        let b = Tensor::from_f32(gpu, &[n], &bv, c.w).unwrap();
        let g = Tensor::from_f32(gpu, &[2, n], &gv, DType::F32).unwrap();
        let reads_output = matches!(epi, EpilogueKind::Residual | EpilogueKind::ResidualGate);
        // Both kernels where the adapter has cooperative matrices, the portable one elsewhere.
        let mut kernels = vec![MatmulKernel::Portable, MatmulKernel::Direct];
        if coop_fits(gpu, CoopTiles::TUNED, &x, WeightRef::Dense(&w), k) {
            kernels.push(MatmulKernel::Cooperative(CoopTiles::TUNED));
        }
        for kernel in kernels {
            let y = if reads_output {
                Tensor::from_f32(gpu, &[m, n], &rv, c.y).unwrap()
            } else {
                let y = Tensor::empty(gpu, &[m, n], c.y).unwrap();
                y.poison(gpu);
                y
            };
            let (gpu_epi, ref_epi) = match epi {
                EpilogueKind::None => (Epilogue::None, ReferenceEpilogue::None),
                EpilogueKind::GeluTanh => (Epilogue::GeluTanh, ReferenceEpilogue::GeluTanh),
                EpilogueKind::Silu => (Epilogue::Silu, ReferenceEpilogue::Silu),
                EpilogueKind::Residual => (
                    Epilogue::Residual,
                    ReferenceEpilogue::Residual { residual: &rv },
                ),
                EpilogueKind::ResidualGate => (
                    Epilogue::ResidualGate(Row::of(&g, 1)),
                    ReferenceEpilogue::ResidualGate {
                        residual: &rv,
                        gate: &gv[n..],
                    },
                ),
            };
            let mut rec = Recorder::new(gpu);
            rec.set_policy(KernelPolicy {
                matmul: kernel,
                ..KernelPolicy::default()
            });
            matmul(&mut rec, &x, &w, bias.then_some(&b), &y, gpu_epi).unwrap();
            rec.run().unwrap();
            let got = y.to_vec_f32(gpu).unwrap();
            let want = matmul_reference(&xv, &wv, bias.then_some(&bv[..]), (m, n, k), ref_epi);
            let tol = if c.y == DType::F16 || c.x == DType::F16 {
                2e-3
            } else {
                1e-5
            };
            assert_close(
                &format!(
                    "matmul {m}x{n}x{k} x:{} w:{} y:{} {epi:?} bias:{bias} {kernel:?}",
                    c.x, c.w, c.y
                ),
                seed,
                &got,
                &want,
                tol,
            );
        }
    }

    /// Kernels built with wgpu's runtime checks (`--checked-shaders`) and without them (the
    /// default) give the same bits: the checks never fire on the kernel's own bounds logic.
    #[test]
    fn checked_and_unchecked_kernels_agree() {
        let checked = crate::gpu::Gpu::with_options(&crate::gpu::GpuOptions {
            checked_shaders: true,
            ..Default::default()
        })
        .expect("a GPU");
        let seed = seed();
        let mut rng = Rng::new(seed);
        let (m, n, k) = (37, 29, 45);
        let (xv, wv) = (rng.vec_normal(m * k, 1.0), rng.vec_normal(n * k, 1.0));
        let run = |gpu: &crate::gpu::Gpu| {
            let x = Tensor::from_f32(gpu, &[m, k], &xv, F32).unwrap();
            let w = Tensor::from_f32(gpu, &[n, k], &wv, F32).unwrap();
            let y = Tensor::empty(gpu, &[m, n], F32).unwrap();
            let mut rec = Recorder::new(gpu);
            rec.set_policy(KernelPolicy {
                matmul: MatmulKernel::Portable,
                ..KernelPolicy::default()
            });
            matmul(&mut rec, &x, &w, None, &y, Epilogue::GeluTanh).unwrap();
            rec.run().unwrap();
            y.to_vec_f32(gpu).unwrap()
        };
        let (got, want) = (run(test_gpu()), run(&checked));
        assert!(
            got.iter()
                .zip(&want)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "unchecked and checked kernels differ (VDIT_TEST_SEED={seed})"
        );
    }

    use DType::{F16, F32};

    #[test]
    fn matmul_f32_odd_sizes_all_epilogues() {
        for epi in [
            EpilogueKind::None,
            EpilogueKind::GeluTanh,
            EpilogueKind::Silu,
            EpilogueKind::Residual,
            EpilogueKind::ResidualGate,
        ] {
            check(Case {
                m: 67,
                n: 45,
                k: 33,
                x: F32,
                w: F32,
                y: F32,
                epi,
                bias: true,
            });
        }
        check(Case {
            m: 1,
            n: 1,
            k: 1,
            x: F32,
            w: F32,
            y: F32,
            epi: EpilogueKind::None,
            bias: false,
        });
        check(Case {
            m: 130,
            n: 77,
            k: 129,
            x: F32,
            w: F32,
            y: F32,
            epi: EpilogueKind::None,
            bias: false,
        });
    }

    #[test]
    fn matmul_f16_storage() {
        check(Case {
            m: 67,
            n: 45,
            k: 33,
            x: F16,
            w: F16,
            y: F16,
            epi: EpilogueKind::GeluTanh,
            bias: true,
        });
        check(Case {
            m: 70,
            n: 129,
            k: 50,
            x: F32,
            w: F16,
            y: F32,
            epi: EpilogueKind::ResidualGate,
            bias: true,
        });
        check(Case {
            m: 65,
            n: 64,
            k: 17,
            x: F16,
            w: F16,
            y: F32,
            epi: EpilogueKind::None,
            bias: true,
        });
    }

    /// Shapes that cross the 128 x 128 tiles of the cooperative kernel and end K mid-step.
    #[test]
    fn matmul_f16_tile_edges_all_epilogues() {
        for epi in [
            EpilogueKind::None,
            EpilogueKind::GeluTanh,
            EpilogueKind::Silu,
            EpilogueKind::Residual,
            EpilogueKind::ResidualGate,
        ] {
            for y in [F16, F32] {
                check(Case {
                    m: 131,
                    n: 145,
                    k: 100,
                    x: F16,
                    w: F16,
                    y,
                    epi,
                    bias: true,
                });
            }
        }
        for (m, n, k) in [(1, 1, 4), (17, 300, 36), (260, 16, 64)] {
            check(Case {
                m,
                n,
                k,
                x: F16,
                w: F16,
                y: F32,
                epi: EpilogueKind::None,
                bias: false,
            });
        }
    }

    #[test]
    fn matmul_rejects_mismatched_shapes() {
        let gpu = test_gpu();
        let x = Tensor::empty(gpu, &[4, 8], F32).unwrap();
        let w = Tensor::empty(gpu, &[5, 7], F32).unwrap();
        let y = Tensor::empty(gpu, &[4, 5], F32).unwrap();
        let mut rec = Recorder::new(gpu);
        let err = matmul(&mut rec, &x, &w, None, &y, Epilogue::None).unwrap_err();
        assert!(err.to_string().contains("w [N, 8]"), "{err}");
    }
}
