//! `--offload`: the DiT's blocks streamed from host memory through two GPU slots give exactly
//! the velocity of the resident model (same kernels, same weights), across several forwards in
//! one submission, several submissions, a profiled submission, and with LoRAs merged.

use std::path::{Path, PathBuf};

use vdit_model::dit::{LoadOptions, Precision, WanDit};
use vdit_model::lora::LoraSpec;
use vdit_model::weights::DitConfig;
use vdit_wgpu::testing::test_gpu;
use vdit_wgpu::{DType, Gpu, Profiler, Recorder, Tensor};

fn tiny_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/goldens/dit/tiny")
}

fn tiny_config(layers: usize) -> DitConfig {
    let mut c = DitConfig::from_json_file(tiny_dir().join("diffusers/config.json")).unwrap();
    c.layers = layers;
    c
}

fn offload(on: bool) -> LoadOptions {
    LoadOptions {
        offload: on,
        ..Default::default()
    }
}

/// Velocities of `dit` for two prompts recorded into one submission (as a guided step records
/// its two forwards), then for the first prompt in a plain and in a profiled submission.
fn velocities(gpu: &Gpu, dit: &WanDit) -> Vec<Vec<f32>> {
    let c = &dit.config;
    let shape = [c.in_channels, 3, 4, 6];
    let n: usize = shape.iter().product();
    let latent: Vec<f32> = (0..n)
        .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
        .collect();
    let latent = Tensor::from_f32(gpu, &shape, &latent, DType::F32).unwrap();
    let ctx: Vec<f32> = (0..7 * c.text_dim)
        .map(|i| ((i * 13 % 29) as f32 / 14.0) - 1.0)
        .collect();
    let context = Tensor::from_f32(gpu, &[7, c.text_dim], &ctx, DType::F32).unwrap();
    let reversed: Vec<f32> = ctx.iter().rev().copied().collect();
    let other = Tensor::from_f32(gpu, &[7, c.text_dim], &reversed, DType::F32).unwrap();
    let outputs: Vec<Tensor> = (0..4)
        .map(|_| {
            let t = Tensor::empty(gpu, &shape, DType::F32).unwrap();
            t.poison(gpu);
            t
        })
        .collect();
    let runner = dit.runner(gpu, shape).unwrap();
    let mut rec = Recorder::new(gpu);
    let cache = dit.prepare_context(&mut rec, &context).unwrap();
    let other_cache = dit.prepare_context(&mut rec, &other).unwrap();
    rec.run().unwrap();

    let mut rec = Recorder::new(gpu);
    runner
        .forward(&mut rec, &latent, 500.0, &cache, &outputs[0])
        .unwrap();
    runner
        .forward(&mut rec, &latent, 500.0, &other_cache, &outputs[1])
        .unwrap();
    rec.run().unwrap();
    let mut rec = Recorder::new(gpu);
    runner
        .forward(&mut rec, &latent, 500.0, &cache, &outputs[2])
        .unwrap();
    rec.run().unwrap();
    let mut rec = Recorder::new(gpu);
    runner
        .forward(&mut rec, &latent, 500.0, &cache, &outputs[3])
        .unwrap();
    rec.submit(Some(&mut Profiler::new(gpu))).unwrap();
    gpu.wait().unwrap();
    outputs.iter().map(|t| t.to_vec_f32(gpu).unwrap()).collect()
}

#[test]
fn streamed_blocks_give_the_resident_velocity() {
    let gpu = test_gpu();
    // Three and four blocks: the slots are reused, and the last block lands in either slot.
    for layers in [3, 4] {
        let c = tiny_config(layers);
        let resident =
            WanDit::random_with_options(gpu, c.clone(), Precision::F32, 7, &offload(false))
                .unwrap();
        let streamed =
            WanDit::random_with_options(gpu, c, Precision::F32, 7, &offload(true)).unwrap();
        assert!(streamed.is_offloaded() && !resident.is_offloaded());
        let want = velocities(gpu, &resident);
        let got = velocities(gpu, &streamed);
        assert!(want[0].iter().all(|v| v.is_finite()));
        assert_ne!(want[0], want[1], "the two prompts must differ");
        for (i, (w, g)) in want.iter().zip(&got).enumerate() {
            assert_eq!(
                w, g,
                "{layers} blocks, forward {i}: streamed differs from resident"
            );
        }
        assert_eq!(want[0], want[2]);
        assert_eq!(want[0], want[3]);
    }
}

#[test]
fn streamed_blocks_hold_two_blocks_on_the_gpu_and_all_in_host_memory() {
    let gpu = test_gpu();
    let c = tiny_config(6);
    let resident =
        WanDit::random_with_options(gpu, c.clone(), Precision::F32, 1, &offload(false)).unwrap();
    let streamed = WanDit::random_with_options(gpu, c, Precision::F32, 1, &offload(true)).unwrap();
    let (all_gpu, no_host) = resident.weight_bytes();
    let (slots_gpu, blocks_host) = streamed.weight_bytes();
    assert_eq!(no_host, 0);
    // Every block has the same size: the GPU keeps the non-block weights and 2 of 6 blocks.
    let block = blocks_host / 6;
    assert_eq!(
        all_gpu - slots_gpu,
        4 * block,
        "{all_gpu} {slots_gpu} {blocks_host}"
    );
}

#[test]
fn loras_are_merged_before_the_blocks_leave_the_gpu() {
    let gpu = test_gpu();
    let lora = LoraSpec::new(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/goldens/lora/kohya_r4.safetensors"),
        0.8,
    );
    let load = |offload: bool| {
        let options = LoadOptions {
            loras: vec![lora.clone()],
            offload,
            ..Default::default()
        };
        WanDit::load_with_options(
            gpu,
            &tiny_dir().join("diffusers"),
            Some(tiny_config(2)),
            Precision::F32,
            &options,
        )
        .unwrap()
    };
    let plain = WanDit::load_with_options(
        gpu,
        &tiny_dir().join("diffusers"),
        Some(tiny_config(2)),
        Precision::F32,
        &offload(true),
    )
    .unwrap();
    let (resident, streamed) = (load(false), load(true));
    assert!(streamed.is_offloaded());
    let want = velocities(gpu, &resident);
    assert_eq!(want, velocities(gpu, &streamed));
    assert_ne!(
        want,
        velocities(gpu, &plain),
        "the LoRA must change the velocity"
    );
}
