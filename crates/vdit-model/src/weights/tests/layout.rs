//! Key layouts: detection, the original <-> diffusers mapping, and canonical lookups.

use std::collections::HashSet;

use super::*;
use crate::weights::{
    diffusers_to_original, original_to_diffusers, Checkpoint, KeyLayout, Naming, COMFYUI_PREFIX,
};

fn layouts() -> [KeyLayout; 4] {
    [
        KeyLayout {
            naming: Naming::Diffusers,
            prefix: String::new(),
        },
        KeyLayout {
            naming: Naming::Original,
            prefix: String::new(),
        },
        KeyLayout {
            naming: Naming::Original,
            prefix: COMFYUI_PREFIX.into(),
        },
        KeyLayout {
            naming: Naming::Diffusers,
            prefix: COMFYUI_PREFIX.into(),
        },
    ]
}

#[test]
fn the_wan21_name_table() {
    let table = [
        ("patch_embedding.weight", "patch_embedding.weight"),
        (
            "text_embedding.0.weight",
            "condition_embedder.text_embedder.linear_1.weight",
        ),
        (
            "text_embedding.2.bias",
            "condition_embedder.text_embedder.linear_2.bias",
        ),
        (
            "time_embedding.0.weight",
            "condition_embedder.time_embedder.linear_1.weight",
        ),
        (
            "time_embedding.2.bias",
            "condition_embedder.time_embedder.linear_2.bias",
        ),
        (
            "time_projection.1.weight",
            "condition_embedder.time_proj.weight",
        ),
        ("blocks.0.modulation", "blocks.0.scale_shift_table"),
        ("blocks.3.self_attn.q.weight", "blocks.3.attn1.to_q.weight"),
        ("blocks.3.self_attn.o.bias", "blocks.3.attn1.to_out.0.bias"),
        (
            "blocks.3.self_attn.norm_k.weight",
            "blocks.3.attn1.norm_k.weight",
        ),
        (
            "blocks.12.cross_attn.v.weight",
            "blocks.12.attn2.to_v.weight",
        ),
        (
            "blocks.12.cross_attn.norm_q.weight",
            "blocks.12.attn2.norm_q.weight",
        ),
        ("blocks.29.norm3.weight", "blocks.29.norm2.weight"),
        ("blocks.29.norm3.bias", "blocks.29.norm2.bias"),
        ("blocks.29.norm2.weight", "blocks.29.norm3.weight"),
        ("blocks.1.ffn.0.weight", "blocks.1.ffn.net.0.proj.weight"),
        ("blocks.1.ffn.2.bias", "blocks.1.ffn.net.2.bias"),
        ("head.modulation", "scale_shift_table"),
        ("head.head.weight", "proj_out.weight"),
        // Not in the table: passed through.
        ("img_emb.proj.0.weight", "img_emb.proj.0.weight"),
        ("blocks.x.self_attn.q.weight", "blocks.x.self_attn.q.weight"),
        (
            "blocks.0.self_attn.qq.weight",
            "blocks.0.self_attn.qq.weight",
        ),
    ];
    for (original, diffusers) in table {
        assert_eq!(original_to_diffusers(original), diffusers, "{original}");
        assert_eq!(diffusers_to_original(diffusers), original, "{diffusers}");
    }
}

#[test]
fn every_model_tensor_maps_both_ways() {
    let config = tiny_config();
    let mut originals = HashSet::new();
    for (canonical, _) in config.tensor_shapes() {
        let original = diffusers_to_original(&canonical);
        assert_eq!(original_to_diffusers(&original), canonical);
        assert!(originals.insert(original.clone()), "{original} twice");
        if canonical != "patch_embedding.weight" && canonical != "patch_embedding.bias" {
            assert_ne!(original, canonical, "{canonical} has no original name");
        }
    }
}

#[test]
fn detects_each_layout_and_reads_the_same_values() {
    let config = tiny_config();
    let dir = TempDir::new("layouts");
    let mut reference: Option<Vec<f32>> = None;
    for (i, layout) in layouts().iter().enumerate() {
        let path = dir.join(&format!("model{i}.safetensors"));
        write_model(&path, &config, layout, vec![]);
        let checkpoint = Checkpoint::open(&path).unwrap();
        assert_eq!(checkpoint.layout(), layout);
        assert_eq!(
            checkpoint.layout().is_comfyui(),
            layout.prefix == COMFYUI_PREFIX
        );
        assert_eq!(
            checkpoint.canonical_names().count(),
            config.tensor_shapes().len()
        );
        checkpoint.verify(&config).unwrap();
        let norm = checkpoint.read_f32("blocks.1.norm2.weight").unwrap();
        match &reference {
            None => reference = Some(norm),
            Some(r) => assert_eq!(&norm, r, "{layout}"),
        }
        let used: HashSet<String> = config.tensor_shapes().into_iter().map(|(n, _)| n).collect();
        assert!(checkpoint.unused_names(&used).is_empty());
        checkpoint.check_all_used(&used).unwrap();
    }
}

#[test]
fn missing_tensor_names_the_stored_name() {
    let config = tiny_config();
    let dir = TempDir::new("missing");
    let path = dir.join("comfy.safetensors");
    let layout = KeyLayout {
        naming: Naming::Original,
        prefix: COMFYUI_PREFIX.into(),
    };
    write_model(&path, &config, &layout, vec![]);
    let checkpoint = Checkpoint::open(&path).unwrap();
    assert_names(
        checkpoint.get("blocks.7.attn1.to_q.weight"),
        &[
            &path.display().to_string(),
            "blocks.7.attn1.to_q.weight",
            "model.diffusion_model.blocks.7.self_attn.q.weight",
        ],
    );
}

#[test]
fn foreign_and_unexpected_tensors() {
    let config = tiny_config();
    let dir = TempDir::new("unused");
    let path = dir.join("all-in-one.safetensors");
    let layout = KeyLayout {
        naming: Naming::Original,
        prefix: COMFYUI_PREFIX.into(),
    };
    let extra = vec![
        Raw::f32("vae.decoder.conv1.weight", &[2], &[0.0, 0.0]),
        Raw::f32(
            "model.diffusion_model.img_emb.proj.0.weight",
            &[2],
            &[0.0, 0.0],
        ),
    ];
    write_model(&path, &config, &layout, extra);
    let checkpoint = Checkpoint::open(&path).unwrap();
    let used: HashSet<String> = config.tensor_shapes().into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        checkpoint.unused_names(&used),
        [
            "model.diffusion_model.img_emb.proj.0.weight",
            "vae.decoder.conv1.weight"
        ]
    );
    assert_names(
        checkpoint.check_all_used(&used),
        &[
            &path.display().to_string(),
            "img_emb.proj.0.weight",
            "vae.decoder",
        ],
    );
    // verify ignores the other model in the file, but not the stray DiT tensor.
    let message = assert_names(
        checkpoint.verify(&config),
        &["unexpected tensor 'model.diffusion_model.img_emb.proj.0.weight'"],
    );
    assert!(!message.contains("vae."), "{message}");
}

#[test]
fn undecidable_layouts_are_errors() {
    assert!(KeyLayout::detect(["blocks.0.self_attn.q.weight"]).is_err());
    assert!(KeyLayout::detect(["patch_embedding.weight", "something.else"]).is_err());
    let mixed = KeyLayout::detect([
        "patch_embedding.weight",
        "blocks.0.self_attn.q.weight",
        "blocks.0.attn1.to_q.weight",
    ]);
    assert!(mixed.unwrap_err().contains("both"));
    let two = KeyLayout::detect([
        "a.patch_embedding.weight",
        "b.patch_embedding.weight",
        "a.proj_out.weight",
    ]);
    assert!(two.unwrap_err().contains("several"));
    let custom = KeyLayout::detect([
        "transformer.patch_embedding.weight",
        "transformer.proj_out.bias",
    ]);
    assert_eq!(
        custom.unwrap(),
        KeyLayout {
            naming: Naming::Diffusers,
            prefix: "transformer.".into()
        }
    );
}

#[test]
fn checkpoint_open_finds_the_pipeline_transformer_folder() {
    let config = tiny_config();
    let root = TempDir::new("pipeline");
    let transformer = root.join("transformer");
    std::fs::create_dir_all(&transformer).unwrap();
    let layout = KeyLayout {
        naming: Naming::Diffusers,
        prefix: String::new(),
    };
    write_model(
        &transformer.join("diffusion_pytorch_model.safetensors"),
        &config,
        &layout,
        vec![],
    );
    let checkpoint = Checkpoint::open(root.path()).unwrap();
    assert_eq!(checkpoint.weights().folder(), transformer);
}
