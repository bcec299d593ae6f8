//! `vdit selftest`: every kernel variant this adapter can run, at odd sizes (not multiples of any
//! tile), against the CPU float64 reference. CI's lavapipe never reaches the cooperative-matrix
//! kernels; this is how a user on a new GPU or driver, and every kernel change, checks them.
//!
//! A variant is chosen through the recorder's [`KernelPolicy`]; the check records which kernel
//! the launcher really ran (the profiler label of its dispatch), so a variant that silently fell
//! back to another is reported as not run rather than passed.

use std::time::Instant;

use serde::Serialize;

use crate::attention::reference::{
    attention_reference, random_feature_map, upload_feature_map, FeatureSpec, RefMode,
};
use crate::attention::{
    attention, flash_coop_fits, flash_vec_tiles, AttentionMode, AttentionWorkspace,
    FeatureMapWeights, FlashCoopLayout, LINEAR_EPS,
};
use crate::error::Result;
use crate::gpu::Gpu;
use crate::kernels::conv::{
    causal_conv3d, conv_reference, coop_fits as conv_coop_fits, taps_major_weight, Conv,
    ConvOutput, ConvReference,
};
use crate::kernels::matmul::{
    coop_fits as matmul_coop_fits, matmul_reference, matmul_weight, Epilogue, ReferenceEpilogue,
    Weight, WeightRef,
};
use crate::kernels::norm::{layer_norm, layer_norm_reference, rms_norm, rms_norm_reference};
use crate::kernels::q4k::{dequantize_q4k, quantize_q4k, Q4KWeight};
use crate::kernels::q8::{dequantize_q8, quantize_q8, Q8Weight, Q8_BLOCK};
use crate::kernels::rope::{rope_in_place, rope_reference, RopeTable};
use crate::kernels::Row;
use crate::policy::{ConvKernel, CoopTiles, FlashKernel, KernelPolicy, MatmulKernel};
use crate::profiler::Profiler;
use crate::recorder::Recorder;
use crate::rng::Rng;
use crate::tensor::{DType, Tensor};
use crate::testing::{rel_l2, round_f16};

/// One check: a kernel variant on one case.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    pub kernel: String,
    pub variant: String,
    pub case: String,
    /// Relative L2 error against the float64 reference (NaN when it did not run).
    pub error: f64,
    pub tolerance: f64,
    pub passed: bool,
    /// An experimental variant (nothing picks it unless asked): its failure is reported but
    /// does not fail the selftest.
    pub experimental: bool,
    /// The profiler labels of the dispatches it ran, or why it failed to run.
    pub ran: String,
    pub ms: f64,
}

/// Runs every check the adapter can run; `filter` keeps the kernels whose name contains it.
pub fn run(gpu: &Gpu, filter: Option<&str>) -> Vec<Check> {
    let mut checks = Vec::new();
    let keep = |k: &str| filter.is_none_or(|f| k.contains(f));
    if keep("matmul") {
        matmul_checks(gpu, &mut checks);
    }
    if keep("attention") {
        attention_checks(gpu, &mut checks);
    }
    if keep("conv") {
        conv_checks(gpu, &mut checks);
    }
    if keep("norm") {
        norm_checks(gpu, &mut checks);
    }
    if keep("rope") {
        rope_checks(gpu, &mut checks);
    }
    checks
}

/// The checks as a table: one row per check, then the count of failures.
pub fn table(checks: &[Check]) -> String {
    let mut s = format!(
        "{:<10} {:<28} {:<34} {:>10} {:>8} {:>6}  ran\n",
        "kernel", "variant", "case", "rel err", "tol", "result"
    );
    for c in checks {
        s += &format!(
            "{:<10} {:<28} {:<34} {:>10.2e} {:>8.0e} {:>6}  {}\n",
            c.kernel,
            c.variant,
            c.case,
            c.error,
            c.tolerance,
            match (c.passed, c.experimental) {
                (true, _) => "pass",
                (false, false) => "FAIL",
                (false, true) => "xfail",
            },
            c.ran
        );
    }
    let failed = failures(checks);
    let xfail = checks
        .iter()
        .filter(|c| !c.passed && c.experimental)
        .count();
    s += &format!(
        "{} checks, {failed} failed ({xfail} failures of experimental variants not counted)\n",
        checks.len()
    );
    s
}

/// What the profiler labels of a check's dispatches must show: the variant really ran.
#[derive(Clone, Copy, Debug)]
enum Expect {
    Has(&'static str),
    Lacks(&'static str),
}

/// The checks that failed, experimental variants left out.
pub fn failures(checks: &[Check]) -> usize {
    checks
        .iter()
        .filter(|c| !c.passed && !c.experimental)
        .count()
}

/// Records with `policy`, runs under a profiler (for the labels of what ran) and compares.
#[allow(clippy::too_many_arguments)]
fn check(
    gpu: &Gpu,
    out: &mut Vec<Check>,
    kernel: &str,
    variant: &str,
    case: String,
    policy: KernelPolicy,
    expect_label: Option<Expect>,
    tolerance: f64,
    record: impl FnOnce(&mut Recorder) -> Result<Tensor>,
    want: &[f64],
) {
    let t = Instant::now();
    let mut rec = Recorder::new(gpu);
    rec.set_policy(policy);
    let mut profiler = Profiler::with_clock(gpu, false);
    let result = record(&mut rec).and_then(|y| {
        rec.submit(Some(&mut profiler))?;
        gpu.wait()?;
        y.to_vec_f32(gpu)
    });
    let labels: Vec<String> = profiler
        .stats()
        .into_iter()
        .map(|s| s.label)
        .collect::<Vec<_>>();
    let (error, ran, passed) = match result {
        Ok(got) => {
            let error = rel_l2(&got, want);
            let labels = labels.join("; ");
            let reached = match expect_label {
                None => true,
                Some(Expect::Has(l)) => labels.contains(l),
                Some(Expect::Lacks(l)) => !labels.contains(l),
            };
            let ran = if reached {
                labels
            } else {
                format!("not the asked-for kernel: {labels}")
            };
            (error, ran, reached && error <= tolerance)
        }
        Err(e) => (f64::NAN, format!("error: {e}"), false),
    };
    out.push(Check {
        kernel: kernel.into(),
        variant: variant.into(),
        case,
        error,
        tolerance,
        passed,
        experimental: variant.contains("narrow-1pass"),
        ran,
        ms: t.elapsed().as_secs_f64() * 1e3,
    });
}

fn values(rng: &mut Rng, n: usize, scale: f32, dtype: DType) -> Vec<f32> {
    let v = rng.vec_normal(n, scale);
    if dtype == DType::F16 {
        round_f16(&v)
    } else {
        v
    }
}

fn f16_ok(gpu: &Gpu, dtypes: &[DType]) -> bool {
    gpu.caps.shader_f16 || dtypes.iter().all(|&d| d == DType::F32)
}

fn matmul_checks(gpu: &Gpu, out: &mut Vec<Check>) {
    use DType::*;
    let mut rng = Rng::new(11);
    let mut kernels = vec![
        ("portable", MatmulKernel::Portable, Expect::Lacks("coop")),
        ("direct", MatmulKernel::Direct, Expect::Has(" direct ")),
    ];
    for (name, wide_k, vec_tiles, wide_tile) in [
        ("coop", true, true, false),
        ("coop-k32", false, true, false),
        ("coop-scalar", true, false, false),
        ("coop-k32-scalar", false, false, false),
        ("coop-256", false, true, true),
    ] {
        kernels.push((
            name,
            MatmulKernel::Cooperative(CoopTiles {
                wide_k,
                vec_tiles,
                wide_tile,
            }),
            Expect::Has(" coop "),
        ));
    }
    // (m, n, k): odd sizes, one past a 128 tile in each dimension, one K of 8 steps + a rest;
    // Q8_0 weights need K in whole blocks of 32, Q4_K weights in whole super-blocks of 256.
    let dense_shapes = [(77, 45, 36), (131, 133, 196), (257, 129, 520)];
    let q8_shapes = [(77, 45, 64), (131, 133, 224), (257, 129, 544)];
    let q4k_shapes = [(77, 45, 256), (131, 133, 512), (257, 129, 768)];
    for (xt, quant, yt) in [
        (F32, None, F32),
        (F16, None, F32),
        (F16, None, F16),
        (F32, Some("q8_0"), F32),
        (F16, Some("q8_0"), F32),
        (F16, Some("q8_0"), F16),
        (F32, Some("q4_k"), F32),
        (F16, Some("q4_k"), F32),
        (F16, Some("q4_k"), F16),
    ] {
        // Dense W and the bias in the activations' type; quantised W named as such.
        let wt = xt;
        let w_name = quant.map_or_else(|| wt.to_string(), str::to_string);
        if !f16_ok(gpu, &[xt, wt, yt]) {
            continue;
        }
        let shapes = match quant {
            None => &dense_shapes,
            Some("q8_0") => &q8_shapes,
            Some(_) => &q4k_shapes,
        };
        for &(m, n, k) in shapes {
            let xv = values(&mut rng, m * k, 1.0, xt);
            let mut wv = values(&mut rng, n * k, 1.0 / (k as f32).sqrt(), wt);
            // GGML blocks (Q8_0: f16 scale, 32 int8; Q4_K: 256-value super-blocks); the
            // reference multiplies the values they stand for.
            let mut blocks = Vec::new();
            if quant == Some("q8_0") {
                let (quants, scales) = quantize_q8(&wv);
                for (s, q) in scales.iter().zip(quants.chunks_exact(Q8_BLOCK)) {
                    blocks.extend(half::f16::from_f32(*s).to_le_bytes());
                    blocks.extend(q);
                }
                wv = dequantize_q8(&quants, &scales);
            } else if quant.is_some() {
                blocks = quantize_q4k(&wv);
                wv = dequantize_q4k(&blocks);
            }
            let bv = values(&mut rng, n, 0.5, wt);
            let rv = values(&mut rng, m * n, 1.0, yt);
            let gv = rng.vec_normal(2 * n, 1.0);
            for epi in ["none", "gelu", "gated residual"] {
                let want = matmul_reference(
                    &xv,
                    &wv,
                    Some(&bv),
                    (m, n, k),
                    match epi {
                        "none" => ReferenceEpilogue::None,
                        "gelu" => ReferenceEpilogue::GeluTanh,
                        _ => ReferenceEpilogue::ResidualGate {
                            residual: &rv,
                            gate: &gv[n..],
                        },
                    },
                );
                for &(name, kernel, label) in &kernels {
                    if let MatmulKernel::Cooperative(tiles) = kernel {
                        let probe_x = Tensor::empty(gpu, &[1, k], xt).unwrap();
                        let probe_w = Tensor::empty(gpu, &[1, k], wt).unwrap();
                        let probe = if quant.is_some() {
                            // Quantised W fits wherever f16 operands do.
                            WeightRef::Dense(&probe_x)
                        } else {
                            WeightRef::Dense(&probe_w)
                        };
                        if !matmul_coop_fits(gpu, tiles, &probe_x, probe, k) {
                            continue;
                        }
                    }
                    let tol = if xt == F16 || yt == F16 { 2e-3 } else { 1e-5 };
                    let (xv, wv, bv, rv, gv, blocks) = (&xv, &wv, &bv, &rv, &gv, &blocks);
                    check(
                        gpu,
                        out,
                        "matmul",
                        name,
                        format!("{m}x{n}x{k} {xt}/{w_name}->{yt} +{epi}"),
                        KernelPolicy {
                            matmul: kernel,
                            ..Default::default()
                        },
                        Some(label),
                        tol,
                        |rec| {
                            let x = Tensor::from_f32(gpu, &[m, k], xv, xt)?;
                            let w = match quant {
                                Some("q8_0") => {
                                    Weight::Q8(Q8Weight::from_ggml_blocks(gpu, n, k, blocks)?)
                                }
                                Some(_) => {
                                    Weight::Q4K(Q4KWeight::from_ggml_blocks(gpu, n, k, blocks)?)
                                }
                                None => Weight::Dense(Tensor::from_f32(gpu, &[n, k], wv, wt)?),
                            };
                            let b = Tensor::from_f32(gpu, &[n], bv, wt)?;
                            let g = Tensor::from_f32(gpu, &[2, n], gv, F32)?;
                            let y = if epi == "gated residual" {
                                Tensor::from_f32(gpu, &[m, n], rv, yt)?
                            } else {
                                let y = Tensor::empty(gpu, &[m, n], yt)?;
                                y.poison(gpu);
                                y
                            };
                            let e = match epi {
                                "none" => Epilogue::None,
                                "gelu" => Epilogue::GeluTanh,
                                _ => Epilogue::ResidualGate(Row::of(&g, 1)),
                            };
                            matmul_weight(rec, &x, w.as_ref(), Some(&b), &y, e)?;
                            Ok(y)
                        },
                        &want,
                    );
                }
            }
        }
    }
}

fn attention_checks(gpu: &Gpu, out: &mut Vec<Check>) {
    use DType::*;
    let mut rng = Rng::new(12);
    let coop = |wide, single_pass| FlashKernel::Cooperative(FlashCoopLayout { wide, single_pass });
    let kernels = [
        ("auto", FlashKernel::Auto, None),
        ("coop", coop(true, false), Some(Expect::Has(" coop "))),
        (
            "coop-narrow",
            coop(false, false),
            Some(Expect::Has(" coop ")),
        ),
        ("coop-1pass", coop(true, true), Some(Expect::Has(" coop "))),
        (
            "coop-narrow-1pass",
            coop(false, true),
            Some(Expect::Has(" coop ")),
        ),
        ("vec", FlashKernel::Vector, None),
        ("general", FlashKernel::General, None),
    ];
    let modes = [
        ("softmax", AttentionMode::Softmax),
        ("hybrid:3", AttentionMode::Hybrid { rate: 3 }),
        ("linear", AttentionMode::Linear { eps: LINEAR_EPS }),
    ];
    // (nq, nk, heads, d, rising): odd lengths; head dims of the Wan DiT (128), of the vectorised
    // kernel (40) and of the general one (200). `rising`: key j scaled by 1 + j / 8, so that the
    // scores' running max grows from key tile to key tile (what makes an online softmax rescale).
    let shapes = [
        (77, 93, 3, 128, false),
        (77, 93, 3, 128, true),
        (300, 300, 2, 128, false),
        (45, 61, 2, 40, false),
        (33, 29, 2, 200, false),
    ];
    for dtype in [F32, F16] {
        if !f16_ok(gpu, &[dtype]) {
            continue;
        }
        for &(nq, nk, heads, d, rising) in &shapes {
            let qv = values(&mut rng, nq * heads * d, 1.0, dtype);
            let mut kv = values(&mut rng, nk * heads * d, 1.0, dtype);
            if rising {
                for (i, x) in kv.iter_mut().enumerate() {
                    *x *= 1.0 + (i / (heads * d)) as f32 / 8.0;
                }
                if dtype == F16 {
                    kv = round_f16(&kv);
                }
            }
            let vv = values(&mut rng, nk * heads * d, 1.0, dtype);
            let spec = FeatureSpec::Hedgehog { half: 16 };
            let hq = random_feature_map(&mut rng, spec, heads, d, dtype == F16);
            let hk = random_feature_map(&mut rng, spec, heads, d, dtype == F16);
            let scale = 1.0 / (d as f32).sqrt();
            for (mode_name, mode) in modes {
                let phi = mode.needs_features().then_some((&hq, &hk));
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
                    phi,
                );
                for (name, kernel, label) in kernels {
                    let runs = match kernel {
                        FlashKernel::Auto => true,
                        FlashKernel::Cooperative(layout) => {
                            mode != (AttentionMode::Linear { eps: LINEAR_EPS })
                                && flash_coop_fits(gpu, layout, d, dtype, nq, nk)
                        }
                        FlashKernel::Vector => flash_vec_tiles(gpu, d, dtype).is_some(),
                        FlashKernel::General => true,
                    };
                    if !runs {
                        continue;
                    }
                    let label = label.or(match kernel {
                        FlashKernel::Vector => Some(Expect::Has(" vec ")),
                        FlashKernel::General => Some(Expect::Has(" general ")),
                        _ => None,
                    });
                    let (qv, kv, vv, hq, hk) = (&qv, &kv, &vv, &hq, &hk);
                    check(
                        gpu,
                        out,
                        "attention",
                        &format!("{name} {mode_name}"),
                        format!(
                            "{nq}q x {nk}k x {heads}h x {d} {dtype}{}",
                            if rising { " rising" } else { "" }
                        ),
                        KernelPolicy {
                            flash: kernel,
                            ..Default::default()
                        },
                        label,
                        if dtype == F16 { 4e-3 } else { 2e-5 },
                        |rec| {
                            let q = Tensor::from_f32(gpu, &[nq, heads, d], qv, dtype)?;
                            let k = Tensor::from_f32(gpu, &[nk, heads, d], kv, dtype)?;
                            let v = Tensor::from_f32(gpu, &[nk, heads, d], vv, dtype)?;
                            let df = hq.out_dim(d);
                            let weights = FeatureMapWeights {
                                phi_q: upload_feature_map(gpu, hq, heads, d, dtype)?,
                                phi_k: upload_feature_map(gpu, hk, heads, d, dtype)?,
                            };
                            let ws = AttentionWorkspace::new(gpu, &mode, nq, nk, heads, d, df)?;
                            let o = Tensor::empty(gpu, &[nq, heads, d], dtype)?;
                            o.poison(gpu);
                            let w = mode.needs_features().then_some(&weights);
                            attention(rec, &mode, &q, &k, &v, scale, w, &o, &ws)?;
                            // The workspace and weights must outlive the submission: the
                            // recorder holds their buffers.
                            Ok(o)
                        },
                        &want,
                    );
                }
            }
        }
    }
}

fn conv_checks(gpu: &Gpu, out: &mut Vec<Check>) {
    use DType::*;
    let mut rng = Rng::new(13);
    let kernels = [
        ("auto", ConvKernel::Auto, None),
        ("gemm", ConvKernel::Gemm, Some(Expect::Has("conv "))),
        (
            "direct4",
            ConvKernel::Direct {
                channels_per_thread: 4,
            },
            Some(Expect::Has("conv_direct")),
        ),
        (
            "direct16",
            ConvKernel::Direct {
                channels_per_thread: 16,
            },
            Some(Expect::Has("conv_direct")),
        ),
        (
            "coop",
            ConvKernel::Cooperative,
            Some(Expect::Has("conv_coop")),
        ),
    ];
    // (T, H, W, Cin), N, kernel, padding, upsample
    let cases = [
        ([2, 7, 9, 12], 20, [3, 3, 3], [1, 1], false),
        ([1, 5, 6, 16], 133, [1, 3, 3], [1, 1], true),
        ([3, 9, 11, 36], 7, [3, 1, 1], [0, 0], false),
    ];
    for dtype in [F32, F16] {
        if !f16_ok(gpu, &[dtype]) {
            continue;
        }
        for (x_shape, n, kernel, padding, upsample) in cases {
            let [t, h, w, cin] = x_shape;
            let taps: usize = kernel.iter().product();
            let xv = values(&mut rng, t * h * w * cin, 1.0, dtype);
            let wv = values(
                &mut rng,
                n * cin * taps,
                1.0 / ((cin * taps) as f32).sqrt(),
                dtype,
            );
            let bv = values(&mut rng, n, 0.5, dtype);
            let want = conv_reference(&ConvReference {
                x: &xv,
                x_shape,
                history: None,
                weight: &wv,
                bias: Some(&bv),
                n,
                kernel,
                padding,
                upsample,
            });
            let wt = taps_major_weight(&wv, n, cin, kernel);
            let up = usize::from(upsample);
            let (oh, ow) = (
                (h << up) + 2 * padding[0] + 1 - kernel[1],
                (w << up) + 2 * padding[1] + 1 - kernel[2],
            );
            for (name, ck, label) in kernels {
                if ck == ConvKernel::Cooperative {
                    let probe = Tensor::empty(gpu, &[1], dtype).unwrap();
                    if !conv_coop_fits(gpu, &[&probe, &probe], cin) {
                        continue;
                    }
                }
                let (xv, wt, bv) = (&xv, &wt, &bv);
                check(
                    gpu,
                    out,
                    "conv",
                    name,
                    format!(
                        "{t}x{h}x{w}x{cin} -> {n} k{}x{}x{}{} {dtype}",
                        kernel[0],
                        kernel[1],
                        kernel[2],
                        if upsample { " up2" } else { "" }
                    ),
                    KernelPolicy {
                        conv: ck,
                        ..Default::default()
                    },
                    label,
                    if dtype == F16 { 3e-3 } else { 1e-5 },
                    |rec| {
                        let x = Tensor::from_f32(gpu, &x_shape, xv, dtype)?;
                        let w = Tensor::from_f32(gpu, &[n, taps * cin], wt, dtype)?;
                        let b = Tensor::from_f32(gpu, &[n], bv, dtype)?;
                        let y = Tensor::empty(gpu, &[t, oh, ow, n], dtype)?;
                        y.poison(gpu);
                        let conv = Conv {
                            weight: &w,
                            bias: Some(&b),
                            kernel,
                            padding,
                            upsample,
                        };
                        causal_conv3d(rec, &x, None, &conv, ConvOutput::frames(&y))?;
                        Ok(y)
                    },
                    &want,
                );
            }
        }
    }
}

fn norm_checks(gpu: &Gpu, out: &mut Vec<Check>) {
    use DType::*;
    let mut rng = Rng::new(14);
    for dtype in [F32, F16] {
        if !f16_ok(gpu, &[dtype]) {
            continue;
        }
        for (rows, cols) in [(37, 1536), (5, 77), (300, 256)] {
            let xv = values(&mut rng, rows * cols, 2.0, dtype);
            let wv = values(&mut rng, cols, 1.0, dtype);
            let tol = if dtype == F16 { 2e-3 } else { 1e-5 };
            let eps = 1e-6;
            let want = layer_norm_reference(&xv, cols, None, None, eps);
            let xr = &xv;
            check(
                gpu,
                out,
                "norm",
                "layer_norm",
                format!("{rows}x{cols} {dtype}"),
                KernelPolicy::default(),
                None,
                tol,
                |rec| {
                    let x = Tensor::from_f32(gpu, &[rows, cols], xr, dtype)?;
                    let y = Tensor::empty(gpu, &[rows, cols], dtype)?;
                    y.poison(gpu);
                    layer_norm(rec, &x, None, None, eps, &y)?;
                    Ok(y)
                },
                &want,
            );
            let want = rms_norm_reference(&xv, cols, Some(&wv), eps);
            let wr = &wv;
            check(
                gpu,
                out,
                "norm",
                "rms_norm",
                format!("{rows}x{cols} {dtype}"),
                KernelPolicy::default(),
                None,
                tol,
                |rec| {
                    let x = Tensor::from_f32(gpu, &[rows, cols], xr, dtype)?;
                    let w = Tensor::from_f32(gpu, &[cols], wr, dtype)?;
                    let y = Tensor::empty(gpu, &[rows, cols], dtype)?;
                    y.poison(gpu);
                    rms_norm(rec, &x, Some(&w), eps, &y)?;
                    Ok(y)
                },
                &want,
            );
        }
    }
}

fn rope_checks(gpu: &Gpu, out: &mut Vec<Check>) {
    use DType::*;
    let mut rng = Rng::new(15);
    for dtype in [F32, F16] {
        if !f16_ok(gpu, &[dtype]) {
            continue;
        }
        // (grid, heads, head dim, pairs per axis): Wan's split of 128, and an uneven one.
        for (grid, heads, d, pairs) in [
            ([3, 5, 7], 3, 128, [22, 21, 21]),
            ([2, 9, 4], 2, 40, [4, 10, 6]),
        ] {
            let n: usize = grid.iter().product();
            let xv = values(&mut rng, n * heads * d, 1.0, dtype);
            let want = rope_reference(&xv, grid, heads, d, pairs, 10000.0);
            let xr = &xv;
            check(
                gpu,
                out,
                "rope",
                "rope",
                format!("{grid:?} x {heads}h x {d} {pairs:?} {dtype}"),
                KernelPolicy::default(),
                None,
                if dtype == F16 { 2e-3 } else { 1e-5 },
                |rec| {
                    let x = Tensor::from_f32(gpu, &[n, heads, d], xr, dtype)?;
                    let table = RopeTable::new(gpu, grid, d, pairs, 10000.0)?;
                    rope_in_place(rec, &x, &table)?;
                    Ok(x)
                },
                &want,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::test_gpu;

    #[test]
    fn the_norm_checks_pass_on_the_test_adapter() {
        // The selftest's own plumbing (policies, labels, the table) on the cheapest family; every
        // kernel's variants also have their own tests in their modules, and the whole selftest
        // is for real GPUs, whose cooperative-matrix kernels CI never reaches.
        let gpu = test_gpu();
        let checks = run(gpu, Some("norm"));
        assert!(!checks.is_empty());
        assert_eq!(failures(&checks), 0, "{}", table(&checks));
    }
}
