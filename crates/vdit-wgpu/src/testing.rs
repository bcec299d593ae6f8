//! Helpers for kernel tests: seeded random inputs, relative L2 error, a shared test device.
//!
//! Every test draws a fresh seed (or `VDIT_TEST_SEED`) and prints it on failure through the
//! assertion message, so a failing case can be replayed.

use std::sync::OnceLock;

use crate::gpu::Gpu;

/// One device for all tests of a process (opening a device per test is slow on lavapipe).
pub fn test_gpu() -> &'static Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| {
        let _ = env_logger::try_init();
        let gpu = Gpu::new().expect("tests need a GPU adapter (lavapipe will do)");
        eprintln!("test device: {}", gpu.describe());
        gpu
    })
}

/// A fresh seed, or the one in `VDIT_TEST_SEED`.
pub fn seed() -> u64 {
    if let Ok(s) = std::env::var("VDIT_TEST_SEED") {
        if let Ok(v) = s.parse() {
            return v;
        }
    }
    use std::time::{SystemTime, UNIX_EPOCH};
    let t = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    t.as_nanos() as u64 ^ (std::process::id() as u64).rotate_left(32)
}

pub use crate::rng::Rng;

/// ||got - want|| / ||want||, in f64; infinite if anything is NaN or the lengths differ.
pub fn rel_l2(got: &[f32], want: &[f64]) -> f64 {
    if got.len() != want.len() {
        return f64::INFINITY;
    }
    let mut num = 0.0;
    let mut den = 0.0;
    for (&g, &w) in got.iter().zip(want) {
        if !g.is_finite() {
            return f64::INFINITY;
        }
        let d = g as f64 - w;
        num += d * d;
        den += w * w;
    }
    if den == 0.0 {
        return if num == 0.0 { 0.0 } else { f64::INFINITY };
    }
    (num / den).sqrt()
}

/// Values as they are after a round trip through f16 storage (inputs of f16 tests).
pub fn round_f16(v: &[f32]) -> Vec<f32> {
    v.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect()
}

/// Asserts `rel_l2(got, want) <= tol`, naming the case and the seed.
#[track_caller]
pub fn assert_close(case: &str, seed: u64, got: &[f32], want: &[f64], tol: f64) {
    let err = rel_l2(got, want);
    eprintln!("{case}: relative L2 error {err:.3e} (tolerance {tol:.1e})");
    assert!(
        err <= tol,
        "{case}: relative L2 error {err:.3e} > {tol:.1e} (replay with VDIT_TEST_SEED={seed})"
    );
}
