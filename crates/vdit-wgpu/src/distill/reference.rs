//! CPU float64 references of the distillation (DISTILL.md), written per query as the formulas
//! read: every query's own softmax and linear key sets, no segments, no suffix sums. Weights are
//! f64 so that central finite differences of the loss are exact enough to check the analytic
//! gradients.

use crate::attention::reference::{HostFeatureMap, RefMode};

use super::Loss;

/// A hedgehog map with f64 weights: w `[H, F, D]`, b `[H, F]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Hedgehog64 {
    pub w: Vec<f64>,
    pub b: Vec<f64>,
    pub half: usize,
}

impl Hedgehog64 {
    /// The f64 copy of a host hedgehog map (None for other kinds).
    pub fn from_host(m: &HostFeatureMap) -> Option<Self> {
        match m {
            HostFeatureMap::Hedgehog { w, b, half } => Some(Self {
                w: w.iter().map(|&x| x as f64).collect(),
                b: b.iter().map(|&x| x as f64).collect(),
                half: *half,
            }),
            _ => None,
        }
    }

    /// phi(x) = [softmax(u), softmax(-u)], u = W x + b, for head `h`.
    pub fn apply(&self, h: usize, x: &[f64]) -> Vec<f64> {
        let (f, d) = (self.half, x.len());
        let u: Vec<f64> = (0..f)
            .map(|i| {
                let row = &self.w[(h * f + i) * d..][..d];
                self.b[h * f + i] + row.iter().zip(x).map(|(a, b)| a * b).sum::<f64>()
            })
            .collect();
        let mut out = softmax(&u);
        out.extend(softmax(&u.iter().map(|v| -v).collect::<Vec<_>>()));
        out
    }
}

fn softmax(u: &[f64]) -> Vec<f64> {
    let m = u.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = u.iter().map(|v| (v - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.into_iter().map(|v| v / s).collect()
}

/// One capture on the host: q `[nq, heads, d]`, k, v `[nk, heads, d]`, y `[nq, heads, d]`.
#[derive(Clone, Copy, Debug)]
pub struct Problem<'a> {
    pub q: &'a [f32],
    pub k: &'a [f32],
    pub v: &'a [f32],
    pub y: &'a [f32],
    pub nq: usize,
    pub nk: usize,
    pub heads: usize,
    pub d: usize,
    pub scale: f64,
    pub mode: RefMode,
}

/// The softmax keys and the linear keys of query `i`.
pub fn key_sets(mode: RefMode, i: usize, nk: usize) -> (Vec<usize>, Vec<usize>) {
    match mode {
        RefMode::Softmax => ((0..nk).collect(), vec![]),
        RefMode::Linear { .. } => (vec![], (0..nk).collect()),
        RefMode::Hybrid { rate } => (0..nk).partition(|j| j % rate == 0),
        RefMode::Rehyat {
            tc,
            to,
            frame_tokens,
        } => {
            let t = i / frame_tokens / tc;
            let lo = ((t * tc).saturating_sub(to) * frame_tokens).min(nk);
            let hi = ((t + 1) * tc * frame_tokens).min(nk);
            ((lo..hi).collect(), (0..lo).collect())
        }
    }
}

impl Problem<'_> {
    fn row(&self, t: &[f32], i: usize, h: usize) -> Vec<f64> {
        t[(i * self.heads + h) * self.d..][..self.d]
            .iter()
            .map(|&x| x as f64)
            .collect()
    }

    /// (A_i, alpha_i, m_i) of query i, head h (linear: A = 0, alpha = eps, m = 0).
    pub fn softmax_part(&self, i: usize, h: usize) -> (Vec<f64>, f64, f64) {
        let (soft, _) = key_sets(self.mode, i, self.nk);
        let mut a = vec![0.0; self.d];
        if soft.is_empty() {
            let eps = match self.mode {
                RefMode::Linear { eps } => eps,
                _ => 0.0,
            };
            return (a, eps, 0.0);
        }
        let qi = self.row(self.q, i, h);
        let s: Vec<f64> = soft
            .iter()
            .map(|&j| {
                let kj = self.row(self.k, j, h);
                self.scale * qi.iter().zip(&kj).map(|(x, y)| x * y).sum::<f64>()
            })
            .collect();
        let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let mut alpha = 0.0;
        for (&j, &sj) in soft.iter().zip(&s) {
            let p = (sj - m).exp();
            alpha += p;
            for (x, vv) in a.iter_mut().zip(self.row(self.v, j, h)) {
                *x += p * vv;
            }
        }
        (a, alpha, m)
    }
}

/// What [`reference_gradients`] returns: the loss, the weight gradients of both maps, and the
/// upstream gradients of the features (df per entry of the query list, dg per key).
#[derive(Clone, Debug)]
pub struct RefGradients {
    pub loss: f64,
    /// y_hat `[M, H, D]` of the listed queries.
    pub yhat: Vec<f64>,
    /// `[H, F, D + 1]`: dW in columns 0..D, db in column D (the GPU's layout).
    pub grad_q: Vec<f64>,
    pub grad_k: Vec<f64>,
    /// `[M, H, DF]`
    pub df: Vec<f64>,
    /// `[Nk, H, DF]`
    pub dg: Vec<f64>,
}

/// The loss of the listed queries (duplicates count twice) and, when `grads`, its gradients.
pub fn reference_gradients(
    p: &Problem,
    phi_q: &Hedgehog64,
    phi_k: &Hedgehog64,
    queries: &[usize],
    loss: Loss,
) -> RefGradients {
    let (h_n, d) = (p.heads, p.d);
    let half = phi_q.half;
    let df_n = 2 * half;
    let m_n = queries.len();
    let count = (m_n * h_n * d) as f64;
    let mut out = RefGradients {
        loss: 0.0,
        yhat: vec![0.0; m_n * h_n * d],
        grad_q: vec![0.0; h_n * half * (d + 1)],
        grad_k: vec![0.0; h_n * half * (d + 1)],
        df: vec![0.0; m_n * h_n * df_n],
        dg: vec![0.0; p.nk * h_n * df_n],
    };
    for h in 0..h_n {
        let g: Vec<Vec<f64>> = (0..p.nk)
            .map(|j| phi_k.apply(h, &p.row(p.k, j, h)))
            .collect();
        let vs: Vec<Vec<f64>> = (0..p.nk).map(|j| p.row(p.v, j, h)).collect();
        for (r, &i) in queries.iter().enumerate() {
            let (_, lin) = key_sets(p.mode, i, p.nk);
            let (a, alpha, _) = p.softmax_part(i, h);
            let f = phi_q.apply(h, &p.row(p.q, i, h));
            let dot = |x: &[f64], y: &[f64]| x.iter().zip(y).map(|(a, b)| a * b).sum::<f64>();
            // n = A + sum (f.g_j) v_j,  D = alpha + sum f.g_j
            let mut n = a;
            let mut den = alpha;
            for &j in &lin {
                let w = dot(&f, &g[j]);
                den += w;
                for (x, vv) in n.iter_mut().zip(&vs[j]) {
                    *x += w * vv;
                }
            }
            let yhat: Vec<f64> = n.iter().map(|x| x / den).collect();
            let yt = p.row(p.y, i, h);
            let gr: Vec<f64> = yhat
                .iter()
                .zip(&yt)
                .map(|(yh, y)| {
                    let diff = yh - y;
                    match loss {
                        Loss::L1 => {
                            out.loss += diff.abs() / count;
                            // sign(0) = 0, as WGSL's sign()
                            if diff == 0.0 {
                                0.0
                            } else {
                                diff.signum() / count
                            }
                        }
                        Loss::Mse => {
                            out.loss += diff * diff / count;
                            2.0 * diff / count
                        }
                    }
                })
                .collect();
            out.yhat[(r * h_n + h) * d..][..d].copy_from_slice(&yhat);
            let u: Vec<f64> = gr.iter().map(|x| x / den).collect();
            let delta = -dot(&gr, &yhat) / den;
            // dL/d(f.g_j) = u.v_j + delta for every linear key j of this query.
            let mut dfi = vec![0.0; df_n];
            for &j in &lin {
                let w = dot(&u, &vs[j]) + delta;
                for c in 0..df_n {
                    dfi[c] += w * g[j][c];
                    out.dg[(j * h_n + h) * df_n + c] += w * f[c];
                }
            }
            out.df[(r * h_n + h) * df_n..][..df_n].copy_from_slice(&dfi);
            hedgehog_backward(&f, &dfi, &p.row(p.q, i, h), h, half, &mut out.grad_q);
        }
        for j in 0..p.nk {
            let dgj = out.dg[(j * h_n + h) * df_n..][..df_n].to_vec();
            hedgehog_backward(&g[j], &dgj, &p.row(p.k, j, h), h, half, &mut out.grad_k);
        }
    }
    out
}

/// Adds du (x | 1)^T of one row to the `[H, F, D + 1]` table: du = p (a - a.p) - r (c - c.r).
fn hedgehog_backward(
    phi: &[f64],
    dphi: &[f64],
    x: &[f64],
    h: usize,
    half: usize,
    grad: &mut [f64],
) {
    let d = x.len();
    let (pp, rr) = phi.split_at(half);
    let (a, c) = dphi.split_at(half);
    let ap: f64 = a.iter().zip(pp).map(|(x, y)| x * y).sum();
    let cr: f64 = c.iter().zip(rr).map(|(x, y)| x * y).sum();
    for f in 0..half {
        let du = pp[f] * (a[f] - ap) - rr[f] * (c[f] - cr);
        let row = &mut grad[(h * half + f) * (d + 1)..][..d + 1];
        for (g, xv) in row.iter_mut().zip(x) {
            *g += du * xv;
        }
        row[d] += du;
    }
}

/// The loss alone (for finite differences).
pub fn reference_loss(
    p: &Problem,
    phi_q: &Hedgehog64,
    phi_k: &Hedgehog64,
    queries: &[usize],
    loss: Loss,
) -> f64 {
    reference_gradients(p, phi_q, phi_k, queries, loss).loss
}
