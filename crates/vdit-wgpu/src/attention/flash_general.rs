//! `attention_flash.wgsl`: the general flash kernel (any head dim up to 512, online softmax).

use crate::error::{GpuError, Result};
use crate::gpu::Gpu;
use crate::shader::{defines, Defines};
use crate::tensor::DType;

/// Tile shape of the flash kernel: 16 x `ty` threads, `rq` query rows per thread, `bk` keys per
/// tile, head dim padded to `dp`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlashTiles {
    pub ty: u32,
    pub rq: u32,
    pub bk: u32,
    pub dp: u32,
}

impl FlashTiles {
    pub fn bq(&self) -> u32 {
        self.ty * self.rq
    }
    /// Workgroup memory in bytes with `sh` bytes per staged element.
    pub fn shared_bytes(&self, sh: u32) -> u32 {
        (self.bq() + self.bk) * self.dp * sh + (self.bq() * self.bk + self.bq() * 16) * 4
    }
}

/// The largest tiles that fit the adapter's workgroup memory and invocation limits.
pub fn flash_tiles(gpu: &Gpu, d: usize, dtype: DType) -> Result<FlashTiles> {
    let dp = d.div_ceil(16).max(1) as u32 * 16;
    let sh = dtype.size() as u32;
    let mem = gpu.limits.max_compute_workgroup_storage_size;
    let inv = gpu.limits.max_compute_invocations_per_workgroup;
    let max_y = gpu.limits.max_compute_workgroup_size_y;
    const CANDIDATES: [(u32, u32, u32); 8] = [
        (16, 4, 32),
        (8, 4, 32),
        (8, 4, 16),
        (4, 4, 16),
        (4, 2, 16),
        (2, 2, 16),
        (1, 2, 16),
        (1, 1, 16),
    ];
    CANDIDATES
        .iter()
        .map(|&(ty, rq, bk)| FlashTiles { ty, rq, bk, dp })
        .find(|t| t.shared_bytes(sh) <= mem && 16 * t.ty <= inv && t.ty <= max_y)
        .ok_or_else(|| GpuError::OverLimit {
            what: format!("attention with head dim {d} ({dtype})"),
            needed: FlashTiles {
                ty: 1,
                rq: 1,
                bk: 16,
                dp,
            }
            .shared_bytes(sh) as u64,
            limit: mem as u64,
            limit_name: "max_compute_workgroup_storage_size",
        })
}

pub(crate) fn flash_defines(dtype: DType, t: &FlashTiles, linear: bool) -> Defines {
    let mut d = defines(&[
        ("IO_T", dtype.wgsl().to_string()),
        ("SH_T", dtype.wgsl().to_string()),
        ("DP", format!("{}u", t.dp)),
        ("TY", format!("{}u", t.ty)),
        ("RQ", format!("{}u", t.rq)),
        ("BK", format!("{}u", t.bk)),
        ("QS_SIZE", (t.bq() * t.dp).to_string()),
        ("KV_SIZE", (t.bk * t.dp).to_string()),
        ("PS_SIZE", (t.bq() * t.bk).to_string()),
        ("RED_SIZE", (t.bq() * 16).to_string()),
    ]);
    if linear {
        d.insert("HAS_LINEAR".into(), "1".into());
    }
    d
}

/// The define sets the portability test compiles.
pub fn flash_variants() -> Vec<Defines> {
    let mut v = Vec::new();
    for dtype in [DType::F32, DType::F16] {
        for (ty, rq, bk, dp) in [
            (16, 4, 32, 128),
            (8, 4, 32, 128),
            (8, 4, 16, 64),
            (2, 2, 16, 384),
            (1, 1, 16, 48),
        ] {
            for linear in [false, true] {
                v.push(flash_defines(dtype, &FlashTiles { ty, rq, bk, dp }, linear));
            }
        }
    }
    v
}

/// `shaders/attention_flash.wgsl`.
pub static ATTENTION_FLASH: crate::shader::ShaderFile =
    crate::shader_file!("attention_flash", flash_variants);
