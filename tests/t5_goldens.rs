//! The umT5 encoder and tokenizer against transformers' UMT5EncoderModel on a tiny random-weight
//! model with a small Unigram tokenizer (goldens made by tools/make_t5_goldens.py), through every
//! weight layout; and the restricted unpickler against malicious and broken checkpoints.

use std::path::{Path, PathBuf};

use vdit_model::dit::Precision;
use vdit_model::pth::PthFile;
use vdit_model::text::{
    clean_prompt, relative_position_bucket, PromptTokenizer, Residency, UmT5Encoder, TEXT_LEN,
};
use vdit_model::weights::WeightFile;
use vdit_wgpu::testing::{rel_l2, test_gpu};

fn goldens() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/goldens")
}

struct Prompt {
    name: String,
    prompt: String,
    cleaned: String,
    ids: Vec<u32>,
}

fn prompts() -> Vec<Prompt> {
    let text = std::fs::read_to_string(goldens().join("t5/prompts.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|p| Prompt {
            name: p["name"].as_str().unwrap().into(),
            prompt: p["prompt"].as_str().unwrap().into(),
            cleaned: p["cleaned"].as_str().unwrap().into(),
            ids: p["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect(),
        })
        .collect()
}

fn golden_hidden(name: &str) -> Vec<f32> {
    let io = WeightFile::open(goldens().join("t5/io.safetensors")).unwrap();
    io.get(&format!("{name}.hidden")).unwrap().to_f32().unwrap()
}

#[test]
fn clean_up_and_ids_match_the_reference() {
    let tok = PromptTokenizer::from_file(goldens().join("t5/tokenizer")).unwrap();
    let all = prompts();
    assert!(
        all.iter().any(|p| p.ids.len() == TEXT_LEN),
        "a truncated prompt"
    );
    for p in &all {
        assert_eq!(
            clean_prompt(&p.prompt),
            p.cleaned,
            "clean-up of '{}'",
            p.name
        );
        let ids = tok.encode(&p.prompt).unwrap();
        assert_eq!(ids, p.ids, "ids of '{}'", p.name);
        assert_eq!(*ids.last().unwrap(), tok.eos_id());
    }
}

#[test]
fn relative_position_buckets_match_the_reference() {
    let io = WeightFile::open(goldens().join("t5/io.safetensors")).unwrap();
    let want = io.get("buckets").unwrap().to_f32().unwrap();
    let center = (want.len() / 2) as i64;
    for (i, &w) in want.iter().enumerate() {
        let got = relative_position_bucket(i as i64 - center, 32, 128);
        assert_eq!(got as f32, w, "relative position {}", i as i64 - center);
    }
}

/// Encodes every golden prompt's ids with the encoder at `weights` and checks each context:
/// the prompt's rows against transformers within `tol` (relative L2), the rest exactly zero.
/// Returns the worst error.
fn check(weights: &str, precision: Precision, residency: Residency, tol: f64) -> f64 {
    let gpu = test_gpu();
    let enc = UmT5Encoder::load(gpu, &goldens().join(weights), precision, residency).unwrap();
    let d = enc.config().d_model;
    let all = prompts();
    let ids: Vec<&[u32]> = all.iter().map(|p| p.ids.as_slice()).collect();
    let contexts = enc.encode_ids(gpu, &ids).unwrap();
    let mut worst: f64 = 0.0;
    for (p, ctx) in all.iter().zip(&contexts) {
        assert_eq!(ctx.shape(), &[TEXT_LEN, d]);
        let got = ctx.to_vec_f32(gpu).unwrap();
        let rows = p.ids.len();
        assert!(
            got[rows * d..].iter().all(|&x| x == 0.0),
            "{weights} '{}': padding rows are not zero",
            p.name
        );
        let want: Vec<f64> = golden_hidden(&p.name).iter().map(|&x| x as f64).collect();
        let err = rel_l2(&got[..rows * d], &want);
        eprintln!(
            "{weights} {precision:?} {residency:?} '{}' ({rows} tokens): relative L2 {err:.2e}",
            p.name
        );
        assert!(err <= tol, "{weights} '{}': {err:.3e} > {tol:.1e}", p.name);
        worst = worst.max(err);
    }
    enc.free(gpu);
    worst
}

#[test]
fn f32_matches_transformers_in_hf_layout() {
    check("t5/text_encoder", Precision::F32, Residency::Resident, 1e-4);
}

#[test]
fn f32_matches_transformers_from_the_original_pth() {
    check(
        "t5/original/models_t5_umt5-xxl-enc-bf16.pth",
        Precision::F32,
        Residency::Streamed,
        1e-4,
    );
}

#[test]
fn f32_matches_transformers_from_the_comfyui_file() {
    check(
        "t5/comfyui/umt5_tiny_fp16.safetensors",
        Precision::F32,
        Residency::Resident,
        1e-4,
    );
}

#[test]
fn f32_matches_transformers_from_a_gguf_file_with_llama_cpp_names() {
    check(
        "gguf/umt5_tiny_f32.gguf",
        Precision::F32,
        Residency::Resident,
        1e-4,
    );
}

/// The context of every golden prompt from the encoder at `weights`.
fn contexts(weights: &str) -> Vec<Vec<f32>> {
    let gpu = test_gpu();
    let enc = UmT5Encoder::load(
        gpu,
        &goldens().join(weights),
        Precision::F32,
        Residency::Resident,
    )
    .unwrap();
    let all = prompts();
    let ids: Vec<&[u32]> = all.iter().map(|p| p.ids.as_slice()).collect();
    let out = enc
        .encode_ids(gpu, &ids)
        .unwrap()
        .iter()
        .map(|c| c.to_vec_f32(gpu).unwrap())
        .collect();
    enc.free(gpu);
    out
}

#[test]
fn a_q8_0_gguf_encoder_equals_its_weights_dequantized_by_gguf_py() {
    // Q8_0 weights and embedding (rows read and expanded one token at a time), F16 for the rest.
    let gguf = contexts("gguf/umt5_tiny_q8_0.gguf");
    let copy = contexts("gguf/umt5_tiny_q8_0.dequantized.safetensors");
    for (g, c) in gguf.iter().zip(&copy) {
        let c: Vec<f64> = c.iter().map(|&x| x as f64).collect();
        let err = rel_l2(g, &c);
        assert!(
            err <= 1e-6,
            "Q8_0 GGUF against its dequantised copy: {err:.2e}"
        );
    }
}

#[test]
fn a_scaled_fp8_encoder_equals_its_weights_dequantized_by_ml_dtypes() {
    // ComfyUI's scaled fp8 form: every matrix, the embedding included, F8_E4M3 with a scale.
    let fp8 = contexts("fp8/umt5_tiny_scaled_fp8.safetensors");
    let copy = contexts("fp8/umt5_tiny_scaled_fp8.dequantized.safetensors");
    for (g, c) in fp8.iter().zip(&copy) {
        let c: Vec<f64> = c.iter().map(|&x| x as f64).collect();
        let err = rel_l2(g, &c);
        assert!(
            err <= 1e-6,
            "scaled fp8 against its dequantised copy: {err:.2e}"
        );
    }
}

#[test]
fn f16_weights_match_transformers() {
    if !test_gpu().caps.shader_f16 {
        eprintln!("skipping f16: the adapter lacks SHADER_F16");
        return;
    }
    check("t5/text_encoder", Precision::F16, Residency::Streamed, 1e-3);
    check(
        "t5/original/models_t5_umt5-xxl-enc-bf16.pth",
        Precision::F16,
        Residency::Resident,
        1e-3,
    );
}

#[test]
fn hf_and_pth_layouts_agree_and_prompts_encode_from_a_checkpoint_root() {
    let gpu = test_gpu();
    // A diffusers-style root (text_encoder/ + tokenizer/) and a Wan2.1 root (.pth + google/).
    let hf = UmT5Encoder::load(
        gpu,
        &goldens().join("t5"),
        Precision::F32,
        Residency::Resident,
    )
    .unwrap();
    let wan = UmT5Encoder::load(
        gpu,
        &goldens().join("t5/original"),
        Precision::F32,
        Residency::Streamed,
    )
    .unwrap();
    assert_eq!(hf.config(), wan.config());
    assert!(wan
        .weights_path()
        .ends_with("models_t5_umt5-xxl-enc-bf16.pth"));
    let all = prompts();
    let texts: Vec<&str> = all.iter().map(|p| p.prompt.as_str()).collect();
    let a = hf.encode_batch(gpu, &texts).unwrap();
    let b = wan.encode_batch(gpu, &texts).unwrap();
    for ((p, a), b) in all.iter().zip(&a).zip(&b) {
        let a = a.to_vec_f32(gpu).unwrap();
        let b: Vec<f64> = b
            .to_vec_f32(gpu)
            .unwrap()
            .iter()
            .map(|&x| x as f64)
            .collect();
        let err = rel_l2(&a, &b);
        assert!(
            err < 1e-6,
            "'{}': HF and .pth layouts differ by {err:.2e}",
            p.name
        );
        let d = hf.config().d_model;
        let want: Vec<f64> = golden_hidden(&p.name).iter().map(|&x| x as f64).collect();
        let err = rel_l2(&a[..p.ids.len() * d], &want);
        assert!(err < 1e-4, "'{}' from text: {err:.2e}", p.name);
    }
    let single = hf.encode(gpu, "").unwrap();
    assert_eq!(single.shape(), &[TEXT_LEN, hf.config().d_model]);
}

// --- the restricted unpickler ------------------------------------------------------------------

fn pth(name: &str) -> PathBuf {
    goldens().join("pth").join(name)
}

#[test]
fn malicious_checkpoints_are_refused_and_run_nothing() {
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(goldens().join("pth/goldens.json")).unwrap())
            .unwrap();
    let markers: Vec<String> = info["markers"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    for m in &markers {
        let _ = std::fs::remove_file(m);
    }
    let cases = [
        ("posix_system.pth", "posix.system"),
        ("builtins_eval.pth", "__builtin__.eval"),
        ("builtins_exec.pth", "__builtin__.exec"),
        ("os_system.pth", "os.system"),
        ("stack_global_getattr.pth", "builtins.getattr"),
        ("reduce_storage_class.pth", "calls the storage class"),
        ("inst_os_system.pth", "opcode 0x69"),
    ];
    for (file, what) in cases {
        let err = PthFile::open(pth(file)).unwrap_err().to_string();
        eprintln!("{file}: {err}");
        assert!(
            err.contains(file) && err.contains(what) && err.contains("nothing was executed"),
            "{file}: {err}"
        );
        // Through the text encoder's loader as well.
        let err = UmT5Encoder::load(test_gpu(), &pth(file), Precision::F32, Residency::Streamed)
            .err()
            .expect("refused")
            .to_string();
        assert!(err.contains(what), "{file}: {err}");
    }
    for m in &markers {
        assert!(!Path::new(m).exists(), "{m} was created");
    }
}

#[test]
fn a_truncated_checkpoint_is_an_error() {
    let ok = PthFile::open(pth("valid.pth")).unwrap();
    assert_eq!(
        ok.get("weight").unwrap().to_f32(),
        vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    );
    let err = PthFile::open(pth("truncated.pth")).unwrap_err().to_string();
    assert!(err.contains("truncated.pth"), "{err}");
}

// --- the tokenizer in a GGUF file's metadata -----------------------------------------------------

/// Strings of every kind the tokenizer meets: accents precomposed and combining, digits plain and
/// fullwidth, runs of spaces, emoji, ligatures, other scripts, markup, long text.
fn tokenizer_strings() -> Vec<String> {
    let mut strings: Vec<String> = [
        "",
        "a red fox running through snow",
        "café naïve résumé Ångström, crème brûlée",
        "cafe\u{301} nai\u{308}ve",
        "digits 0123456789, 3.14159 and ０１２３ (fullwidth), ²³ ½",
        "  spaces   between\twords \n and  lines  ",
        "emoji 🦊🔥✨ and 👩‍👩‍👧 and ✓",
        "ﬁne ﬂower ﬀ, Ⅻ ① ㎏",
        "狐狸在雪地里奔跑 Лиса бежит по снегу",
        "&lt;b&gt;bold&lt;/b&gt; <i>markup</i>",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    strings.push("a fox in the snow, ".repeat(120));
    strings
}

fn gguf_tokenizer(rel: &str) -> PromptTokenizer {
    let file = WeightFile::open(goldens().join(rel)).unwrap();
    PromptTokenizer::from_gguf(&file).unwrap()
}

#[test]
fn a_gguf_files_tokenizer_gives_the_ids_of_its_tokenizer_json() {
    let json = PromptTokenizer::from_file(goldens().join("t5/tokenizer")).unwrap();
    for rel in ["gguf/umt5_tiny_f32.gguf", "gguf/umt5_tiny_q8_0.gguf"] {
        let gguf = gguf_tokenizer(rel);
        assert_eq!(gguf.eos_id(), json.eos_id(), "{rel}");
        // The vocabulary without the converter's padding up to the embedding's 408 rows.
        assert_eq!(gguf.vocab_size(), json.vocab_size(), "{rel}");
        for s in tokenizer_strings() {
            let want = json.encode(&s).unwrap();
            assert_eq!(gguf.encode(&s).unwrap(), want, "{rel}: {s:?}");
        }
        for p in prompts() {
            assert_eq!(
                gguf.encode(&p.prompt).unwrap(),
                p.ids,
                "{rel}: '{}'",
                p.name
            );
        }
        // --tokenizer takes a GGUF file as well.
        let again = PromptTokenizer::from_file(goldens().join(rel)).unwrap();
        assert_eq!(
            again.encode("a red fox").unwrap(),
            json.encode("a red fox").unwrap()
        );
    }
}

#[test]
fn a_gguf_encoder_encodes_prompts_with_the_tokenizer_in_its_metadata() {
    let gpu = test_gpu();
    // No tokenizer.json lies beside the GGUF goldens: the file's own tokenizer is used.
    let enc = UmT5Encoder::load(
        gpu,
        &goldens().join("gguf/umt5_tiny_f32.gguf"),
        Precision::F32,
        Residency::Resident,
    )
    .unwrap();
    assert!(enc
        .tokenizer()
        .unwrap()
        .path()
        .ends_with("umt5_tiny_f32.gguf"));
    let all = prompts();
    let texts: Vec<&str> = all.iter().map(|p| p.prompt.as_str()).collect();
    let contexts = enc.encode_batch(gpu, &texts).unwrap();
    let d = enc.config().d_model;
    for (p, ctx) in all.iter().zip(&contexts) {
        assert_eq!(enc.tokenize(&p.prompt).unwrap(), p.ids, "'{}'", p.name);
        let got = ctx.to_vec_f32(gpu).unwrap();
        let want: Vec<f64> = golden_hidden(&p.name).iter().map(|&x| x as f64).collect();
        let err = rel_l2(&got[..p.ids.len() * d], &want);
        assert!(
            err <= 1e-4,
            "'{}' from text through GGUF: {err:.2e}",
            p.name
        );
    }
    enc.free(gpu);
}

/// Bytes written a number of bytes after the first occurrence of a key.
type Edit<'a> = (&'a str, usize, &'a [u8]);

/// A copy of the F32 GGUF golden with, per edit (key, skip, bytes), `bytes` written `skip` bytes
/// after the first occurrence of `key`.
fn patched_gguf(name: &str, edits: &[Edit<'_>]) -> PathBuf {
    let mut bytes = std::fs::read(goldens().join("gguf/umt5_tiny_f32.gguf")).unwrap();
    for (key, skip, new) in edits {
        let at = bytes
            .windows(key.len())
            .position(|w| w == key.as_bytes())
            .unwrap_or_else(|| panic!("{key}"))
            + key.len()
            + skip;
        bytes[at..at + new.len()].copy_from_slice(new);
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("t5-gguf-tokenizer");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn gguf_tokenizer_metadata_absent_or_malformed_is_an_error_naming_the_file() {
    let gpu = test_gpu();
    // After a key: its value type (4 bytes), then a string's length (8) or an array's item
    // type (4) and count (8).
    let cases: [(&str, Vec<Edit<'_>>, &str); 4] = [
        // Both keys renamed: "tokenizer.ggml.modeX", "tokenizer.ggml.tokenX".
        (
            "no_tokenizer.gguf",
            vec![
                ("tokenizer.ggml.mode", 0, b"X"),
                ("tokenizer.ggml.token", 0, b"X"),
            ],
            "carries no tokenizer",
        ),
        (
            "bpe_tokenizer.gguf",
            vec![("tokenizer.ggml.model", 12, b"t6")],
            "'t6'",
        ),
        // The trie's root (after the map's 4-byte trie size) sends every lookup to unit 2^21,
        // far outside the map.
        (
            "bad_charsmap.gguf",
            vec![(
                "tokenizer.ggml.precompiled_charsmap",
                20,
                &[0x00, 0xfc, 0xff, 0x7f],
            )],
            "a lookup reaches unit",
        ),
        (
            "bad_eos.gguf",
            vec![("tokenizer.ggml.eos_token_id", 4, &[0xff, 0xff, 0, 0])],
            "not a token id below",
        ),
    ];
    for (name, edits, want) in cases {
        let path = patched_gguf(name, &edits);
        let file = WeightFile::open(&path).unwrap();
        let err = PromptTokenizer::from_gguf(&file).unwrap_err().to_string();
        assert!(err.contains(name) && err.contains(want), "{name}: {err}");
        // The encoder loads (its weights are fine) and says so at the first prompt, unless it
        // is given a tokenizer.
        let mut enc = UmT5Encoder::load(gpu, &path, Precision::F32, Residency::Streamed).unwrap();
        let err = enc.encode(gpu, "a fox").unwrap_err().to_string();
        assert!(err.contains(name) && err.contains(want), "{name}: {err}");
        enc.set_tokenizer(PromptTokenizer::from_file(goldens().join("t5/tokenizer")).unwrap());
        assert_eq!(
            enc.tokenize("a fox").unwrap(),
            gguf_tokenizer("gguf/umt5_tiny_f32.gguf")
                .encode("a fox")
                .unwrap()
        );
    }
}
