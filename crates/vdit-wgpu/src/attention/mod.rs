//! Attention kernels: softmax (flash-style), linear, hybrid and chunk-recurrent hybrid.

use crate::shader::ShaderFile;

/// The shader files of the attention kernels.
pub fn shaders() -> Vec<ShaderFile> {
    vec![]
}
