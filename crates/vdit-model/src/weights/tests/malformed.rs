//! Broken files: each gives an error naming the file (and the tensor where relevant), never a panic.

use super::*;
use crate::weights::{WeightFile, WeightSet};

fn valid_file_bytes() -> Vec<u8> {
    let dir = TempDir::new("valid");
    let path = dir.join("v.safetensors");
    write_safetensors(
        &path,
        &[
            Raw::f32("alpha", &[2, 3], &pattern(6, 1)),
            Raw::new(
                "beta",
                safetensors::Dtype::F16,
                &[5],
                f16_bytes(&pattern(5, 2)),
            ),
        ],
    );
    std::fs::read(&path).unwrap()
}

/// Opens `bytes` as a safetensors file and returns the error message, which must name the file
/// and `parts`.
fn open_error(label: &str, bytes: &[u8], parts: &[&str]) -> String {
    open_file_error(label, "safetensors", bytes, parts)
}

#[test]
fn file_shorter_than_the_length_field() {
    open_error("short", &[1, 2, 3], &["8-byte"]);
    open_error("empty", &[], &["8-byte"]);
}

#[test]
fn header_length_beyond_the_file() {
    let mut bytes = valid_file_bytes();
    bytes[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    open_error("longheader", &bytes, &["header length"]);
    bytes[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    open_error("maxheader", &bytes, &["header length"]);
}

#[test]
fn truncated_file_names_the_tensor_whose_data_is_cut() {
    let bytes = valid_file_bytes();
    // Cutting the last bytes leaves the header intact but the last tensor's data short.
    let message = open_error("truncated", &bytes[..bytes.len() - 3], &["beyond"]);
    assert!(
        message.contains("alpha") || message.contains("beta"),
        "{message}"
    );
}

#[test]
fn header_not_json() {
    let dir = TempDir::new("notjson");
    let path = dir.join("n.safetensors");
    write_raw_file(&path, "this is not json", &[]);
    assert_names(
        WeightFile::open(&path),
        &[&path.display().to_string(), "JSON"],
    );
    write_raw_file(&path, "[1, 2]", &[]);
    assert_names(
        WeightFile::open(&path),
        &[&path.display().to_string(), "JSON object"],
    );
    let mut bytes = 4u64.to_le_bytes().to_vec();
    bytes.extend_from_slice(&[0xff, 0xfe, 0x7b, 0x7d]);
    std::fs::write(&path, bytes).unwrap();
    assert_names(
        WeightFile::open(&path),
        &[&path.display().to_string(), "UTF-8"],
    );
}

#[test]
fn offsets_beyond_the_data() {
    let dir = TempDir::new("offsets");
    let path = dir.join("o.safetensors");
    let header = r#"{"ok":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"liar":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}"#;
    write_raw_file(&path, header, &[0u8; 12]);
    let p = path.display().to_string();
    assert_names(WeightFile::open(&path), &[&p, "liar", "beyond"]);
    let header = r#"{"huge":{"dtype":"F32","shape":[1],"data_offsets":[18446744073709551612,18446744073709551616]}}"#;
    write_raw_file(&path, header, &[0u8; 4]);
    assert_names(WeightFile::open(&path), &[&p, "huge"]);
    let header = r#"{"backwards":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}}"#;
    write_raw_file(&path, header, &[0u8; 4]);
    assert_names(WeightFile::open(&path), &[&p, "backwards"]);
}

#[test]
fn size_not_matching_the_shape() {
    let dir = TempDir::new("size");
    let path = dir.join("s.safetensors");
    let header = r#"{"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,20]}}"#;
    write_raw_file(&path, header, &[0u8; 24]);
    let p = path.display().to_string();
    assert_names(WeightFile::open(&path), &[&p, "'w'", "24 bytes"]);
    let header = r#"{"w":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,4]}}"#;
    write_raw_file(&path, header, &[0u8; 4]);
    assert_names(WeightFile::open(&path), &[&p, "'w'"]);
    let header = r#"{"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}"#;
    write_raw_file(&path, header, &[0u8; 4]);
    assert_names(WeightFile::open(&path), &[&p, "'w'", "shape"]);
}

#[test]
fn unknown_dtype() {
    let dir = TempDir::new("dtype");
    let path = dir.join("d.safetensors");
    let header = r#"{"q":{"dtype":"Q4_K","shape":[4],"data_offsets":[0,4]}}"#;
    write_raw_file(&path, header, &[0u8; 4]);
    assert_names(
        WeightFile::open(&path),
        &[&path.display().to_string(), "'q'", "Q4_K"],
    );
}

#[test]
fn missing_fields() {
    let dir = TempDir::new("fields");
    let path = dir.join("f.safetensors");
    let p = path.display().to_string();
    for header in [
        r#"{"t":{"shape":[1],"data_offsets":[0,4]}}"#,
        r#"{"t":{"dtype":"F32","data_offsets":[0,4]}}"#,
        r#"{"t":{"dtype":"F32","shape":[1]}}"#,
        r#"{"t":{"dtype":"F32","shape":[1],"data_offsets":[0]}}"#,
        r#"{"t":7}"#,
    ] {
        write_raw_file(&path, header, &[0u8; 4]);
        assert_names(WeightFile::open(&path), &[&p, "'t'"]);
    }
}

#[test]
fn overlapping_offsets_are_allowed() {
    let dir = TempDir::new("overlap");
    let path = dir.join("o.safetensors");
    let header = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#;
    let data = super::f32_bytes(&[1.0, 2.0]);
    write_raw_file(&path, header, &data);
    let file = WeightFile::open(&path).unwrap();
    assert_eq!(file.get("a").unwrap().to_f32().unwrap(), [1.0, 2.0]);
    assert_eq!(file.get("b").unwrap().to_f32().unwrap(), [2.0]);
}

#[test]
fn missing_file_names_the_path() {
    let dir = TempDir::new("absent");
    let path = dir.join("absent.safetensors");
    assert_names(WeightSet::open(&path), &[&path.display().to_string()]);
}

/// Every truncation and many single-byte corruptions of a valid file either open or fail
/// cleanly, and whatever opens reads without panicking.
#[test]
fn no_corruption_panics() {
    let bytes = valid_file_bytes();
    let dir = TempDir::new("fuzz");
    let path = dir.join("fuzz.safetensors");
    let try_all = |data: &[u8]| {
        std::fs::write(&path, data).unwrap();
        if let Ok(file) = WeightFile::open(&path) {
            for name in file.names() {
                if let Ok(view) = file.get(name) {
                    let _ = view.to_f32();
                    let _ = view.to_storage(vdit_wgpu::DType::F16);
                }
            }
        }
    };
    for len in 0..bytes.len() {
        try_all(&bytes[..len]);
    }
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..600 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let mut corrupted = bytes.clone();
        let at = (state as usize) % corrupted.len();
        corrupted[at] = (state >> 32) as u8;
        try_all(&corrupted);
    }
}
