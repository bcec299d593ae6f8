//! The `vdit` command as a user runs it: outputs checked against goldens, bad input answered
//! with a clear message and a non-zero exit, never a panic.

use std::path::{Path, PathBuf};
use std::process::Command;

use vdit_model::tensor_file::read_tensor;
use vdit_wgpu::testing::assert_close;

fn vdit() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vdit"));
    c.env("RUST_LOG", "error");
    c
}

fn assets() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("assets")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vdit-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs and returns (success, stderr).
fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().expect("vdit runs");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!stderr.contains("panicked"), "vdit panicked:\n{stderr}");
    (out.status.success(), stderr)
}

#[test]
fn info_lists_the_chosen_adapter() {
    let out = vdit().arg("info").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("chosen:") && text.contains("max buffer size"),
        "{text}"
    );
}

/// `vdit dit-forward` on the tiny golden DiT and its golden inputs, with `extra` flags, writing
/// `output`.
fn tiny_dit_forward(output: &std::path::Path, extra: &[&str]) -> (bool, String) {
    let golden = assets().join("goldens/dit/tiny");
    let io = golden.join("io.safetensors");
    let timestep = read_tensor(&io, "timestep").unwrap().data[0];
    run(vdit()
        .env("RUST_LOG", "vdit=info")
        .args(["dit-forward", "--precision", "f32", "--model"])
        .arg(golden.join("diffusers"))
        .arg("--latent")
        .arg(&io)
        .arg("--context")
        .arg(&io)
        .args(["--timestep", &timestep.to_string(), "--output"])
        .arg(output)
        .args(extra))
}

/// The (GPU, host) weight bytes `vdit dit-forward` logs at info level.
fn logged_weight_bytes(stderr: &str) -> (u64, u64) {
    let line = stderr
        .lines()
        .find(|l| l.contains("weights:") && l.contains("bytes on the GPU"))
        .unwrap_or_else(|| panic!("no weights line in:\n{stderr}"));
    let numbers: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    (numbers[0], numbers[1])
}

/// The golden velocity's shape and values.
fn tiny_dit_velocity() -> (Vec<usize>, Vec<f64>) {
    let io = assets().join("goldens/dit/tiny/io.safetensors");
    let want = read_tensor(&io, "velocity").unwrap();
    let values = want.data.iter().map(|&v| v as f64).collect();
    (want.shape, values)
}

#[test]
fn dit_forward_writes_the_diffusers_velocity() {
    let dir = scratch("dit-forward");
    let output = dir.join("velocity.safetensors");
    let (ok, stderr) = tiny_dit_forward(&output, &[]);
    assert!(ok, "{stderr}");
    let got = read_tensor(&output, "velocity").unwrap();
    let (shape, want) = tiny_dit_velocity();
    assert_eq!(got.shape, shape);
    assert_close("vdit dit-forward", 0, &got.data, &want, 1e-4);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn dit_forward_keeps_or_expands_q8_0_weights_of_a_gguf_file() {
    let golden = assets().join("goldens/dit/tiny");
    let io = golden.join("io.safetensors");
    let timestep = read_tensor(&io, "timestep").unwrap().data[0].to_string();
    let dir = scratch("dit-forward-q8");
    let forward = |name: &str, extra: &[&str]| {
        let output = dir.join(name);
        let (ok, stderr) = run(vdit()
            .env("RUST_LOG", "vdit=info")
            .args(["dit-forward", "--precision", "f32", "--model"])
            .arg(assets().join("goldens/gguf/dit_tiny_q8_0.gguf"))
            .arg("--latent")
            .arg(&io)
            .arg("--context")
            .arg(&io)
            .args(["--timestep", &timestep, "--output"])
            .arg(&output)
            .args(extra));
        (ok, stderr, output)
    };
    let (ok, stderr, kept) = forward("kept.safetensors", &[]);
    assert!(ok, "{stderr}");
    let kept_bytes = logged_weight_bytes(&stderr).0;
    let (ok, stderr, expanded) = forward("expanded.safetensors", &["--expand-quantized"]);
    assert!(ok, "{stderr}");
    assert!(
        kept_bytes < logged_weight_bytes(&stderr).0,
        "the Q8_0 weights were not kept"
    );
    let kept = read_tensor(&kept, "velocity").unwrap();
    let expanded = read_tensor(&expanded, "velocity").unwrap();
    let expanded: Vec<f64> = expanded.data.iter().map(|&v| v as f64).collect();
    assert_close("Q8_0 kept against expanded", 0, &kept.data, &expanded, 1e-6);
    let (ok, stderr, never) = forward(
        "never.safetensors",
        &["--expand-quantized", "--quantize", "q8_0"],
    );
    assert!(!ok && stderr.contains("--expand-quantized"), "{stderr}");
    assert!(!never.exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn dit_forward_offloaded_and_quantised_stays_near_the_diffusers_velocity() {
    let dir = scratch("dit-forward-offload");
    let output = dir.join("velocity.safetensors");
    let forward = |extra: &[&str]| tiny_dit_forward(&output, extra);
    let (ok, stderr) = forward(&[]);
    assert!(ok, "{stderr}");
    let (resident_gpu, resident_host) = logged_weight_bytes(&stderr);
    let (ok, stderr) = forward(&["--offload", "--quantize", "q8_0"]);
    assert!(ok, "{stderr}");
    // The blocks left the GPU (two blocks are the slots) and some matrices are Q8_0.
    let (gpu, host) = logged_weight_bytes(&stderr);
    assert_eq!(resident_host, 0);
    assert!(
        host > 0 && gpu < resident_gpu,
        "{gpu} {host} {resident_gpu}"
    );
    let (ok, stderr) = forward(&["--quantize", "q8_0"]);
    assert!(ok, "{stderr}");
    assert!(
        logged_weight_bytes(&stderr).0 < resident_gpu,
        "nothing was quantised"
    );
    let got = read_tensor(&output, "velocity").unwrap();
    // Q8_0 keeps about 2.5 significant digits of each weight.
    let (shape, want) = tiny_dit_velocity();
    assert_eq!(got.shape, shape);
    assert_close(
        "dit-forward --offload --quantize q8_0",
        0,
        &got.data,
        &want,
        3e-2,
    );
    std::fs::remove_file(&output).unwrap();
    // Q4_K: the tiny model's one Linear whose rows are whole 256-value super-blocks (the time
    // embedding's first) is quantised.
    let (ok, stderr) = forward(&["--quantize", "q4_k"]);
    assert!(ok, "{stderr}");
    assert!(
        logged_weight_bytes(&stderr).0 < resident_gpu,
        "nothing was quantised to Q4_K"
    );
    let got = read_tensor(&output, "velocity").unwrap();
    assert_close("dit-forward --quantize q4_k", 0, &got.data, &want, 0.1);
    std::fs::remove_file(&output).unwrap();
    let (ok, stderr) = forward(&["--quantize", "q5_k"]);
    assert!(
        !ok && stderr.contains("--quantize") && stderr.contains("q8_0") && stderr.contains("q4_k"),
        "{stderr}"
    );
    assert!(
        !output.exists(),
        "a refused command must not write its output"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn dit_forward_names_the_bad_file() {
    let golden = assets().join("goldens/dit/tiny");
    let dir = scratch("bad-input");
    let io = golden.join("io.safetensors");
    // A truncated latent file.
    let bytes = std::fs::read(&io).unwrap();
    let truncated = dir.join("truncated.safetensors");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let output = dir.join("out.safetensors");
    let (ok, stderr) = run(vdit()
        .args(["dit-forward", "--model"])
        .arg(golden.join("diffusers"))
        .arg("--latent")
        .arg(&truncated)
        .arg("--context")
        .arg(&io)
        .args(["--timestep", "500", "--output"])
        .arg(&output));
    assert!(!ok && stderr.contains("truncated.safetensors"), "{stderr}");
    assert!(!output.exists(), "no output may be written on failure");
    // A model folder that does not exist.
    let (ok, stderr) = run(vdit()
        .args(["dit-forward", "--model"])
        .arg(dir.join("no-such-model"))
        .arg("--latent")
        .arg(&io)
        .arg("--context")
        .arg(&io)
        .args(["--timestep", "500", "--output"])
        .arg(&output));
    assert!(!ok && stderr.contains("no-such-model"), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn vae_decode_in_tiles_writes_diffusers_tiled_frames() {
    let golden = assets().join("goldens/vae/tiny");
    let dir = scratch("vae-tiles");
    let output = dir.join("frames.safetensors");
    let (ok, stderr) = run(vdit()
        .args([
            "vae-decode",
            "--precision",
            "f32",
            "--vae-tile",
            "4,2",
            "--model",
        ])
        .arg(golden.join("diffusers"))
        .arg("--latent")
        .arg(golden.join("io.safetensors"))
        .arg("--output")
        .arg(&output));
    assert!(ok, "{stderr}");
    let got = read_tensor(&output, "frames").unwrap();
    let want = read_tensor(&golden.join("tiled.safetensors"), "frames_tile4_overlap2").unwrap();
    assert_eq!(got.shape, want.shape);
    let want: Vec<f64> = want.data.iter().map(|&v| v as f64).collect();
    assert_close("vdit vae-decode --vae-tile 4,2", 0, &got.data, &want, 1e-4);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_vae_tiles_name_the_flag() {
    let golden = assets().join("goldens/vae/tiny");
    for (value, message) in [
        ("8,8", "smaller than the tile"),
        ("0", "at least 1"),
        ("8,6", "at most half"),
    ] {
        let (ok, stderr) = run(vdit()
            .args(["vae-decode", "--vae-tile", value, "--model"])
            .arg(golden.join("diffusers"))
            .arg("--latent")
            .arg(golden.join("io.safetensors"))
            .args(["--output", "unused.safetensors"]));
        assert!(
            !ok && stderr.contains("--vae-tile") && stderr.contains(message),
            "{stderr}"
        );
        let (ok, stderr) = run(vdit().args(["generate", "--prompt", "a fox", "--vae-tile", value]));
        assert!(
            !ok && stderr.contains("--vae-tile") && stderr.contains(message),
            "{stderr}"
        );
    }
}

/// `vdit bench vae` on the tiny golden VAE's config, a [16, 2, 5, 7] latent, in f32.
fn bench_vae_tiny() -> Command {
    let mut cmd = vdit();
    cmd.args(["bench", "vae", "--precision", "f32", "--config"])
        .arg(assets().join("goldens/vae/tiny/diffusers/config.json"))
        .args([
            "--latent-frames",
            "2",
            "--latent-height",
            "5",
            "--latent-width",
            "7",
        ]);
    cmd
}

#[test]
fn bench_vae_reports_kernels_time_and_memory() {
    let dir = scratch("bench-vae");
    let json = dir.join("vae.json");
    let out = bench_vae_tiny()
        .args(["--vae-tile", "4,1", "--json"])
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for text in ["blend_tile", "conv", "2 x 3 tiles", "ms wall", "peak"] {
        assert!(stdout.contains(text), "no '{text}' in:\n{stdout}");
    }
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["frames"], serde_json::json!([3, 5, 40, 56]));
    assert_eq!(report["tiling"]["tiles"], serde_json::json!([2, 3]));
    assert!(report["median_ms"].as_f64().unwrap() > 0.0);
    let peak = report["peak_bytes"].as_u64().unwrap();
    let frames = report["frames_bytes"].as_u64().unwrap();
    assert!(peak > report["weight_bytes"].as_u64().unwrap() + frames);
    assert!(report["kernels"].as_array().is_some_and(|k| !k.is_empty()));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Untiled, `bench vae` decodes as `generate` does (frames to RGBA8 as they come, no whole
/// video held) unless `--whole-video` asks for the f32 video `vae-decode` returns.
#[test]
fn bench_vae_streams_unless_asked_for_the_whole_video() {
    let dir = scratch("bench-vae-streamed");
    let (h, w) = (40u64, 56u64);
    for (whole, output_bytes) in [(false, 4 * (3 * 4 + 1) * h * w), (true, 4 * 3 * 5 * h * w)] {
        let json = dir.join(format!("vae-{whole}.json"));
        let mut cmd = bench_vae_tiny();
        cmd.arg("--json").arg(&json);
        if whole {
            cmd.arg("--whole-video");
        }
        let out = cmd.output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let said = if whole {
            "whole video kept"
        } else {
            "streamed to RGBA8"
        };
        assert!(stdout.contains(said), "no '{said}' in:\n{stdout}");
        let report: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        assert_eq!(report["streamed"], serde_json::json!(!whole));
        assert_eq!(report["frames_bytes"].as_u64(), Some(output_bytes));
        let peak = report["peak_bytes"].as_u64().unwrap();
        assert!(peak > report["weight_bytes"].as_u64().unwrap() + output_bytes);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bench_generate_reports_steps_decode_and_memory() {
    let dir = scratch("bench-generate");
    let json = dir.join("generate.json");
    let model = assets().join("default-model");
    let out = vdit()
        .args([
            "bench",
            "generate",
            "--random-weights",
            "--precision",
            "f32",
            "--config",
        ])
        .arg(model.join("transformer/config.json"))
        .arg("--vae-config")
        .arg(model.join("vae/config.json"))
        .args([
            "--width", "32", "--height", "32", "--frames", "5", "--steps", "2",
        ])
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for text in ["step 2:", "ms per step", "VAE stage"] {
        assert!(stdout.contains(text), "no '{text}' in:\n{stdout}");
    }
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["steps_ms"].as_array().map(Vec::len), Some(2));
    assert!(report["decode_ms"].as_f64().unwrap() > 0.0);
    assert!(report["dit_peak_gib"].as_f64().unwrap() > 0.0);
    assert!(report["vae_peak_gib"].as_f64().unwrap() > 0.0);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bench_distill_projects_its_hours_from_its_figures() {
    let dir = scratch("bench-distill");
    let json = dir.join("distill.json");
    // The tiny golden DiT: 2 blocks, 2 heads of 24.
    let config = assets().join("goldens/dit/tiny/diffusers/config.json");
    let out = vdit()
        .args(["bench", "distill", "--random-weights", "--config"])
        .arg(&config)
        .args([
            "--latent", "2x6x10", "--steps", "1", "--iters", "1", "--json",
        ])
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for text in [
        "with the capture tap",
        "hybrid:4",
        "train    = ",
        "hours    = ",
    ] {
        assert!(stdout.contains(text), "no '{text}' in:\n{stdout}");
    }
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let num = |v: &serde_json::Value| {
        let x = v.as_f64().unwrap_or(f64::NAN);
        assert!(x.is_finite() && x > 0.0, "{v} is not a positive figure");
        x
    };
    // A 2x6x10 latent is 2 x 3 x 5 = 30 tokens; q, k, v and y in f32.
    assert_eq!(r["tokens"], 30);
    let capture = &r["capture"];
    assert_eq!(capture["block_bytes"], 4 * 30 * 2 * 24 * 4);
    assert_eq!(capture["all_blocks_bytes"], 2 * 4 * 30 * 2 * 24 * 4);
    num(&capture["peak_bytes"]);
    let f = num(&r["forward"]["plain_median_s"]);
    let f_tap = num(&r["forward"]["tap_median_s"]);
    let training = &r["training"];
    assert_eq!(training["feature_dim"], 24);
    assert_eq!(training["queries_per_step"], 30);
    let y_read = num(&training["y_read_s"]);
    let modes = training["modes"].as_array().unwrap();
    assert_eq!(modes.len(), 3);
    for m in modes {
        assert_eq!(m["step_s"].as_array().map(Vec::len), Some(1));
        for k in [
            "prepare_s",
            "mean_step_s",
            "error_s",
            "elu1_s",
            "peak_bytes",
        ] {
            num(&m[k]);
        }
        num(&m["retained_bytes"]);
    }

    // The papers' settings: 8 samples x 4 captured steps x 2 branches = 64 captured forwards.
    let p = &r["projection"];
    let s = &p["shape"];
    assert_eq!(p["captured_forwards"], 64);
    assert_eq!(p["training_captures"], 64);
    assert_eq!(p["held_out_captures"], 8);
    let get = |v: &serde_json::Value| v.as_f64().unwrap();
    let (l, n, a, e) = (
        get(&s["blocks"]),
        get(&s["steps_per_pair"]),
        get(&p["training_captures"]),
        get(&p["held_out_captures"]),
    );
    assert_eq!((l, n), (2.0, 1000.0));
    let sampled = |samples: f64| samples * get(&s["sampling_steps"]) * get(&s["branches"]);
    let sum = |f: &dyn Fn(&serde_json::Value) -> f64| modes.iter().map(f).sum::<f64>();
    let train = (sampled(get(&s["samples"])) - a) * f
        + a * f_tap
        + l * sum(&|m| a * get(&m["prepare_s"]) + n * get(&m["mean_step_s"]));
    let held_out = 2.0 * ((sampled(get(&s["held_out"])) - e) * f + e * f_tap)
        + e * l * (y_read + sum(&|m| 2.0 * get(&m["error_s"]) + get(&m["elu1_s"])));
    let close = |got: f64, want: f64| (got - want).abs() <= 1e-9 * want.abs();
    assert!(close(num(&p["train_s"]), train), "{p}");
    assert!(close(num(&p["held_out_s"]), held_out), "{p}");
    assert!(close(num(&p["hours"]), (train + held_out) / 3600.0), "{p}");
    // Pairs train one at a time and release their workspace: the larger of the peaks.
    let peak = modes
        .iter()
        .map(|m| m["peak_bytes"].as_u64().unwrap())
        .fold(capture["peak_bytes"].as_u64().unwrap(), u64::max);
    assert_eq!(p["peak_bytes"], peak, "{p}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bench_distill_names_bad_flags() {
    let config = assets().join("goldens/dit/tiny/diffusers/config.json");
    for (flags, message) in [
        (&["--latent", "2x6"][..], "--latent"),
        (&["--modes", "softmax"], "--modes"),
        (&["--block", "2"], "--block"),
        (&["--captures", "60"], "--captures"),
        (&["--feature-dim", "3"], "--feature-dim"),
        (&["--steps", "0"], "--steps"),
    ] {
        let (ok, stderr) = run(vdit()
            .args(["bench", "distill", "--random-weights", "--config"])
            .arg(&config)
            .args(flags));
        assert!(!ok && stderr.contains(message), "{flags:?}: {stderr}");
    }
    let (ok, stderr) = run(vdit().args(["bench", "distill"]));
    assert!(!ok && stderr.contains("--random-weights"), "{stderr}");
}

#[test]
fn selftest_prints_its_table_and_json() {
    let json = scratch("selftest").join("checks.json");
    let out = vdit()
        .args(["selftest", "--kernel", "norm", "--json"])
        .arg(&json)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("layer_norm") && text.contains("rms_norm"),
        "{text}"
    );
    assert!(text.contains(" 0 failed"), "{text}");
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let checks = written["checks"].as_array().unwrap();
    assert!(!checks.is_empty());
    assert!(checks
        .iter()
        .all(|c| c["passed"] == true && c["error"].as_f64().unwrap() < 1e-3));
    let (ok, out) = run(vdit().args(["selftest", "--kernel", "nothing"]));
    assert!(!ok && out.contains("--kernel nothing"), "{out}");
}

#[test]
fn bad_kernel_policies_name_the_flag() {
    for bad in ["flash=fastest", "matmul", "gemm=coop"] {
        let (ok, out) = run(vdit().args(["--kernels", bad, "info"]));
        assert!(!ok && out.contains("--kernels"), "{bad}: {out}");
    }
    let (ok, out) = run(vdit().args(["--kernels", "flash=general,matmul=portable", "info"]));
    assert!(ok, "{out}");
}
