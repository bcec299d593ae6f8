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

#[test]
fn dit_forward_writes_the_diffusers_velocity() {
    let golden = assets().join("goldens/dit/tiny");
    let dir = scratch("dit-forward");
    let output = dir.join("velocity.safetensors");
    let io = golden.join("io.safetensors");
    let timestep = read_tensor(&io, "timestep").unwrap().data[0];
    let (ok, stderr) = run(vdit()
        .args(["dit-forward", "--precision", "f32", "--model"])
        .arg(golden.join("diffusers"))
        .arg("--latent")
        .arg(&io)
        .arg("--context")
        .arg(&io)
        .args(["--timestep", &timestep.to_string(), "--output"])
        .arg(&output));
    assert!(ok, "{stderr}");
    let got = read_tensor(&output, "velocity").unwrap();
    let want = read_tensor(&io, "velocity").unwrap();
    assert_eq!(got.shape, want.shape);
    let want: Vec<f64> = want.data.iter().map(|&v| v as f64).collect();
    assert_close("vdit dit-forward", 0, &got.data, &want, 1e-4);
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
