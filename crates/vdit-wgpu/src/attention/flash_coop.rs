//! `attention_flash_coop.wgsl`: the flash kernel on cooperative matrices (f16, head dim 128).

use crate::gpu::Gpu;
use crate::shader::{defines, Defines};
use crate::tensor::DType;

pub use crate::policy::FlashCoopLayout;

/// Sizes of a layout (an extension of the policy type, where the kernel lives).
pub(crate) trait FlashCoopSizes {
    fn subgroups(&self) -> u32;
    fn bq(&self) -> u32;
    fn shared_bytes(&self) -> u32;
}

impl FlashCoopSizes for FlashCoopLayout {
    fn subgroups(&self) -> u32 {
        if self.wide {
            8
        } else {
            4
        }
    }
    fn bq(&self) -> u32 {
        16 * self.subgroups()
    }
    /// Workgroup memory in bytes: staged Q (narrow only), K and V tiles of 32 x 136 halves,
    /// per-subgroup scores (f32) and probabilities (f16), per-lane statistics, denominators
    /// (single pass: also per-row rescale factors and two flags, padded to four words).
    fn shared_bytes(&self) -> u32 {
        let q = if self.wide { 0 } else { self.bq() * 136 * 2 };
        let s = self.subgroups();
        let lazy = if self.single_pass {
            self.bq() * 4 + 16
        } else {
            0
        };
        q + 2 * 32 * 136 * 2 + s * 512 * (4 + 2) + 2 * 32 * s * 4 + self.bq() * 4 + lazy
    }
}

/// Whether the cooperative-matrix kernel in `layout` can run this attention: f16, head dim 128,
/// some softmax keys, 16x16 f16 cooperative matrices, subgroups of exactly 32, enough workgroup
/// memory. The wide layout also needs at least 16 query rows.
pub(crate) fn flash_coop_fits(
    gpu: &Gpu,
    layout: FlashCoopLayout,
    d: usize,
    dtype: DType,
    nq: usize,
    k_count: usize,
) -> bool {
    let caps = &gpu.caps;
    caps.coop_f16_16x16()
        && caps.subgroup_min_size == 32
        && caps.subgroup_max_size == 32
        && dtype == DType::F16
        && d == 128
        && k_count > 0
        && gpu.limits.max_compute_workgroup_storage_size >= layout.shared_bytes()
        && gpu.limits.max_compute_invocations_per_workgroup >= 32 * layout.subgroups()
        && (!layout.wide || nq >= 16)
}

pub(crate) fn flash_coop_defines(layout: FlashCoopLayout, linear: bool) -> Defines {
    let mut d = defines(&[("IO_T", "f16")]);
    if linear {
        d.insert("HAS_LINEAR".into(), "1".into());
    }
    if layout.wide {
        d.insert("WIDE_Q".into(), "1".into());
    }
    if layout.single_pass {
        d.insert("SINGLE_PASS".into(), "1".into());
    }
    d
}

/// The define sets of the cooperative-matrix kernel the portability test compiles.
pub fn flash_coop_variants() -> Vec<Defines> {
    let mut v = Vec::new();
    for wide in [false, true] {
        for single_pass in [false, true] {
            for linear in [false, true] {
                v.push(flash_coop_defines(
                    FlashCoopLayout { wide, single_pass },
                    linear,
                ));
            }
        }
    }
    v
}

/// `shaders/attention_flash_coop.wgsl`.
pub static ATTENTION_FLASH_COOP: crate::shader::ShaderFile =
    crate::shader_file!("attention_flash_coop", flash_coop_variants);
