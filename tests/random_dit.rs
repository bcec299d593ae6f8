//! A random DiT is its random weights read like any checkpoint: the same velocity as the same
//! tensors held in memory, and quantised as they load with `--quantize`.

use std::collections::BTreeMap;
use std::path::Path;

use vdit_model::dit::{LoadOptions, Precision, Quantize, WanDit};
use vdit_model::weights::{Checkpoint, DitConfig, WeightSet};
use vdit_wgpu::testing::test_gpu;
use vdit_wgpu::{DType, Gpu, Recorder, Tensor};

fn tiny_config() -> DitConfig {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/goldens/dit/tiny");
    DitConfig::from_json_file(dir.join("diffusers/config.json")).unwrap()
}

/// The velocity of `dit` for a fixed latent, prompt and timestep.
fn velocity(gpu: &Gpu, dit: &WanDit) -> Vec<f32> {
    let c = &dit.config;
    let shape = [c.in_channels, 2, 4, 4];
    let n: usize = shape.iter().product();
    let latent: Vec<f32> = (0..n)
        .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
        .collect();
    let latent = Tensor::from_f32(gpu, &shape, &latent, DType::F32).unwrap();
    let ctx: Vec<f32> = (0..5 * c.text_dim)
        .map(|i| ((i * 13 % 29) as f32 / 14.0) - 1.0)
        .collect();
    let context = Tensor::from_f32(gpu, &[5, c.text_dim], &ctx, DType::F32).unwrap();
    let out = Tensor::empty(gpu, &shape, DType::F32).unwrap();
    let runner = dit.runner(gpu, shape).unwrap();
    let mut rec = Recorder::new(gpu);
    let cache = dit.prepare_context(&mut rec, &context).unwrap();
    runner
        .forward(&mut rec, &latent, 500.0, &cache, &out)
        .unwrap();
    rec.run().unwrap();
    out.to_vec_f32(gpu).unwrap()
}

#[test]
fn a_random_dit_is_its_weights_loaded_as_a_checkpoint() {
    let gpu = test_gpu();
    let c = tiny_config();
    let random = WanDit::random(gpu, c.clone(), Precision::F32, 3).unwrap();
    let want = velocity(gpu, &random);
    assert!(want.iter().all(|v| v.is_finite()));

    // The same tensors copied into memory, loaded through a checkpoint.
    let weights = c.random_weights(3);
    let copied: BTreeMap<String, (Vec<usize>, Vec<f32>)> = weights
        .names()
        .map(|name| {
            let view = weights.get(name).unwrap();
            (
                name.to_string(),
                (view.shape().to_vec(), view.to_f32().unwrap()),
            )
        })
        .collect();
    let ckpt = Checkpoint::from_set(WeightSet::from_f32("copied", copied).unwrap()).unwrap();
    let loaded = WanDit::from_checkpoint(gpu, &ckpt, c.clone(), Precision::F32).unwrap();
    assert_eq!(velocity(gpu, &loaded), want);

    let other = WanDit::random(gpu, c, Precision::F32, 4).unwrap();
    assert_ne!(velocity(gpu, &other), want);
}

#[test]
fn random_weights_are_quantised_as_they_load() {
    let gpu = test_gpu();
    let c = tiny_config();
    let dense = WanDit::random(gpu, c.clone(), Precision::F32, 1).unwrap();
    let options = LoadOptions {
        quantize: Some(Quantize::Q8_0),
        ..Default::default()
    };
    let q8 = WanDit::random_with_options(gpu, c, Precision::F32, 1, &options).unwrap();
    assert!(q8.weight_bytes().0 < dense.weight_bytes().0);
    let (want, got) = (velocity(gpu, &dense), velocity(gpu, &q8));
    let scale = want.iter().map(|v| v.abs()).fold(0.0f32, f32::max);
    let worst = want
        .iter()
        .zip(&got)
        .map(|(w, g)| (w - g).abs())
        .fold(0.0f32, f32::max);
    assert!(worst < 0.05 * scale, "q8_0 strays {worst} (scale {scale})");
}
