//! A repeated DiT step creates nothing: no pipeline, no bind group (the caches key them by the
//! kernel and the buffers' identities, which a pooled buffer keeps from loan to loan). Its own
//! test binary, so no other test shares the device's caches while it counts.

use std::path::Path;

use vdit_model::dit::{Precision, WanDit};
use vdit_model::weights::DitConfig;
use vdit_wgpu::testing::test_gpu;
use vdit_wgpu::{DType, Recorder, Tensor};

#[test]
fn a_second_identical_dit_step_creates_no_pipeline_and_no_bind_group() {
    let gpu = test_gpu();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/goldens/dit/tiny");
    let config = DitConfig::from_json_file(dir.join("diffusers/config.json")).unwrap();
    let dit = WanDit::load_with_config(
        gpu,
        &dir.join("diffusers"),
        Some(config.clone()),
        Precision::F32,
    )
    .unwrap();
    let shape = [config.in_channels, 3, 4, 6];
    let n: usize = shape.iter().product();
    let latent: Vec<f32> = (0..n)
        .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
        .collect();
    let latent = Tensor::from_f32(gpu, &shape, &latent, DType::F32).unwrap();
    let ctx: Vec<f32> = (0..7 * config.text_dim)
        .map(|i| ((i * 13 % 29) as f32 / 14.0) - 1.0)
        .collect();
    let context = Tensor::from_f32(gpu, &[7, config.text_dim], &ctx, DType::F32).unwrap();
    let velocity = Tensor::empty(gpu, &[config.out_channels, 3, 4, 6], DType::F32).unwrap();
    let runner = dit.runner(gpu, shape).unwrap();
    let mut rec = Recorder::new(gpu);
    let cache = dit.prepare_context(&mut rec, &context).unwrap();
    rec.run().unwrap();
    let step = |t: f32| {
        let mut rec = Recorder::new(gpu);
        runner
            .forward(&mut rec, &latent, t, &cache, &velocity)
            .unwrap();
        rec.run().unwrap();
        velocity.to_vec_f32(gpu).unwrap()
    };
    let first = step(500.0);
    let warm = gpu.cache_stats();
    assert!(warm.pipelines > 0 && warm.bind_groups > 0, "{warm:?}");
    let second = step(500.0);
    assert_eq!(
        gpu.cache_stats(),
        warm,
        "the second step created pipelines or bind groups"
    );
    assert_eq!(first, second);
    // Another timestep is the same work on other values: still nothing new.
    step(250.0);
    assert_eq!(gpu.cache_stats(), warm);
}
