use super::reference::*;
use super::*;
use crate::policy::{FlashKernel, KernelPolicy};
use crate::testing::*;

type Fm = FeatureSpec;

fn host_map(rng: &mut Rng, fm: Fm, heads: usize, d: usize, dtype: DType) -> HostFeatureMap {
    random_feature_map(rng, fm, heads, d, dtype == DType::F16)
}

fn upload_map(gpu: &Gpu, m: &HostFeatureMap, heads: usize, d: usize, dtype: DType) -> FeatureMap {
    upload_feature_map(gpu, m, heads, d, dtype).unwrap()
}

struct Case {
    mode: AttentionMode,
    nq: usize,
    nk: usize,
    heads: usize,
    d: usize,
    dtype: DType,
    fm: Fm,
    scale: Option<f32>,
}

impl Case {
    fn new(mode: AttentionMode, n: usize, heads: usize, d: usize, dtype: DType) -> Self {
        Self {
            mode,
            nq: n,
            nk: n,
            heads,
            d,
            dtype,
            fm: Fm::Hedgehog { half: 32 },
            scale: None,
        }
    }
    fn nk(mut self, nk: usize) -> Self {
        self.nk = nk;
        self
    }
    fn fm(mut self, fm: Fm) -> Self {
        self.fm = fm;
        self
    }
    fn scale(mut self, s: f32) -> Self {
        self.scale = Some(s);
        self
    }
}

fn skip_f16(dtype: DType) -> bool {
    if dtype == DType::F16 && !test_gpu().caps.shader_f16 {
        eprintln!("skipping an f16 case: the adapter lacks SHADER_F16");
        return true;
    }
    false
}

fn tol(dtype: DType) -> f64 {
    match dtype {
        DType::F32 => 2e-5,
        DType::F16 => 2e-3,
    }
}

/// Runs the case on the GPU (twice through one workspace, new inputs the second time) and
/// compares both results with the f64 reference.
fn check(c: Case) {
    let gpu = test_gpu();
    if skip_f16(c.dtype) {
        return;
    }
    let seed = seed();
    let mut rng = Rng::new(seed);
    let Case {
        mode,
        nq,
        nk,
        heads,
        d,
        dtype,
        fm,
        scale,
    } = c;
    let scale = scale.unwrap_or(1.0 / (d as f32).sqrt());
    let hq = host_map(&mut rng, fm, heads, d, dtype);
    let hk = host_map(&mut rng, fm, heads, d, dtype);
    let df = hq.out_dim(d);
    let weights = FeatureMapWeights {
        phi_q: upload_map(gpu, &hq, heads, d, dtype),
        phi_k: upload_map(gpu, &hk, heads, d, dtype),
    };
    let ws = AttentionWorkspace::new(gpu, &mode, nq, nk, heads, d, df).unwrap();
    let out = Tensor::empty(gpu, &[nq, heads, d], dtype).unwrap();
    let mut paths = vec![FlashKernel::Auto];
    let layout = |wide, single_pass| FlashCoopLayout { wide, single_pass };
    if flash_coop_fits(gpu, layout(false, false), d, dtype, nq, nk) {
        paths.extend([
            FlashKernel::Vector,
            FlashKernel::Cooperative(layout(false, false)),
        ]);
    }
    for (round, path) in (0..2).flat_map(|r| paths.iter().map(move |p| (r, *p))) {
        let r = |v: Vec<f32>| {
            if dtype == DType::F16 {
                round_f16(&v)
            } else {
                v
            }
        };
        let qv = r(rng.vec_normal(nq * heads * d, 1.0));
        let kv = r(rng.vec_normal(nk * heads * d, 1.0));
        let vv = r(rng.vec_normal(nk * heads * d, 1.0));
        let q = Tensor::from_f32(gpu, &[nq, heads, d], &qv, dtype).unwrap();
        let k = Tensor::from_f32(gpu, &[nk, heads, d], &kv, dtype).unwrap();
        let v = Tensor::from_f32(gpu, &[nk, heads, d], &vv, dtype).unwrap();
        out.poison(gpu);
        let mut rec = Recorder::new(gpu);
        rec.set_policy(KernelPolicy {
            flash: path,
            ..KernelPolicy::default()
        });
        let recorded = attention(
            &mut rec,
            &mode,
            &q,
            &k,
            &v,
            scale,
            Some(&weights),
            &out,
            &ws,
        );
        recorded.unwrap();
        rec.run().unwrap();
        let got = out.to_vec_f32(gpu).unwrap();
        let want = attention_reference(
            RefMode::from(&mode),
            &qv,
            &kv,
            &vv,
            nq,
            nk,
            heads,
            d,
            scale as f64,
            Some((&hq, &hk)),
        );
        assert_close(
            &format!(
                "{} nq {nq} nk {nk} h {heads} d {d} {dtype} {fm:?} round {round} {path:?}",
                mode.name()
            ),
            seed,
            &got,
            &want,
            tol(dtype),
        );
    }
}

use AttentionMode::*;
use DType::{F16, F32};

#[test]
fn softmax_f32_sizes() {
    for (n, h, d) in [(1, 1, 64), (37, 3, 64), (300, 1, 128), (37, 3, 128)] {
        check(Case::new(Softmax, n, h, d, F32));
    }
}

#[test]
fn softmax_f32_long() {
    check(Case::new(Softmax, 1000, 1, 64, F32));
}

#[test]
fn softmax_cross_attention_and_scale() {
    check(Case::new(Softmax, 37, 3, 64, F32).nk(300));
    check(Case::new(Softmax, 300, 2, 128, F16).nk(77));
    check(Case::new(Softmax, 1, 1, 64, F32).nk(37).scale(1.0));
}

#[test]
fn softmax_odd_head_dims() {
    check(Case::new(Softmax, 37, 3, 40, F32));
    check(Case::new(Softmax, 37, 2, 40, F16));
    // the VAE's mid attention: one head of 384, through explicit scores
    check(Case::new(Softmax, 23, 1, 384, F32).nk(19));
    check(Case::new(Softmax, 23, 1, 384, F16));
    check(Case::new(Softmax, 300, 1, 384, F16).nk(200));
}

#[test]
fn softmax_f16_sizes() {
    // Head dim 128 in f16 is the cooperative-matrix kernel's where the adapter has them: fewer
    // rows than one fragment, and tiles that end mid-fragment.
    for (n, h, d) in [
        (1, 1, 64),
        (37, 3, 64),
        (300, 1, 128),
        (5, 2, 128),
        (150, 2, 128),
    ] {
        check(Case::new(Softmax, n, h, d, F16));
    }
}

#[test]
fn linear_feature_maps() {
    let lin = Linear { eps: LINEAR_EPS };
    check(Case::new(lin, 37, 3, 64, F32));
    check(Case::new(lin, 300, 1, 128, F32).fm(Fm::Poly {
        hid: 32,
        d1: 16,
        powers: 2,
    }));
    check(Case::new(lin, 1, 1, 64, F32).fm(Fm::Elu1));
    check(Case::new(lin, 37, 3, 128, F16).fm(Fm::Elu1).nk(300));
    check(Case::new(lin, 300, 3, 64, F16).fm(Fm::Hedgehog { half: 48 }));
    check(Case::new(lin, 37, 1, 40, F32).fm(Fm::Poly {
        hid: 24,
        d1: 20,
        powers: 3,
    }));
}

#[test]
fn hybrid_modes() {
    check(Case::new(Hybrid { rate: 2 }, 300, 3, 64, F32));
    check(Case::new(Hybrid { rate: 3 }, 37, 1, 128, F16).fm(Fm::Poly {
        hid: 32,
        d1: 64,
        powers: 2,
    }));
    check(
        Case::new(Hybrid { rate: 4 }, 37, 3, 64, F32)
            .nk(300)
            .fm(Fm::Elu1),
    );
    check(Case::new(Hybrid { rate: 2 }, 1, 1, 64, F32));
    check(Case::new(Hybrid { rate: 5 }, 300, 1, 128, F16).fm(Fm::Hedgehog { half: 64 }));
    check(
        Case::new(Hybrid { rate: 2 }, 37, 2, 128, F16)
            .nk(300)
            .fm(Fm::Elu1),
    );
}

#[test]
fn rehyat_modes() {
    let mode = |tc, to, ft| Rehyat {
        chunk_frames: tc,
        overlap_frames: to,
        frame_tokens: ft,
    };
    // 7 frames of 10 tokens in chunks of 3 with 1 frame of overlap, as the paper's setting
    check(Case::new(mode(3, 1, 10), 70, 3, 64, F32));
    // a last frame cut short, no overlap
    check(Case::new(mode(2, 0, 10), 65, 1, 128, F32).fm(Fm::Elu1));
    check(Case::new(mode(2, 1, 20), 300, 3, 64, F16));
    // Query ranges that start mid-buffer and a last chunk of 5 rows, at head dim 128 in f16.
    check(Case::new(mode(2, 1, 20), 300, 2, 128, F16));
    check(Case::new(mode(2, 0, 10), 65, 1, 128, F16).fm(Fm::Elu1));
    check(Case::new(mode(1, 2, 7), 37, 1, 64, F32).fm(Fm::Poly {
        hid: 16,
        d1: 32,
        powers: 2,
    }));
}

fn gpu_run(
    mode: &AttentionMode,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f32,
    w: Option<&FeatureMapWeights>,
    df: usize,
) -> Vec<f32> {
    let gpu = test_gpu();
    let [nq, h, d] = [q.shape()[0], q.shape()[1], q.shape()[2]];
    let ws = AttentionWorkspace::new(gpu, mode, nq, k.shape()[0], h, d, df).unwrap();
    let out = Tensor::empty(gpu, q.shape(), q.dtype()).unwrap();
    out.poison(gpu);
    let mut rec = Recorder::new(gpu);
    attention(&mut rec, mode, q, k, v, scale, w, &out, &ws).unwrap();
    rec.run().unwrap();
    out.to_vec_f32(gpu).unwrap()
}

fn as_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

#[test]
fn property_hybrid_rate_one_is_softmax() {
    // The hybrid kernels themselves at R = 1 (every key a softmax key, an empty linear state),
    // not the softmax that `attention` runs for hybrid:1.
    let gpu = test_gpu();
    let seed = seed();
    let mut rng = Rng::new(seed);
    let (n, h, d) = (45, 3, 64);
    let q = Tensor::from_f32(gpu, &[n, h, d], &rng.vec_normal(n * h * d, 1.0), F32).unwrap();
    let k = Tensor::from_f32(gpu, &[n, h, d], &rng.vec_normal(n * h * d, 1.0), F32).unwrap();
    let v = Tensor::from_f32(gpu, &[n, h, d], &rng.vec_normal(n * h * d, 1.0), F32).unwrap();
    let s = 0.125;
    let soft = gpu_run(&Softmax, &q, &k, &v, s, None, 0);
    let fm = Fm::Hedgehog { half: 8 };
    let (hq, hk) = (
        host_map(&mut rng, fm, h, d, F32),
        host_map(&mut rng, fm, h, d, F32),
    );
    let df = hq.out_dim(d);
    let weights = FeatureMapWeights {
        phi_q: upload_map(gpu, &hq, h, d, F32),
        phi_k: upload_map(gpu, &hk, h, d, F32),
    };
    let ws = AttentionWorkspace::new(gpu, &Hybrid { rate: 2 }, n, n, h, d, df).unwrap();
    let out = Tensor::empty(gpu, q.shape(), F32).unwrap();
    out.poison(gpu);
    let mut rec = Recorder::new(gpu);
    hybrid_attention(&mut rec, 1, &q, &k, &v, s, &weights, &out, &ws).unwrap();
    rec.run().unwrap();
    let hybrid = out.to_vec_f32(gpu).unwrap();
    assert_close(
        "hybrid kernels at R=1 vs softmax",
        seed,
        &hybrid,
        &as_f64(&soft),
        1e-5,
    );
    // And `attention` itself runs hybrid:1 as softmax.
    let routed = gpu_run(&Hybrid { rate: 1 }, &q, &k, &v, s, None, 0);
    assert_eq!(routed, soft);
}

#[test]
fn property_hybrid_zero_phi_q_is_strided_softmax() {
    let gpu = test_gpu();
    let seed = seed();
    let mut rng = Rng::new(seed);
    let (n, h, d, rate) = (61, 3, 64, 3);
    let qv = rng.vec_normal(n * h * d, 1.0);
    let kv = rng.vec_normal(n * h * d, 1.0);
    let vv = rng.vec_normal(n * h * d, 1.0);
    let fm = Fm::Poly {
        hid: 16,
        d1: 32,
        powers: 2,
    };
    let mut hq = host_map(&mut rng, fm, h, d, F32);
    if let HostFeatureMap::Poly { w2, b2, .. } = &mut hq {
        w2.iter_mut().for_each(|x| *x = 0.0);
        b2.iter_mut().for_each(|x| *x = 0.0);
    }
    let hk = host_map(&mut rng, fm, h, d, F32);
    let weights = FeatureMapWeights {
        phi_q: upload_map(gpu, &hq, h, d, F32),
        phi_k: upload_map(gpu, &hk, h, d, F32),
    };
    let t = |v: &[f32], rows| Tensor::from_f32(gpu, &[rows, h, d], v, F32).unwrap();
    let (q, k, v) = (t(&qv, n), t(&kv, n), t(&vv, n));
    let hybrid = gpu_run(
        &Hybrid { rate: rate as u32 },
        &q,
        &k,
        &v,
        0.125,
        Some(&weights),
        64,
    );
    // the strided keys gathered on the host, through plain softmax
    let keep: Vec<usize> = (0..n).step_by(rate).collect();
    let gather = |src: &[f32]| -> Vec<f32> {
        keep.iter()
            .flat_map(|&j| src[j * h * d..(j + 1) * h * d].to_vec())
            .collect()
    };
    let (ks, vs) = (t(&gather(&kv), keep.len()), t(&gather(&vv), keep.len()));
    let soft = gpu_run(&Softmax, &q, &ks, &vs, 0.125, None, 0);
    assert_close(
        "hybrid with phi_q = 0 vs strided softmax",
        seed,
        &hybrid,
        &as_f64(&soft),
        1e-6,
    );
}

#[test]
fn property_rehyat_one_chunk_is_softmax() {
    let gpu = test_gpu();
    let seed = seed();
    let mut rng = Rng::new(seed);
    let (n, h, d) = (50, 2, 64);
    let t = |rng: &mut Rng| {
        Tensor::from_f32(gpu, &[n, h, d], &rng.vec_normal(n * h * d, 1.0), F16).unwrap()
    };
    if skip_f16(F16) {
        return;
    }
    let (q, k, v) = (t(&mut rng), t(&mut rng), t(&mut rng));
    let fm = host_map(&mut rng, Fm::Hedgehog { half: 16 }, h, d, F16);
    let weights = FeatureMapWeights {
        phi_q: upload_map(gpu, &fm, h, d, F16),
        phi_k: upload_map(gpu, &fm, h, d, F16),
    };
    let mode = Rehyat {
        chunk_frames: 5,
        overlap_frames: 1,
        frame_tokens: 10,
    };
    let rehyat = gpu_run(&mode, &q, &k, &v, 0.125, Some(&weights), 32);
    let soft = gpu_run(&Softmax, &q, &k, &v, 0.125, None, 0);
    assert_close(
        "rehyat with one chunk vs softmax",
        seed,
        &rehyat,
        &as_f64(&soft),
        1e-6,
    );
}

#[test]
fn feature_maps_match_reference() {
    let gpu = test_gpu();
    for (fm, dtype) in [
        (Fm::Hedgehog { half: 32 }, F32),
        (
            Fm::Poly {
                hid: 40,
                d1: 24,
                powers: 2,
            },
            F32,
        ),
        (Fm::Elu1, F16),
        (Fm::Hedgehog { half: 64 }, F16),
    ] {
        if skip_f16(dtype) {
            continue;
        }
        let seed = seed();
        let mut rng = Rng::new(seed);
        let (n, h, d, lo) = (29, 3, 64, 5);
        let host = host_map(&mut rng, fm, h, d, dtype);
        let df = host.out_dim(d);
        let xv = rng.vec_normal(n * h * d, 1.0);
        let xv = if dtype == F16 { round_f16(&xv) } else { xv };
        let x = Tensor::from_f32(gpu, &[n, h, d], &xv, dtype).unwrap();
        let out = Tensor::empty(gpu, &[n - lo, h, df], F32).unwrap();
        out.poison(gpu);
        let mut rec = Recorder::new(gpu);
        feature_map(
            &mut rec,
            &upload_map(gpu, &host, h, d, dtype),
            &x,
            lo,
            n - lo,
            &out,
        )
        .unwrap();
        rec.run().unwrap();
        let want = feature_map_reference(&host, &xv[lo * h * d..], n - lo, h, d);
        assert_close(
            &format!("feature map {fm:?} {dtype}"),
            seed,
            &out.to_vec_f32(gpu).unwrap(),
            &want,
            1e-5,
        );
    }
}

#[test]
fn rejects_bad_shapes() {
    let gpu = test_gpu();
    let q = Tensor::empty(gpu, &[4, 2, 64], F32).unwrap();
    let k = Tensor::empty(gpu, &[5, 2, 32], F32).unwrap();
    let out = Tensor::empty(gpu, &[4, 2, 64], F32).unwrap();
    let ws = AttentionWorkspace::new(gpu, &Softmax, 4, 5, 2, 64, 0).unwrap();
    let mut rec = Recorder::new(gpu);
    let err = attention(&mut rec, &Softmax, &q, &k, &k, 1.0, None, &out, &ws).unwrap_err();
    assert!(err.to_string().contains("k must be"), "{err}");
    let k = Tensor::empty(gpu, &[5, 2, 64], F32).unwrap();
    let lin = Linear { eps: LINEAR_EPS };
    let err = attention(&mut rec, &lin, &q, &k, &k, 1.0, None, &out, &ws).unwrap_err();
    assert!(err.to_string().contains("workspace"), "{err}");
    let ws = AttentionWorkspace::new(gpu, &lin, 4, 5, 2, 64, 64).unwrap();
    let err = attention(&mut rec, &lin, &q, &k, &k, 1.0, None, &out, &ws).unwrap_err();
    assert!(err.to_string().contains("feature-map weights"), "{err}");
    let big = Tensor::empty(gpu, &[1, 1, 600], F32).unwrap();
    let err = softmax_attention(&mut rec, &big, &big, &big, 1.0, &big).unwrap_err();
    assert!(err.to_string().contains("above 512"), "{err}");
}
