//! Seeded pseudo-random numbers for test inputs and benchmark weights (not for noise: the
//! generation pipeline has its own generator, matched to a fixed sequence).

/// A small, fast, seedable generator (SplitMix64): random test inputs and the random weights of
/// the benchmarks, with no extra crate.
pub struct Rng(u64);

/// SplitMix64's state increment: the i-th output depends only on the seed and i, which lets
/// long runs be drawn on several threads.
const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn unit_uniform(bits: u64) -> f32 {
    ((bits >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GAMMA);
        mix(self.0)
    }
    /// Uniform in [-1, 1).
    pub fn uniform(&mut self) -> f32 {
        unit_uniform(self.next_u64())
    }
    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f32 {
        let u1 = ((self.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        let u2 = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
    }
    /// `n` values of `uniform() * scale`, the same as drawing them one by one (on all cores
    /// when `n` is large).
    pub fn vec_uniform(&mut self, n: usize, scale: f32) -> Vec<f32> {
        let start = self.0;
        self.0 = start.wrapping_add(GAMMA.wrapping_mul(n as u64));
        let mut out = vec![0.0f32; n];
        crate::parallel::par_fill(&mut out, |first, chunk| {
            for (j, v) in chunk.iter_mut().enumerate() {
                let state = start.wrapping_add(GAMMA.wrapping_mul((first + j) as u64 + 1));
                *v = unit_uniform(mix(state)) * scale;
            }
        });
        out
    }
    pub fn vec_normal(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.normal() * scale).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::Rng;

    #[test]
    fn long_uniform_runs_equal_drawing_one_by_one() {
        let n = (1 << 20) + 12345; // above the parallel threshold, not a multiple of anything
        let mut bulk = Rng::new(42);
        let mut single = Rng::new(42);
        let a = bulk.vec_uniform(n, 0.5);
        let b: Vec<f32> = (0..n).map(|_| single.uniform() * 0.5).collect();
        assert_eq!(a, b);
        // The generator continues where the run ended.
        assert_eq!(bulk.next_u64(), single.next_u64());
    }
}
