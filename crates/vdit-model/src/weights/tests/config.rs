//! Configs: both JSON formats, presets, inference from shapes, and checking against tensors.

use super::*;
use crate::weights::{Checkpoint, DitConfig, KeyLayout, Naming, WeightError, COMFYUI_PREFIX};

/// The fields of diffusers' Wan2.1-T2V-1.3B `transformer/config.json`.
const DIFFUSERS_1_3B: &str = r#"{
  "_class_name": "WanTransformer3DModel",
  "_diffusers_version": "0.33.0",
  "added_kv_proj_dim": null,
  "attention_head_dim": 128,
  "cross_attn_norm": true,
  "eps": 1e-06,
  "ffn_dim": 8960,
  "freq_dim": 256,
  "image_dim": null,
  "in_channels": 16,
  "num_attention_heads": 12,
  "num_layers": 30,
  "out_channels": 16,
  "patch_size": [1, 2, 2],
  "qk_norm": "rms_norm_across_heads",
  "rope_max_seq_len": 1024,
  "text_dim": 4096
}"#;

/// The fields of the Wan2.1 repository's T2V-1.3B `config.json`.
const ORIGINAL_1_3B: &str = r#"{
  "_class_name": "WanModel",
  "_diffusers_version": "0.30.0",
  "dim": 1536,
  "eps": 1e-06,
  "ffn_dim": 8960,
  "freq_dim": 256,
  "in_dim": 16,
  "model_type": "t2v",
  "num_heads": 12,
  "num_layers": 30,
  "out_dim": 16,
  "text_len": 512
}"#;

fn parse(text: &str) -> crate::weights::Result<DitConfig> {
    DitConfig::from_json_str(text, Path::new("config.json"))
}

#[test]
fn both_formats_give_the_presets() {
    assert_eq!(parse(DIFFUSERS_1_3B).unwrap(), DitConfig::wan21_t2v_1_3b());
    assert_eq!(parse(ORIGINAL_1_3B).unwrap(), DitConfig::wan21_t2v_1_3b());
    let diffusers_14b = DIFFUSERS_1_3B
        .replace("\"ffn_dim\": 8960", "\"ffn_dim\": 13824")
        .replace("\"num_attention_heads\": 12", "\"num_attention_heads\": 40")
        .replace("\"num_layers\": 30", "\"num_layers\": 40");
    assert_eq!(parse(&diffusers_14b).unwrap(), DitConfig::wan21_t2v_14b());
    let original_14b = ORIGINAL_1_3B
        .replace("\"dim\": 1536", "\"dim\": 5120")
        .replace("\"ffn_dim\": 8960", "\"ffn_dim\": 13824")
        .replace("\"num_heads\": 12", "\"num_heads\": 40")
        .replace("\"num_layers\": 30", "\"num_layers\": 40");
    assert_eq!(parse(&original_14b).unwrap(), DitConfig::wan21_t2v_14b());
    let c = DitConfig::wan21_t2v_14b();
    assert_eq!(
        (c.dim, c.heads * c.head_dim, c.patch_volume()),
        (5120, 5120, 4)
    );
}

#[test]
fn unsupported_or_foreign_configs_are_errors() {
    let i2v = DIFFUSERS_1_3B.replace("\"image_dim\": null", "\"image_dim\": 1280");
    assert!(parse(&i2v).unwrap_err().to_string().contains("I2V"));
    let i2v = ORIGINAL_1_3B.replace("\"t2v\"", "\"i2v\"");
    assert!(parse(&i2v).unwrap_err().to_string().contains("i2v"));
    let vae = r#"{"_class_name": "AutoencoderKLWan", "base_dim": 96}"#;
    assert!(parse(vae).unwrap_err().to_string().contains("config.json"));
    let odd = DIFFUSERS_1_3B.replace("\"attention_head_dim\": 128", "\"attention_head_dim\": 127");
    assert!(parse(&odd).unwrap_err().to_string().contains("head_dim"));
    let wrong_type = DIFFUSERS_1_3B.replace("\"num_layers\": 30", "\"num_layers\": \"thirty\"");
    assert!(parse(&wrong_type).is_err());
    assert!(parse("{not json").is_err());
    let huge = DIFFUSERS_1_3B.replace(
        "\"num_attention_heads\": 12",
        "\"num_attention_heads\": 18446744073709551615",
    );
    assert!(parse(&huge).is_err());
}

#[test]
fn infers_a_comfyui_file() {
    let config = DitConfig {
        dim: 256,
        ffn_dim: 320,
        freq_dim: 32,
        heads: 2,
        head_dim: 128,
        layers: 3,
        in_channels: 4,
        out_channels: 8,
        text_dim: 40,
        cross_attn_norm: false,
        qk_norm: false,
        ..DitConfig::wan21_t2v_1_3b()
    };
    let dir = TempDir::new("infer");
    let path = dir.join("wan_comfy.safetensors");
    let layout = KeyLayout {
        naming: Naming::Original,
        prefix: COMFYUI_PREFIX.into(),
    };
    write_model(&path, &config, &layout, vec![]);
    let checkpoint = Checkpoint::open(&path).unwrap();
    assert_eq!(DitConfig::infer(&checkpoint).unwrap(), config);
    assert_eq!(checkpoint.config().unwrap(), config);

    let with_norms = DitConfig {
        cross_attn_norm: true,
        qk_norm: true,
        ..config
    };
    let path = dir.join("with_norms.safetensors");
    write_model(&path, &with_norms, &layout, vec![]);
    assert_eq!(
        Checkpoint::open(&path).unwrap().config().unwrap(),
        with_norms
    );
}

#[test]
fn inference_refuses_heads_it_cannot_know() {
    let dir = TempDir::new("noheads");
    let path = dir.join("m.safetensors");
    let layout = KeyLayout {
        naming: Naming::Diffusers,
        prefix: String::new(),
    };
    write_model(&path, &tiny_config(), &layout, vec![]);
    let checkpoint = Checkpoint::open(&path).unwrap();
    assert_names(
        checkpoint.config(),
        &[&path.display().to_string(), "config.json"],
    );
}

#[test]
fn config_json_beside_the_weights_is_used_and_checked() {
    let config = tiny_config();
    let dir = TempDir::new("beside");
    let layout = KeyLayout {
        naming: Naming::Diffusers,
        prefix: String::new(),
    };
    write_model(
        &dir.join("diffusion_pytorch_model.safetensors"),
        &config,
        &layout,
        vec![],
    );
    let json = |ffn: usize| {
        serde_json::json!({
            "_class_name": "WanTransformer3DModel",
            "attention_head_dim": config.head_dim,
            "num_attention_heads": config.heads,
            "num_layers": config.layers,
            "ffn_dim": ffn,
            "freq_dim": config.freq_dim,
            "in_channels": config.in_channels,
            "out_channels": config.out_channels,
            "text_dim": config.text_dim,
            "patch_size": config.patch,
        })
        .to_string()
    };
    let config_path = dir.join("config.json");
    std::fs::write(&config_path, json(config.ffn_dim)).unwrap();
    let checkpoint = Checkpoint::open(dir.path()).unwrap();
    assert_eq!(checkpoint.config().unwrap(), config);
    assert_eq!(DitConfig::from_json_file(&config_path).unwrap(), config);

    // A config that disagrees with the tensors names each misshapen one.
    std::fs::write(&config_path, json(config.ffn_dim + 8)).unwrap();
    let message = assert_names(
        checkpoint.config(),
        &[
            "blocks.0.ffn.net.0.proj.weight",
            "[96, 64]",
            "[104, 64]",
            "blocks.1.ffn.net.2.weight",
        ],
    );
    assert!(!message.contains("attn1"), "{message}");

    // Another model's config beside the weights is ignored (and inference then needs 128-wide heads).
    std::fs::write(&config_path, r#"{"_class_name": "AutoencoderKLWan"}"#).unwrap();
    assert_names(checkpoint.config(), &["multiple of 128"]);
}

#[test]
fn verify_lists_missing_and_misshapen_tensors() {
    let config = tiny_config();
    let dir = TempDir::new("verify");
    let path = dir.join("m.safetensors");
    let layout = KeyLayout {
        naming: Naming::Original,
        prefix: String::new(),
    };
    write_model(&path, &config, &layout, vec![]);
    let checkpoint = Checkpoint::open(&path).unwrap();
    let deeper = DitConfig {
        layers: 3,
        text_dim: 32,
        ..config.clone()
    };
    assert_names(
        checkpoint.verify(&deeper),
        &[
            &path.display().to_string(),
            "tensor 'text_embedding.0.weight' has shape [64, 24], expected [64, 32]",
        ],
    );
    let Err(WeightError::Mismatch { problems, .. }) = checkpoint.verify(&deeper) else {
        panic!("expected a mismatch");
    };
    assert!(problems.contains(&"missing tensor 'blocks.2.self_attn.q.weight'".to_string()));
    assert!(problems.contains(&"missing tensor 'blocks.2.norm3.bias'".to_string()));
}

#[test]
fn sizes_too_large_to_count_are_refused() {
    // Found by the fuzzer (tests/fuzz-regressions/configs): a patch of 2^64 - 1 frames.
    let text = include_str!("../../../tests/fuzz-regressions/configs/dit-patch-overflows.json");
    let err = parse(text).and_then(|c| {
        c.validate()
            .map_err(|reason| crate::weights::WeightError::Config {
                path: "config.json".into(),
                reason,
            })
    });
    let err = err.unwrap_err().to_string();
    assert!(err.contains("sizes too large to count"), "{err}");
}
