//! Every file reader fed mutated copies of the goldens: safetensors (header and tensors), GGUF
//! (and the tokenizer in a text encoder's metadata), the shards index, PyTorch zip checkpoints
//! (the archive, and the pickle inside it), tokenizer.json, attention plans and model configs.
//! Harness and budgets: `fuzz/mod.rs`.

// A seed's hot bytes are a list of ranges, often of one.
#![allow(clippy::single_range_in_vec_init)]

mod fuzz;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use fuzz::mutate::{below, Seed};
use fuzz::Target;
use vdit_model::pipeline::ModelPaths;
use vdit_model::plan::PlanSpec;
use vdit_model::pth::PthFile;
use vdit_model::text::PromptTokenizer;
use vdit_model::vae::VaeConfig;
use vdit_model::weights::{DitConfig, WeightFile, WeightSet};
use vdit_wgpu::rng::Rng;

#[global_allocator]
static ALLOC: fuzz::alloc::CountingAlloc = fuzz::alloc::CountingAlloc;

/// Heap any reader may hold whatever the input: paths, error messages, parser state.
const BASE: usize = 4 << 20;

fn asset(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../assets")
        .join(rel)
}

fn read(rel: &str) -> Vec<u8> {
    std::fs::read(asset(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// A fresh folder for one target's inputs.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("fuzz-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

// ---- safetensors ----

/// Opens a weight file (safetensors or GGUF) and reads every tensor as f32.
fn read_every_tensor(path: &Path) -> Result<(), String> {
    let file = WeightFile::open(path).map_err(|e| e.to_string())?;
    let names: Vec<String> = file.names().map(str::to_string).collect();
    for name in names {
        file.get(&name)
            .and_then(|v| v.to_f32())
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The 8-byte length and the JSON header: what the reader interprets.
fn safetensors_seed(rel: &str) -> Seed {
    let bytes = read(rel);
    let header = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    Seed {
        name: rel.into(),
        hot: vec![0..8 + header],
        bytes,
    }
}

/// The header length field set to a lie: around the real length, the file's, or an extreme.
fn header_length_lie(data: &mut [u8], rng: &mut Rng) {
    if data.len() < 8 {
        return;
    }
    let real = u64::from_le_bytes(data[..8].try_into().unwrap());
    let len = data.len() as u64;
    let lie = match below(rng, 4) {
        0 => real.wrapping_add(below(rng, 9) as u64).wrapping_sub(4),
        1 => len.wrapping_add(below(rng, 17) as u64).wrapping_sub(16),
        2 => u64::MAX - below(rng, 8) as u64,
        _ => 1 << below(rng, 64),
    };
    data[..8].copy_from_slice(&lie.to_le_bytes());
}

#[test]
fn fuzz_safetensors() {
    let path = scratch("safetensors").join("input.safetensors");
    let report = fuzz::run(Target {
        name: "safetensors",
        seeds: [
            "goldens/scheduler/schedules.safetensors",
            "goldens/dit/tiny/io.safetensors",
            "goldens/dit/heads3/original_float16_sharded/diffusion_pytorch_model-00001-of-00002.safetensors",
            "goldens/t5/comfyui/umt5_tiny_fp16.safetensors",
            "default-model/text_encoder/model.safetensors",
            "goldens/fp8/dit_tiny_scaled_fp8.safetensors",
        ]
        .into_iter()
        .map(safetensors_seed)
        .collect(),
        lie: Some(header_length_lie),
        alloc_base: BASE,
        // Every tensor read as f32 is at most twice its stored bytes (f16, bf16).
        alloc_per_byte: 3,
        feed: Box::new(move |input| {
            std::fs::write(&path, input).unwrap();
            read_every_tensor(&path)
        }),
    });
    assert!(report.accepted > 0, "no seed was read: {report:?}");
}

// ---- GGUF ----

/// A count or offset of a GGUF header set to a lie: near the file's length, or an extreme.
fn gguf_field_lie(data: &mut [u8], rng: &mut Rng) {
    let header_end = data.len().min(4096);
    if header_end < 32 {
        return;
    }
    // The tensor and metadata counts, or any 8 bytes of the header (lengths, dimensions, offsets).
    let at = match below(rng, 3) {
        0 => 8,
        1 => 16,
        _ => 24 + below(rng, header_end - 32),
    };
    let len = data.len() as u64;
    let lie = match below(rng, 3) {
        0 => len.wrapping_add(below(rng, 65) as u64).wrapping_sub(32),
        1 => u64::MAX - below(rng, 8) as u64,
        _ => 1 << below(rng, 64),
    };
    data[at..at + 8].copy_from_slice(&lie.to_le_bytes());
}

/// Where the precompiled character map of a GGUF file's tokenizer starts.
fn charsmap_at(bytes: &[u8]) -> usize {
    find(bytes, b"tokenizer.ggml.precompiled_charsmap").expect("a character map")
}

#[test]
fn fuzz_gguf() {
    let path = scratch("gguf").join("input.gguf");
    let mut seeds: Vec<Seed> = [
        "goldens/gguf/dit_tiny_legacy.gguf",
        "goldens/gguf/dit_tiny_kquants.gguf",
    ]
    .into_iter()
    .map(|rel| {
        let bytes = read(rel);
        Seed {
            name: rel.into(),
            // The metadata and tensor directory; the data follows.
            hot: vec![0..bytes.len().min(6144)],
            bytes,
        }
    })
    .collect();
    // A text encoder with its tokenizer: the vocabulary, scores and types (arrays of strings
    // and numbers) before the character map, and the tensor directory after it.
    let rel = "goldens/gguf/umt5_tiny_q8_0.gguf";
    let bytes = read(rel);
    let directory = find(&bytes, b"token_embd.weight").unwrap_or(bytes.len());
    seeds.push(Seed {
        name: rel.into(),
        hot: vec![
            0..charsmap_at(&bytes) + 64,
            directory..bytes.len().min(directory + 4096),
        ],
        bytes,
    });
    let report = fuzz::run(Target {
        name: "gguf",
        seeds,
        lie: Some(gguf_field_lie),
        alloc_base: BASE,
        // Reading every tensor as f32 expands Q2_K's 84 bytes to 1 KiB (12x). Metadata arrays
        // of numbers keep the file's bytes, and a string array 24 bytes per string beside its
        // text (a string takes at least 8 bytes of the file).
        alloc_per_byte: 16,
        feed: Box::new(move |input| {
            std::fs::write(&path, input).unwrap();
            read_every_tensor(&path)
        }),
    });
    assert!(report.accepted > 0, "no seed was read: {report:?}");
}

/// The tokenizer in a GGUF text encoder's metadata, built and run.
#[test]
fn fuzz_gguf_tokenizer() {
    let path = scratch("gguf-tokenizer").join("input.gguf");
    let rel = "goldens/gguf/umt5_tiny_q8_0.gguf";
    let bytes = read(rel);
    let map = charsmap_at(&bytes);
    // The special ids follow the character map.
    let ids = find(&bytes, b"tokenizer.ggml.eos_token_id").unwrap();
    let seed = Seed {
        name: rel.into(),
        // The tokenizer's metadata, the character map's size and first trie units, the end of
        // its normalized strings and the special ids.
        hot: vec![
            find(&bytes, b"tokenizer.ggml.model").unwrap()..map + 4096,
            ids - 4096..ids + 160,
        ],
        bytes,
    };
    let report = fuzz::run(Target {
        name: "gguf-tokenizer",
        seeds: vec![seed],
        lie: Some(gguf_field_lie),
        alloc_base: BASE,
        // The character map is read three times over (checked, copied by the `tokenizers`
        // crate, its units widened to usize), and each byte of a piece may become a node of the
        // unigram model's trie (a hash map of its children).
        alloc_per_byte: 64,
        feed: Box::new(move |input| {
            std::fs::write(&path, input).unwrap();
            let file = WeightFile::open(&path).map_err(|e| e.to_string())?;
            let tokenizer = PromptTokenizer::from_gguf(&file).map_err(|e| e.to_string())?;
            for prompt in [
                "a red fox running through snow",
                "",
                "ünïcode ✓ 狐狸 ０１ \u{0}",
            ] {
                tokenizer.encode(prompt).map_err(|e| e.to_string())?;
            }
            Ok(())
        }),
    });
    assert!(report.accepted > 0, "no seed was read: {report:?}");
}

// ---- shards index ----

#[test]
fn fuzz_shards_index() {
    let dir = scratch("shards-index");
    let folders = [
        "goldens/t5/text_encoder",
        "goldens/dit/heads3/original_float16_sharded",
    ];
    let mut seeds = Vec::new();
    for folder in folders {
        for entry in std::fs::read_dir(asset(folder)).unwrap() {
            let p = entry.unwrap().path();
            let name = p.file_name().unwrap().to_str().unwrap().to_string();
            if name.ends_with(".index.json") {
                seeds.push(Seed::whole(name, std::fs::read(&p).unwrap()));
            } else if name.ends_with(".safetensors") {
                std::fs::copy(&p, dir.join(&name)).unwrap();
            }
        }
    }
    let index = dir.join("model.safetensors.index.json");
    let report = fuzz::run(Target {
        name: "shards-index",
        seeds,
        lie: None,
        // The shards' own headers are parsed too: a few hundred KiB beside the index.
        alloc_base: BASE,
        alloc_per_byte: 64,
        feed: Box::new(move |input| {
            std::fs::write(&index, input).unwrap();
            let set = WeightSet::open(&index).map_err(|e| e.to_string())?;
            let names: Vec<String> = set.names().map(str::to_string).collect();
            for name in names {
                set.get(&name).map_err(|e| e.to_string())?;
            }
            Ok(())
        }),
    });
    assert!(report.accepted > 0, "no seed was read: {report:?}");
}

// ---- PyTorch checkpoints ----

fn pth_seeds() -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(asset("goldens/pth"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "pth"))
        .collect();
    files.sort();
    files.push(asset("goldens/t5/original/models_t5_umt5-xxl-enc-bf16.pth"));
    files
        .into_iter()
        .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
        .collect()
}

/// Reads every tensor of a checkpoint, as a model load would.
fn read_pth(path: &Path) -> Result<(), String> {
    let file = PthFile::open(path).map_err(|e| e.to_string())?;
    let names: Vec<String> = file.names().map(str::to_string).collect();
    for name in names {
        file.get(&name).map_err(|e| e.to_string())?.to_f32();
    }
    Ok(())
}

#[test]
fn fuzz_pth_archive() {
    let path = scratch("pth-archive").join("input.pth");
    let seeds = pth_seeds()
        .into_iter()
        .map(|(name, bytes)| {
            // The local header and pickle at the start, the central directory at the end.
            let directory = find(&bytes, b"PK\x01\x02").unwrap_or(bytes.len());
            let hot = vec![0..bytes.len().min(4096), directory..bytes.len()];
            Seed { name, bytes, hot }
        })
        .collect();
    let report = fuzz::run(Target {
        name: "pth-archive",
        seeds,
        lie: None,
        alloc_base: BASE,
        // bf16 and f16 storages read as f32 (twice their bytes), and the zip crate's records
        // of a corrupt directory: 12 bytes per byte were seen for a directory shifted by
        // 7 bytes (tests/fuzz-regressions/pth-archive), as each entry's name, extra field and
        // comment are read from wherever the directory seems to be. This allows twice that.
        alloc_per_byte: 64,
        feed: Box::new(move |input| {
            std::fs::write(&path, input).unwrap();
            read_pth(&path)
        }),
    });
    assert!(report.accepted > 0, "no seed was read: {report:?}");
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The entries of a zip archive as (name, bytes); none for a seed that is no archive (the
/// truncated golden).
fn unzip(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    let Ok(mut archive) = zip::ZipArchive::new(std::io::Cursor::new(bytes)) else {
        return Vec::new();
    };
    (0..archive.len())
        .map(|i| {
            let mut f = archive.by_index(i).unwrap();
            let mut data = Vec::new();
            f.read_to_end(&mut data).unwrap();
            (f.name().to_string(), data)
        })
        .collect()
}

#[test]
fn fuzz_pth_pickle() {
    // Every seed's pickle, packed with the storages of all seeds (the largest of each key),
    // so that a mutated pickle meets real storages under the names it refers to.
    let mut pickles = Vec::new();
    let mut storages = std::collections::BTreeMap::<String, Vec<u8>>::new();
    for (name, bytes) in pth_seeds() {
        for (entry, data) in unzip(&bytes) {
            if entry.ends_with("/data.pkl") {
                pickles.push(Seed::whole(format!("{name}:{entry}"), data));
            } else if let Some((_, key)) = entry.split_once("/data/") {
                let slot = storages.entry(key.to_string()).or_default();
                if data.len() > slot.len() {
                    *slot = data;
                }
            }
        }
    }
    let storage_bytes: usize = storages.values().map(Vec::len).sum();
    let path = scratch("pth-pickle").join("input.pth");
    let report = fuzz::run(Target {
        name: "pth-pickle",
        seeds: pickles,
        lie: None,
        alloc_base: BASE + 3 * storage_bytes,
        alloc_per_byte: 64,
        feed: Box::new(move |pickle| {
            let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
            let stored = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Stored);
            zip.start_file("archive/data.pkl", stored).unwrap();
            zip.write_all(pickle).unwrap();
            for (key, data) in &storages {
                zip.start_file(format!("archive/data/{key}"), stored)
                    .unwrap();
                zip.write_all(data).unwrap();
            }
            let archive = zip.finish().unwrap().into_inner();
            std::fs::write(&path, archive).unwrap();
            read_pth(&path)
        }),
    });
    assert!(report.accepted > 0, "no seed was read: {report:?}");
}

// ---- tokenizer.json ----

/// The umT5 golden's tokenizer with a `Precompiled` normalizer in front, as the real umT5
/// tokenizer has: a character map (trie size, 512 trie units, strings) that maps 'a' to "x".
fn tokenizer_with_charsmap() -> Vec<u8> {
    let mut units = vec![0u32; 512];
    units[0x61] = 0x61 | 1 << 8;
    let mut map = ((units.len() * 4) as u32).to_le_bytes().to_vec();
    map.extend(units.iter().flat_map(|u| u.to_le_bytes()));
    map.extend(vec![b'x'; 0x162]);
    map.push(0);
    let mut json: serde_json::Value =
        serde_json::from_slice(&read("goldens/t5/tokenizer/tokenizer.json")).unwrap();
    json["normalizer"] = serde_json::json!({
        "type": "Sequence",
        "normalizers": [
            {"type": "Precompiled", "precompiled_charsmap": base64::encode(&map)},
            json["normalizer"].take(),
        ],
    });
    serde_json::to_vec(&json).unwrap()
}

#[test]
fn fuzz_tokenizer() {
    let path = scratch("tokenizer").join("tokenizer.json");
    let mut seeds: Vec<Seed> = [
        "default-model/tokenizer/tokenizer.json",
        "goldens/t5/tokenizer/tokenizer.json",
    ]
    .into_iter()
    .map(|rel| Seed::whole(rel, read(rel)))
    .collect();
    let charsmap = tokenizer_with_charsmap();
    // Most mutations go to the character map, the part the tokenizers crate trusts most.
    let at = find(&charsmap, b"precompiled_charsmap").unwrap();
    seeds.push(Seed {
        name: "with a Precompiled normalizer".into(),
        hot: vec![at..at + 4200],
        bytes: charsmap,
    });
    let report = fuzz::run(Target {
        name: "tokenizer",
        seeds,
        lie: None,
        // A regex repeated 2^31 times (tests/fuzz-regressions/tokenizer) makes the regex
        // crate allocate some 18 MB before its own size limit refuses the pattern.
        alloc_base: 32 << 20,
        // The vocabulary's maps, tries and the parsed JSON: peaks of 2.8 MB were seen for a
        // 25 KB file, half of what 64 bytes per byte allowed; this leaves twice the room.
        alloc_per_byte: 128,
        feed: Box::new(move |input| {
            std::fs::write(&path, input).unwrap();
            let tokenizer = PromptTokenizer::from_file(&path).map_err(|e| e.to_string())?;
            for prompt in ["a red fox running through snow", "", "ünïcode ✓ 狐狸 \u{0}"] {
                tokenizer.encode(prompt).map_err(|e| e.to_string())?;
            }
            Ok(())
        }),
    });
    assert!(report.accepted > 0, "no seed was read: {report:?}");
}

// ---- attention plans ----

#[test]
fn fuzz_attention_plan() {
    let config = DitConfig::from_json_file(asset("goldens/dit/tiny/diffusers/config.json"))
        .expect("the tiny DiT's config");
    let plans = [
        r#"{"default": "softmax", "layers": {"0-1": "hybrid:2"}, "feature_map": "hedgehog", "feature_weights": "phi.safetensors"}"#,
        r#"{"layers": {"0": "linear", "1": "rehyat:3:1"}, "feature_map": "poly", "powers": 3, "feature_weights": "phi.safetensors"}"#,
        r#"{"default": "hybrid:1", "layers": {"1-1": "linear"}, "feature_map": "elu1"}"#,
        r#"{"default": "rehyat:2:0", "feature_map": "elu1"}"#,
    ];
    let path = scratch("attention-plan").join("plan.json");
    let report = fuzz::run(Target {
        name: "attention-plan",
        seeds: plans
            .iter()
            .enumerate()
            .map(|(i, p)| Seed::whole(format!("plan {i}"), p.as_bytes().to_vec()))
            .collect(),
        lie: None,
        alloc_base: BASE,
        alloc_per_byte: 64,
        feed: Box::new(move |input| {
            std::fs::write(&path, input).unwrap();
            PlanSpec::read(&path, &config)
                .map(drop)
                .map_err(|e| e.to_string())
        }),
    });
    assert!(report.accepted > 0, "no seed was read: {report:?}");
}

/// The fuzzer's tokenizer findings, and a character map that would panic at the first prompt,
/// are errors that name the file.
#[test]
fn tokenizer_findings_are_clear_errors() {
    let kept = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-regressions/tokenizer");
    for file in [
        "precompiled-before-a-syntax-error.json",
        "decoder-cut-short.json",
    ] {
        let err = PromptTokenizer::from_file(kept.join(file))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(file) && err.contains("not valid JSON"),
            "{file}: {err}"
        );
    }
    // A Sequence whose "type" key was garbled (read by its fields) holding a character map
    // whose strings are not UTF-8.
    let file = kept.join("untyped-sequence-with-a-bad-charsmap.json");
    let err = PromptTokenizer::from_file(file).unwrap_err().to_string();
    assert!(
        err.contains("the normalized strings are not UTF-8"),
        "{err}"
    );
    let file = kept.join("precompiled-without-its-map.json");
    let err = PromptTokenizer::from_file(file).unwrap_err().to_string();
    assert!(err.contains("has no precompiled_charsmap"), "{err}");
    // A root unit whose children lie at 1 << 20, far outside the map's 512 units. In base64,
    // the first 12 characters are the trie size (2048), the root and one more byte.
    let mut json = tokenizer_with_charsmap();
    let at = find(&json, b"AAgAAAAAAAAA").unwrap();
    json[at..at + 12].copy_from_slice(b"AAgAAAAAEAAA");
    let path = scratch("tokenizer-charsmap").join("tokenizer.json");
    std::fs::write(&path, &json).unwrap();
    let err = PromptTokenizer::from_file(&path).unwrap_err().to_string();
    assert!(
        err.contains("precompiled_charsmap: a lookup reaches unit"),
        "{err}"
    );
}

// ---- model configs ----

/// A config.json (DiT or VAE, diffusers or original) and vdit.json, each parsed by every
/// reader of configs: a config meant for one is only refused by another.
#[test]
fn fuzz_configs() {
    let dir = scratch("configs");
    std::fs::write(dir.join("model_index.json"), "{}").unwrap();
    let report = fuzz::run(Target {
        name: "configs",
        seeds: [
            "goldens/dit/tiny/diffusers/config.json",
            "goldens/dit/tiny/original/config.json",
            "goldens/vae/tiny/diffusers/config.json",
            "goldens/t5/text_encoder/config.json",
            "default-model/vdit.json",
        ]
        .into_iter()
        .map(|rel| Seed::whole(rel, read(rel)))
        .collect(),
        lie: None,
        alloc_base: BASE,
        alloc_per_byte: 64,
        feed: Box::new(move |input| {
            let text = String::from_utf8_lossy(input);
            let path = dir.join("vdit.json");
            std::fs::write(&path, input).unwrap();
            // What the models derive from a valid config, too.
            let dit = DitConfig::from_json_str(&text, &path)
                .map_err(|e| e.to_string())
                .and_then(|c| {
                    c.validate()?;
                    std::hint::black_box(c.patch_volume());
                    Ok(())
                });
            let vae = VaeConfig::from_json_str(&text, &path)
                .map_err(|e| e.to_string())
                .and_then(|c| {
                    c.validate()?;
                    drop((c.stage_dims(), c.spatial_scale(), c.output_frames(21)));
                    Ok(())
                });
            let defaults = ModelPaths::resolve(&dir).map_err(|e| e.to_string());
            dit.or(vae).or(defaults.map(drop))
        }),
    });
    assert!(report.accepted > 0, "no seed was read: {report:?}");
}
