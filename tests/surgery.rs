//! Attention surgery on the tiny golden DiT: the attention tap hands out exactly what the
//! attention kernel saw, plans written by the planner load and run, and per-mode feature sets
//! are picked by the plan's mode.

use std::path::{Path, PathBuf};

use vdit_model::dit::{AttentionTap, BlockAttention, Precision, WanDit};
use vdit_model::plan::{feature_tensor_name, AttentionPlan, LayerAttention};
use vdit_model::surgery::errors::ErrorTable;
use vdit_model::surgery::planner::{check_weights, plan, plan_features, write_plan, Objective};
use vdit_model::tensor_file::{read_tensor, write_tensors, HostTensor};
use vdit_wgpu::attention::reference::{attention_reference, FeatureSpec, RefMode};
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
    let planned = plan(&table, 0.4, Objective::Attention).unwrap();
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

mod distill_runs {
    use super::*;
    use vdit_model::pipeline::{CancelToken, GenerateRequest, ModelPaths, Pipeline, Prompt};
    use vdit_model::surgery::distill::{CaptureSteps, DistillProgress, Pair};
    use vdit_model::surgery::measure::relative_l2;
    use vdit_model::surgery::phi::{gpu_trainer, gpu_trainer_from, FeatureDims};
    use vdit_model::surgery::run::{run_distill, DistillJob};
    use vdit_model::ModelError;
    use vdit_wgpu::attention::reference::HostFeatureMap;
    use vdit_wgpu::distill::PhiInit;
    use vdit_wgpu::distill::PhiTrainer;

    /// Cancels the run once `after` training samples are done.
    struct StopAfter {
        after: usize,
        training: bool,
        cancel: CancelToken,
    }

    impl DistillProgress for StopAfter {
        fn stage(&mut self, what: &str, _total: u64) {
            self.training = what == "train";
        }
        fn sample(&mut self, done: usize) {
            if self.training && done == self.after {
                self.cancel.cancel();
            }
        }
    }

    fn request(prompt: &str, seed: u64) -> GenerateRequest {
        let mut r = GenerateRequest::new(Prompt::Text(prompt.into()));
        (r.width, r.height, r.frames, r.steps, r.seed) = (32, 32, 1, 2, seed);
        r
    }

    /// The default model's (blocks, heads, head size), read from its config.
    fn sizes() -> (usize, usize, usize) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("assets/default-model/transformer/config.json");
        let c: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let get = |k: &str| c[k].as_u64().unwrap() as usize;
        (
            get("num_layers"),
            get("num_attention_heads"),
            get("attention_head_dim"),
        )
    }

    fn pairs(steps_seed: u64) -> Vec<Pair<PhiTrainer<'static>>> {
        let (_, heads, head_dim) = sizes();
        let dims = FeatureDims {
            heads,
            head_dim,
            feature: FeatureSpec::Hedgehog { half: 16 },
            lr: 1e-2,
            frame_tokens: 4,
        };
        let modes = [LayerAttention::Hybrid { rate: 2 }, LayerAttention::Linear];
        (0..sizes().0)
            .flat_map(|block| modes.iter().map(move |&mode| (block, mode)))
            .map(|(block, mode)| Pair {
                block,
                mode,
                trainer: gpu_trainer(test_gpu(), &dims, mode, steps_seed + block as u64).unwrap(),
                loss: f32::NAN,
            })
            .collect()
    }

    /// Runs (or resumes) a distillation of the default model into `dir`.
    fn distill(
        dir: &Path,
        steps: u64,
        progress: &mut dyn DistillProgress,
        cancel: &CancelToken,
    ) -> (
        vdit_model::Result<vdit_model::surgery::errors::ErrorTable>,
        Vec<u64>,
    ) {
        let gpu = test_gpu();
        let paths = ModelPaths::embedded_default().unwrap();
        let pipeline = Pipeline::new(gpu, paths, Precision::F32);
        let cost = |m: LayerAttention| {
            if m == LayerAttention::Softmax {
                100.0
            } else {
                50.0
            }
        };
        let job = DistillJob {
            pipeline: &pipeline,
            dir,
            train: vec![
                request("a red ball moving left on a black background", 0),
                request("a blue square moving up on a white background", 1),
                request("a green ring moving right on a gray background", 2),
            ],
            held_out: vec![request(
                "a white triangle moving down on a blue background",
                0,
            )],
            captures: CaptureSteps::All,
            steps,
            queries: 8,
            layers: sizes().0,
            settings: serde_json::json!({ "steps": steps }),
            feature: FeatureSpec::Hedgehog { half: 16 },
            cost: &cost,
            output_errors: true,
            student: None,
        };
        let mut p = pairs(7);
        let r = run_distill(gpu, &job, &mut p, progress, cancel);
        let taken = p.iter().map(|p| p.trainer.step_count()).collect();
        (r, taken)
    }

    struct Quiet;
    impl DistillProgress for Quiet {}

    #[test]
    fn an_interrupted_run_resumes_to_the_same_maps_and_the_error_falls() {
        let (a, b) = (scratch("distill-a"), scratch("distill-b"));
        let never = CancelToken::default();
        let (whole, taken) = distill(&a, 12, &mut Quiet, &never);
        let whole = whole.unwrap();
        assert_eq!(taken, vec![12; 2 * sizes().0]);

        let cancel = CancelToken::default();
        let mut stop = StopAfter {
            after: 1,
            training: false,
            cancel: cancel.clone(),
        };
        let (first, _) = distill(&b, 12, &mut stop, &cancel);
        assert!(
            matches!(first, Err(ModelError::Cancelled)),
            "{:?}",
            first.err()
        );
        assert!(b.join("checkpoint.safetensors").exists() && !b.join("errors.json").exists());
        let (resumed, taken) = distill(&b, 12, &mut Quiet, &never);
        let resumed = resumed.unwrap();
        assert_eq!(taken, vec![12; 2 * sizes().0]);

        // The same feature maps and errors as the uninterrupted run.
        let fa = vdit_model::weights::WeightFile::open(a.join("features.safetensors")).unwrap();
        let fb = vdit_model::weights::WeightFile::open(b.join("features.safetensors")).unwrap();
        let mut names: Vec<&str> = fa.names().collect();
        names.sort();
        assert_eq!(names.len(), sizes().0 * 2 * 4, "{names:?}");
        assert!(names.contains(&"blocks.2.attn1.hybrid_2.phi_k.bias"));
        for n in names {
            let (x, y) = (
                fa.get(n).unwrap().to_f32().unwrap(),
                fb.get(n).unwrap().to_f32().unwrap(),
            );
            let want: Vec<f64> = x.iter().map(|&v| v as f64).collect();
            assert_close(n, 0, &y, &want, 1e-5);
        }
        for (la, lb) in whole.layers.iter().zip(&resumed.layers) {
            for (oa, ob) in la.options.iter().zip(&lb.options) {
                assert!(
                    (oa.error - ob.error).abs() <= 1e-5 * oa.error.max(1e-6),
                    "{oa:?} {ob:?}"
                );
            }
        }
        // Twelve steps already lower the held-out error of the initial maps, on average.
        let opts: Vec<_> = whole.layers.iter().flat_map(|l| &l.options[1..]).collect();
        let mean = |f: &dyn Fn(&vdit_model::surgery::errors::ModeOption) -> f64| {
            opts.iter().map(|o| f(o)).sum::<f64>() / opts.len() as f64
        };
        let (after, before) = (mean(&|o| o.error), mean(&|o| o.initial_error.unwrap()));
        assert!(
            after < 0.9 * before,
            "held-out error {after:.4} after, {before:.4} before"
        );
        assert!(opts.iter().all(|o| o.elu1_error.unwrap() > 0.0));
        // errors.json holds the table (JSON keeps f64 to about 1 ulp).
        let read = ErrorTable::read(&a.join("errors.json")).unwrap();
        let errors = |t: &ErrorTable| -> Vec<f64> {
            t.layers
                .iter()
                .flat_map(|l| l.options.iter().map(|o| o.error))
                .collect()
        };
        for (x, y) in errors(&read).iter().zip(errors(&whole)) {
            assert!((x - y).abs() <= 1e-12 * y.abs(), "{x} vs {y}");
        }
        assert_eq!(read.layers.len(), sizes().0);

        // output_error: the held-out latent's distance from softmax's when one block alone runs
        // the mode; measured again here for block 1's linear maps.
        assert!(opts
            .iter()
            .all(|o| o.output_error.is_some_and(|e| e.is_finite() && e > 0.0)));
        let plan = a.join("by-hand-plan.json");
        std::fs::write(
            &plan,
            r#"{"layers": {"1": "linear"}, "feature_map": "hedgehog",
                "feature_weights": "features.safetensors"}"#,
        )
        .unwrap();
        let gpu = test_gpu();
        let softmax = Pipeline::new(gpu, ModelPaths::embedded_default().unwrap(), Precision::F32);
        let planned = softmax.clone().with_attention_plan(plan);
        let held = request("a white triangle moving down on a blue background", 0);
        let never_cancel = CancelToken::default();
        let latent = |p: &Pipeline| {
            p.sample(
                &held,
                &mut vdit_model::pipeline::Silent,
                &never_cancel,
                None,
            )
            .unwrap()
            .to_vec_f32(gpu)
            .unwrap()
        };
        let by_hand = relative_l2(&latent(&planned), &latent(&softmax));
        let linear = whole.layers[1]
            .options
            .iter()
            .find(|o| o.mode == "linear")
            .unwrap();
        let measured = linear.output_error.unwrap();
        assert!(
            (by_hand - measured).abs() <= 1e-4 * measured,
            "{by_hand} by hand, {measured} in errors.json"
        );

        // Other settings do not resume this folder's checkpoint.
        let (other, _) = distill(&b, 13, &mut Quiet, &never);
        let e = other.unwrap_err().to_string();
        assert!(
            e.contains("checkpoint.safetensors") && e.contains("steps"),
            "{e}"
        );
        std::fs::remove_dir_all(&a).unwrap();
        std::fs::remove_dir_all(&b).unwrap();
    }

    /// A student run trains a plan's maps on the plan's own sampling against softmax on the
    /// q, k, v each converted block is fed; its held-out errors are what `vdit compare`'s
    /// per-block measurement gives for the plan it writes.
    #[test]
    fn a_student_run_trains_the_plan_on_its_own_sampling() {
        let dir = scratch("student");
        let gpu = test_gpu();
        let (layers, heads, head_dim) = sizes();
        let half = 16;
        let mut rng = Rng::new(11);
        let mut student = vec![LayerAttention::Softmax; layers];
        student[1] = LayerAttention::Linear;
        student[3] = LayerAttention::Hybrid { rate: 2 };
        let dims = FeatureDims {
            heads,
            head_dim,
            feature: FeatureSpec::Hedgehog { half },
            lr: 1e-2,
            frame_tokens: 4,
        };
        let mut pairs = Vec::new();
        for (block, &mode) in student.iter().enumerate() {
            if mode == LayerAttention::Softmax {
                continue;
            }
            let mut map = || HostFeatureMap::Hedgehog {
                w: rng.vec_normal(heads * half * head_dim, 0.2),
                b: vec![0.0; heads * half],
                half,
            };
            let init = PhiInit::Host {
                phi_q: Box::new(map()),
                phi_k: Box::new(map()),
            };
            pairs.push(Pair {
                block,
                mode,
                trainer: gpu_trainer_from(gpu, &dims, mode, init).unwrap(),
                loss: f32::NAN,
            });
        }
        let paths = ModelPaths::embedded_default().unwrap();
        let pipeline = Pipeline::new(gpu, paths.clone(), Precision::F32);
        let cost = |m: LayerAttention| {
            if m == LayerAttention::Softmax {
                100.0
            } else {
                50.0
            }
        };
        let held = request("a white triangle moving down on a blue background", 0);
        let job = DistillJob {
            pipeline: &pipeline,
            dir: &dir,
            train: vec![
                request("a red ball moving left on a black background", 0),
                request("a blue square moving up on a white background", 1),
            ],
            held_out: vec![held.clone()],
            captures: CaptureSteps::All,
            steps: 12,
            queries: 8,
            layers,
            settings: serde_json::json!({ "student": true }),
            feature: FeatureSpec::Hedgehog { half },
            cost: &cost,
            output_errors: false,
            student: Some(student.clone()),
        };
        let table =
            run_distill(gpu, &job, &mut pairs, &mut Quiet, &CancelToken::default()).unwrap();
        assert!(
            !dir.join("student-plan.json").exists()
                && !dir.join("student-features.safetensors").exists()
        );
        for (l, mode) in student.iter().enumerate() {
            let modes: Vec<&str> = table.layers[l]
                .options
                .iter()
                .map(|o| o.mode.as_str())
                .collect();
            if *mode == LayerAttention::Softmax {
                assert_eq!(modes, ["softmax"]);
                continue;
            }
            assert_eq!(modes, ["softmax", mode.to_string().as_str()]);
            let o = &table.layers[l].options[1];
            assert!(o.error < o.initial_error.unwrap(), "layer {l}: {o:?}");
        }
        // The plan it wrote, sampled with compare's per-block tap: the same errors.
        let plan = dir.join("plan.json");
        let planned = pipeline.clone().with_attention_plan(plan);
        let mut errors = vdit_model::surgery::compare::BlockErrors::default();
        planned
            .sample(
                &held,
                &mut vdit_model::pipeline::Silent,
                &CancelToken::default(),
                Some(&mut errors),
            )
            .unwrap();
        let means = errors.means();
        for l in [1, 3] {
            let want = table.layers[l].options[1].error;
            assert!(
                (means[l] - want).abs() <= 1e-4 * want,
                "layer {l}: {} vs {want}",
                means[l]
            );
        }
        assert!(means
            .iter()
            .enumerate()
            .all(|(l, &e)| (l == 1 || l == 3) || e == 0.0));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
