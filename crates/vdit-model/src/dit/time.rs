//! The sinusoidal timestep embedding (computed on the host: 256 numbers per step).

/// `[cos(t f_0), .., cos(t f_{h-1}), sin(t f_0), .., sin(t f_{h-1})]` with h = dim / 2 and
/// f_i = 10000^(-i / h): cosines first, as diffusers' `Timesteps(flip_sin_to_cos=True,
/// downscale_freq_shift=0)` gives them.
pub fn timestep_sinusoid(t: f32, dim: usize) -> Vec<f32> {
    let half = dim / 2;
    let mut out = vec![0.0f32; dim];
    for i in 0..half {
        let freq = (-(10000f64.ln()) * i as f64 / half as f64).exp();
        // diffusers computes the angle in f32 from an f32 timestep and f32 frequencies.
        let angle = (t as f64 * freq as f32 as f64) as f32 as f64;
        out[i] = angle.cos() as f32;
        out[half + i] = angle.sin() as f32;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_time_is_ones_then_zeros() {
        let e = timestep_sinusoid(0.0, 8);
        assert_eq!(e, vec![1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn first_frequency_is_one() {
        let e = timestep_sinusoid(2.0, 256);
        assert!((e[0] - 2f32.cos()).abs() < 1e-6);
        assert!((e[128] - 2f32.sin()).abs() < 1e-6);
    }
}
