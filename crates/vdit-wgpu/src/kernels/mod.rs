//! The kernels: each module holds the launchers of one WGSL file of `shaders/`, its CPU float64
//! reference, and the tests comparing the two.

pub mod conv;
pub mod crop;
pub mod elementwise;
pub mod layout;
pub mod matmul;
pub mod norm;
pub mod packed;
pub mod patch;
pub mod q4k;
pub mod q8;
pub mod rgba;
pub mod rope;
pub mod softmax;
pub mod t5_attention;
pub mod tile_blend;

use crate::error::{shape_err, GpuError, Result};
use crate::gpu::Gpu;
use crate::tensor::{DType, Tensor};

/// GELU with the tanh approximation, in f64 (the reference of the GPU's f32 version).
/// `0.5 v (1 + tanh(u))` is computed as the identical `v / (1 + exp(-2u))`, which keeps its
/// relative accuracy for negative v where `1 + tanh(u)` cancels (even in f64, from v < -6).
pub fn gelu_tanh_f64(v: f64) -> f64 {
    let u = (2.0 / std::f64::consts::PI).sqrt() * (v + 0.044715 * v * v * v);
    v / (1.0 + (-2.0 * u).exp())
}

/// SiLU in f64.
pub fn silu_f64(v: f64) -> f64 {
    v / (1.0 + (-v).exp())
}

/// A vector of C f32 values stored in a tensor whose last dimension is C: row `index` of it.
/// Per-channel parameters (modulation shift and scale) are read from where they already are,
/// e.g. row 1 of a [6, C] modulation table, without a copy.
#[derive(Clone, Copy, Debug)]
pub struct Row<'a> {
    pub tensor: &'a Tensor,
    pub index: usize,
}

impl<'a> Row<'a> {
    /// The only row of a [C] tensor (or the first of a [R, C] one).
    pub fn whole(tensor: &'a Tensor) -> Self {
        Self { tensor, index: 0 }
    }
    /// Row `index` of a [R, C] tensor.
    pub fn of(tensor: &'a Tensor, index: usize) -> Self {
        Self { tensor, index }
    }

    /// The element offset of this row, once checked to hold `channels` f32 values.
    pub(crate) fn offset(&self, op: &'static str, what: &str, channels: usize) -> Result<u32> {
        let t = self.tensor;
        let fits = t.shape().last() == Some(&channels) && (self.index + 1) * channels <= t.numel();
        if t.dtype() != DType::F32 || !fits {
            return Err(shape_err(
                op,
                format!(
                    "{what} must be row {} of an f32 tensor [.., {channels}], got {t:?}",
                    self.index
                ),
            ));
        }
        to_u32(op, self.index * channels)
    }
}

/// adaLN modulation `x * (1 + scale) + shift`, scale and shift per channel.
#[derive(Clone, Copy, Debug)]
pub struct Modulation<'a> {
    pub scale: Row<'a>,
    pub shift: Row<'a>,
}

impl Modulation<'_> {
    /// Element offsets of (scale, shift), once checked to hold `channels` f32 values each.
    pub(crate) fn offsets(&self, op: &'static str, channels: usize) -> Result<(u32, u32)> {
        Ok((
            self.scale.offset(op, "scale", channels)?,
            self.shift.offset(op, "shift", channels)?,
        ))
    }
}

/// A count or offset as the u32 a parameter block holds.
pub(crate) fn to_u32(op: &'static str, n: usize) -> Result<u32> {
    u32::try_from(n).map_err(|_| shape_err(op, format!("{n} elements do not fit a u32 index")))
}

/// Fails when a tensor is f16 and the adapter cannot run f16 shaders.
pub(crate) fn require_f16_support(gpu: &Gpu, what: &str, tensors: &[&Tensor]) -> Result<()> {
    if !gpu.caps.shader_f16 && tensors.iter().any(|t| t.dtype() == DType::F16) {
        return Err(GpuError::MissingFeature(what.to_string(), "SHADER_F16"));
    }
    Ok(())
}

/// Fails when an input and the output share a buffer: a dispatch may not bind one buffer both
/// read-only and read-write, so such a caller wants the in-place launcher.
pub(crate) fn require_distinct(op: &'static str, input: &Tensor, output: &Tensor) -> Result<()> {
    if input.pooled().id == output.pooled().id {
        return Err(shape_err(
            op,
            format!(
                "input {input:?} and output {output:?} share a buffer: use the in-place launcher"
            ),
        ));
    }
    Ok(())
}

/// A grid of `workgroups` workgroups that respects max_compute_workgroups_per_dimension: past
/// the limit it folds into rows of x, and the shader reads its index as `y * num_workgroups.x + x`
/// (the last row may run past `workgroups`; shaders check their bounds).
pub(crate) fn folded_grid(gpu: &Gpu, workgroups: usize) -> [u32; 3] {
    let max = max_workgroups_per_dimension(gpu);
    let y = workgroups.div_ceil(max).max(1);
    let x = workgroups.div_ceil(y);
    [x as u32, y as u32, 1]
}

fn max_workgroups_per_dimension(gpu: &Gpu) -> usize {
    #[cfg(test)]
    if let Some(limit) = FOLD_LIMIT.get() {
        return limit;
    }
    gpu.limits.max_compute_workgroups_per_dimension.max(1) as usize
}

#[cfg(test)]
thread_local! {
    static FOLD_LIMIT: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
}

/// Runs `f` with grids folded as if the adapter allowed only `limit` workgroups per dimension,
/// so that tests reach the folded path with tiny tensors.
#[cfg(test)]
pub(crate) fn with_fold_limit<R>(limit: usize, f: impl FnOnce() -> R) -> R {
    // Reset on unwind too: the test harness may run the next test on this thread.
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            FOLD_LIMIT.set(None);
        }
    }
    FOLD_LIMIT.set(Some(limit));
    let _reset = Reset;
    f()
}

/// Every combination of f32 and f16 for `n` tensors (the storage types a launcher accepts).
pub(crate) fn dtype_combinations(n: usize) -> Vec<Vec<DType>> {
    (0..1usize << n)
        .map(|bits| {
            (0..n)
                .map(|i| {
                    if bits >> i & 1 == 1 {
                        DType::F16
                    } else {
                        DType::F32
                    }
                })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::test_gpu;

    #[test]
    fn gelu_reference_is_the_tanh_formula() {
        for v in [-5.0, -1.3, -0.2, 0.0, 0.7, 2.0, 6.0] {
            let u: f64 = (2.0 / std::f64::consts::PI).sqrt() * (v + 0.044715 * v * v * v);
            let by_tanh = 0.5 * v * (1.0 + u.tanh());
            assert!((gelu_tanh_f64(v) - by_tanh).abs() <= 1e-12 * by_tanh.abs().max(1e-3));
        }
        // Where 1 + tanh(u) rounds to 0 in f64, the value is still tiny and negative.
        let far = gelu_tanh_f64(-9.0);
        assert!(far < 0.0 && far > -1e-25, "{far}");
    }

    #[test]
    fn folded_grid_covers_every_workgroup_within_the_limit() {
        let gpu = test_gpu();
        let max = gpu.limits.max_compute_workgroups_per_dimension as usize;
        for n in [0, 1, 7, max - 1, max, max + 1, 3 * max + 5] {
            let [x, y, z] = folded_grid(gpu, n);
            assert!(x as usize <= max && y as usize <= max && z == 1);
            assert!(x as usize * y as usize >= n, "{n} -> {x} x {y}");
            assert!(
                (x as usize) * (y as usize - 1) < n.max(1),
                "{n} -> {x} x {y}: a spare row"
            );
        }
    }
}
