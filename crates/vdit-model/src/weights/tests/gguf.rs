//! GGUF files: the block types against gguf-py's dequantisation, the golden DiT files against
//! their dequantised copies, and broken files refused with the file's name.

use std::path::PathBuf;

use super::*;
use crate::weights::quant::dequantize_blocks;
use crate::weights::{
    Checkpoint, FileFormat, GgufArray, GgufValue, QuantType, StoredDType, WeightFile,
};

fn goldens() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../assets/goldens/gguf")
}

const READABLE: [QuantType; 10] = [
    QuantType::Q4_0,
    QuantType::Q4_1,
    QuantType::Q5_0,
    QuantType::Q5_1,
    QuantType::Q8_0,
    QuantType::Q2_K,
    QuantType::Q3_K,
    QuantType::Q4_K,
    QuantType::Q5_K,
    QuantType::Q6_K,
];

/// Bit-for-bit equality (both sides compute in f32 in the same order).
fn assert_same_bits(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            g.to_bits() == w.to_bits() || (*g == 0.0 && *w == 0.0),
            "{what}: value {i} is {g}, gguf-py gives {w}"
        );
    }
}

#[test]
fn every_block_type_expands_as_gguf_py_does() {
    let file = WeightFile::open(goldens().join("blocks.safetensors")).unwrap();
    let mut checked = 0;
    for ty in READABLE {
        for kind in ["random", "quantized"] {
            let name = format!("{ty}.{kind}.bytes");
            let Some(_) = file.info(&name) else {
                assert_eq!(kind, "quantized", "{name} missing from the goldens");
                continue;
            };
            let view = file.get(&name).unwrap();
            let want = file
                .get(&format!("{ty}.{kind}.values"))
                .unwrap()
                .to_f32()
                .unwrap();
            let mut got = vec![f32::NAN; want.len()];
            assert!(dequantize_blocks(ty, view.bytes(), &mut got), "{name}");
            assert_same_bits(&name, &got, &want);
            checked += 1;
        }
    }
    assert_eq!(checked, 15, "10 random and 5 quantised block sets");
    // A type that is not expanded, and sizes that do not fit, are refused, not guessed.
    assert!(!dequantize_blocks(
        QuantType::IQ2_XXS,
        &[0; 66],
        &mut [0.0; 256]
    ));
    assert!(!dequantize_blocks(
        QuantType::Q8_0,
        &[0; 33],
        &mut [0.0; 32]
    ));
    assert!(!dequantize_blocks(
        QuantType::Q8_0,
        &[0; 34],
        &mut [0.0; 31]
    ));
}

#[test]
fn golden_dit_files_read_as_their_dequantized_copies() {
    for name in ["legacy", "kquants"] {
        let gguf = Checkpoint::open(goldens().join(format!("dit_tiny_{name}.gguf"))).unwrap();
        let file = &gguf.weights().files()[0];
        assert_eq!(file.format(), FileFormat::Gguf);
        assert_eq!(
            file.gguf_value("general.architecture")
                .and_then(|v| v.as_str()),
            Some("wan")
        );
        let copy =
            Checkpoint::open(goldens().join(format!("dit_tiny_{name}.dequantized.safetensors")))
                .unwrap();
        let names: Vec<&str> = copy.canonical_names().collect();
        assert_eq!(gguf.canonical_names().collect::<Vec<_>>(), names, "{name}");
        let mut quantised = 0;
        for canonical in names {
            let (g, c) = (gguf.info(canonical).unwrap(), copy.info(canonical).unwrap());
            assert_eq!(g.shape(), c.shape(), "{name}: {canonical}");
            quantised += matches!(g.dtype(), StoredDType::Quant(_)) as usize;
            let what = format!("{name}: {canonical} ({})", g.dtype());
            assert_same_bits(
                &what,
                &gguf.read_f32(canonical).unwrap(),
                &copy.read_f32(canonical).unwrap(),
            );
            // The f16 storage of a quantised tensor is its f32 values rounded.
            let halves = gguf.read_storage(canonical, vdit_wgpu::DType::F16).unwrap();
            let rounded = f16_bytes(&copy.read_f32(canonical).unwrap());
            assert!(halves.as_ref() == rounded.as_slice(), "{what}: f16 storage");
        }
        assert!(
            quantised >= 24,
            "{name}: only {quantised} quantised tensors"
        );
        // Exactly the tensors of the model's config, in its shapes.
        let config = crate::weights::DitConfig::from_json_file(
            goldens().join("../dit/tiny/diffusers/config.json"),
        )
        .unwrap();
        gguf.verify(&config).unwrap();
    }
}

/// A GGUF file written by hand: metadata entries and tensors (name, dims innermost first, GGML
/// type id, data), the data aligned to 32 bytes.
#[derive(Default)]
struct Gguf {
    version: u32,
    metadata: Vec<(String, u32, Vec<u8>)>,
    tensors: Vec<(String, Vec<u64>, u32, Vec<u8>)>,
}

fn string(s: &str) -> Vec<u8> {
    let mut b = (s.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(s.as_bytes());
    b
}

impl Gguf {
    fn new() -> Self {
        Self {
            version: 3,
            ..Default::default()
        }
    }
    fn meta_str(mut self, key: &str, value: &str) -> Self {
        self.metadata.push((key.into(), 8, string(value)));
        self
    }
    fn tensor(mut self, name: &str, dims: &[u64], ty: u32, data: Vec<u8>) -> Self {
        self.tensors.push((name.into(), dims.to_vec(), ty, data));
        self
    }
    fn f32(self, name: &str, dims: &[u64], seed: usize) -> Self {
        let n = dims.iter().product::<u64>() as usize;
        self.tensor(name, dims, 0, f32_bytes(&pattern(n, seed)))
    }
    fn bytes(&self) -> Vec<u8> {
        let mut b = b"GGUF".to_vec();
        b.extend(self.version.to_le_bytes());
        b.extend((self.tensors.len() as u64).to_le_bytes());
        b.extend((self.metadata.len() as u64).to_le_bytes());
        for (key, ty, value) in &self.metadata {
            b.extend(string(key));
            b.extend(ty.to_le_bytes());
            b.extend(value);
        }
        let mut offset = 0u64;
        for (name, dims, ty, data) in &self.tensors {
            b.extend(string(name));
            b.extend((dims.len() as u32).to_le_bytes());
            for d in dims {
                b.extend(d.to_le_bytes());
            }
            b.extend(ty.to_le_bytes());
            b.extend(offset.to_le_bytes());
            offset += (data.len() as u64).div_ceil(32) * 32;
        }
        for (_, _, _, data) in &self.tensors {
            b.resize(b.len().div_ceil(32) * 32, 0);
            b.extend(data);
        }
        b
    }
}

fn small() -> Gguf {
    Gguf::new()
        .meta_str("general.architecture", "wan")
        .f32("a", &[3, 2], 1)
        .tensor("q", &[32, 2], 8, vec![0x11; 68])
}

fn gguf_error(label: &str, bytes: &[u8], parts: &[&str]) -> String {
    open_file_error(label, "gguf", bytes, parts)
}

#[test]
fn a_hand_written_file_reads_with_reversed_dimensions() {
    let dir = TempDir::new("gguf-ok");
    let path = dir.join("ok.gguf");
    std::fs::write(&path, small().bytes()).unwrap();
    let file = WeightFile::open(&path).unwrap();
    assert_eq!(file.info("a").unwrap().shape(), &[2, 3]);
    assert_eq!(file.get("a").unwrap().to_f32().unwrap(), pattern(6, 1));
    let q = file.info("q").unwrap();
    assert_eq!(
        (q.shape(), q.dtype()),
        (&[2usize, 32][..], StoredDType::Quant(QuantType::Q8_0))
    );
    // d = f16 0x1111, every value the byte 0x11 = 17.
    let d = half::f16::from_bits(0x1111).to_f32();
    assert!(file
        .get("q")
        .unwrap()
        .to_f32()
        .unwrap()
        .iter()
        .all(|&v| v == 17.0 * d));
    assert_eq!(file.metadata()["general.architecture"], "wan");
    // Five dimensions, as ComfyUI-GGUF's fix for Wan's patch embedding writes it.
    std::fs::write(&path, Gguf::new().f32("p", &[2, 2, 1, 3, 4], 2).bytes()).unwrap();
    let file = WeightFile::open(&path).unwrap();
    assert_eq!(file.info("p").unwrap().shape(), &[4, 3, 1, 2, 2]);
    assert_eq!(file.get("p").unwrap().to_f32().unwrap(), pattern(48, 2));
}

#[test]
fn broken_gguf_files_are_refused_with_their_name() {
    let good = small().bytes();
    gguf_error("magic", b"GGUX\x03\0\0\0", &["does not start with 'GGUF'"]);
    gguf_error("empty", b"", &["GGUF"]);
    let mut v1 = good.clone();
    v1[4] = 1;
    gguf_error("v1", &v1, &["version 1"]);
    let mut big_endian = good.clone();
    big_endian[4..8].copy_from_slice(&3u32.to_be_bytes());
    gguf_error("be", &big_endian, &["big-endian"]);
    // Every truncation is an error, never a panic.
    for n in 0..good.len() {
        let dir = TempDir::new("cut");
        let path = dir.join("cut.gguf");
        std::fs::write(&path, &good[..n]).unwrap();
        assert!(
            WeightFile::open(&path).is_err(),
            "cut at {n} of {}",
            good.len()
        );
    }
    // Counts no file of this size can hold.
    let mut counts = good.clone();
    counts[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    gguf_error("tensors", &counts, &["claims"]);
    let mut counts = good.clone();
    counts[16..24].copy_from_slice(&(1u64 << 40).to_le_bytes());
    gguf_error("kv", &counts, &["claims"]);
    // An unknown type, a type vdit names but does not read, and a row that splits a block.
    gguf_error(
        "type",
        &small()
            .f32("x", &[4], 0)
            .tensor("u", &[4], 99, vec![0; 16])
            .bytes(),
        &["'u'", "GGML type 99"],
    );
    gguf_error(
        "rows",
        &Gguf::new().tensor("r", &[16, 2], 8, vec![0; 34]).bytes(),
        &["'r'", "whole Q8_0 blocks"],
    );
    // Data beyond the end, and an offset off the alignment.
    let mut lying = Gguf::new().f32("a", &[8], 0).bytes();
    lying.truncate(lying.len() - 4);
    gguf_error("short", &lying, &["'a'", "reach beyond"]);
    let mut misaligned = good.clone();
    let at = misaligned
        .windows(1 + 8 + 4)
        .position(|w| w[0] == b'q' && w[1..5] == 2u32.to_le_bytes())
        .unwrap();
    let offset_at = at + 1 + 4 + 16 + 4;
    misaligned[offset_at..offset_at + 8].copy_from_slice(&4u64.to_le_bytes());
    gguf_error("aligned", &misaligned, &["'q'", "alignment"]);
    // Duplicate names, an impossible original shape, a bad alignment.
    gguf_error(
        "dup",
        &Gguf::new().f32("a", &[2], 0).f32("a", &[2], 1).bytes(),
        &["'a' appears twice"],
    );
    let mut shape = Vec::new();
    shape.extend(5u32.to_le_bytes());
    shape.extend(2u64.to_le_bytes());
    shape.extend(7i32.to_le_bytes());
    shape.extend(7i32.to_le_bytes());
    let mut orig = Gguf::new().f32("a", &[6], 0);
    orig.metadata
        .push(("comfy.gguf.orig_shape.a".into(), 9, shape));
    gguf_error("orig", &orig.bytes(), &["'a'", "original shape [7, 7]"]);
    let mut align = Gguf::new().f32("a", &[6], 0);
    align
        .metadata
        .push(("general.alignment".into(), 4, 24u32.to_le_bytes().to_vec()));
    gguf_error("align", &align.bytes(), &["general.alignment"]);
    // Arrays claiming more items than bytes, nested without end.
    let mut array = 0u32.to_le_bytes().to_vec();
    array.extend(u64::MAX.to_le_bytes());
    let mut huge = Gguf::new();
    huge.metadata.push(("k".into(), 9, array));
    gguf_error("array", &huge.bytes(), &["'k'", "claims"]);
}

#[test]
fn a_gguf_of_another_model_is_not_taken_for_a_dit() {
    let dir = TempDir::new("arch");
    let path = dir.join("llama.gguf");
    std::fs::write(
        &path,
        Gguf::new()
            .meta_str("general.architecture", "llama")
            .f32("token_embd.weight", &[4, 4], 0)
            .bytes(),
    )
    .unwrap();
    let message = Checkpoint::open(&path).unwrap_err().to_string();
    assert!(
        message.contains("llama.gguf") && message.contains("'llama' model"),
        "{message}"
    );
}

/// An array entry: item type, count, items.
fn array(item: u32, count: u64, items: &[u8]) -> Vec<u8> {
    let mut b = item.to_le_bytes().to_vec();
    b.extend(count.to_le_bytes());
    b.extend(items);
    b
}

#[test]
fn metadata_arrays_keep_their_values_compactly() {
    let mut g = Gguf::new().f32("a", &[2], 0);
    let scores: Vec<u8> = [-1.5f32, 0.25, -10000.0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let strings: Vec<u8> = ["<pad>", "", "\u{2581}fox"]
        .iter()
        .flat_map(|s| string(s))
        .collect();
    let mut nested = array(4, 2, &[1, 0, 0, 0, 2, 0, 0, 0]);
    nested.extend(array(4, 1, &[3, 0, 0, 0]));
    for (key, value) in [
        ("bytes", array(0, 4, &[0, 1, 0xfe, 0xff])),
        ("scores", array(6, 3, &scores)),
        ("types", array(5, 2, &[1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff])),
        ("flags", array(7, 2, &[1, 0])),
        ("tokens", array(8, 3, &strings)),
        ("nested", array(9, 2, &nested)),
    ] {
        g.metadata.push((key.into(), 9, value));
    }
    let dir = TempDir::new("gguf-arrays");
    let path = dir.join("arrays.gguf");
    std::fs::write(&path, g.bytes()).unwrap();
    let file = WeightFile::open(&path).unwrap();
    let get = |k: &str| file.gguf_value(k).unwrap().as_array().unwrap();
    assert_eq!(get("bytes").as_bytes(), Some(&[0, 1, 0xfe, 0xff][..]));
    assert_eq!(get("bytes").len(), 4);
    assert_eq!(get("scores").to_f64s(), Some(vec![-1.5, 0.25, -10000.0]));
    assert_eq!(get("scores").to_u64s(), None);
    let types: Vec<GgufValue> = get("types").numbers().unwrap().collect();
    assert_eq!(types, [GgufValue::Int(1), GgufValue::Int(-1)]);
    assert_eq!(get("types").to_u64s(), None, "-1 is no size");
    let flags: Vec<GgufValue> = get("flags").numbers().unwrap().collect();
    assert_eq!(flags, [GgufValue::Bool(true), GgufValue::Bool(false)]);
    assert_eq!(
        get("tokens").as_strings().unwrap(),
        ["<pad>", "", "\u{2581}fox"]
    );
    match get("nested") {
        GgufArray::Arrays(items) => {
            assert_eq!(items[0].to_u64s(), Some(vec![1, 2]));
            assert_eq!(items[1].to_u64s(), Some(vec![3]));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(file.metadata()["scores"], "[-1.5, 0.25, -10000]");
    assert_eq!(
        file.metadata()["tokens"],
        "[\"<pad>\", \"\", \"\u{2581}fox\"]"
    );

    // A bool neither 0 nor 1, an unknown item type, and counts beyond the bytes of each kind.
    for (label, value, want) in [
        ("bool", array(7, 2, &[1, 2]), "neither 0 nor 1"),
        ("item", array(13, 1, &[0]), "unknown value type 13"),
        ("floats", array(6, 1 << 40, &[0; 16]), "claims"),
        ("strings", array(8, 1 << 40, &string("x")), "claims"),
        ("arrays", array(9, 1 << 20, &[0; 64]), "claims"),
    ] {
        let mut g = Gguf::new().f32("a", &[2], 0);
        g.metadata.push(("k".into(), 9, value));
        gguf_error(label, &g.bytes(), &["'k'", want]);
    }
}
