//! What a kernel launch costs: the profiler divides by its time for GFLOP/s and GB/s.

/// The work a launch does: floating-point operations and the fewest bytes it must move.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Cost {
    pub flops: f64,
    pub bytes: f64,
}

impl Cost {
    pub fn new(flops: f64, bytes: f64) -> Self {
        Self { flops, bytes }
    }
}
