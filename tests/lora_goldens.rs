//! LoRAs merged into the tiny DiT against diffusers' `load_lora_weights` + `fuse_lora` (goldens
//! made by tools/make_lora_goldens.py): kohya with an integer alpha, PEFT, the original names
//! under `diffusion_model.` with `diff` and `diff_b`, two LoRAs at once, strength 0.

use std::path::{Path, PathBuf};

use vdit_model::dit::{LoadOptions, Precision, WanDit};
use vdit_model::lora::LoraSpec;
use vdit_model::weights::{DitConfig, WeightFile};
use vdit_wgpu::testing::{assert_close, test_gpu};
use vdit_wgpu::{DType, Recorder, Tensor};

fn goldens() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/goldens")
}

fn read(file: &WeightFile, name: &str) -> (Vec<usize>, Vec<f32>) {
    let view = file.get(name).unwrap();
    (view.shape().to_vec(), view.to_f32().unwrap())
}

/// The tiny DiT's velocity on its golden inputs with `loras` merged at load.
fn velocity(loras: &[(&str, f32)], precision: Precision) -> Vec<f32> {
    let gpu = test_gpu();
    let dir = goldens().join("dit/tiny");
    let io = WeightFile::open(dir.join("io.safetensors")).unwrap();
    let config = DitConfig::from_json_file(dir.join("diffusers/config.json")).unwrap();
    let options = LoadOptions {
        loras: loras
            .iter()
            .map(|(file, s)| LoraSpec::new(goldens().join("lora").join(file), *s))
            .collect(),
        ..Default::default()
    };
    let dit = WanDit::load_with_options(
        gpu,
        &dir.join("diffusers"),
        Some(config),
        precision,
        &options,
    )
    .unwrap();
    let (latent_shape, latent) = read(&io, "latent");
    let (context_shape, context) = read(&io, "context");
    let (_, t) = read(&io, "timestep");
    let latent = Tensor::from_f32(gpu, &latent_shape, &latent, DType::F32).unwrap();
    let context = Tensor::from_f32(gpu, &context_shape, &context, DType::F32).unwrap();
    let out = Tensor::empty(gpu, &latent_shape, DType::F32).unwrap();
    out.poison(gpu);
    let runner = dit
        .runner(gpu, latent_shape.clone().try_into().unwrap())
        .unwrap();
    let mut rec = Recorder::new(gpu);
    let cache = dit.prepare_context(&mut rec, &context).unwrap();
    rec.run().unwrap();
    let mut rec = Recorder::new(gpu);
    runner
        .forward(&mut rec, &latent, t[0], &cache, &out)
        .unwrap();
    rec.run().unwrap();
    out.to_vec_f32(gpu).unwrap()
}

fn expected(case: &str) -> Vec<f64> {
    let file = WeightFile::open(goldens().join("lora/velocities.safetensors")).unwrap();
    read(&file, case).1.iter().map(|&v| v as f64).collect()
}

#[test]
fn each_lora_format_merges_as_diffusers_fuses_it() {
    for (case, loras) in [
        ("kohya", vec![("kohya_r4.safetensors", 0.8)]),
        ("peft", vec![("peft_r3.safetensors", 1.0)]),
        ("original", vec![("original_r2.safetensors", 0.6)]),
    ] {
        let got = velocity(&loras, Precision::F32);
        assert_close(&format!("LoRA {case}"), 0, &got, &expected(case), 1e-4);
    }
}

#[test]
fn two_loras_add_and_strength_zero_is_the_base_model() {
    let both = velocity(
        &[("kohya_r4.safetensors", 0.8), ("peft_r3.safetensors", 1.3)],
        Precision::F32,
    );
    assert_close("two LoRAs", 0, &both, &expected("kohya_and_peft"), 1e-4);
    let zero = velocity(&[("kohya_r4.safetensors", 0.0)], Precision::F32);
    let base = velocity(&[], Precision::F32);
    assert_eq!(zero, base, "strength 0 changed the weights");
    assert_close("strength 0", 0, &zero, &expected("kohya_zero"), 1e-4);
}

#[test]
fn loras_merge_into_f16_weights() {
    if !test_gpu().caps.shader_f16 {
        eprintln!("skipping f16: the adapter lacks SHADER_F16");
        return;
    }
    let got = velocity(&[("original_r2.safetensors", 0.6)], Precision::F16);
    // The f16 DiT is within 2e-2 of diffusers without a LoRA (dit_goldens.rs); merged, the same.
    assert_close("LoRA into f16", 0, &got, &expected("original"), 2e-2);
}
