//! Attention surgery on the tiny golden DiT: the attention tap hands out exactly what the
//! attention kernel saw, plans written by the planner load and run, and per-mode feature sets
//! are picked by the plan's mode.

use std::path::{Path, PathBuf};

use vdit_model::dit::{AttentionTap, BlockAttention, Precision, WanDit};
use vdit_model::plan::{feature_tensor_name, AttentionPlan, LayerAttention};
use vdit_model::surgery::errors::ErrorTable;
use vdit_model::surgery::planner::{check_weights, plan, plan_features, write_plan};
use vdit_model::tensor_file::{read_tensor, write_tensors, HostTensor};
use vdit_wgpu::attention::reference::{attention_reference, RefMode};
use vdit_wgpu::testing::{assert_close, rel_l2, seed, test_gpu, Rng};
use vdit_wgpu::{DType, Recorder, Tensor};

fn golden() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/goldens/dit/tiny")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vdit-surgery-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Downloads every block's q, k, v and output, flushing the recorder mid-forward.
#[derive(Default)]
struct Downloads {
    blocks: Vec<(usize, [Vec<f32>; 4], Vec<usize>)>,
}

impl AttentionTap for Downloads {
    fn block_attention(
        &mut self,
        rec: &mut Recorder,
        seen: &BlockAttention<'_>,
    ) -> vdit_model::Result<()> {
        vdit_model::dit::tap::flush(rec)?;
        let gpu = rec.gpu();
        let get = |t: &Tensor| t.to_vec_f32(gpu);
        self.blocks.push((
            seen.block,
            [get(seen.q)?, get(seen.k)?, get(seen.v)?, get(seen.output)?],
            seen.q.shape().to_vec(),
        ));
        Ok(())
    }
}

/// The tiny model's velocity under `plan`, with `tap` hearing the forward.
fn velocity(
    plan: Option<&Path>,
    tap: Option<&mut dyn AttentionTap>,
) -> vdit_model::Result<Vec<f32>> {
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
    let shape: [usize; 4] = latent.shape.clone().try_into().unwrap();
    let runner = dit.runner(gpu, shape)?;
    let latent = Tensor::from_f32(gpu, &latent.shape, &latent.data, DType::F32)?;
    let context = Tensor::from_f32(gpu, &context.shape, &context.data, DType::F32)?;
    let velocity = Tensor::empty(gpu, &shape, DType::F32)?;
    velocity.poison(gpu);
    let mut rec = Recorder::new(gpu);
    let cache = dit.prepare_context(&mut rec, &context)?;
    runner.forward_tapped(&mut rec, &latent, t, &cache, &velocity, tap)?;
    rec.run()?;
    velocity.to_vec_f32(gpu).map_err(Into::into)
}

#[test]
fn the_tap_sees_what_the_attention_kernel_saw_and_changes_nothing() {
    let plain = velocity(None, None).unwrap();
    let mut tap = Downloads::default();
    let tapped = velocity(None, Some(&mut tap)).unwrap();
    assert_eq!(plain, tapped, "flushing mid-forward changed the velocity");
    let want: Vec<f64> = read_tensor(&golden().join("io.safetensors"), "velocity")
        .unwrap()
        .data
        .iter()
        .map(|&v| v as f64)
        .collect();
    assert_close("tapped forward", 0, &tapped, &want, 1e-4);
    let order: Vec<usize> = tap.blocks.iter().map(|b| b.0).collect();
    assert_eq!(order, (0..order.len()).collect::<Vec<_>>());
    assert!(order.len() >= 2);
    for (block, [q, k, v, o], shape) in &tap.blocks {
        let &[n, h, d] = shape.as_slice() else {
            panic!("block {block}: q is {shape:?}, not [N, H, D]")
        };
        // The output is softmax attention of exactly these q, k, v (after norm and RoPE):
        // RoPE applied twice or not at all would not match.
        let y = attention_reference(
            RefMode::Softmax,
            q,
            k,
            v,
            n,
            n,
            h,
            d,
            1.0 / (d as f64).sqrt(),
            None,
        );
        assert_close(&format!("block {block} output"), 0, o, &y, 1e-4);
    }
}

/// Hedgehog maps for `layers`, named per mode when `mode` is given.
fn hedgehog_tensors(
    rng: &mut Rng,
    layers: &[usize],
    mode: Option<LayerAttention>,
) -> Vec<(String, HostTensor)> {
    let (heads, half, d) = (2, 8, 24);
    let mut out = Vec::new();
    for &i in layers {
        for which in ["phi_q", "phi_k"] {
            out.push((
                feature_tensor_name(i, mode, which, "weight"),
                HostTensor {
                    shape: vec![heads, half, d],
                    data: rng.vec_normal(heads * half * d, 0.2),
                },
            ));
            out.push((
                feature_tensor_name(i, mode, which, "bias"),
                HostTensor {
                    shape: vec![heads, half],
                    data: rng.vec_normal(heads * half, 0.1),
                },
            ));
        }
    }
    out
}

fn write(path: &Path, tensors: &[(String, HostTensor)]) {
    let refs: Vec<(&str, &HostTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    write_tensors(path, &refs).unwrap();
}

#[test]
fn plans_take_the_feature_set_of_their_mode() {
    let dir = scratch("per-mode");
    let s = seed();
    let mut rng = Rng::new(s);
    let linear = hedgehog_tensors(&mut rng, &[0], Some(LayerAttention::Linear));
    let hybrid = hedgehog_tensors(&mut rng, &[0], Some(LayerAttention::Hybrid { rate: 2 }));
    // One file with a set per mode; another with only the linear set, under the plain names.
    write(
        &dir.join("both.safetensors"),
        &[linear.clone(), hybrid].concat(),
    );
    let plain: Vec<(String, HostTensor)> = linear
        .iter()
        .map(|(n, t)| (n.replace(".linear.", "."), t.clone()))
        .collect();
    write(&dir.join("plain.safetensors"), &plain);
    let run = |weights: &str| {
        let p = dir.join(format!("{weights}.json"));
        std::fs::write(
            &p,
            format!(r#"{{"layers": {{"0": "linear"}}, "feature_map": "hedgehog", "feature_weights": "{weights}.safetensors"}}"#),
        )
        .unwrap();
        velocity(Some(&p), None).unwrap()
    };
    let (a, b) = (run("both"), run("plain"));
    let softmax = velocity(None, None).unwrap();
    assert!(rel_l2(&a, &softmax.iter().map(|&v| v as f64).collect::<Vec<_>>()) > 1e-3);
    assert_eq!(
        a, b,
        "seed {s}: the linear layer did not take the linear set"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn planned_plans_load_and_run() {
    let dir = scratch("planned");
    let s = seed();
    let mut rng = Rng::new(s);
    let hybrid = LayerAttention::Hybrid { rate: 2 };
    let tensors = [
        hedgehog_tensors(&mut rng, &[0, 1], Some(hybrid)),
        hedgehog_tensors(&mut rng, &[0, 1], Some(LayerAttention::Linear)),
    ]
    .concat();
    write(&dir.join("features.safetensors"), &tensors);
    let errors = dir.join("errors.json");
    std::fs::write(
        &errors,
        r#"{"layers": [
            {"layer": 0, "options": [{"mode": "softmax", "error": 0.0, "cost": 100},
              {"mode": "hybrid:2", "error": 0.1, "cost": 60}, {"mode": "linear", "error": 0.3, "cost": 20}]},
            {"layer": 1, "options": [{"mode": "softmax", "error": 0.0, "cost": 100},
              {"mode": "hybrid:2", "error": 0.2, "cost": 60}, {"mode": "linear", "error": 0.25, "cost": 20}]}],
          "feature_map": "hedgehog"}"#,
    )
    .unwrap();
    let table = ErrorTable::read(&errors).unwrap();
    // 0.4 x 200 = 80: hybrid + linear; the linear goes where it costs least error (layer 1).
    let planned = plan(&table, 0.4).unwrap();
    let modes: Vec<LayerAttention> = planned.layers.iter().map(|l| l.mode).collect();
    assert_eq!(modes, [hybrid, LayerAttention::Linear]);
    let out = scratch("planned-out").join("plan.json");
    let features = plan_features(&errors, &table, None, &out).unwrap();
    assert!(features.warning.is_none());
    check_weights(&planned, &features).unwrap();
    write_plan(&planned, &features, &out).unwrap();
    let v = velocity(Some(&out), None).unwrap();
    assert!(v.iter().all(|x| x.is_finite()));

    // Without weights beside the errors: elu1, with a warning, and the plan still runs.
    std::fs::remove_file(dir.join("features.safetensors")).unwrap();
    let features = plan_features(&errors, &table, None, &out).unwrap();
    assert_eq!(features.kind, "elu1");
    assert!(features.warning.as_deref().unwrap().contains("elu1"));
    write_plan(&planned, &features, &out).unwrap();
    let w = velocity(Some(&out), None).unwrap();
    assert!(w.iter().all(|x| x.is_finite()));
    assert_ne!(v, w);
    // A weights file lacking a planned layer is refused before a plan names it.
    write(
        &dir.join("partial.safetensors"),
        &hedgehog_tensors(&mut rng, &[0], Some(hybrid)),
    );
    let features = plan_features(
        &errors,
        &table,
        Some(&dir.join("partial.safetensors")),
        &out,
    )
    .unwrap();
    let e = check_weights(&planned, &features).unwrap_err().to_string();
    assert!(e.contains("blocks.1.attn1.linear.phi_q.weight"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
