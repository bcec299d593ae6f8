//! CPU float64 references of the distillation (DISTILL.md), written per query as the formulas
//! read: every query's own softmax and linear key sets, no segments, no suffix sums. Weights are
//! f64 so that central finite differences of the loss are exact enough to check the analytic
//! gradients.

use crate::attention::reference::{HostFeatureMap, RefMode};
use crate::kernels::gelu_tanh_f64;

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

/// A poly map with f64 weights: w1 `[H, HID, D]`, b1 `[H, HID]`, w2 `[H, DF, HID]`, b2 `[H, DF]`;
/// psi = W2 gelu_tanh(W1 x + b1) + b2, phi = [psi_1, psi_2^2, .., psi_P^P] in parts of DF / P.
#[derive(Clone, Debug, PartialEq)]
pub struct Poly64 {
    pub w1: Vec<f64>,
    pub b1: Vec<f64>,
    pub w2: Vec<f64>,
    pub b2: Vec<f64>,
    pub hid: usize,
    pub df: usize,
    pub powers: usize,
}

impl Poly64 {
    /// (pre-activations, hidden layer, psi) of head `h`.
    fn layers(&self, h: usize, x: &[f64]) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let (hid, df, d) = (self.hid, self.df, x.len());
        let pre: Vec<f64> = (0..hid)
            .map(|c| {
                let row = &self.w1[(h * hid + c) * d..][..d];
                self.b1[h * hid + c] + row.iter().zip(x).map(|(a, b)| a * b).sum::<f64>()
            })
            .collect();
        let a: Vec<f64> = pre.iter().map(|&v| gelu_tanh_f64(v)).collect();
        let psi = (0..df)
            .map(|f| {
                let row = &self.w2[(h * df + f) * hid..][..hid];
                self.b2[h * df + f] + row.iter().zip(&a).map(|(w, a)| w * a).sum::<f64>()
            })
            .collect();
        (pre, a, psi)
    }

    /// The power of output f.
    fn power(&self, f: usize) -> i32 {
        (f / (self.df / self.powers)) as i32 + 1
    }
}

/// The derivative of the tanh form of GELU.
fn gelu_tanh_grad_f64(v: f64) -> f64 {
    let c = (2.0 / std::f64::consts::PI).sqrt();
    let t = (c * (v + 0.044715 * v * v * v)).tanh();
    0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * c * (1.0 + 3.0 * 0.044715 * v * v)
}

/// A trainable map in f64.
#[derive(Clone, Debug, PartialEq)]
pub enum Map64 {
    Hedgehog(Hedgehog64),
    Poly(Poly64),
}

impl Map64 {
    /// The f64 copy of a host map (None for elu1).
    pub fn from_host(m: &HostFeatureMap) -> Option<Self> {
        match m {
            HostFeatureMap::Hedgehog { .. } => Hedgehog64::from_host(m).map(Map64::Hedgehog),
            HostFeatureMap::Poly {
                w1,
                b1,
                w2,
                b2,
                hid,
                df,
                powers,
            } => {
                let f = |v: &[f32]| v.iter().map(|&x| x as f64).collect();
                Some(Map64::Poly(Poly64 {
                    w1: f(w1),
                    b1: f(b1),
                    w2: f(w2),
                    b2: f(b2),
                    hid: *hid,
                    df: *df,
                    powers: *powers,
                }))
            }
            HostFeatureMap::Elu1 => None,
        }
    }

    pub fn apply(&self, h: usize, x: &[f64]) -> Vec<f64> {
        match self {
            Map64::Hedgehog(m) => m.apply(h, x),
            Map64::Poly(m) => {
                let (_, _, psi) = m.layers(h, x);
                psi.iter()
                    .enumerate()
                    .map(|(f, &v)| v.powi(m.power(f)))
                    .collect()
            }
        }
    }

    /// The tensors, in the trainer's order (hedgehog w, b; poly w1, b1, w2, b2).
    pub fn tensors_mut(&mut self) -> Vec<&mut Vec<f64>> {
        match self {
            Map64::Hedgehog(m) => vec![&mut m.w, &mut m.b],
            Map64::Poly(m) => vec![&mut m.w1, &mut m.b1, &mut m.w2, &mut m.b2],
        }
    }

    /// The length of the gradient: the (dW | db) tables of the layers one after the other
    /// (hedgehog `[H, F, D + 1]`; poly `[H, HID, D + 1]` then `[H, DF, HID + 1]`).
    pub fn grad_len(&self, heads: usize, d: usize) -> usize {
        match self {
            Map64::Hedgehog(m) => heads * m.half * (d + 1),
            Map64::Poly(m) => heads * m.hid * (d + 1) + heads * m.df * (m.hid + 1),
        }
    }

    /// Where element `e` of tensor `t` finds its gradient in that layout.
    pub fn grad_index(&self, t: usize, e: usize, heads: usize, d: usize) -> usize {
        let (base, cols) = match (self, t / 2) {
            (_, 0) => (0, d),
            (Map64::Poly(m), _) => (heads * m.hid * (d + 1), m.hid),
            (Map64::Hedgehog(_), _) => panic!("hedgehog has two tensors"),
        };
        base + if t % 2 == 0 {
            (e / cols) * (cols + 1) + e % cols
        } else {
            e * (cols + 1) + cols
        }
    }

    /// Adds the gradient of one row (input x, outputs phi, upstream dphi) for head h.
    pub fn backward(&self, h: usize, x: &[f64], phi: &[f64], dphi: &[f64], grad: &mut [f64]) {
        match self {
            Map64::Hedgehog(m) => hedgehog_backward(phi, dphi, x, h, m.half, grad),
            Map64::Poly(m) => {
                let (d, hid, df) = (x.len(), m.hid, m.df);
                let (pre, a, psi) = m.layers(h, x);
                let heads = grad.len() / (hid * (d + 1) + df * (hid + 1));
                let (t1, t2) = grad.split_at_mut(heads * hid * (d + 1));
                // dpsi = n psi^(n - 1) dphi, then (dW2 | db2) and da = W2^T dpsi.
                let mut da = vec![0.0; hid];
                for f in 0..df {
                    let n = m.power(f);
                    let dpsi = n as f64 * psi[f].powi(n - 1) * dphi[f];
                    let row = &mut t2[(h * df + f) * (hid + 1)..][..hid + 1];
                    for c in 0..hid {
                        row[c] += dpsi * a[c];
                        da[c] += m.w2[(h * df + f) * hid + c] * dpsi;
                    }
                    row[hid] += dpsi;
                }
                // dpre = gelu'(pre) da, then (dW1 | db1).
                for c in 0..hid {
                    let dpre = gelu_tanh_grad_f64(pre[c]) * da[c];
                    let row = &mut t1[(h * hid + c) * (d + 1)..][..d + 1];
                    for (g, xv) in row.iter_mut().zip(x) {
                        *g += dpre * xv;
                    }
                    row[d] += dpre;
                }
            }
        }
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

/// The loss of the listed queries (duplicates count twice) and its gradients.
pub fn reference_gradients(
    p: &Problem,
    phi_q: &Map64,
    phi_k: &Map64,
    queries: &[usize],
    loss: Loss,
) -> RefGradients {
    let (h_n, d) = (p.heads, p.d);
    let df_n = phi_q.apply(0, &vec![0.0; d]).len();
    let m_n = queries.len();
    let count = (m_n * h_n * d) as f64;
    let mut out = RefGradients {
        loss: 0.0,
        yhat: vec![0.0; m_n * h_n * d],
        grad_q: vec![0.0; phi_q.grad_len(h_n, d)],
        grad_k: vec![0.0; phi_k.grad_len(h_n, d)],
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
            phi_q.backward(h, &p.row(p.q, i, h), &f, &dfi, &mut out.grad_q);
        }
        for (j, gj) in g.iter().enumerate() {
            let dgj = out.dg[(j * h_n + h) * df_n..][..df_n].to_vec();
            phi_k.backward(h, &p.row(p.k, j, h), gj, &dgj, &mut out.grad_k);
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
    phi_q: &Map64,
    phi_k: &Map64,
    queries: &[usize],
    loss: Loss,
) -> f64 {
    reference_gradients(p, phi_q, phi_k, queries, loss).loss
}
