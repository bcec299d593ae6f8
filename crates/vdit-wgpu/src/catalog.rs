//! Every shader of the project, for the portability test and `vdit selftest` (the
//! portability test checks that this list matches `shaders/`). Launchers do not use it: a dispatch
//! names its shader by the static it owns.

use crate::shader::ShaderFile;

pub fn all_shaders() -> Vec<&'static ShaderFile> {
    vec![
        &crate::attention::ATTENTION_FLASH,
        &crate::attention::ATTENTION_FLASH_VEC,
        &crate::attention::ATTENTION_FLASH_COOP,
        &crate::attention::ATTENTION_STATE,
        &crate::attention::FEATURE_MAP,
        &crate::kernels::layout::CHANNELS_LAST,
        &crate::kernels::conv::CONV,
        &crate::kernels::conv::CONV_CACHE,
        &crate::kernels::conv::CONV_COOP,
        &crate::kernels::conv::CONV_DIRECT,
        &crate::kernels::crop::CROP,
        &crate::kernels::elementwise::ELEMENTWISE,
        &crate::kernels::rgba::FRAMES_TO_RGBA,
        &crate::kernels::matmul::MATMUL,
        &crate::kernels::matmul::MATMUL_DIRECT,
        &crate::kernels::matmul::MATMUL_COOP,
        &crate::kernels::norm::NORM,
        &crate::kernels::patch::PATCH,
        &crate::kernels::rope::ROPE,
        &crate::kernels::softmax::SOFTMAX_ROWS,
        &crate::kernels::t5_attention::T5_ATTENTION,
        &crate::kernels::tile_blend::TILE_BLEND,
        &crate::distill::forward::DISTILL_SOFTMAX,
        &crate::distill::forward::DISTILL_SOFTMAX_TILED,
        &crate::distill::forward::DISTILL_GATHER,
        &crate::distill::forward::DISTILL_QUERY,
        &crate::distill::backward::DISTILL_KEYS,
        &crate::distill::backward::DISTILL_HEDGEHOG,
        &crate::distill::backward::DISTILL_POLY,
        &crate::distill::adamw::DISTILL_REDUCE,
        &crate::distill::adamw::DISTILL_ADAMW,
    ]
}
