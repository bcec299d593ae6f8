//! Seeded random weights, read like a file: benchmarks and tests of speed and memory load a
//! model of full size without a download, through the same loader as a checkpoint.
//!
//! Only the names and shapes are held. Each tensor's values are drawn when it is read, from a
//! generator seeded by (seed, name), and dropped by the reader: a 14B model never exists in host
//! memory at once, and reading a tensor twice (or in another order) gives the same values.

use vdit_wgpu::rng::Rng;

/// How a tensor's values are drawn: uniform in `center ± half_width`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Uniform {
    pub center: f32,
    pub half_width: f32,
}

impl Uniform {
    /// Centred on 0 with standard deviation `1/sqrt(fan_in)`, the fan-in being every dimension
    /// after the first (a Linear's or a convolution's inputs): activations keep their scale
    /// from layer to layer, as with trained weights.
    pub fn fan_in(shape: &[usize]) -> Self {
        let fan_in: usize = shape.iter().skip(1).product();
        Self::centred((3.0 / fan_in.max(1) as f32).sqrt())
    }

    /// Centred on 0, in ±`half_width`.
    pub fn centred(half_width: f32) -> Self {
        Self {
            center: 0.0,
            half_width,
        }
    }

    /// Near 1, as trained norm gains are.
    pub fn gain() -> Self {
        Self {
            center: 1.0,
            half_width: 0.1,
        }
    }
}

/// Picks a tensor's distribution from its name and shape; each model scales its own tensors
/// like trained ones.
pub type InitRule = fn(name: &str, shape: &[usize]) -> Uniform;

/// The generator of a set of random tensors.
#[derive(Clone, Copy)]
pub(crate) struct RandomValues {
    seed: u64,
    rule: InitRule,
}

/// Values drawn per call, so that a tensor's bytes are built without a second full-size copy.
const CHUNK: usize = 1 << 20;

impl RandomValues {
    pub fn new(seed: u64, rule: InitRule) -> Self {
        Self { seed, rule }
    }

    /// The little-endian f32 bytes of tensor `name` of `shape`: a function of (seed, name) alone.
    pub fn bytes(&self, name: &str, shape: &[usize]) -> Vec<u8> {
        let Uniform { center, half_width } = (self.rule)(name, shape);
        let mut rng = Rng::new(stream_seed(self.seed, name));
        let n: usize = shape.iter().product();
        let mut bytes = Vec::with_capacity(n * 4);
        let mut left = n;
        while left > 0 {
            let take = left.min(CHUNK);
            // Consecutive runs continue one stream: chunking does not change the values.
            let values = rng.vec_uniform(take, half_width);
            bytes.extend(values.iter().flat_map(|v| (center + v).to_le_bytes()));
            left -= take;
        }
        bytes
    }
}

impl std::fmt::Debug for RandomValues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RandomValues(seed {})", self.seed)
    }
}

/// A stream per tensor: FNV-1a of the name (stable across Rust releases, unlike std's hasher),
/// mixed with the seed.
fn stream_seed(seed: u64, name: &str) -> u64 {
    let mut hash: u64 = 0xCBF2_9CE4_8422_2325;
    for byte in name.bytes() {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01B3);
    }
    Rng::new(seed ^ hash).next_u64()
}
