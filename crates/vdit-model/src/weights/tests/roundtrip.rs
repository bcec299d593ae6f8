//! Reading back what was written, in every readable dtype and both storage types.

use std::borrow::Cow;

use half::{bf16, f16};
use safetensors::Dtype;
use vdit_wgpu::DType;

use super::*;
use crate::weights::{StoredDType, WeightFile, WeightSet};

/// More elements than one conversion chunk, and not a multiple of it.
const N: usize = 4096 * 2 + 123;

fn values() -> Vec<f32> {
    (0..N).map(|i| (i as f32 - 4000.0) * 0.37).collect()
}

fn as_f16(values: &[f32]) -> Vec<f32> {
    values.iter().map(|&v| f16::from_f32(v).to_f32()).collect()
}

fn as_bf16(values: &[f32]) -> Vec<f32> {
    values.iter().map(|&v| bf16::from_f32(v).to_f32()).collect()
}

fn f16_storage(values: &[f32]) -> Vec<u8> {
    f16_bytes(values)
}

#[test]
fn every_float_dtype_reads_back_as_f32_and_f16() {
    let dir = TempDir::new("roundtrip");
    let v = values();
    let f64_data: Vec<u8> = v.iter().flat_map(|&x| (x as f64).to_le_bytes()).collect();
    let path = dir.join("all.safetensors");
    write_safetensors(
        &path,
        &[
            Raw::new("a.f32", Dtype::F32, &[N], f32_bytes(&v)),
            Raw::new("a.f16", Dtype::F16, &[N], f16_bytes(&v)),
            Raw::new("a.bf16", Dtype::BF16, &[N], bf16_bytes(&v)),
            Raw::new("a.f64", Dtype::F64, &[N], f64_data),
        ],
    );
    let set = WeightSet::open(&path).unwrap();
    assert_eq!(set.len(), 4);
    assert_eq!(
        set.names().collect::<Vec<_>>(),
        ["a.bf16", "a.f16", "a.f32", "a.f64"]
    );

    let cases = [
        ("a.f32", StoredDType::F32, v.clone()),
        ("a.f16", StoredDType::F16, as_f16(&v)),
        ("a.bf16", StoredDType::BF16, as_bf16(&v)),
        ("a.f64", StoredDType::F64, v.clone()),
    ];
    for (name, dtype, expected) in cases {
        let info = set.info(name).unwrap();
        assert_eq!(info.dtype(), dtype);
        assert_eq!(info.shape(), [N]);
        assert_eq!(set.read_f32(name).unwrap(), expected, "{name} as f32");
        assert_eq!(
            set.read_storage(name, DType::F32).unwrap().as_ref(),
            f32_bytes(&expected).as_slice(),
            "{name} as f32 bytes"
        );
        // Rounding to f16 once from the stored value is what the GPU would hold.
        assert_eq!(
            set.read_storage(name, DType::F16).unwrap().as_ref(),
            f16_storage(&expected).as_slice(),
            "{name} as f16 bytes"
        );
    }
}

#[test]
fn matching_storage_is_borrowed_from_the_mapping() {
    let dir = TempDir::new("borrow");
    let path = dir.join("m.safetensors");
    let v = values();
    write_safetensors(
        &path,
        &[
            Raw::new("x32", Dtype::F32, &[N], f32_bytes(&v)),
            Raw::new("x16", Dtype::F16, &[N], f16_bytes(&v)),
        ],
    );
    let file = WeightFile::open(&path).unwrap();
    let x32 = file.get("x32").unwrap();
    assert!(matches!(
        x32.to_storage(DType::F32).unwrap(),
        Cow::Borrowed(_)
    ));
    assert!(matches!(x32.to_storage(DType::F16).unwrap(), Cow::Owned(_)));
    let x16 = file.get("x16").unwrap();
    assert!(matches!(
        x16.to_storage(DType::F16).unwrap(),
        Cow::Borrowed(_)
    ));
    assert_eq!(x16.bytes(), f16_bytes(&v).as_slice());
}

#[test]
fn empty_and_scalar_tensors_and_metadata() {
    let dir = TempDir::new("edge");
    let path = dir.join("e.safetensors");
    let header = r#"{"__metadata__":{"format":"pt"},"empty":{"dtype":"F32","shape":[0,3],"data_offsets":[0,0]},"scalar":{"dtype":"F32","shape":[],"data_offsets":[0,4]}}"#;
    write_raw_file(&path, header, &2.5f32.to_le_bytes());
    let file = WeightFile::open(&path).unwrap();
    assert_eq!(
        file.metadata().get("format").map(String::as_str),
        Some("pt")
    );
    assert_eq!(
        file.get("empty").unwrap().to_f32().unwrap(),
        Vec::<f32>::new()
    );
    assert_eq!(file.get("scalar").unwrap().to_f32().unwrap(), [2.5]);
    assert_eq!(file.get("scalar").unwrap().numel(), 1);
}

#[test]
fn integer_tensors_list_but_do_not_convert() {
    let dir = TempDir::new("int");
    let path = dir.join("i.safetensors");
    write_safetensors(&path, &[Raw::new("steps", Dtype::I64, &[2], vec![0u8; 16])]);
    let set = WeightSet::open(&path).unwrap();
    assert_eq!(set.info("steps").unwrap().dtype(), StoredDType::I64);
    let path_text = path.display().to_string();
    assert_names(set.read_f32("steps"), &[&path_text, "steps", "I64"]);
    assert_names(
        set.read_storage("steps", DType::F16),
        &[&path_text, "steps", "I64"],
    );
    assert_names(set.read_f32("nothing"), &[&path_text, "nothing"]);
}
