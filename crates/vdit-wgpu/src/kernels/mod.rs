//! The kernels: each module holds the launchers of one WGSL file of `shaders/`, its CPU float64
//! reference, and the tests comparing the two.

pub mod matmul;

use crate::shader::ShaderFile;

/// The shader files of the core kernels (attention has its own list).
pub fn core_shaders() -> Vec<ShaderFile> {
    vec![crate::shader_file!("matmul", matmul::variants)]
}

/// GELU with the tanh approximation, in f64 (the reference of the GPU's f32 version).
pub fn gelu_tanh_f64(v: f64) -> f64 {
    let u = (2.0 / std::f64::consts::PI).sqrt() * (v + 0.044715 * v * v * v);
    0.5 * v * (1.0 + u.tanh())
}

/// SiLU in f64.
pub fn silu_f64(v: f64) -> f64 {
    v / (1.0 + (-v).exp())
}
