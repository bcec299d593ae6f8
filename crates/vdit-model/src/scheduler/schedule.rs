//! Sigma and timestep schedules of the flow-matching samplers, reproducing diffusers' float
//! arithmetic (which parts run in float64, which in float32, and in what order) so that the
//! values agree bit for bit.

use crate::error::{input_err, Result};

/// The training horizon of Wan2.1: timesteps run from 1000 down to 0.
pub const NUM_TRAIN_TIMESTEPS: usize = 1000;

/// A noise schedule: `sigmas` has `steps + 1` entries (the last is 0), `timesteps` has `steps`,
/// `timesteps[k]` being the value the model is given at step `k`.
#[derive(Clone, Debug, PartialEq)]
pub struct Schedule {
    sigmas: Vec<f32>,
    timesteps: Vec<f32>,
}

impl Schedule {
    /// UniPC with flow sigmas (diffusers `UniPCMultistepScheduler`, `use_flow_sigmas`,
    /// `flow_shift`): `linspace(1, 1/1000, steps + 1)[:-1]` shifted in float64, the first sigma
    /// pulled to `1 - 1e-6` when it is 1 (so that log(1 - sigma) is finite), timesteps
    /// `trunc(sigma * 1000)` (diffusers stores them as int64), sigmas stored as f32.
    pub fn unipc(steps: usize, shift: f64) -> Result<Self> {
        check(steps, shift)?;
        let mut sig = wan_base_sigmas(steps);
        for s in &mut sig {
            *s = shifted(shift, *s);
        }
        if (sig[0] - 1.0).abs() < 1e-6 {
            sig[0] -= 1e-6;
        }
        let timesteps = sig
            .iter()
            .map(|&s| (s * NUM_TRAIN_TIMESTEPS as f64) as i64 as f32)
            .collect();
        let mut sigmas: Vec<f32> = sig.iter().map(|&s| s as f32).collect();
        sigmas.push(0.0);
        Ok(Self { sigmas, timesteps })
    }

    /// Flow Euler on the Wan schedule: diffusers `FlowMatchEulerDiscreteScheduler(shift)` given
    /// `sigmas = linspace(1, 1/1000, steps + 1)[:-1]`. It casts them to f32 before shifting, so the
    /// shift runs in f32; timesteps are `sigma * 1000` in f32, not rounded. Unlike UniPC, the first
    /// sigma stays 1.
    pub fn flow_euler(steps: usize, shift: f64) -> Result<Self> {
        check(steps, shift)?;
        let sigmas: Vec<f32> = wan_base_sigmas(steps)
            .into_iter()
            .map(|s| shifted_f32(shift, s as f32))
            .collect();
        Ok(Self::from_f32_sigmas(sigmas))
    }

    /// Flow Euler with diffusers' own default schedule (`set_timesteps(steps)` without sigmas):
    /// timesteps spaced linearly between the shifted ends of the training range, then shifted
    /// again (diffusers applies the shift both when it builds the training sigmas and in
    /// `set_timesteps`). Kept for comparison with pipelines that use the scheduler as is.
    pub fn flow_euler_diffusers_default(steps: usize, shift: f64) -> Result<Self> {
        check(steps, shift)?;
        let n = NUM_TRAIN_TIMESTEPS as f64;
        // The training sigmas live in f32: the smallest is shift(1 / 1000), computed in f32.
        let sigma_max = shifted_f32(shift, 1.0) as f64;
        let sigma_min = shifted_f32(shift, 1.0f32 / NUM_TRAIN_TIMESTEPS as f32) as f64;
        let sigmas: Vec<f32> = numpy_linspace(sigma_max * n, sigma_min * n, steps)
            .into_iter()
            .map(|t| shifted(shift, t / n) as f32)
            .collect();
        Ok(Self::from_f32_sigmas(sigmas))
    }

    /// The schedule the step-distilled Wan models were trained for (lightx2v's
    /// `WanStepDistillScheduler`): the 1000 training sigmas `1 - j / 1000`, shifted, taken at
    /// the timesteps `1000 (1 - i / steps)` (for 4 steps: 1000, 750, 500, 250). At shift 5 the
    /// four sigmas are 1, 0.9375, 0.8333 and 0.625.
    pub fn step_distill(steps: usize, shift: f64) -> Result<Self> {
        check(steps, shift)?;
        let n = NUM_TRAIN_TIMESTEPS;
        let sigmas: Vec<f32> = (0..steps)
            .map(|i| {
                let j = (i * n + steps / 2) / steps;
                shifted_f32(shift, 1.0 - j as f32 / n as f32)
            })
            .collect();
        Ok(Self::from_f32_sigmas(sigmas))
    }

    /// A schedule from explicit sigmas (descending, in (0, 1]); a final 0 is appended and the
    /// timesteps are `sigma * 1000` in f32.
    pub fn from_sigmas(sigmas: &[f32]) -> Result<Self> {
        if sigmas.is_empty() {
            return Err(input_err("schedule", "needs at least one sigma"));
        }
        if sigmas
            .iter()
            .any(|s| !(s.is_finite() && *s > 0.0 && *s <= 1.0))
        {
            return Err(input_err("schedule", "sigmas must lie in (0, 1]"));
        }
        Ok(Self::from_f32_sigmas(sigmas.to_vec()))
    }

    fn from_f32_sigmas(mut sigmas: Vec<f32>) -> Self {
        let timesteps = sigmas
            .iter()
            .map(|&s| s * NUM_TRAIN_TIMESTEPS as f32)
            .collect();
        sigmas.push(0.0);
        Self { sigmas, timesteps }
    }

    /// `steps + 1` noise levels, the last 0.
    pub fn sigmas(&self) -> &[f32] {
        &self.sigmas
    }

    /// The model's timestep at each step.
    pub fn timesteps(&self) -> &[f32] {
        &self.timesteps
    }

    /// The number of denoising steps.
    pub fn steps(&self) -> usize {
        self.timesteps.len()
    }
}

fn check(steps: usize, shift: f64) -> Result<()> {
    if steps == 0 {
        return Err(input_err(
            "sampler",
            "the number of steps must be at least 1",
        ));
    }
    if !(shift.is_finite() && shift > 0.0) {
        return Err(input_err(
            "sampler",
            format!("the flow shift must be a positive number, not {shift}"),
        ));
    }
    Ok(())
}

/// The unshifted Wan sigmas `linspace(1, 1/1000, steps + 1)[:-1]`, in f64.
fn wan_base_sigmas(steps: usize) -> Vec<f64> {
    let mut v = numpy_linspace(1.0, 1.0 / NUM_TRAIN_TIMESTEPS as f64, steps + 1);
    v.truncate(steps);
    v
}

/// `shift * s / (1 + (shift - 1) * s)`, in this order of operations.
fn shifted(shift: f64, s: f64) -> f64 {
    shift * s / (1.0 + (shift - 1.0) * s)
}

/// The same in f32, as numpy and torch run it on f32 arrays: the Python scalars `shift` and
/// `shift - 1` are formed in f64 and rounded to f32.
fn shifted_f32(shift: f64, s: f32) -> f32 {
    shift as f32 * s / (1.0 + (shift - 1.0) as f32 * s)
}

/// `numpy.linspace(start, stop, num)` in float64, rounding as numpy does: `i * step + start`
/// with `step = (stop - start) / (num - 1)`, the last element set to `stop`.
fn numpy_linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    match num {
        0 => Vec::new(),
        1 => vec![start],
        _ => {
            let div = (num - 1) as f64;
            let delta = stop - start;
            let step = delta / div;
            let mut y: Vec<f64> = if step == 0.0 {
                (0..num).map(|i| i as f64 / div * delta + start).collect()
            } else {
                (0..num).map(|i| i as f64 * step + start).collect()
            };
            y[num - 1] = stop;
            y
        }
    }
}
