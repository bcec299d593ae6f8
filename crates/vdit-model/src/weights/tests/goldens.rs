//! The committed DiT goldens (written by diffusers and the Wan2.1 conversion) open in every layout.

use super::*;
use crate::weights::{Checkpoint, DitConfig, Naming, COMFYUI_PREFIX};

fn goldens() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets/goldens/dit")
}

#[test]
fn golden_checkpoints_open_in_every_layout() {
    let tiny = goldens().join("tiny");
    if !tiny.is_dir() {
        eprintln!("no goldens at {}; skipped", tiny.display());
        return;
    }
    let diffusers = Checkpoint::open(tiny.join("diffusers")).unwrap();
    assert_eq!(diffusers.layout().naming, Naming::Diffusers);
    let config = diffusers.config().unwrap();
    assert_eq!((config.dim, config.heads, config.layers), (48, 2, 2));

    let original = Checkpoint::open(tiny.join("original")).unwrap();
    assert_eq!(original.layout().naming, Naming::Original);
    assert_eq!(original.config().unwrap(), config);

    // ComfyUI files carry no config.json; 48-wide models need the config given.
    let comfy = Checkpoint::open(tiny.join("comfyui")).unwrap();
    assert_eq!(comfy.layout().prefix, COMFYUI_PREFIX);
    comfy.verify(&config).unwrap();

    for name in [
        "blocks.1.norm2.weight",
        "scale_shift_table",
        "proj_out.weight",
    ] {
        let want = diffusers.read_f32(name).unwrap();
        assert_eq!(original.read_f32(name).unwrap(), want, "{name}");
        let bf16 = comfy.read_f32(name).unwrap();
        let worst = bf16
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs() / b.abs().max(1e-3))
            .fold(0f32, f32::max);
        assert!(worst < 1e-2, "{name}: bf16 off by {worst}");
    }

    let sharded = goldens().join("heads3/original_float16_sharded");
    let checkpoint = Checkpoint::open(&sharded).unwrap();
    assert_eq!(checkpoint.weights().files().len(), 2);
    let config: DitConfig = checkpoint.config().unwrap();
    assert_eq!(
        (config.heads, config.head_dim, config.text_len),
        (3, 16, 24)
    );
    // Published original configs carry no text_dim or patch_size: the shapes give them.
    assert_eq!(
        (config.text_dim, config.patch, config.freq_dim),
        (24, [1, 2, 2], 64)
    );
}
