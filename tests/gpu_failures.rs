//! What a user sees when the GPU fails: running out of memory (a `--max-gpu-memory` cap makes
//! that happen on any adapter) is an error naming the model part and what would help, with no
//! output written; a device lost mid-generation ends it within seconds through `ModelError`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use vdit_model::dit::Precision;
use vdit_model::pipeline::{
    CancelToken, GenerateRequest, ModelPaths, Pipeline, Progress, Prompt, Stage,
};
use vdit_model::{ModelError, ModelPart};
use vdit_wgpu::{Gpu, GpuError, GpuOptions};

fn assets() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("assets")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vdit-failures-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `vdit` and returns (success, stderr); a panic is a failure of its own.
fn vdit(args: &[&str], paths: &[(&str, &Path)]) -> (bool, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vdit"));
    cmd.env("RUST_LOG", "error").args(args);
    for (flag, path) in paths {
        cmd.arg(flag).arg(path);
    }
    let out = cmd.output().expect("vdit runs");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!stderr.contains("panicked"), "vdit panicked:\n{stderr}");
    (out.status.success(), stderr)
}

/// The command failed with an out-of-memory error that names `part` and the limit, and
/// suggests `hint`; the output folder stayed empty (no file, no temporary file).
fn assert_out_of_memory(ok: bool, stderr: &str, part: &str, hint: &str, dir: &Path) {
    assert!(!ok, "the command succeeded under the cap:\n{stderr}");
    for want in [
        "out of GPU memory",
        "(limit 64.00 KiB)",
        &format!("in the {part};"),
        hint,
    ] {
        assert!(stderr.contains(want), "no '{want}' in:\n{stderr}");
    }
    let left: Vec<_> = std::fs::read_dir(dir).unwrap().collect();
    assert!(left.is_empty(), "output left behind: {left:?}");
}

#[test]
fn generate_under_a_small_cap_names_the_dit_and_writes_nothing() {
    let dir = scratch("generate");
    let (ok, stderr) = vdit(
        &[
            "generate",
            "--prompt",
            "a red fox",
            "--width",
            "32",
            "--height",
            "48",
            "--frames",
            "5",
            "--steps",
            "2",
            "--quiet",
            "--max-gpu-memory",
            "64K",
        ],
        &[("--output", &dir.join("fox.mp4"))],
    );
    assert_out_of_memory(ok, &stderr, "DiT", "--width/--height", &dir);
}

#[test]
fn each_command_names_its_part_when_memory_runs_out() {
    let vae = assets().join("goldens/vae/tiny");
    let dit = assets().join("goldens/dit/tiny");
    let cap = ["--max-gpu-memory", "64K"];

    let dir = scratch("vae-decode");
    let (ok, stderr) = vdit(
        &[&["vae-decode"][..], &cap].concat(),
        &[
            ("--model", &vae.join("diffusers")),
            ("--latent", &vae.join("io.safetensors")),
            ("--output", &dir.join("frames.safetensors")),
        ],
    );
    assert_out_of_memory(ok, &stderr, "VAE", "--vae-tile", &dir);
    // The same from the original .pth, whose upload errors pass through its own reader.
    let (ok, stderr) = vdit(
        &[&["vae-decode"][..], &cap].concat(),
        &[
            ("--model", &vae.join("original/Wan2.1_VAE.pth")),
            ("--latent", &vae.join("io.safetensors")),
            ("--output", &dir.join("frames.safetensors")),
        ],
    );
    assert_out_of_memory(ok, &stderr, "VAE", "--vae-tile", &dir);

    let dir = scratch("dit-forward");
    let io = dit.join("io.safetensors");
    let (ok, stderr) = vdit(
        &[&["dit-forward", "--timestep", "500"][..], &cap].concat(),
        &[
            ("--model", &dit.join("diffusers")),
            ("--latent", &io),
            ("--context", &io),
            ("--output", &dir.join("velocity.safetensors")),
        ],
    );
    assert_out_of_memory(ok, &stderr, "DiT", "--attention-plan", &dir);

    let dir = scratch("encode-prompt");
    let (ok, stderr) = vdit(
        &[&["encode-prompt", "--prompt", "a red fox"][..], &cap].concat(),
        &[
            ("--model", &assets().join("default-model")),
            ("--output", &dir.join("context.safetensors")),
        ],
    );
    assert_out_of_memory(ok, &stderr, "text encoder", "--prompt-embeds", &dir);
}

#[test]
fn a_bad_cap_names_the_flag() {
    let (ok, stderr) = vdit(&["info", "--max-gpu-memory", "lots"], &[]);
    assert!(
        !ok && stderr.contains("--max-gpu-memory") && stderr.contains("512M"),
        "{stderr}"
    );
}

fn tiny_request() -> GenerateRequest {
    let mut r = GenerateRequest::new(Prompt::Text("a red fox running through snow".into()));
    (r.width, r.height, r.frames, r.steps) = (32, 48, 5, 3);
    r
}

/// A device of its own: these tests change its limit or destroy it.
fn own_gpu(max_memory: Option<u64>) -> Gpu {
    Gpu::with_options(&GpuOptions {
        max_memory,
        ..GpuOptions::default()
    })
    .expect("a GPU")
}

/// Caps the pool at what it holds, plus a little, when `stage` begins.
struct CapAt<'g> {
    gpu: &'g Gpu,
    stage: Stage,
}

impl Progress for CapAt<'_> {
    fn begin(&mut self, stage: Stage, _total: usize) {
        if stage == self.stage {
            let (in_use, free) = self.gpu.pool_bytes();
            self.gpu.set_memory_limit(Some(in_use + free + (16 << 10)));
        }
    }
}

#[test]
fn the_library_names_the_part_that_ran_out() {
    let paths = ModelPaths::embedded_default().unwrap();
    let gpu = own_gpu(Some(64 << 10));
    let pipeline = Pipeline::new(&gpu, paths.clone(), Precision::F32);
    let err = pipeline
        .generate(
            &tiny_request(),
            &mut vdit_model::pipeline::Silent,
            &CancelToken::default(),
        )
        .expect_err("a generation under 64 KiB");
    assert!(
        matches!(
            err,
            ModelError::OutOfMemory {
                part: ModelPart::Dit,
                ..
            }
        ),
        "{err}"
    );

    for (stage, part) in [
        (Stage::EncodingPrompt, ModelPart::TextEncoder),
        (Stage::Decoding, ModelPart::Vae),
    ] {
        let gpu = own_gpu(None);
        let pipeline = Pipeline::new(&gpu, paths.clone(), Precision::F32);
        let mut progress = CapAt { gpu: &gpu, stage };
        let err = pipeline
            .generate(&tiny_request(), &mut progress, &CancelToken::default())
            .err()
            .unwrap_or_else(|| panic!("a generation capped at {stage:?}"));
        match &err {
            ModelError::OutOfMemory { part: p, .. } if *p == part => {}
            other => panic!("capped at {stage:?}: expected the {part} to run out, got: {other}"),
        }
        assert!(err.to_string().contains(part.advice()), "{err}");
    }
}

/// Destroys the device after the first denoising step, and notes when.
struct LoseDevice<'g> {
    gpu: &'g Gpu,
    destroyed_at: Option<Instant>,
}

impl Progress for LoseDevice<'_> {
    fn advance(&mut self, stage: Stage, done: usize) {
        if stage == Stage::Denoising && done == 1 {
            self.gpu.device.destroy();
            self.destroyed_at = Some(Instant::now());
        }
    }
}

#[test]
fn a_lost_device_ends_the_generation_with_an_error() {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let gpu = own_gpu(None);
        let paths = ModelPaths::embedded_default().unwrap();
        let pipeline = Pipeline::new(&gpu, paths, Precision::F32);
        let mut lose = LoseDevice {
            gpu: &gpu,
            destroyed_at: None,
        };
        let result = pipeline.generate(&tiny_request(), &mut lose, &CancelToken::default());
        let after = lose.destroyed_at.map(|t| t.elapsed());
        let _ = tx.send((result.map(drop), after));
    });
    // A hang would wait forever: give the whole tiny generation two minutes.
    let (result, after) = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("the generation hung after the device was lost");
    let err = result.expect_err("the generation succeeded on a destroyed device");
    assert!(
        matches!(err, ModelError::Gpu(GpuError::DeviceLost(_))),
        "not reported as a lost device: {err}"
    );
    assert!(err.to_string().contains("the GPU device was lost"), "{err}");
    let after = after.expect("the device was destroyed");
    assert!(
        after < Duration::from_secs(5),
        "the error came {after:?} after the loss"
    );
}
