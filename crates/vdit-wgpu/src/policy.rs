//! Which kernel a launcher runs where several fit. One policy, built from the command line
//! (`--kernels`), is held by the [`Gpu`](crate::gpu::Gpu) and copied into each
//! [`Recorder`](crate::recorder::Recorder); tests and `vdit selftest` set a recorder's copy to
//! reach every variant. `Auto` is the fastest variant that fits, as measured on the H200. A
//! variant asked for by name runs every call it can run (the profiler's labels say which kernel
//! ran); a call it cannot run (another storage type, head dim or adapter feature) gets the
//! automatic choice.

use crate::error::{GpuError, Result};

/// Kernel of `matmul`: the portable tiles of `matmul.wgsl` or the cooperative ones of
/// `matmul_coop.wgsl` (f16 operands on 16x16 f16 cooperative matrices).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum MatmulKernel {
    #[default]
    Auto,
    /// `matmul.wgsl`: 64 x 64 tiles through workgroup memory.
    Portable,
    /// `matmul_direct.wgsl`: no workgroup memory, no barriers (auto on CPU adapters).
    Direct,
    Cooperative(CoopTiles),
}

/// Shape options of `matmul_coop.wgsl`. On the H100 (Vulkan), at 32760 x 1536 x 8960, K steps
/// of 64 with vector tiles ran at 107 TFLOP/s; K steps of 64 alone at 99, K steps of 32 at 33-35.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CoopTiles {
    /// K steps of 64 instead of 32.
    pub wide_k: bool,
    /// Workgroup tiles as vectors of 4 halves.
    pub vec_tiles: bool,
    /// 256 x 128 output tiles, 64 x 64 per subgroup (K steps of 32 whatever `wide_k` says),
    /// instead of 128 x 128 with 64 x 32 per subgroup.
    pub wide_tile: bool,
}

impl CoopTiles {
    pub const TUNED: Self = Self {
        wide_k: true,
        vec_tiles: true,
        wide_tile: false,
    };
}

/// Kernel of softmax, hybrid and linear-apply attention.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum FlashKernel {
    #[default]
    Auto,
    /// `attention_flash_coop.wgsl` in one of its layouts.
    Cooperative(FlashCoopLayout),
    /// `attention_flash_vec.wgsl` (head dims up to 128).
    Vector,
    /// `attention_flash.wgsl` (any head dim up to 512).
    General,
}

/// Layouts of `attention_flash_coop.wgsl`: `wide`, 8 subgroups sharing each key tile with Q read
/// straight from the buffer, else 4 with Q staged in workgroup memory; `single_pass`, one pass
/// over the keys with lazy rescaling, else two passes (statistics, then output). Auto picks the
/// wide single pass (`coop-1pass`), else the narrow two-pass layout; `coop` names the wide
/// two-pass one. The narrow single pass (`coop-narrow-1pass`) is experimental: `vdit selftest`
/// reports its failures without counting them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlashCoopLayout {
    pub wide: bool,
    pub single_pass: bool,
}

/// Kernel of the causal convolutions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ConvKernel {
    #[default]
    Auto,
    /// `conv.wgsl`'s 64 x 64 GEMM tiles.
    Gemm,
    /// `conv_direct.wgsl` with 4, 8 or 16 output channels per thread (0: by the width; auto
    /// uses it up to 32 output channels).
    Direct { channels_per_thread: u32 },
    /// `conv_coop.wgsl` on cooperative matrices.
    Cooperative,
}

/// The kernel of each family with variants.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct KernelPolicy {
    pub matmul: MatmulKernel,
    pub flash: FlashKernel,
    pub conv: ConvKernel,
}

/// The words `--kernels` accepts, for its help and its errors.
pub const KERNELS_HELP: &str = "comma-separated FAMILY=KERNEL: \
     matmul=auto|portable|direct|coop|coop-k32|coop-scalar|coop-k32-scalar|coop-256, \
     flash=auto|coop|coop-narrow|coop-1pass|coop-narrow-1pass|vec|general|direct, conv=auto|gemm|direct|direct4|direct8|direct16|coop";

impl KernelPolicy {
    /// Parses `--kernels`, e.g. `flash=coop-narrow,matmul=portable`; families left out stay auto.
    pub fn parse(spec: &str) -> Result<Self> {
        let mut policy = Self::default();
        let bad =
            |what: String| GpuError::InvalidArgument(format!("--kernels: {what} ({KERNELS_HELP})"));
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (family, kernel) = item
                .split_once('=')
                .ok_or_else(|| bad(format!("'{item}' is not FAMILY=KERNEL")))?;
            let unknown = || bad(format!("no {family} kernel '{kernel}'"));
            match family.trim() {
                "matmul" => {
                    let coop = |wide_k, vec_tiles| {
                        MatmulKernel::Cooperative(CoopTiles {
                            wide_k,
                            vec_tiles,
                            wide_tile: false,
                        })
                    };
                    policy.matmul = match kernel.trim() {
                        "auto" => MatmulKernel::Auto,
                        "portable" => MatmulKernel::Portable,
                        "direct" => MatmulKernel::Direct,
                        "coop" => coop(true, true),
                        "coop-k32" => coop(false, true),
                        "coop-scalar" => coop(true, false),
                        "coop-k32-scalar" => coop(false, false),
                        "coop-256" => MatmulKernel::Cooperative(CoopTiles {
                            wide_k: false,
                            vec_tiles: true,
                            wide_tile: true,
                        }),
                        _ => return Err(unknown()),
                    }
                }
                "flash" => {
                    policy.flash = match kernel.trim() {
                        "auto" => FlashKernel::Auto,
                        "coop" | "coop-narrow" | "coop-1pass" | "coop-narrow-1pass" => {
                            let k = kernel.trim();
                            FlashKernel::Cooperative(FlashCoopLayout {
                                wide: !k.contains("narrow"),
                                single_pass: k.ends_with("1pass"),
                            })
                        }
                        "vec" => FlashKernel::Vector,
                        "general" => FlashKernel::General,
                        _ => return Err(unknown()),
                    }
                }
                "conv" => {
                    policy.conv = match kernel.trim() {
                        "auto" => ConvKernel::Auto,
                        "gemm" => ConvKernel::Gemm,
                        "direct" => ConvKernel::Direct {
                            channels_per_thread: 0,
                        },
                        "direct4" | "direct8" | "direct16" => ConvKernel::Direct {
                            channels_per_thread: kernel.trim()[6..].parse().unwrap(),
                        },
                        "coop" => ConvKernel::Cooperative,
                        _ => return Err(unknown()),
                    }
                }
                other => return Err(bad(format!("no kernel family '{other}'"))),
            }
        }
        Ok(policy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_family_and_refuses_unknown_words() {
        let p = KernelPolicy::parse("flash=coop-narrow, matmul=portable,conv=direct").unwrap();
        assert_eq!(
            p.flash,
            FlashKernel::Cooperative(FlashCoopLayout {
                wide: false,
                single_pass: false
            })
        );
        assert_eq!(p.matmul, MatmulKernel::Portable);
        assert_eq!(
            p.conv,
            ConvKernel::Direct {
                channels_per_thread: 0
            }
        );
        assert_eq!(KernelPolicy::parse("").unwrap(), KernelPolicy::default());
        assert_eq!(
            KernelPolicy::parse("matmul=coop-k32").unwrap().matmul,
            MatmulKernel::Cooperative(CoopTiles {
                wide_k: false,
                vec_tiles: true,
                wide_tile: false
            })
        );
        for bad in ["flash", "flash=fast", "gemm=coop", "matmul=coop,conv="] {
            let e = KernelPolicy::parse(bad).unwrap_err().to_string();
            assert!(e.contains("--kernels"), "{bad}: {e}");
        }
    }
}
