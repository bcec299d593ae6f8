//! Which of `conv.wgsl`, `conv_coop.wgsl` and `conv_direct.wgsl` a call runs, and the define
//! sets of each.

use crate::policy::ConvKernel;
use crate::shader::{defines, Defines};
use crate::tensor::{DType, Tensor};

/// The storage types and options of one compiled variant.
#[derive(Clone, Copy, Debug)]
pub(super) struct Variant {
    pub x: DType,
    pub w: DType,
    pub y: DType,
    pub cache: bool,
    pub bias: bool,
    pub residual: bool,
    pub clamp: bool,
}

/// How a call is computed: the 64 x 64 GEMM tiles of `conv.wgsl`, the 128 x 128 cooperative-
/// matrix tiles of `conv_coop.wgsl`, or `conv_direct.wgsl` with this many output channels per
/// thread (4, 8 or 16).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Tiling {
    Gemm,
    Coop,
    Direct(usize),
}

/// The direct kernel serves convolutions with at most this many output channels, where most of
/// a 64-wide output tile would be idle.
const DIRECT_MAX_N: usize = 32;

/// The kernel of a call with `n` output channels under `policy`; `coop`: whether the
/// cooperative kernel can run it.
pub(super) fn tiling(policy: ConvKernel, n: usize, coop: bool) -> Tiling {
    let by_width = match n {
        0..=4 => 4,
        5..=8 => 8,
        _ => 16,
    };
    match policy {
        // With cooperative matrices every width goes to tensor cores: on the H100 the Wan-VAE's
        // last conv (96 -> 3 channels at 480 x 832) took 87 ms per call on the direct kernel,
        // while the cooperative kernel ran the 96 -> 96 conv of the same size and K, on the same
        // single 128-wide column tile, in 15 ms.
        ConvKernel::Auto if coop => Tiling::Coop,
        ConvKernel::Auto if n <= DIRECT_MAX_N => Tiling::Direct(by_width),
        ConvKernel::Auto | ConvKernel::Gemm => Tiling::Gemm,
        ConvKernel::Cooperative if coop => Tiling::Coop,
        ConvKernel::Cooperative => tiling(ConvKernel::Auto, n, coop),
        ConvKernel::Direct {
            channels_per_thread: c @ (4 | 8 | 16),
        } => Tiling::Direct(c as usize),
        ConvKernel::Direct { .. } => Tiling::Direct(by_width),
    }
}

/// Whether `conv_coop.wgsl` can run a call: f16 input, history and weights, Cin a multiple of
/// 4 (it fetches 4 channels at once), 16x16 f16 -> f32 cooperative matrices and subgroups of
/// exactly 32.
pub(crate) fn coop_fits(gpu: &crate::gpu::Gpu, inputs: &[&Tensor], cin: usize) -> bool {
    let caps = &gpu.caps;
    caps.coop_f16_16x16()
        && caps.subgroup_min_size == 32
        && caps.subgroup_max_size == 32
        && cin % 4 == 0
        && inputs.iter().all(|t| t.dtype() == DType::F16)
        && crate::kernels::matmul::coop_gemm_fits_limits(gpu, CONV_COOP_SHARED_BYTES)
}

/// Workgroup memory of `conv_coop.wgsl`: X and W tiles of 128 rows of 72 halves, and one 16 x 16
/// f32 fragment per subgroup.
const CONV_COOP_SHARED_BYTES: u32 = 2 * 128 * 72 * 2 + 8 * 256 * 4;

/// The defines of `conv_direct.wgsl` for `co` output channels per thread.
pub(super) fn direct_defines(v: Variant, co: usize) -> Defines {
    let mut d = conv_defines(v);
    if co >= 8 {
        d.insert("CO_8".into(), "1".into());
    }
    if co >= 16 {
        d.insert("CO_16".into(), "1".into());
    }
    d
}

pub(super) fn conv_defines(v: Variant) -> Defines {
    let mut d = defines(&[
        ("X_T", v.x.wgsl()),
        ("W_T", v.w.wgsl()),
        ("Y_T", v.y.wgsl()),
    ]);
    for (flag, on) in [
        ("HAS_CACHE", v.cache),
        ("HAS_BIAS", v.bias),
        ("HAS_RESIDUAL", v.residual),
        ("CLAMP_UNIT", v.clamp),
    ] {
        if on {
            d.insert(flag.into(), "1".into());
        }
    }
    d
}

/// The defines of `conv_coop.wgsl`: those of `conv.wgsl` less the input and weight types, which
/// are f16 there by construction.
pub(super) fn coop_defines(v: Variant) -> Defines {
    let mut d = conv_defines(v);
    d.remove("X_T");
    d.remove("W_T");
    d
}

/// The define sets of `conv.wgsl` the portability test compiles.
pub fn variants() -> Vec<Defines> {
    all_variants().into_iter().map(conv_defines).collect()
}

/// The define sets of `conv_coop.wgsl`: f16 operands.
pub fn coop_variants() -> Vec<Defines> {
    all_variants()
        .into_iter()
        .filter(|v| v.x == DType::F16 && v.w == DType::F16)
        .map(coop_defines)
        .collect()
}

/// The define sets of `conv_direct.wgsl`.
pub fn direct_variants() -> Vec<Defines> {
    all_variants()
        .into_iter()
        .flat_map(|v| [4, 8, 16].map(|co| direct_defines(v, co)))
        .collect()
}

fn all_variants() -> Vec<Variant> {
    use DType::*;
    let mut v = Vec::new();
    for (x, w, y) in [
        (F32, F32, F32),
        (F16, F16, F16),
        (F32, F16, F32),
        (F16, F16, F32),
    ] {
        for cache in [false, true] {
            for (bias, residual, clamp) in [
                (true, false, false),
                (true, true, false),
                (true, false, true),
                (false, false, false),
            ] {
                v.push(Variant {
                    x,
                    w,
                    y,
                    cache,
                    bias,
                    residual,
                    clamp,
                });
            }
        }
    }
    v
}

/// `shaders/conv.wgsl`.
pub static CONV: crate::shader::ShaderFile = crate::shader_file!("conv", variants);

/// `shaders/conv_coop.wgsl`.
pub static CONV_COOP: crate::shader::ShaderFile = crate::shader_file!("conv_coop", coop_variants);

/// `shaders/conv_direct.wgsl`.
pub static CONV_DIRECT: crate::shader::ShaderFile =
    crate::shader_file!("conv_direct", direct_variants);
