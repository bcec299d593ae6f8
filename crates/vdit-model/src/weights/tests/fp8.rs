//! fp8 weights: the float8 decodings against ml_dtypes, and the plain, ComfyUI-scaled and
//! `weight_scale` files read as their dequantised copies (goldens of tools/make_fp8_goldens.py).

use std::path::PathBuf;

use super::*;
use crate::weights::{Checkpoint, StoredDType, WeightFile};

fn goldens() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../assets/goldens/fp8")
}

#[test]
fn every_float8_code_decodes_as_ml_dtypes_does() {
    let file = WeightFile::open(goldens().join("float8.safetensors")).unwrap();
    for (name, dtype) in [
        ("e4m3fn", StoredDType::F8E4M3),
        ("e5m2", StoredDType::F8E5M2),
    ] {
        let codes = file.get(&format!("{name}.bytes")).unwrap().bytes().to_vec();
        let want = file
            .get(&format!("{name}.values"))
            .unwrap()
            .to_f32()
            .unwrap();
        let got = crate::weights::to_f32_values(&codes, dtype).unwrap();
        for ((code, g), w) in codes.iter().zip(&got).zip(&want) {
            assert!(
                g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()),
                "{name} code {code:#04x}: {g}, ml_dtypes gives {w}"
            );
        }
    }
}

#[test]
fn fp8_dit_files_read_as_their_dequantized_copies() {
    let config = crate::weights::DitConfig::from_json_file(goldens().join("config.json")).unwrap();
    for form in ["e4m3fn", "scaled_fp8", "weight_scale_fp8"] {
        let fp8 = Checkpoint::open(goldens().join(format!("dit_tiny_{form}.safetensors"))).unwrap();
        let copy =
            Checkpoint::open(goldens().join(format!("dit_tiny_{form}.dequantized.safetensors")))
                .unwrap();
        // Scales, markers and activation scales are neither missing nor unexpected tensors.
        fp8.verify(&config).unwrap();
        let mut eight_bit = 0;
        for canonical in copy.canonical_names() {
            let info = fp8.info(canonical).unwrap();
            eight_bit += matches!(info.dtype(), StoredDType::F8E4M3 | StoredDType::F8E5M2) as usize;
            let (got, want) = (
                fp8.read_f32(canonical).unwrap(),
                copy.read_f32(canonical).unwrap(),
            );
            assert!(
                got.iter()
                    .zip(&want)
                    .all(|(g, w)| g.to_bits() == w.to_bits()),
                "{form}: {canonical} ({})",
                info.dtype()
            );
            let halves = fp8.read_storage(canonical, vdit_wgpu::DType::F16).unwrap();
            assert!(
                halves.as_ref() == f16_bytes(&want).as_slice(),
                "{form}: {canonical} f16"
            );
        }
        assert!(eight_bit >= 20, "{form}: {eight_bit} fp8 tensors");
    }
}

#[test]
fn scales_that_cannot_be_applied_are_refused_by_name() {
    let dir = TempDir::new("fp8-scales");
    // 0x38 is 1.0 in E4M3.
    let weight = || {
        Raw::new(
            "blocks.0.ffn.0.weight",
            safetensors::Dtype::F8_E4M3,
            &[2, 2],
            vec![0x38; 4],
        )
    };
    // A block-wise scale (one per row), and a scale whose weight is not in the file.
    let path = dir.join("rows.safetensors");
    let rows = Raw::f32("blocks.0.ffn.0.weight_scale", &[2], &[1.0, 2.0]);
    write_safetensors(&path, &[weight(), rows]);
    assert_names(
        Checkpoint::open(&path),
        &["rows.safetensors", "weight_scale", "block-wise"],
    );
    let path = dir.join("orphan.safetensors");
    let orphan = Raw::f32("blocks.0.ffn.2.scale_weight", &[1], &[0.5]);
    write_safetensors(&path, &[weight(), orphan]);
    assert_names(
        Checkpoint::open(&path),
        &["orphan.safetensors", "'blocks.0.ffn.2.weight'"],
    );
}
