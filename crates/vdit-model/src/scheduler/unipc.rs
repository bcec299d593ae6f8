//! The coefficients of flow-matching UniPC (diffusers `UniPCMultistepScheduler` with
//! `prediction_type = flow_prediction`, `solver_order = 2`, `predict_x0`, `solver_type = bh2`,
//! `lower_order_final`, the UniC corrector on every step after the first).
//!
//! In flow matching `alpha = 1 - sigma`, and the solver works in `lambda = ln(alpha / sigma)`.
//! A step `k` with model output `v` at sample `x`:
//! 1. `x0_k = x - sigma_k v` (the data prediction);
//! 2. for `k > 0`, the corrector UniC-p (p = the previous predictor's order) replaces the previous
//!    step's starting point `last` by a corrected value from `last`, `x0_{k-1}`, `x0_{k-2}` and
//!    `x0_k`; the predictor then starts from it (and `x` itself is no longer used);
//! 3. the predictor UniP-q, `q = min(2, steps - k, k + 1)`, gives the next sample from `last`,
//!    `x0_k` and `x0_{k-1}`.
//!
//! Each of these is a linear combination of at most four tensors; the scalars are computed here
//! in f64 from the f32 sigmas and applied by [`super::Update`].

use super::{Slot, Update};

/// `lambda = ln(alpha) - ln(sigma)` with `alpha = 1 - sigma`; `+inf` at sigma 0.
fn lambda(sigma: f64) -> f64 {
    (1.0 - sigma).ln() - sigma.ln()
}

/// The scalars shared by predictor and corrector for a move from `sigma_s0` to `sigma_t`.
struct Interval {
    /// `sigma_t / sigma_s0`, the weight of the starting sample.
    ratio: f64,
    alpha_t: f64,
    h: f64,
    /// `e^{-h} - 1`; also `B(h)` of the bh2 variant.
    h_phi_1: f64,
}

impl Interval {
    fn new(sigma_s0: f64, sigma_t: f64) -> Self {
        let h = lambda(sigma_t) - lambda(sigma_s0);
        Self {
            ratio: sigma_t / sigma_s0,
            alpha_t: 1.0 - sigma_t,
            h,
            h_phi_1: (-h).exp_m1(),
        }
    }

    /// `rk = (lambda_si - lambda_s0) / h`, the position of an older point on this interval's scale.
    fn rk(&self, sigma_si: f64, sigma_s0: f64) -> f64 {
        (lambda(sigma_si) - lambda(sigma_s0)) / self.h
    }

    /// The first two entries of the B(h) right-hand side `b` (bh2: `B(h) = h_phi_1`).
    fn b12(&self) -> (f64, f64) {
        let hh = -self.h;
        let b_h = self.h_phi_1;
        let phi_1 = self.h_phi_1 / hh - 1.0;
        let phi_2 = phi_1 / hh - 0.5;
        (phi_1 / b_h, phi_2 * 2.0 / b_h)
    }
}

/// Ring slots of the three data predictions alive during step `k`: `(x0_k, x0_{k-1}, x0_{k-2})`.
pub(super) fn x0_slots(k: usize) -> (Slot, Slot, Slot) {
    (
        Slot::X0(k % 3),
        Slot::X0((k + 2) % 3),
        Slot::X0((k + 1) % 3),
    )
}

/// The predictor order of step `k` of `steps` (order-2 solver, warm-up, lower order on the last step).
pub(super) fn predictor_order(k: usize, steps: usize) -> usize {
    2.min(steps - k).min(k + 1)
}

/// The updates of step `k`, given the sigmas (with the final 0) and the previous step's order.
pub(super) fn step_updates(sigmas: &[f32], k: usize, prev_order: usize) -> Vec<Update> {
    let steps = sigmas.len() - 1;
    let sig = |i: usize| sigmas[i] as f64;
    let (cur, prev, prev2) = x0_slots(k);
    let mut ups = Vec::with_capacity(3);

    ups.push(Update::new(
        cur,
        &[(1.0, Slot::Sample), (-sig(k), Slot::Output)],
    ));

    if k == 0 {
        ups.push(Update::new(Slot::Last, &[(1.0, Slot::Sample)]));
    } else {
        // UniC from sigma_{k-1} to sigma_k, with x0_k as the new point.
        let iv = Interval::new(sig(k - 1), sig(k));
        let w = iv.alpha_t * iv.h_phi_1;
        let base_m0 = -w;
        if prev_order == 1 {
            // rho = 0.5 on D1_t = x0_k - x0_{k-1}.
            ups.push(Update::new(
                Slot::Last,
                &[
                    (iv.ratio, Slot::Last),
                    (base_m0 + 0.5 * w, prev),
                    (-0.5 * w, cur),
                ],
            ));
        } else {
            let rk = iv.rk(sig(k - 2), sig(k - 1));
            let (b1, b2) = iv.b12();
            // Solves [[1, 1], [rk, 1]] rho = [b1, b2].
            let rho0 = (b2 - b1) / (rk - 1.0);
            let rho1 = b1 - rho0;
            ups.push(Update::new(
                Slot::Last,
                &[
                    (iv.ratio, Slot::Last),
                    (base_m0 + w * (rho0 / rk + rho1), prev),
                    (-w * rho0 / rk, prev2),
                    (-w * rho1, cur),
                ],
            ));
        }
    }

    // UniP from sigma_k to sigma_{k+1}, starting from the corrected sample.
    let iv = Interval::new(sig(k), sig(k + 1));
    let w = iv.alpha_t * iv.h_phi_1;
    match predictor_order(k, steps) {
        1 => ups.push(Update::new(
            Slot::Sample,
            &[(iv.ratio, Slot::Last), (-w, cur)],
        )),
        _ => {
            // rho = 0.5 on D1 = (x0_{k-1} - x0_k) / rk.
            let rk = iv.rk(sig(k - 1), sig(k));
            let c = 0.5 * w / rk;
            ups.push(Update::new(
                Slot::Sample,
                &[(iv.ratio, Slot::Last), (-w + c, cur), (-c, prev)],
            ));
        }
    }
    ups
}
