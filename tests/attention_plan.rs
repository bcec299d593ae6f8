//! Attention plans on the tiny golden DiT: parsing, validation of feature-map weights, and the
//! properties that must hold (hybrid with rate 1 is softmax).

use std::path::{Path, PathBuf};

use vdit_model::dit::{Precision, WanDit};
use vdit_model::plan::AttentionPlan;
use vdit_model::tensor_file::{read_tensor, write_tensors, HostTensor};
use vdit_wgpu::testing::{assert_close, rel_l2, test_gpu, Rng};
use vdit_wgpu::{DType, Recorder, Tensor};

fn golden() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/goldens/dit/tiny")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vdit-plan-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The tiny model's velocity under `plan` (a plan file path), and the softmax golden.
fn velocity_with_plan(plan: Option<&Path>) -> vdit_model::Result<(Vec<f32>, Vec<f64>)> {
    let gpu = test_gpu();
    let mut dit = WanDit::load(gpu, &golden().join("diffusers"), Precision::F32)?;
    if let Some(p) = plan {
        let plan = AttentionPlan::load(gpu, p, &dit.config, DType::F32)?;
        dit.set_plan(plan)?;
    }
    let io = golden().join("io.safetensors");
    let latent = read_tensor(&io, "latent")?;
    let context = read_tensor(&io, "context")?;
    let t = read_tensor(&io, "timestep")?.data[0];
    let want = read_tensor(&io, "velocity")?;
    let shape: [usize; 4] = latent.shape.clone().try_into().unwrap();
    let runner = dit.runner(gpu, shape)?;
    let latent = Tensor::from_f32(gpu, &latent.shape, &latent.data, DType::F32)?;
    let context = Tensor::from_f32(gpu, &context.shape, &context.data, DType::F32)?;
    let velocity = Tensor::empty(gpu, &shape, DType::F32)?;
    velocity.poison(gpu);
    let mut rec = Recorder::new(gpu);
    let cache = dit.prepare_context(&mut rec, &context)?;
    runner.forward(&mut rec, &latent, t, &cache, &velocity)?;
    rec.run()?;
    let want = want.data.iter().map(|&v| v as f64).collect();
    Ok((velocity.to_vec_f32(gpu)?, want))
}

/// Random hedgehog feature maps for `layers` of the tiny model (2 heads x 24), DF = 2 * half.
fn write_hedgehog(path: &Path, layers: &[usize], half: usize, heads: usize) {
    let mut rng = Rng::new(11);
    let mut tensors = Vec::new();
    for &i in layers {
        for which in ["phi_q", "phi_k"] {
            tensors.push((
                format!("blocks.{i}.attn1.{which}.weight"),
                HostTensor {
                    shape: vec![heads, half, 24],
                    data: rng.vec_normal(heads * half * 24, 0.2),
                },
            ));
            tensors.push((
                format!("blocks.{i}.attn1.{which}.bias"),
                HostTensor {
                    shape: vec![heads, half],
                    data: rng.vec_normal(heads * half, 0.1),
                },
            ));
        }
    }
    let refs: Vec<(&str, &HostTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    write_tensors(path, &refs).unwrap();
}

#[test]
fn hybrid_with_rate_one_is_softmax() {
    let dir = scratch("rate1");
    let plan = dir.join("plan.json");
    std::fs::write(&plan, r#"{"default": "hybrid:1"}"#).unwrap();
    let (got, want) = velocity_with_plan(Some(&plan)).unwrap();
    assert_close("DiT with every block hybrid:1", 0, &got, &want, 1e-4);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn linear_and_hybrid_plans_run_and_change_the_output() {
    let dir = scratch("linear");
    write_hedgehog(&dir.join("phi.safetensors"), &[0, 1], 8, 2);
    for layers in [
        r#"{"0": "linear", "1": "hybrid:2"}"#,
        r#"{"0-1": "rehyat:1:1"}"#,
    ] {
        let plan = dir.join("plan.json");
        std::fs::write(
            &plan,
            format!(r#"{{"layers": {layers}, "feature_map": "hedgehog", "feature_weights": "phi.safetensors"}}"#),
        )
        .unwrap();
        let (got, want) = velocity_with_plan(Some(&plan)).unwrap();
        assert!(
            got.iter().all(|v| v.is_finite()),
            "{layers}: non-finite output"
        );
        let err = rel_l2(&got, &want);
        assert!(
            err > 1e-3,
            "{layers}: the plan did not change the output (error {err:.2e})"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_plans_are_rejected_with_the_reason() {
    let dir = scratch("bad");
    write_hedgehog(&dir.join("phi.safetensors"), &[0], 8, 2);
    write_hedgehog(&dir.join("three_heads.safetensors"), &[0, 1], 8, 3);
    let cases = [
        (r#"{"default": "flash"}"#, "unknown mode 'flash'"),
        (r#"{"layers": {"0-5": "softmax"}}"#, "outside 0-1"),
        (r#"{"layers": {"0": "linear"}}"#, "feature_map"),
        (
            r#"{"layers": {"0": "linear"}, "feature_map": "hedgehog"}"#,
            "feature_weights",
        ),
        (
            r#"{"layers": {"1": "linear"}, "feature_map": "hedgehog", "feature_weights": "phi.safetensors"}"#,
            "blocks.1.attn1.phi_q.weight",
        ),
        (
            r#"{"layers": {"0": "linear"}, "feature_map": "hedgehog", "feature_weights": "three_heads.safetensors"}"#,
            "blocks.0.attn1.phi_q.weight",
        ),
        (
            r#"{"layers": {"0": "linear"}, "feature_map": "hedgehog", "feature_weights": "missing.safetensors"}"#,
            "missing.safetensors",
        ),
        (r#"{"default": "softmax", "colour": "blue"}"#, "colour"),
    ];
    for (i, (text, needle)) in cases.iter().enumerate() {
        let plan = dir.join(format!("plan{i}.json"));
        std::fs::write(&plan, text).unwrap();
        let err = match velocity_with_plan(Some(&plan)) {
            Ok(_) => panic!("plan {text} was accepted"),
            Err(e) => e.to_string(),
        };
        assert!(
            err.contains(needle),
            "plan {text}: error '{err}' does not mention '{needle}'"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
