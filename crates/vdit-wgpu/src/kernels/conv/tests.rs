//! Convolutions against the float64 reference, every kernel and output layout.

use super::*;
use crate::policy::{ConvKernel, KernelPolicy};
use crate::tensor::DType;
use crate::testing::*;
use DType::{F16, F32};

struct Case {
    x_shape: [usize; 4],
    n: usize,
    kernel: [usize; 3],
    padding: [usize; 2],
    upsample: bool,
    /// Valid frames of a history, if any.
    history: Option<usize>,
    layout: OutputLayout,
    accumulate: bool,
    clamp: bool,
    bias: bool,
    types: [DType; 3],
}

impl Case {
    fn new(x_shape: [usize; 4], n: usize, kernel: [usize; 3]) -> Self {
        let pad = |k: usize| k / 2;
        Self {
            x_shape,
            n,
            kernel,
            padding: [pad(kernel[1]), pad(kernel[2])],
            upsample: false,
            history: None,
            layout: OutputLayout::Frames,
            accumulate: false,
            clamp: false,
            bias: true,
            types: [F32; 3],
        }
    }
}

fn held(v: Vec<f32>, t: DType) -> Vec<f32> {
    if t == F16 {
        round_f16(&v)
    } else {
        v
    }
}

fn check(c: Case) {
    let gpu = test_gpu();
    let [xt, wt, yt] = c.types;
    if c.types.contains(&F16) && !gpu.caps.shader_f16 {
        eprintln!("skipping f16 case: adapter lacks SHADER_F16");
        return;
    }
    let seed = seed();
    let mut rng = Rng::new(seed);
    let [t, h, w, cin] = c.x_shape;
    let [kt, kh, kw] = c.kernel;
    let past = kt - 1;
    let k = kt * kh * kw * cin;
    let xv = held(rng.vec_normal(t * h * w * cin, 1.0), xt);
    let hv = held(rng.vec_normal(past.max(1) * h * w * cin, 1.0), xt);
    let wv = held(rng.vec_normal(c.n * k, 1.0 / (k as f32).sqrt()), wt);
    let bv = held(rng.vec_normal(c.n, 0.5), wt);
    let conv_ref = ConvReference {
        x: &xv,
        x_shape: c.x_shape,
        history: c.history.map(|valid| (&hv[..], valid)),
        weight: &wv,
        bias: c.bias.then_some(&bv[..]),
        n: c.n,
        kernel: c.kernel,
        padding: c.padding,
        upsample: c.upsample,
    };
    let frames_out = conv_reference(&conv_ref);
    let x = Tensor::from_f32(gpu, &c.x_shape, &xv, xt).unwrap();
    let hist = Tensor::from_f32(gpu, &[past.max(1), h, w, cin], &hv, xt).unwrap();
    let weight = Tensor::from_f32(
        gpu,
        &[c.n, k],
        &taps_major_weight(&wv, c.n, cin, c.kernel),
        wt,
    )
    .unwrap();
    let bias = Tensor::from_f32(gpu, &[c.n], &bv, wt).unwrap();
    let conv = Conv {
        weight: &weight,
        bias: c.bias.then_some(&bias),
        kernel: c.kernel,
        padding: c.padding,
        upsample: c.upsample,
    };
    let [out_h, out_w] = output_size(&conv, [h, w]).unwrap();
    let hw = out_h * out_w;
    let extra_frames = 2;
    let y_shape = match c.layout {
        OutputLayout::Frames => vec![t, out_h, out_w, c.n],
        OutputLayout::InterleavedTime => vec![2 * t, out_h, out_w, c.n / 2],
        OutputLayout::ChannelFirst { .. } => vec![c.n, t + extra_frames, out_h, out_w],
    };
    let total: usize = y_shape.iter().product();
    let frames_total = t + extra_frames;
    // Residual contents, or NaN everywhere (outside a channel-first window it must stay NaN).
    let residual = held(rng.vec_normal(total, 1.0), yt);
    let mut want: Vec<f64> = if c.accumulate {
        residual.iter().map(|&v| v as f64).collect()
    } else {
        vec![f64::NAN; total]
    };
    for tt in 0..t {
        for pix in 0..hw {
            for o in 0..c.n {
                let i = output_index(c.layout, (tt, pix, o), (hw, c.n, frames_total));
                let mut v = frames_out[(tt * hw + pix) * c.n + o];
                if c.accumulate {
                    v += want[i];
                }
                if c.clamp {
                    v = v.clamp(-1.0, 1.0);
                }
                want[i] = v;
            }
        }
    }
    let tol = if c.types.contains(&F16) { 2e-3 } else { 1e-5 };
    let case = format!(
        "conv x{:?} -> {} k{:?} pad{:?} up:{} hist:{:?} {:?} acc:{} clamp:{} {:?}",
        c.x_shape,
        c.n,
        c.kernel,
        c.padding,
        c.upsample,
        c.history,
        c.layout,
        c.accumulate,
        c.clamp,
        c.types
    );
    // The kernel the launcher picks, then each of them (the cooperative one where it can run).
    let direct = |c| ConvKernel::Direct {
        channels_per_thread: c,
    };
    let mut kernels = vec![
        ConvKernel::Auto,
        ConvKernel::Gemm,
        direct(4),
        direct(8),
        direct(16),
    ];
    if coop_fits(gpu, &[&x, &hist, &weight], cin) {
        kernels.push(ConvKernel::Cooperative);
    }
    for kernel in kernels {
        let y = if c.accumulate {
            Tensor::from_f32(gpu, &y_shape, &residual, yt).unwrap()
        } else {
            let y = Tensor::empty(gpu, &y_shape, yt).unwrap();
            y.poison(gpu);
            y
        };
        let mut rec = Recorder::new(gpu);
        rec.set_policy(KernelPolicy {
            conv: kernel,
            ..KernelPolicy::default()
        });
        let launched = causal_conv3d(
            &mut rec,
            &x,
            c.history.map(|valid| History {
                frames: &hist,
                valid,
            }),
            &conv,
            ConvOutput {
                y: &y,
                layout: c.layout,
                accumulate: c.accumulate,
                clamp_unit: c.clamp,
            },
        );
        launched.unwrap();
        rec.run().unwrap();
        let got = y.to_vec_f32(gpu).unwrap();
        let kernel = format!("{kernel:?}");
        compare(&format!("{case} {kernel}"), seed, total, &got, &want, tol);
    }
}

/// Compares the written positions (where `want` is not NaN) and checks that the others
/// stayed NaN.
fn compare(case: &str, seed: u64, total: usize, got: &[f32], want: &[f64], tol: f64) {
    // Untouched (NaN) positions must be exactly the expected NaNs; compare the rest.
    let written: Vec<usize> = (0..total).filter(|&i| !want[i].is_nan()).collect();
    for i in 0..total {
        if want[i].is_nan() {
            assert!(
                got[i].is_nan(),
                "element {i} outside the output window was written"
            );
        }
    }
    let got_w: Vec<f32> = written.iter().map(|&i| got[i]).collect();
    let want_w: Vec<f64> = written.iter().map(|&i| want[i]).collect();
    assert_close(case, seed, &got_w, &want_w, tol);
}

#[test]
fn conv3d_causal_padding_and_history() {
    // No history: two zero frames in front.
    check(Case::new([3, 5, 7, 6], 9, [3, 3, 3]));
    // A full history, a partly valid one, and an empty one.
    for valid in [2, 1, 0] {
        check(Case {
            history: Some(valid),
            ..Case::new([1, 6, 5, 11], 13, [3, 3, 3])
        });
    }
    check(Case {
        history: Some(2),
        ..Case::new([2, 3, 9, 17], 70, [3, 3, 3])
    });
    // A time-only kernel (the temporal upsampler's) and a pointwise one.
    check(Case {
        history: Some(1),
        ..Case::new([2, 4, 5, 7], 10, [3, 1, 1])
    });
    check(Case::new([2, 5, 3, 19], 67, [1, 1, 1]));
}

#[test]
fn conv2d_with_fused_upsampling() {
    check(Case {
        upsample: true,
        ..Case::new([2, 3, 5, 7], 5, [1, 3, 3])
    });
    check(Case {
        upsample: true,
        ..Case::new([1, 4, 2, 33], 17, [1, 3, 3])
    });
    check(Case {
        padding: [0, 2],
        bias: false,
        ..Case::new([1, 6, 4, 3], 4, [1, 3, 3])
    });
}

#[test]
fn conv_output_layouts_and_epilogues() {
    check(Case {
        history: Some(1),
        layout: OutputLayout::InterleavedTime,
        ..Case::new([2, 3, 4, 5], 14, [3, 1, 1])
    });
    check(Case {
        layout: OutputLayout::ChannelFirst { first_frame: 1 },
        clamp: true,
        ..Case::new([2, 5, 6, 4], 3, [3, 3, 3])
    });
    check(Case {
        history: Some(2),
        accumulate: true,
        ..Case::new([2, 4, 3, 9], 9, [3, 3, 3])
    });
}

#[test]
fn conv_f16_storage() {
    check(Case {
        history: Some(2),
        types: [F16, F16, F16],
        ..Case::new([1, 5, 6, 20], 24, [3, 3, 3])
    });
    check(Case {
        upsample: true,
        accumulate: true,
        types: [F32, F16, F32],
        ..Case::new([1, 3, 4, 16], 8, [1, 3, 3])
    });
    check(Case {
        layout: OutputLayout::ChannelFirst { first_frame: 0 },
        clamp: true,
        types: [F16, F16, F32],
        ..Case::new([2, 3, 5, 8], 3, [3, 3, 3])
    });
    // Sizes across the cooperative kernel's 128 x 128 tiles, K ending mid-step.
    check(Case {
        upsample: true,
        accumulate: true,
        types: [F16, F16, F16],
        ..Case::new([1, 5, 7, 12], 40, [1, 3, 3])
    });
    check(Case {
        history: Some(2),
        layout: OutputLayout::InterleavedTime,
        types: [F16, F16, F32],
        ..Case::new([2, 9, 10, 12], 160, [3, 3, 3])
    });
}

/// Times the convolutions of one latent frame of the embedded default model's decoder
/// (latent 12 x 20, after the first frame) with the profiler:
/// `cargo test --release -p vdit-wgpu conv_decoder_timing -- --ignored --nocapture`.
#[test]
#[ignore]
fn conv_decoder_timing() {
    let gpu = test_gpu();
    // (x [T, H, W, Cin], N, kernel, upsample, calls per latent frame)
    type Shape = ([usize; 4], usize, [usize; 3], bool, usize);
    let shapes: [Shape; 13] = [
        ([1, 12, 20, 16], 16, [3, 3, 3], false, 11),
        ([1, 12, 20, 16], 32, [3, 1, 1], false, 1),
        ([2, 12, 20, 16], 8, [1, 3, 3], true, 1),
        ([2, 24, 40, 8], 16, [3, 3, 3], false, 1),
        ([2, 24, 40, 16], 16, [3, 3, 3], false, 5),
        ([2, 24, 40, 16], 32, [3, 1, 1], false, 1),
        ([4, 24, 40, 16], 8, [1, 3, 3], true, 1),
        ([4, 48, 80, 8], 8, [3, 3, 3], false, 6),
        ([4, 48, 80, 8], 4, [1, 3, 3], true, 1),
        ([4, 96, 160, 2], 4, [3, 3, 3], false, 1),
        ([4, 96, 160, 4], 4, [3, 3, 3], false, 5),
        ([4, 96, 160, 4], 3, [3, 3, 3], false, 1),
        ([1, 96, 160, 384], 192, [1, 3, 3], false, 0),
    ];
    let types: Vec<DType> = if gpu.caps.shader_f16 {
        vec![F32, F16]
    } else {
        vec![F32]
    };
    for dtype in types {
        let mut tensors = Vec::new();
        for &(x_shape, n, kernel, upsample, calls) in &shapes {
            if calls == 0 && gpu.is_cpu() {
                continue;
            }
            let [t, h, w, cin] = x_shape;
            let k = kernel.iter().product::<usize>() * cin;
            let mut rng = Rng::new(1);
            let x = Tensor::from_f32(gpu, &x_shape, &rng.vec_normal(t * h * w * cin, 1.0), dtype)
                .unwrap();
            let past = kernel[0] - 1;
            let hist = (past > 0).then(|| {
                let v = rng.vec_normal(past * h * w * cin, 1.0);
                Tensor::from_f32(gpu, &[past, h, w, cin], &v, dtype).unwrap()
            });
            let wt = Tensor::from_f32(gpu, &[n, k], &rng.vec_normal(n * k, 0.1), dtype).unwrap();
            let b = Tensor::from_f32(gpu, &[n], &rng.vec_normal(n, 0.1), dtype).unwrap();
            let up = usize::from(upsample);
            let y = Tensor::empty(gpu, &[t, h << up, w << up, n], dtype).unwrap();
            tensors.push((x, hist, wt, b, y, kernel, upsample, calls.max(1)));
        }
        let record = |rec: &mut Recorder| {
            for (x, hist, wt, b, y, kernel, upsample, calls) in &tensors {
                let conv = Conv {
                    weight: wt,
                    bias: Some(b),
                    kernel: *kernel,
                    padding: [kernel[1] / 2, kernel[2] / 2],
                    upsample: *upsample,
                };
                let history = hist.as_ref().map(|h| History {
                    frames: h,
                    valid: h.shape()[0],
                });
                for _ in 0..*calls {
                    causal_conv3d(rec, x, history, &conv, ConvOutput::frames(y)).unwrap();
                }
            }
        };
        let mut rec = Recorder::new(gpu);
        record(&mut rec);
        rec.run().unwrap();
        for run in 0..2 {
            let mut prof = crate::profiler::Profiler::new(gpu);
            let mut rec = Recorder::new(gpu);
            record(&mut rec);
            rec.submit(Some(&mut prof)).unwrap();
            println!(
                "{dtype} run {run}: {:.1} ms\n{}",
                prof.total_ms(),
                prof.table()
            );
        }
    }
}

fn check_history(past: usize, t: usize, frame: [usize; 3], dtype: DType) {
    let gpu = test_gpu();
    if dtype == F16 && !gpu.caps.shader_f16 {
        return;
    }
    let seed = seed();
    let mut rng = Rng::new(seed);
    let fe: usize = frame.iter().product();
    let ov = held(rng.vec_normal(past * fe, 1.0), dtype);
    let xv = held(rng.vec_normal(t * fe, 1.0), dtype);
    let shape = |f: usize| vec![f, frame[0], frame[1], frame[2]];
    let old = Tensor::from_f32(gpu, &shape(past), &ov, dtype).unwrap();
    let x = Tensor::from_f32(gpu, &shape(t), &xv, dtype).unwrap();
    let mut rec = Recorder::new(gpu);
    update_history(&mut rec, &old, &x).unwrap();
    rec.run().unwrap();
    let seq: Vec<f32> = ov.iter().chain(&xv).copied().collect();
    let want: Vec<f64> = seq[t * fe..].iter().map(|&v| v as f64).collect();
    let got = old.to_vec_f32(gpu).unwrap();
    let case = format!("history {past} + {t} frames of {frame:?} {dtype}");
    assert_close(&case, seed, &got, &want, 0.0);
}

#[test]
fn conv_history_keeps_the_last_frames() {
    check_history(2, 1, [3, 5, 7], F32);
    check_history(2, 2, [3, 5, 7], F32);
    check_history(2, 4, [1, 9, 3], F32);
    check_history(2, 1, [5, 5, 3], F16);
    check_history(3, 1, [2, 3, 5], F32);
    check_history(3, 2, [1, 1, 300], F16);
    check_history(1, 3, [4, 1, 67], F32);
}

#[test]
fn conv_rejects_bad_shapes() {
    let gpu = test_gpu();
    let x = Tensor::empty(gpu, &[1, 4, 4, 8], F32).unwrap();
    let w = Tensor::empty(gpu, &[5, 27 * 7], F32).unwrap();
    let y = Tensor::empty(gpu, &[1, 4, 4, 5], F32).unwrap();
    let conv = Conv {
        weight: &w,
        bias: None,
        kernel: [3, 3, 3],
        padding: [1, 1],
        upsample: false,
    };
    let mut rec = Recorder::new(gpu);
    let err = causal_conv3d(&mut rec, &x, None, &conv, ConvOutput::frames(&y)).unwrap_err();
    assert!(err.to_string().contains("weight [N, 216]"), "{err}");
    let w = Tensor::empty(gpu, &[5, 27 * 8], F32).unwrap();
    let conv = Conv { weight: &w, ..conv };
    let hist = Tensor::empty(gpu, &[1, 4, 4, 8], F32).unwrap();
    let h = History {
        frames: &hist,
        valid: 1,
    };
    let err = causal_conv3d(&mut rec, &x, Some(h), &conv, ConvOutput::frames(&y)).unwrap_err();
    assert!(err.to_string().contains("history must be"), "{err}");
    let bad_y = Tensor::empty(gpu, &[1, 4, 4, 6], F32).unwrap();
    let err = causal_conv3d(&mut rec, &x, None, &conv, ConvOutput::frames(&bad_y)).unwrap_err();
    assert!(err.to_string().contains("y must be [1, 4, 4, 5]"), "{err}");
}
