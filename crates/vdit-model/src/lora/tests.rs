//! LoRA files resolved against a small DiT config, merged on the GPU against a CPU float64
//! reference, and refused with the file and tensor named. The end-to-end goldens against
//! diffusers are in tests/lora_goldens.rs.

use vdit_wgpu::testing::{assert_close, test_gpu};
use vdit_wgpu::{DType, Tensor};

use super::*;
use crate::weights::tests::{pattern, tiny_config, write_safetensors, Raw, TempDir};

fn error_naming(result: Result<LoraSet>, parts: &[&str]) -> String {
    let message = match result {
        Ok(_) => panic!("expected an error naming {parts:?}"),
        Err(e) => e.to_string(),
    };
    for part in parts {
        assert!(message.contains(part), "'{part}' not named: {message}");
    }
    message
}

fn integer_scalar(name: &str, value: i64) -> Raw {
    Raw::new(
        name,
        safetensors::Dtype::I64,
        &[],
        value.to_le_bytes().to_vec(),
    )
}

#[test]
fn strengths_follow_the_last_colon_when_it_is_a_number() {
    let spec = LoraSpec::parse("style.safetensors:0.7").unwrap();
    assert_eq!(spec, LoraSpec::new("style.safetensors", 0.7));
    assert_eq!(LoraSpec::parse("a.safetensors").unwrap().strength, 1.0);
    assert_eq!(
        LoraSpec::parse("C:\\loras\\a.safetensors").unwrap(),
        LoraSpec::new("C:\\loras\\a.safetensors", 1.0)
    );
    assert_eq!(
        LoraSpec::parse("C:\\loras\\a.safetensors:-0.5").unwrap(),
        LoraSpec::new("C:\\loras\\a.safetensors", -0.5)
    );
    assert!(LoraSpec::parse("").is_err());
    assert!(LoraSpec::parse("a.safetensors:inf").is_err());
}

/// One kohya pair (integer alpha) on `blocks.1.attn2.to_v` and a `diff_b` on its bias, merged
/// into uploaded tensors: the GPU result equals W + s alpha / r up down and b + s diff_b.
#[test]
fn a_low_rank_pair_and_a_bias_delta_merge_as_the_reference_says() {
    let gpu = test_gpu();
    let config = tiny_config();
    let (d, r) = (config.dim, 3);
    let dir = TempDir::new("lora-merge");
    let path = dir.join("kohya.safetensors");
    let (down, up, diff_b) = (pattern(r * d, 1), pattern(d * r, 2), pattern(d, 3));
    write_safetensors(
        &path,
        &[
            Raw::f32(
                "lora_unet_blocks_1_cross_attn_v.lora_down.weight",
                &[r, d],
                &down,
            ),
            Raw::f32(
                "lora_unet_blocks_1_cross_attn_v.lora_up.weight",
                &[d, r],
                &up,
            ),
            integer_scalar("lora_unet_blocks_1_cross_attn_v.alpha", 6),
            Raw::f32("lora_unet_blocks_1_cross_attn_v.diff_b", &[d], &diff_b),
        ],
    );
    let strength = 0.75f32;
    let set = LoraSet::open(&[LoraSpec::new(&path, strength)], &config).unwrap();
    assert_eq!(set.patched_tensors(), 2);
    let scale = strength as f64 * 6.0 / r as f64;
    for dtype in [DType::F32, DType::F16] {
        if dtype == DType::F16 && !gpu.caps.shader_f16 {
            continue;
        }
        let base = pattern(d * d, 4);
        let weight = Tensor::from_f32(gpu, &[d, d], &base, dtype).unwrap();
        set.apply(gpu, "blocks.1.attn2.to_v.weight", &weight)
            .unwrap();
        let base_rounded = Tensor::from_f32(gpu, &[d, d], &base, dtype)
            .unwrap()
            .to_vec_f32(gpu)
            .unwrap();
        let want: Vec<f64> = (0..d * d)
            .map(|i| {
                let (o, c) = (i / d, i % d);
                let lowrank: f64 = (0..r)
                    .map(|k| up[o * r + k] as f64 * down[k * d + c] as f64)
                    .sum();
                base_rounded[i] as f64 + scale * lowrank
            })
            .collect();
        let tol = if dtype == DType::F16 { 2e-3 } else { 1e-6 };
        assert_close(
            &format!("low-rank merge {dtype:?}"),
            0,
            &weight.to_vec_f32(gpu).unwrap(),
            &want,
            tol,
        );
        let bias = Tensor::from_f32(gpu, &[d], &pattern(d, 5), dtype).unwrap();
        set.apply(gpu, "blocks.1.attn2.to_v.bias", &bias).unwrap();
        let want: Vec<f64> = pattern(d, 5)
            .iter()
            .zip(&diff_b)
            .map(|(b, db)| *b as f64 + strength as f64 * *db as f64)
            .collect();
        assert_close(
            &format!("bias delta {dtype:?}"),
            0,
            &bias.to_vec_f32(gpu).unwrap(),
            &want,
            tol,
        );
        // An untouched tensor stays as it is.
        let other = Tensor::from_f32(gpu, &[d, d], &base, dtype).unwrap();
        set.apply(gpu, "blocks.0.attn2.to_v.weight", &other)
            .unwrap();
        assert_eq!(other.to_vec_f32(gpu).unwrap(), base_rounded);
    }
}

#[test]
fn a_file_that_patches_nothing_is_refused_by_name() {
    let dir = TempDir::new("lora-foreign");
    let path = dir.join("sdxl.safetensors");
    write_safetensors(
        &path,
        &[Raw::f32(
            "lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight",
            &[2, 8],
            &[0.0; 16],
        )],
    );
    error_naming(
        LoraSet::open(&[LoraSpec::new(&path, 1.0)], &tiny_config()),
        &["sdxl.safetensors", "none of its 1 tensors"],
    );
}

#[test]
fn partly_matching_files_merge_what_matches() {
    let config = tiny_config();
    let d = config.dim;
    let dir = TempDir::new("lora-partial");
    let path = dir.join("i2v.safetensors");
    write_safetensors(
        &path,
        &[
            Raw::f32(
                "diffusion_model.blocks.0.self_attn.q.lora_down.weight",
                &[1, d],
                &pattern(d, 0),
            ),
            Raw::f32(
                "diffusion_model.blocks.0.self_attn.q.lora_up.weight",
                &[d, 1],
                &pattern(d, 1),
            ),
            Raw::f32(
                "diffusion_model.blocks.0.cross_attn.k_img.lora_up.weight",
                &[d, 1],
                &pattern(d, 2),
            ),
            Raw::f32(
                "diffusion_model.blocks.1.cross_attn.k_img.lora_up.weight",
                &[d, 1],
                &pattern(d, 3),
            ),
        ],
    );
    let set = LoraSet::open(&[LoraSpec::new(&path, 1.0)], &config).unwrap();
    assert_eq!(set.patched_tensors(), 1);
    assert_eq!(
        fold_block_number("diffusion_model.blocks.12.cross_attn.k_img.lora_up.weight"),
        "diffusion.model.blocks.N.cross.attn.k.img"
    );
}

#[test]
fn broken_pairs_and_misshapen_tensors_are_refused_naming_the_tensor() {
    let config = tiny_config();
    let (d, f) = (config.dim, config.ffn_dim);
    let dir = TempDir::new("lora-broken");
    let case = |name: &str, tensors: &[Raw], parts: &[&str]| {
        let path = dir.join(name);
        write_safetensors(&path, tensors);
        let mut all = vec![name];
        all.extend_from_slice(parts);
        error_naming(LoraSet::open(&[LoraSpec::new(&path, 1.0)], &config), &all);
    };
    let down = "transformer.blocks.0.ffn.net.0.proj.lora_A.weight";
    let up = "transformer.blocks.0.ffn.net.0.proj.lora_B.weight";
    case(
        "half.safetensors",
        &[Raw::f32(down, &[2, d], &pattern(2 * d, 0))],
        &[down, "lora_up"],
    );
    // The up matrix of another module's size (the FFN's [ffn_dim, rank] is needed).
    case(
        "shape.safetensors",
        &[
            Raw::f32(down, &[2, d], &pattern(2 * d, 0)),
            Raw::f32(up, &[d, 2], &pattern(2 * d, 1)),
        ],
        &[down, up, &format!("[{f}, rank]")],
    );
    case(
        "rank.safetensors",
        &[
            Raw::f32(down, &[2, d], &pattern(2 * d, 0)),
            Raw::f32(up, &[f, 3], &pattern(3 * f, 1)),
        ],
        &[up],
    );
    let diff = "diffusion_model.blocks.1.norm3.diff";
    case(
        "diff.safetensors",
        &[Raw::f32(diff, &[d + 1], &pattern(d + 1, 0))],
        &[diff, "blocks.1.norm2.weight"],
    );
    case(
        "twice.safetensors",
        &[
            Raw::f32("blocks.0.self_attn.o.diff_b", &[d], &pattern(d, 0)),
            Raw::f32("blocks.0.attn1.to_out.0.diff_b", &[d], &pattern(d, 1)),
        ],
        &[
            "blocks.0.self_attn.o.diff_b",
            "blocks.0.attn1.to_out.0.diff_b",
            "both",
        ],
    );
    case(
        "alpha.safetensors",
        &[
            Raw::f32(down, &[2, d], &pattern(2 * d, 0)),
            Raw::f32(up, &[f, 2], &pattern(2 * f, 1)),
            Raw::f32(
                "transformer.blocks.0.ffn.net.0.proj.alpha",
                &[2],
                &[1.0, 2.0],
            ),
        ],
        &["transformer.blocks.0.ffn.net.0.proj.alpha", "one number"],
    );
    let missing = dir.join("missing.safetensors");
    error_naming(
        LoraSet::open(&[LoraSpec::new(&missing, 1.0)], &config),
        &["missing.safetensors"],
    );
}
