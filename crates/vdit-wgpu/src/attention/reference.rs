//! CPU float64 references of ARCHITECTURE.md, Attention modes, written as the formulas read (quadratic, per query),
//! for tests and the bench's `--check`.

use super::FeatureMap;
use crate::error::Result;
use crate::gpu::Gpu;
use crate::kernels::gelu_tanh_f64;
use crate::rng::Rng;
use crate::tensor::{DType, Tensor};

/// A feature map's weights on the host, as f32 values (shapes as in the module docs).
#[derive(Clone, Debug)]
pub enum HostFeatureMap {
    Hedgehog {
        w: Vec<f32>,
        b: Vec<f32>,
        half: usize,
    },
    Poly {
        w1: Vec<f32>,
        b1: Vec<f32>,
        w2: Vec<f32>,
        b2: Vec<f32>,
        hid: usize,
        df: usize,
        powers: usize,
    },
    Elu1,
}

impl HostFeatureMap {
    pub fn out_dim(&self, d: usize) -> usize {
        match self {
            HostFeatureMap::Hedgehog { half, .. } => 2 * half,
            HostFeatureMap::Poly { df, .. } => *df,
            HostFeatureMap::Elu1 => d,
        }
    }

    /// phi(x) of head `h` for one vector `x` of size `d`.
    pub fn apply(&self, h: usize, x: &[f32]) -> Vec<f64> {
        let d = x.len();
        match self {
            HostFeatureMap::Hedgehog { w, b, half } => {
                let u: Vec<f64> = (0..*half)
                    .map(|f| {
                        let row = &w[(h * half + f) * d..][..d];
                        b[h * half + f] as f64
                            + row
                                .iter()
                                .zip(x)
                                .map(|(&a, &b)| a as f64 * b as f64)
                                .sum::<f64>()
                    })
                    .collect();
                let mut out = softmax(&u);
                out.extend(softmax(&u.iter().map(|v| -v).collect::<Vec<_>>()));
                out
            }
            HostFeatureMap::Poly {
                w1,
                b1,
                w2,
                b2,
                hid,
                df,
                powers,
            } => {
                let a: Vec<f64> = (0..*hid)
                    .map(|c| {
                        let row = &w1[(h * hid + c) * d..][..d];
                        gelu_tanh_f64(
                            b1[h * hid + c] as f64
                                + row
                                    .iter()
                                    .zip(x)
                                    .map(|(&a, &b)| a as f64 * b as f64)
                                    .sum::<f64>(),
                        )
                    })
                    .collect();
                let d1 = df / powers;
                (0..*df)
                    .map(|f| {
                        let row = &w2[(h * df + f) * hid..][..*hid];
                        let psi = b2[h * df + f] as f64
                            + row.iter().zip(&a).map(|(&w, &a)| w as f64 * a).sum::<f64>();
                        psi.powi((f / d1) as i32 + 1)
                    })
                    .collect()
            }
            HostFeatureMap::Elu1 => x
                .iter()
                .map(|&v| {
                    let v = v as f64;
                    if v > 0.0 {
                        v + 1.0
                    } else {
                        v.exp()
                    }
                })
                .collect(),
        }
    }
}

fn softmax(u: &[f64]) -> Vec<f64> {
    let m = u.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = u.iter().map(|v| (v - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.into_iter().map(|v| v / s).collect()
}

/// phi of every row of x `[n, heads, d]`: `[n, heads, df]`.
pub fn feature_map_reference(
    fm: &HostFeatureMap,
    x: &[f32],
    n: usize,
    heads: usize,
    d: usize,
) -> Vec<f64> {
    let mut out = Vec::with_capacity(n * heads * fm.out_dim(d));
    for i in 0..n {
        for h in 0..heads {
            out.extend(fm.apply(h, &x[(i * heads + h) * d..][..d]));
        }
    }
    out
}

/// The modes of the reference (the same as `AttentionMode`, without GPU types).
#[derive(Clone, Copy, Debug)]
pub enum RefMode {
    Softmax,
    Linear {
        eps: f64,
    },
    Hybrid {
        rate: usize,
    },
    Rehyat {
        tc: usize,
        to: usize,
        frame_tokens: usize,
    },
}

impl From<&super::AttentionMode> for RefMode {
    fn from(m: &super::AttentionMode) -> Self {
        match *m {
            super::AttentionMode::Softmax => RefMode::Softmax,
            super::AttentionMode::Linear { eps } => RefMode::Linear { eps: eps as f64 },
            super::AttentionMode::Hybrid { rate } => RefMode::Hybrid {
                rate: rate.max(1) as usize,
            },
            super::AttentionMode::Rehyat {
                chunk_frames,
                overlap_frames,
                frame_tokens,
            } => RefMode::Rehyat {
                tc: chunk_frames as usize,
                to: overlap_frames as usize,
                frame_tokens: frame_tokens as usize,
            },
        }
    }
}

/// Attention of q `[nq, heads, d]` over k, v `[nk, heads, d]` in f64: `[nq, heads, d]`.
/// `phi` gives (phi_q, phi_k) for the modes with a linear part.
#[allow(clippy::too_many_arguments)]
pub fn attention_reference(
    mode: RefMode,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    nq: usize,
    nk: usize,
    heads: usize,
    d: usize,
    scale: f64,
    phi: Option<(&HostFeatureMap, &HostFeatureMap)>,
) -> Vec<f64> {
    let row = |t: &[f32], i: usize, h: usize| -> Vec<f64> {
        t[(i * heads + h) * d..][..d]
            .iter()
            .map(|&x| x as f64)
            .collect()
    };
    let mut out = vec![0.0f64; nq * heads * d];
    for h in 0..heads {
        let phik: Vec<Vec<f64>> = match phi {
            Some((_, pk)) => (0..nk)
                .map(|j| pk.apply(h, &k[(j * heads + h) * d..][..d]))
                .collect(),
            None => vec![],
        };
        let ks: Vec<Vec<f64>> = (0..nk).map(|j| row(k, j, h)).collect();
        let vs: Vec<Vec<f64>> = (0..nk).map(|j| row(v, j, h)).collect();
        for i in 0..nq {
            let qi = row(q, i, h);
            // Which keys are softmax keys and which linear keys, for this query.
            let (soft, lin): (Vec<usize>, Vec<usize>) = match mode {
                RefMode::Softmax => ((0..nk).collect(), vec![]),
                RefMode::Linear { .. } => (vec![], (0..nk).collect()),
                RefMode::Hybrid { rate } => (0..nk).partition(|j| j % rate == 0),
                RefMode::Rehyat {
                    tc,
                    to,
                    frame_tokens,
                } => {
                    let t = i / frame_tokens / tc;
                    let lo = (t * tc).saturating_sub(to) * frame_tokens;
                    let hi = ((t + 1) * tc * frame_tokens).min(nk);
                    ((lo..hi).collect(), (0..lo).collect())
                }
            };
            let mut num = vec![0.0f64; d];
            let mut den = 0.0f64;
            if !soft.is_empty() {
                let scores: Vec<f64> = soft
                    .iter()
                    .map(|&j| scale * qi.iter().zip(&ks[j]).map(|(a, b)| a * b).sum::<f64>())
                    .collect();
                let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                for (&j, &s) in soft.iter().zip(&scores) {
                    let p = (s - m).exp();
                    den += p;
                    for (n, vv) in num.iter_mut().zip(&vs[j]) {
                        *n += p * vv;
                    }
                }
            }
            if !lin.is_empty() {
                let (pq, _) = phi.expect("a linear part needs feature maps");
                let phiq = pq.apply(h, &q[(i * heads + h) * d..][..d]);
                for &j in &lin {
                    let w: f64 = phiq.iter().zip(&phik[j]).map(|(a, b)| a * b).sum();
                    den += w;
                    for (n, vv) in num.iter_mut().zip(&vs[j]) {
                        *n += w * vv;
                    }
                }
            }
            if let RefMode::Linear { eps } = mode {
                den += eps;
            }
            for (dd, n) in num.iter().enumerate() {
                out[(i * heads + h) * d + dd] = n / den;
            }
        }
    }
    out
}

/// Sizes of a feature map to draw at random.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FeatureSpec {
    Hedgehog {
        half: usize,
    },
    Poly {
        hid: usize,
        d1: usize,
        powers: usize,
    },
    Elu1,
}

impl FeatureSpec {
    /// The map's name in errors.json and plans: `hedgehog`, `poly` or `elu1`.
    pub fn name(&self) -> &'static str {
        match self {
            FeatureSpec::Hedgehog { .. } => "hedgehog",
            FeatureSpec::Poly { .. } => "poly",
            FeatureSpec::Elu1 => "elu1",
        }
    }

    /// Features per vector, DF, for heads of size `d`.
    pub fn df(&self, d: usize) -> usize {
        match *self {
            FeatureSpec::Hedgehog { half } => 2 * half,
            FeatureSpec::Poly { d1, powers, .. } => d1 * powers,
            FeatureSpec::Elu1 => d,
        }
    }

    /// Poly's P (the powers 1..=P of its values); none for the other maps.
    pub fn powers(&self) -> Option<usize> {
        match *self {
            FeatureSpec::Poly { powers, .. } => Some(powers),
            _ => None,
        }
    }

    /// FLOPs of the map on one vector of size `d`: hedgehog's projection per half (2 D DF/2)
    /// and two softmaxes over DF/2 (about 8 DF/2); poly's two layers and its powers; elu1's
    /// one pass.
    pub fn flops(&self, d: usize) -> f64 {
        match *self {
            FeatureSpec::Hedgehog { half } => (2 * d * half + 8 * half) as f64,
            FeatureSpec::Poly { hid, d1, powers } => {
                let df = d1 * powers;
                (2 * d * hid + 2 * hid * df + df * (powers - 1) / 2) as f64
            }
            FeatureSpec::Elu1 => d as f64,
        }
    }
}

/// Random feature-map weights, kept well conditioned (features near or above zero, so that
/// linear denominators stay away from zero); `round_f16` rounds them as f16 storage would.
pub fn random_feature_map(
    rng: &mut Rng,
    spec: FeatureSpec,
    heads: usize,
    d: usize,
    round_f16: bool,
) -> HostFeatureMap {
    let r = |v: Vec<f32>| {
        if round_f16 {
            crate::testing::round_f16(&v)
        } else {
            v
        }
    };
    match spec {
        FeatureSpec::Hedgehog { half } => HostFeatureMap::Hedgehog {
            w: r(rng.vec_normal(heads * half * d, 1.0 / (d as f32).sqrt())),
            b: r(rng.vec_normal(heads * half, 0.5)),
            half,
        },
        FeatureSpec::Poly { hid, d1, powers } => {
            let df = d1 * powers;
            HostFeatureMap::Poly {
                w1: r(rng.vec_normal(heads * hid * d, 1.0 / (d as f32).sqrt())),
                b1: r(rng.vec_normal(heads * hid, 0.5)),
                w2: r(rng.vec_normal(heads * df * hid, 0.1 / (hid as f32).sqrt())),
                // psi near 1 keeps every power positive.
                b2: r((0..heads * df).map(|_| 1.0 + 0.1 * rng.uniform()).collect()),
                hid,
                df,
                powers,
            }
        }
        FeatureSpec::Elu1 => HostFeatureMap::Elu1,
    }
}

/// The GPU tensors of a host feature map, in storage `dtype`.
pub fn upload_feature_map(
    gpu: &Gpu,
    m: &HostFeatureMap,
    heads: usize,
    d: usize,
    dtype: DType,
) -> Result<FeatureMap> {
    let t = |shape: &[usize], v: &[f32]| Tensor::from_f32(gpu, shape, v, dtype);
    Ok(match m {
        HostFeatureMap::Hedgehog { w, b, half } => FeatureMap::Hedgehog {
            w: t(&[heads, *half, d], w)?,
            b: t(&[heads, *half], b)?,
        },
        HostFeatureMap::Poly {
            w1,
            b1,
            w2,
            b2,
            hid,
            df,
            powers,
        } => FeatureMap::Poly {
            w1: t(&[heads, *hid, d], w1)?,
            b1: t(&[heads, *hid], b1)?,
            w2: t(&[heads, *df, *hid], w2)?,
            b2: t(&[heads, *df], b2)?,
            powers: *powers,
        },
        HostFeatureMap::Elu1 => FeatureMap::Elu1,
    })
}

/// Feature-map FLOPs per token and head, for the cost model.
pub fn feature_map_flops(m: &HostFeatureMap, d: usize) -> f64 {
    let spec = match *m {
        HostFeatureMap::Hedgehog { half, .. } => FeatureSpec::Hedgehog { half },
        HostFeatureMap::Poly {
            hid, df, powers, ..
        } => FeatureSpec::Poly {
            hid,
            d1: df / powers,
            powers,
        },
        HostFeatureMap::Elu1 => FeatureSpec::Elu1,
    };
    spec.flops(d)
}
