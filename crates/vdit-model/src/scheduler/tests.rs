//! The samplers against diffusers' goldens (assets/goldens/scheduler, written by
//! tools/make_scheduler_goldens.py).

use std::path::{Path, PathBuf};

use vdit_wgpu::kernels::elementwise::axpby;
use vdit_wgpu::testing::{rel_l2, test_gpu};
use vdit_wgpu::{DType, Recorder, Tensor};

use super::*;
use crate::weights::WeightFile;

const TOL: f64 = 1e-5;

fn goldens() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets/goldens/scheduler")
}

fn open(name: &str) -> WeightFile {
    let path = goldens().join(name);
    WeightFile::open(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (regenerate with tools/make_scheduler_goldens.py)",
            path.display()
        )
    })
}

fn read(file: &WeightFile, name: &str) -> (Vec<usize>, Vec<f32>) {
    let view = file.get(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    (view.shape().to_vec(), view.to_f32().unwrap())
}

fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// The schedule a golden sampler name stands for.
fn golden_schedule(name: &str, steps: usize, shift: f64) -> Schedule {
    match name {
        "unipc" => Schedule::unipc(steps, shift),
        "euler" => Schedule::flow_euler_diffusers_default(steps, shift),
        "euler_wansigmas" => Schedule::flow_euler(steps, shift),
        _ => unreachable!(),
    }
    .unwrap()
}

fn assert_bits(case: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{case}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            g.to_bits() == w.to_bits(),
            "{case}[{i}]: {g:e} != {w:e} (difference {:e})",
            g - w
        );
    }
}

#[test]
fn schedules_match_diffusers_bit_for_bit() {
    let file = open("schedules.safetensors");
    for name in ["unipc", "euler", "euler_wansigmas"] {
        for shift in [3.0, 5.0] {
            for steps in [1, 2, 5, 50] {
                let key = format!("{name}_shift{shift}_steps{steps}");
                let s = golden_schedule(name, steps, shift);
                let (_, sigmas) = read(&file, &format!("{key}_sigmas"));
                let (_, timesteps) = read(&file, &format!("{key}_timesteps"));
                assert_bits(&format!("{key} sigmas"), s.sigmas(), &sigmas);
                assert_bits(&format!("{key} timesteps"), s.timesteps(), &timesteps);
                assert_eq!(s.steps(), steps);
            }
        }
    }
}

#[test]
fn sampler_new_uses_the_wan_schedules() {
    let u = Sampler::new(SamplerKind::UniPc, 50, 3.0).unwrap();
    assert_eq!(u.schedule(), &Schedule::unipc(50, 3.0).unwrap());
    assert_eq!(u.timesteps()[0], 999.0);
    assert_eq!(*u.sigmas().last().unwrap(), 0.0);
    let e = Sampler::new(SamplerKind::Euler, 50, 5.0).unwrap();
    assert_eq!(e.schedule(), &Schedule::flow_euler(50, 5.0).unwrap());
    assert_eq!(e.sigmas()[0], 1.0);
    assert_eq!(e.timesteps()[0], 1000.0);
}

struct Loop {
    name: &'static str,
    steps: usize,
    shape: Vec<usize>,
    initial: Vec<f32>,
    noise: Vec<f32>,
    /// `[steps + 1][numel]`
    samples: Vec<Vec<f32>>,
    outputs: Vec<Vec<f32>>,
    order: Vec<f32>,
    corrected: Vec<Vec<f32>>,
    x0_pred: Vec<Vec<f32>>,
}

fn rows(v: Vec<f32>, n: usize) -> Vec<Vec<f32>> {
    v.chunks(n).map(<[f32]>::to_vec).collect()
}

fn loops() -> Vec<Loop> {
    let file = open("loops.safetensors");
    let (shape, initial) = read(&file, "initial_sample");
    let (_, noise) = read(&file, "noise");
    let n = initial.len();
    let mut out = Vec::new();
    for name in ["unipc", "euler", "euler_wansigmas"] {
        for steps in [1, 2, 6, 50] {
            let key = format!("{name}_loop{steps}");
            let get = |what: &str| read(&file, &format!("{key}_{what}")).1;
            let s = golden_schedule(name, steps, 3.0);
            assert_bits(&format!("{key} sigmas"), s.sigmas(), &get("sigmas"));
            assert_bits(
                &format!("{key} timesteps"),
                s.timesteps(),
                &get("timesteps"),
            );
            let unipc = name == "unipc";
            out.push(Loop {
                name,
                steps,
                shape: shape.clone(),
                initial: initial.clone(),
                noise: noise.clone(),
                samples: rows(get("samples"), n),
                outputs: rows(get("model_outputs"), n),
                order: if unipc { get("order") } else { Vec::new() },
                corrected: if unipc {
                    rows(get("corrected"), n)
                } else {
                    Vec::new()
                },
                x0_pred: if unipc {
                    rows(get("x0_pred"), n)
                } else {
                    Vec::new()
                },
            });
        }
    }
    out
}

fn sampler_for(l: &Loop) -> Sampler {
    let kind = if l.name == "unipc" {
        SamplerKind::UniPc
    } else {
        SamplerKind::Euler
    };
    Sampler::with_schedule(kind, golden_schedule(l.name, l.steps, 3.0))
}

#[track_caller]
fn check(case: &str, got: &[f32], want: &[f32], worst: &mut f64) {
    let err = rel_l2(got, &f64s(want));
    *worst = worst.max(err);
    assert!(
        err <= TOL,
        "{case}: relative L2 error {err:.3e} > {TOL:.0e}"
    );
}

fn unipc_history(s: &Sampler, k: usize) -> (Vec<f32>, Vec<f32>) {
    match &s.history {
        History::Host { last, x0 } => (last.clone(), x0[k % 3].clone()),
        History::Gpu { last, x0 } => {
            let gpu = test_gpu();
            (
                last.to_vec_f32(gpu).unwrap(),
                x0[k % 3].to_vec_f32(gpu).unwrap(),
            )
        }
        History::Empty => panic!("no history"),
    }
}

/// Checks everything a step leaves against the goldens.
fn check_step(l: &Loop, s: &Sampler, k: usize, sample: &[f32], output: &[f32], worst: &mut f64) {
    let case = format!("{} loop {} step {k}", l.name, l.steps);
    check(
        &format!("{case} model output"),
        output,
        &l.outputs[k],
        worst,
    );
    check(&format!("{case} sample"), sample, &l.samples[k + 1], worst);
    if l.name == "unipc" {
        assert_eq!(s.last_order() as f32, l.order[k], "{case} order");
        let (last, x0) = unipc_history(s, k);
        check(&format!("{case} corrected"), &last, &l.corrected[k], worst);
        check(&format!("{case} x0"), &x0, &l.x0_pred[k], worst);
    }
}

fn fake_model(sample: &[f32], noise: &[f32], k: usize) -> Vec<f32> {
    let c = 0.1 * (k + 1) as f32;
    sample
        .iter()
        .zip(noise)
        .map(|(&x, &n)| 0.3 * x + c * n)
        .collect()
}

#[test]
fn host_loops_match_diffusers() {
    let mut worst = 0.0f64;
    for l in loops() {
        let mut s = sampler_for(&l);
        let mut sample = l.initial.clone();
        for k in 0..l.steps {
            let v = fake_model(&sample, &l.noise, k);
            s.step_host(&v, &mut sample).unwrap();
            check_step(&l, &s, k, &sample, &v, &mut worst);
        }
        assert!(s.is_done());
        assert!(s.step_host(&l.noise, &mut sample).is_err());
    }
    eprintln!("host loops: worst relative L2 error {worst:.3e}");
}

#[test]
fn gpu_loops_match_diffusers() {
    let gpu = test_gpu();
    let mut worst = 0.0f64;
    for l in loops() {
        let mut s = sampler_for(&l);
        let sample = Tensor::from_f32(gpu, &l.shape, &l.initial, DType::F32).unwrap();
        let noise = Tensor::from_f32(gpu, &l.shape, &l.noise, DType::F32).unwrap();
        let v = Tensor::empty(gpu, &l.shape, DType::F32).unwrap();
        for k in 0..l.steps {
            let mut rec = Recorder::new(gpu);
            axpby(&mut rec, 0.3, &sample, 0.1 * (k + 1) as f32, &noise, &v).unwrap();
            s.step(&mut rec, &v, &sample).unwrap();
            rec.run().unwrap();
            let got = sample.to_vec_f32(gpu).unwrap();
            let out = v.to_vec_f32(gpu).unwrap();
            check_step(&l, &s, k, &got, &out, &mut worst);
        }
    }
    eprintln!("GPU loops: worst relative L2 error {worst:.3e}");
}

/// A 50-step loop recorded into one command buffer, as a generation without previews runs it.
#[test]
fn gpu_loop_in_one_submission() {
    let gpu = test_gpu();
    let l = loops()
        .into_iter()
        .find(|l| l.name == "unipc" && l.steps == 50)
        .unwrap();
    let mut s = sampler_for(&l);
    let sample = Tensor::from_f32(gpu, &l.shape, &l.initial, DType::F32).unwrap();
    let noise = Tensor::from_f32(gpu, &l.shape, &l.noise, DType::F32).unwrap();
    let v = Tensor::empty(gpu, &l.shape, DType::F32).unwrap();
    let mut rec = Recorder::new(gpu);
    for k in 0..l.steps {
        axpby(&mut rec, 0.3, &sample, 0.1 * (k + 1) as f32, &noise, &v).unwrap();
        s.step(&mut rec, &v, &sample).unwrap();
    }
    rec.run().unwrap();
    let mut worst = 0.0;
    let got = sample.to_vec_f32(gpu).unwrap();
    check(
        "unipc 50 steps, one submission",
        &got,
        &l.samples[50],
        &mut worst,
    );
}

#[test]
fn guidance_combines_on_the_gpu() {
    let gpu = test_gpu();
    let n = 1000;
    let mut rng = vdit_wgpu::rng::Rng::new(7);
    let c = rng.vec_normal(n, 1.0);
    let u = rng.vec_normal(n, 1.0);
    for g in [5.0f32, 1.0, 0.0, 7.5] {
        let want: Vec<f64> = c
            .iter()
            .zip(&u)
            .map(|(&c, &u)| u as f64 + g as f64 * (c as f64 - u as f64))
            .collect();
        let tc = Tensor::from_f32(gpu, &[10, 100], &c, DType::F32).unwrap();
        let tu = Tensor::from_f32(gpu, &[10, 100], &u, DType::F32).unwrap();
        let out = Tensor::empty(gpu, &[10, 100], DType::F32).unwrap();
        let mut rec = Recorder::new(gpu);
        guide(&mut rec, &tc, &tu, g, &out).unwrap();
        guide_in_place(&mut rec, &tc, &tu, g).unwrap();
        rec.run().unwrap();
        for (what, t) in [("out", &out), ("in place", &tc)] {
            let err = rel_l2(&t.to_vec_f32(gpu).unwrap(), &want);
            assert!(err <= 1e-6, "guidance {g} {what}: {err:e}");
        }
        let mut host = c.clone();
        guide_host(&mut host, &u, g);
        assert!(rel_l2(&host, &want) <= 1e-7);
    }
    assert!(needs_uncond(5.0));
    assert!(needs_uncond(0.0));
    assert!(!needs_uncond(1.0));
}

#[test]
fn f16_latents_step_with_f32_history() {
    let gpu = test_gpu();
    if !gpu.caps.shader_f16 {
        eprintln!("skipping: adapter lacks SHADER_F16");
        return;
    }
    let l = loops()
        .into_iter()
        .find(|l| l.name == "unipc" && l.steps == 6)
        .unwrap();
    let mut s = sampler_for(&l);
    let sample = Tensor::from_f32(gpu, &l.shape, &l.initial, DType::F16).unwrap();
    let noise = Tensor::from_f32(gpu, &l.shape, &l.noise, DType::F32).unwrap();
    let v = Tensor::empty(gpu, &l.shape, DType::F16).unwrap();
    for k in 0..l.steps {
        let mut rec = Recorder::new(gpu);
        axpby(&mut rec, 0.3, &sample, 0.1 * (k + 1) as f32, &noise, &v).unwrap();
        s.step(&mut rec, &v, &sample).unwrap();
        rec.run().unwrap();
    }
    let err = rel_l2(&sample.to_vec_f32(gpu).unwrap(), &f64s(&l.samples[6]));
    assert!(err <= 5e-3, "f16 latent: relative L2 error {err:e}");
}

#[test]
fn misuse_is_an_error() {
    assert!(Sampler::new(SamplerKind::UniPc, 0, 3.0).is_err());
    assert!(Sampler::new(SamplerKind::Euler, 10, 0.0).is_err());
    assert!(Sampler::new(SamplerKind::Euler, 10, f64::NAN).is_err());
    assert!(Schedule::from_sigmas(&[]).is_err());
    assert!(Schedule::from_sigmas(&[1.5]).is_err());

    let mut s = Sampler::new(SamplerKind::UniPc, 3, 3.0).unwrap();
    let mut x = vec![1.0f32; 8];
    assert!(s.step_host(&[0.0; 7], &mut x).is_err());
    s.step_host(&[0.5; 8], &mut x).unwrap();
    let mut y = vec![1.0f32; 9];
    assert!(s.step_host(&[0.5; 9], &mut y).is_err(), "shape change");

    let gpu = test_gpu();
    let t = Tensor::from_f32(gpu, &[8], &x, DType::F32).unwrap();
    let mut rec = Recorder::new(gpu);
    assert!(s.step(&mut rec, &t, &t.clone()).is_err(), "host then GPU");

    s.reset();
    assert_eq!(s.step_index(), 0);
    let a = Tensor::from_f32(gpu, &[2, 4], &x, DType::F32).unwrap();
    let b = Tensor::from_f32(gpu, &[4, 2], &x, DType::F32).unwrap();
    assert!(s.step(&mut rec, &a, &b).is_err(), "shape mismatch");

    assert_eq!("UniPC".parse::<SamplerKind>().unwrap(), SamplerKind::UniPc);
    assert_eq!("euler".parse::<SamplerKind>().unwrap(), SamplerKind::Euler);
    assert!("ddim".parse::<SamplerKind>().is_err());
    assert_eq!(SamplerKind::default().to_string(), "unipc");
}

#[test]
fn the_step_distill_schedule_is_lightx2vs_four_timesteps() {
    // lightx2v's configs: denoising_step_list [1000, 750, 500, 250], sample_shift 5.
    let sampler = Sampler::new(SamplerKind::StepDistill, 4, 5.0).unwrap();
    let want = [1.0, 0.9375, 5.0 * 0.5 / 3.0, 0.625, 0.0];
    for (got, want) in sampler.sigmas().iter().zip(want) {
        assert!((*got as f64 - want).abs() < 1e-6, "{:?}", sampler.sigmas());
    }
    assert_eq!(sampler.timesteps()[0], 1000.0);
    assert_eq!(sampler.timesteps()[3], 625.0);
    // The step itself is flow Euler: x += (sigma_next - sigma) v.
    let mut s = Sampler::new(SamplerKind::StepDistill, 4, 5.0).unwrap();
    let mut x = vec![1.0f32; 3];
    s.step_host(&[2.0; 3], &mut x).unwrap();
    assert!((x[0] - (1.0 + (0.9375 - 1.0) * 2.0)).abs() < 1e-6);
    assert_eq!(
        "step-distill".parse::<SamplerKind>().unwrap(),
        SamplerKind::StepDistill
    );
}
