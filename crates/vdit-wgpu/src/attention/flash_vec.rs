//! `attention_flash_vec.wgsl`: the vectorised flash kernel (head dims up to 128).

use crate::gpu::Gpu;
use crate::shader::{defines, Defines};
use crate::tensor::DType;

/// Tile shape of the vectorised flash kernel (head dims up to 128): DP / 8 x `ty` threads,
/// 4 query rows per thread, 2 * DP / 8 keys per tile, head dim padded to `dp` (a multiple of 8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlashVecTiles {
    pub ty: u32,
    pub dp: u32,
}

impl FlashVecTiles {
    pub fn tx(&self) -> u32 {
        self.dp / 8
    }
    pub fn bq(&self) -> u32 {
        4 * self.ty
    }
    pub fn bk(&self) -> u32 {
        2 * self.tx()
    }
    /// Element counts of the workgroup arrays: (qs vec4, kt vec2, vs vec4, ps vec4, red vec4).
    fn sizes(&self) -> [u32; 5] {
        [
            self.dp * self.ty,
            self.dp * self.tx(),
            self.bk() * self.dp / 4,
            self.bk() * self.ty,
            self.tx() * self.ty,
        ]
    }
    pub fn shared_bytes(&self, sh: u32) -> u32 {
        let [qs, kt, vs, ps, red] = self.sizes();
        qs * 4 * sh + kt * 2 * sh + vs * 4 * sh + (ps + red) * 16
    }
}

/// The vectorised kernel's tiles for this head dim, when it has some that fit the adapter.
pub fn flash_vec_tiles(gpu: &Gpu, d: usize, dtype: DType) -> Option<FlashVecTiles> {
    let dp = d.div_ceil(8).max(1) as u32 * 8;
    if dp > 128 {
        return None;
    }
    let sh = dtype.size() as u32;
    let mem = gpu.limits.max_compute_workgroup_storage_size;
    let inv = gpu.limits.max_compute_invocations_per_workgroup.min(256);
    let (max_x, max_y) = (
        gpu.limits.max_compute_workgroup_size_x,
        gpu.limits.max_compute_workgroup_size_y,
    );
    [32u32, 16, 8, 4, 2, 1]
        .into_iter()
        .map(|ty| FlashVecTiles { ty, dp })
        .find(|t| {
            t.shared_bytes(sh) <= mem && t.tx() * t.ty <= inv && t.tx() <= max_x && t.ty <= max_y
        })
}

pub(crate) fn flash_vec_defines(dtype: DType, t: &FlashVecTiles, linear: bool) -> Defines {
    let [qs, kt, vs, ps, red] = t.sizes();
    let mut d = defines(&[
        ("IO_T", dtype.wgsl().to_string()),
        ("SH_T", dtype.wgsl().to_string()),
        ("DP", format!("{}u", t.dp)),
        ("TY", format!("{}u", t.ty)),
        ("QS_SIZE", qs.to_string()),
        ("KT_SIZE", kt.to_string()),
        ("VS_SIZE", vs.to_string()),
        ("PS_SIZE", ps.to_string()),
        ("RED_SIZE", red.to_string()),
    ]);
    if linear {
        d.insert("HAS_LINEAR".into(), "1".into());
    }
    d
}

/// The define sets of the vectorised kernel the portability test compiles.
pub fn flash_vec_variants() -> Vec<Defines> {
    let mut v = Vec::new();
    for dtype in [DType::F32, DType::F16] {
        for (ty, dp) in [(16, 128), (8, 128), (4, 128), (32, 64), (16, 64), (8, 40)] {
            for linear in [false, true] {
                v.push(flash_vec_defines(dtype, &FlashVecTiles { ty, dp }, linear));
            }
        }
    }
    v
}

/// `shaders/attention_flash_vec.wgsl`.
pub static ATTENTION_FLASH_VEC: crate::shader::ShaderFile =
    crate::shader_file!("attention_flash_vec", flash_vec_variants);
