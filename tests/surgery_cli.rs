//! `vdit distill`, `vdit plan` and `vdit compare` as a user runs them, on the embedded default
//! model at a tiny size: outputs that load, resumption, and bad input answered with the flag or
//! file named, never a panic.

use std::path::{Path, PathBuf};
use std::process::Command;

use vdit_model::plan::{feature_tensor_name, LayerAttention};
use vdit_model::surgery::errors::ErrorTable;
use vdit_model::tensor_file::{read_tensor, write_tensors, HostTensor};
use vdit_wgpu::testing::Rng;

/// The default model's sizes (blocks, heads, head size), read from its config.
fn sizes() -> (usize, usize, usize) {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/default-model/transformer/config.json");
    let c: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let get = |k: &str| c[k].as_u64().unwrap() as usize;
    (
        get("num_layers"),
        get("num_attention_heads"),
        get("attention_head_dim"),
    )
}

/// Tiny sampling: 32 x 32 pixels, one frame, two denoising steps.
const TINY: [&str; 8] = [
    "--width",
    "32",
    "--height",
    "32",
    "--frames",
    "1",
    "--sampling-steps",
    "2",
];

fn vdit() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vdit"));
    c.env("RUST_LOG", "error");
    c
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vdit-surgery-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs and returns (success, stdout, stderr).
fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd.output().expect("vdit runs");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!stderr.contains("panicked"), "vdit panicked:\n{stderr}");
    (out.status.success(), stdout, stderr)
}

fn prompts(dir: &Path, lines: &[&str]) -> PathBuf {
    let p = dir.join("prompts.txt");
    std::fs::write(&p, lines.join("\n")).unwrap();
    p
}

/// An errors file for the default model with random hedgehog maps beside it.
fn errors_with_weights(dir: &Path) -> PathBuf {
    let mut rng = Rng::new(3);
    let mut tensors = Vec::new();
    let modes = [LayerAttention::Hybrid { rate: 2 }, LayerAttention::Linear];
    let (layers, heads, head_dim) = sizes();
    for l in 0..layers {
        for m in modes {
            for which in ["phi_q", "phi_k"] {
                tensors.push((
                    feature_tensor_name(l, Some(m), which, "weight"),
                    HostTensor {
                        shape: vec![heads, 32, head_dim],
                        data: rng.vec_normal(heads * 32 * head_dim, 0.1),
                    },
                ));
                tensors.push((
                    feature_tensor_name(l, Some(m), which, "bias"),
                    HostTensor {
                        shape: vec![heads, 32],
                        data: vec![0.0; heads * 32],
                    },
                ));
            }
        }
    }
    let refs: Vec<(&str, &HostTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    write_tensors(&dir.join("features.safetensors"), &refs).unwrap();
    let layer = |l: usize, e: f64| {
        format!(
            r#"{{"layer": {l}, "options": [{{"mode": "softmax", "error": 0.0, "cost": 1000}},
               {{"mode": "hybrid:2", "error": {e}, "cost": 600}},
               {{"mode": "linear", "error": {}, "cost": 100}}]}}"#,
            4.0 * e
        )
    };
    let p = dir.join("errors.json");
    std::fs::write(
        &p,
        format!(
            r#"{{"layers": [{}, {}, {}], "feature_map": "hedgehog"}}"#,
            layer(0, 0.1),
            layer(1, 0.2),
            layer(2, 0.05)
        ),
    )
    .unwrap();
    p
}

#[test]
fn plan_then_compare() {
    let dir = scratch("plan");
    let errors = errors_with_weights(&dir);
    let plan = dir.join("plan.json");
    // 0.5 x 3000 = 1500: linear on the block of least error, hybrid on the next two (1300).
    let (ok, stdout, stderr) = run(vdit()
        .args(["plan", "--budget", "0.5", "--errors"])
        .arg(&errors)
        .arg("--output")
        .arg(&plan));
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("total") && stdout.contains("hybrid:2"),
        "{stdout}"
    );
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&plan).unwrap()).unwrap();
    assert_eq!(
        written["layers"],
        serde_json::json!({"0-1": "hybrid:2", "2": "linear"})
    );
    assert_eq!(written["feature_weights"], "features.safetensors");

    let json = dir.join("compare.json");
    let (ok, stdout, stderr) = run(vdit()
        .arg("compare")
        .args(TINY)
        .arg("--attention-plan")
        .arg(&plan)
        .arg("--prompts")
        .arg(prompts(
            &dir,
            &["a red ball moving left on a black background"],
        ))
        .arg("--json")
        .arg(&json));
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("PSNR") && stdout.contains("DiT forward"),
        "{stdout}"
    );
    let c: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let v = &c["videos"][0];
    let ssim = v["ssim"].as_f64().unwrap();
    assert!(ssim > -1.0 && ssim < 1.0, "{c}");
    assert!(v["psnr"].as_f64().unwrap().is_finite(), "{c}");
    let blocks: Vec<f64> = c["block_errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_f64().unwrap())
        .collect();
    assert_eq!(blocks.len(), sizes().0);
    // Blocks 0-2 are planned hybrid or linear; the plan leaves the others softmax.
    assert!(
        blocks[..3].iter().all(|&e| e > 0.0 && e.is_finite())
            && blocks[3..].iter().all(|&e| e == 0.0),
        "{blocks:?}"
    );
    assert!(c["dit_forward_ms"]["plan"].as_f64().unwrap() > 0.0);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn plan_bad_input_names_the_flag_or_file() {
    let dir = scratch("plan-bad");
    let errors = errors_with_weights(&dir);
    let out = dir.join("plan.json");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["--budget".into(), "0".into()], "--budget"),
        (vec!["--budget".into(), "1.5".into()], "--budget"),
        (vec!["--budget".into(), "half".into()], "--budget"),
        // The cheapest plan is 300 of 3000.
        (vec!["--budget".into(), "0.05".into()], "at least 0.1000"),
        (
            vec![
                "--budget".into(),
                "0.5".into(),
                "--objective".into(),
                "video".into(),
            ],
            "--objective",
        ),
        // This errors file has no output errors to sum.
        (
            vec![
                "--budget".into(),
                "0.5".into(),
                "--objective".into(),
                "output".into(),
            ],
            "--objective",
        ),
    ];
    for (args, needle) in cases {
        let (ok, _, stderr) = run(vdit()
            .arg("plan")
            .args(&args)
            .arg("--errors")
            .arg(&errors)
            .arg("--output")
            .arg(&out));
        assert!(!ok && stderr.contains(needle), "{args:?}: {stderr}");
        assert!(!out.exists(), "{args:?} wrote a plan");
    }
    let (ok, _, stderr) = run(vdit()
        .args(["plan", "--budget", "0.5", "--errors"])
        .arg(dir.join("missing.json")));
    assert!(!ok && stderr.contains("missing.json"), "{stderr}");
    let p = prompts(&dir, &["a red ball"]);
    let (ok, _, stderr) = run(vdit()
        .args(["compare", "--prompts"])
        .arg(&p)
        .arg("--attention-plan")
        .arg(dir.join("no-plan.json")));
    assert!(
        !ok && stderr.contains("--attention-plan") && stderr.contains("no-plan.json"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `vdit distill` with tiny settings into `out`: (success, stdout, stderr).
fn distill(dir: &Path, out: &Path, extra: &[&str]) -> (bool, String, String) {
    let p = prompts(
        dir,
        &[
            "a red ball moving left on a black background",
            "a blue square moving up on a white background",
            "# held out:",
            "a white triangle moving down on a blue background",
        ],
    );
    run(vdit()
        .arg("distill")
        .args([
            "--width",
            "64",
            "--height",
            "64",
            "--frames",
            "1",
            "--sampling-steps",
            "2",
        ])
        .args([
            "--modes",
            "hybrid:2,linear",
            "--feature-dim",
            "4",
            "--steps",
            "3",
        ])
        .args(["--queries", "8", "--quiet", "--prompts"])
        .arg(&p)
        .arg("--output")
        .arg(out)
        .args(extra))
}

#[test]
fn distill_resume_plan_and_generate() {
    let dir = scratch("distill");
    let out = dir.join("run");
    let (ok, stdout, stderr) = distill(&dir, &out, &[]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("initial") && stdout.contains("linear"),
        "{stdout}"
    );
    let table = ErrorTable::read(&out.join("errors.json")).unwrap();
    let (layers, heads, head_dim) = sizes();
    assert_eq!(table.layers.len(), layers);
    assert_eq!(table.feature_map.as_deref(), Some("hedgehog"));
    for l in &table.layers {
        let modes: Vec<&str> = l.options.iter().map(|o| o.mode.as_str()).collect();
        assert_eq!(modes, ["softmax", "hybrid:2", "linear"]);
        let soft = l.options[0].cost;
        // 16 tokens: the cost model's FLOPs, 4 N^2 d per head.
        assert_eq!(soft, heads as f64 * 4.0 * 16.0 * 16.0 * head_dim as f64);
        for o in &l.options[1..] {
            assert!(o.error.is_finite() && o.error > 0.0, "{o:?}");
            assert!(o.initial_error.is_some() && o.elu1_error.is_some(), "{o:?}");
            assert!(o.cost < soft, "{o:?}");
        }
    }
    // The same command again resumes the finished run and writes the same errors.
    let before = std::fs::read_to_string(out.join("errors.json")).unwrap();
    let (ok, _, stderr) = distill(&dir, &out, &[]);
    assert!(
        ok && stderr.contains("resuming") && stderr.contains("2 of 2"),
        "{stderr}"
    );
    // The held-out errors are measured again: equal up to the order of GPU float sums.
    let numbers = |text: &str| -> Vec<f64> {
        let v: serde_json::Value = serde_json::from_str(text).unwrap();
        v["layers"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|l| l["options"].as_array().unwrap().clone())
            .flat_map(|o| {
                ["error", "cost", "initial_error", "elu1_error"]
                    .map(|k| o[k].as_f64().unwrap_or(0.0))
            })
            .collect()
    };
    let after = std::fs::read_to_string(out.join("errors.json")).unwrap();
    for (x, y) in numbers(&after).iter().zip(numbers(&before)) {
        assert!((x - y).abs() <= 1e-9 * y.abs(), "{x} vs {y}");
    }
    // Other settings are refused, naming the setting.
    let (ok, _, stderr) = distill(&dir, &out, &["--lr", "0.02"]);
    assert!(
        !ok && stderr.contains("other settings") && stderr.contains("lr"),
        "{stderr}"
    );

    // Plan on the distilled errors and generate with it.
    let plan = dir.join("plan.json");
    let (ok, stdout, stderr) = run(vdit()
        .args(["plan", "--budget", "0.5", "--errors"])
        .arg(out.join("errors.json"))
        .arg("--output")
        .arg(&plan));
    assert!(ok, "{stderr}");
    assert!(stdout.contains("total"), "{stdout}");
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&plan).unwrap()).unwrap();
    assert_eq!(
        written["feature_weights"], "run/features.safetensors",
        "{written}"
    );
    let video = dir.join("planned.gif");
    let (ok, _, stderr) = run(vdit()
        .arg("generate")
        .args([
            "--width", "64", "--height", "64", "--frames", "1", "--steps", "2", "--quiet",
        ])
        .args(["--prompt", "a red ball", "--attention-plan"])
        .arg(&plan)
        .arg("--output")
        .arg(&video));
    assert!(ok && video.is_file(), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Poly maps (Attention Surgery's) train, are written under the plan's key names with their
/// sizes, and run planned.
#[test]
fn distill_poly_maps_plan_and_generate() {
    let dir = scratch("distill-poly");
    let out = dir.join("run");
    let (ok, _, stderr) = distill(
        &dir,
        &out,
        &[
            "--feature-map",
            "poly",
            "--powers",
            "2",
            "--poly-hidden",
            "5",
        ],
    );
    assert!(ok, "{stderr}");
    let table = ErrorTable::read(&out.join("errors.json")).unwrap();
    assert_eq!(table.feature_map.as_deref(), Some("poly"));
    assert_eq!(table.powers, Some(2));
    let (layers, heads, head_dim) = sizes();
    let features = out.join("features.safetensors");
    for block in 0..layers {
        for mode in [LayerAttention::Hybrid { rate: 2 }, LayerAttention::Linear] {
            for which in ["phi_q", "phi_k"] {
                for (tensor, shape) in [
                    ("l1.weight", vec![heads, 5, head_dim]),
                    ("l1.bias", vec![heads, 5]),
                    ("l2.weight", vec![heads, 4, 5]),
                    ("l2.bias", vec![heads, 4]),
                ] {
                    let name = feature_tensor_name(block, Some(mode), which, tensor);
                    let t = read_tensor(&features, &name).unwrap();
                    assert_eq!(t.shape, shape, "{name}");
                    assert!(t.data.iter().all(|v| v.is_finite()), "{name}");
                }
            }
        }
        let o = &table.layers[block].options;
        assert!(o[1..].iter().all(|o| o.error.is_finite() && o.error > 0.0));
    }
    let plan = dir.join("plan.json");
    let (ok, _, stderr) = run(vdit()
        .args(["plan", "--budget", "0.9", "--errors"])
        .arg(out.join("errors.json"))
        .arg("--output")
        .arg(&plan));
    assert!(ok, "{stderr}");
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&plan).unwrap()).unwrap();
    assert_eq!(written["feature_map"], "poly", "{written}");
    let video = dir.join("planned.gif");
    let (ok, _, stderr) = run(vdit()
        .arg("generate")
        .args([
            "--width", "64", "--height", "64", "--frames", "1", "--steps", "2", "--quiet",
        ])
        .args(["--prompt", "a red ball", "--attention-plan"])
        .arg(&plan)
        .arg("--output")
        .arg(&video));
    assert!(ok && video.is_file(), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn distill_bad_input_names_the_flag_or_file() {
    let dir = scratch("distill-bad");
    let out = dir.join("run");
    for (extra, needle) in [
        (&["--modes", "hybrid:x"][..], "--modes"),
        (&["--modes", "softmax"][..], "--modes"),
        (&["--held-out", "3"][..], "--held-out"),
        (&["--held-out", "none.txt"][..], "none.txt"),
        (&["--captures", "first"][..], "--captures"),
        (&["--feature-map", "elu1"][..], "--feature-map"),
        (&["--feature-map", "cosine"][..], "--feature-map"),
        // --feature-dim 4 is no multiple of 3 powers.
        (
            &["--feature-map", "poly", "--powers", "3"][..],
            "--feature-dim",
        ),
        (&["--feature-map", "poly", "--powers", "0"][..], "--powers"),
        (
            &["--feature-map", "poly", "--poly-hidden", "0"][..],
            "--poly-hidden",
        ),
    ] {
        let (ok, _, stderr) = distill(&dir, &out, extra);
        assert!(!ok && stderr.contains(needle), "{extra:?}: {stderr}");
        assert!(!out.join("errors.json").exists());
    }
    // --student plans that give the run nothing to train, or no file at all.
    let elu1 = dir.join("elu1-plan.json");
    std::fs::write(
        &elu1,
        r#"{"layers": {"0": "linear"}, "feature_map": "elu1"}"#,
    )
    .unwrap();
    let softmax = dir.join("softmax-plan.json");
    std::fs::write(&softmax, "{}").unwrap();
    for (plan, needle) in [
        (&elu1, "no trained hedgehog or poly maps"),
        (&softmax, "converts no layer"),
        (&dir.join("missing-plan.json"), "missing-plan.json"),
    ] {
        let (ok, _, stderr) = distill(&dir, &out, &["--student", plan.to_str().unwrap()]);
        assert!(!ok && stderr.contains(needle), "{plan:?}: {stderr}");
        assert!(!out.join("errors.json").exists());
    }
    let (ok, _, stderr) = run(vdit()
        .args(["distill", "--prompts"])
        .arg(dir.join("missing.txt"))
        .arg("--output")
        .arg(&out));
    assert!(
        !ok && stderr.contains("--prompts") && stderr.contains("missing.txt"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
