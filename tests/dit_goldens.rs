//! The DiT against diffusers' WanTransformer3DModel on tiny random-weight configs
//! (goldens made by tools/make_dit_goldens.py), through every checkpoint layout.

use std::path::{Path, PathBuf};

use vdit_model::dit::{LoadOptions, Precision, WanDit};
use vdit_model::weights::{DitConfig, WeightFile};
use vdit_wgpu::testing::{assert_close, test_gpu};
use vdit_wgpu::{DType, Recorder, Tensor};

fn golden_dir(config: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("assets/goldens/dit")
        .join(config)
}

fn read(file: &WeightFile, name: &str) -> (Vec<usize>, Vec<f32>) {
    let view = file.get(name).unwrap();
    (
        file.info(name).unwrap().shape().to_vec(),
        view.to_f32().unwrap(),
    )
}

/// Runs the DiT of `config` loaded from `weights` and compares with the golden `expected`.
fn check(name: &str, weights: &str, precision: Precision, expected: &str, tol: f64) {
    let gpu = test_gpu();
    if precision == Precision::F16 && !gpu.caps.shader_f16 {
        eprintln!("skipping f16: the adapter lacks SHADER_F16");
        return;
    }
    let got = velocity(name, weights, precision);
    let io = WeightFile::open(golden_dir(name).join("io.safetensors")).unwrap();
    let (_, want) = read(&io, expected);
    let want: Vec<f64> = want.iter().map(|&v| v as f64).collect();
    assert_close(
        &format!("DiT {name} from {weights} in {precision:?}"),
        0,
        &got,
        &want,
        tol,
    );
}

/// The velocity of the DiT of `config` loaded from `weights` (relative to its golden folder)
/// on the golden inputs.
fn velocity(name: &str, weights: &str, precision: Precision) -> Vec<f32> {
    velocity_with(name, weights, precision, &LoadOptions::default()).0
}

/// [`velocity`] with load options, and the GPU bytes of the model's weights.
fn velocity_with(
    name: &str,
    weights: &str,
    precision: Precision,
    options: &LoadOptions,
) -> (Vec<f32>, u64) {
    let gpu = test_gpu();
    let dir = golden_dir(name);
    let io = WeightFile::open(dir.join("io.safetensors")).unwrap();
    // A single file of a non-standard size carries no config: take the diffusers one.
    let config = DitConfig::from_json_file(dir.join("diffusers/config.json")).unwrap();
    let dit = WanDit::load_with_options(gpu, &dir.join(weights), Some(config), precision, options)
        .unwrap();
    let (latent_shape, latent) = read(&io, "latent");
    let (context_shape, context) = read(&io, "context");
    let (_, t) = read(&io, "timestep");
    let latent = Tensor::from_f32(gpu, &latent_shape, &latent, DType::F32).unwrap();
    let context = Tensor::from_f32(gpu, &context_shape, &context, DType::F32).unwrap();
    let velocity = Tensor::empty(gpu, &latent_shape, DType::F32).unwrap();
    velocity.poison(gpu);
    let shape: [usize; 4] = latent_shape.clone().try_into().unwrap();
    let runner = dit.runner(gpu, shape).unwrap();
    let mut rec = Recorder::new(gpu);
    let cache = dit.prepare_context(&mut rec, &context).unwrap();
    rec.run().unwrap();
    let mut rec = Recorder::new(gpu);
    runner
        .forward(&mut rec, &latent, t[0], &cache, &velocity)
        .unwrap();
    rec.run().unwrap();
    (velocity.to_vec_f32(gpu).unwrap(), dit.weight_bytes().0)
}

#[test]
fn dit_from_fp8_equals_the_same_weights_dequantized_by_ml_dtypes() {
    // tools/make_fp8_goldens.py: plain e4m3fn (one tensor e5m2), ComfyUI's scaled fp8 and the
    // weight_scale form, each beside its f32 dequantisation.
    for form in ["e4m3fn", "scaled_fp8", "weight_scale_fp8"] {
        let fp8 = velocity(
            "tiny",
            &format!("../../fp8/dit_tiny_{form}.safetensors"),
            Precision::F32,
        );
        let copy = velocity(
            "tiny",
            &format!("../../fp8/dit_tiny_{form}.dequantized.safetensors"),
            Precision::F32,
        );
        assert!(
            fp8.iter().all(|v| v.is_finite()),
            "{form}: non-finite velocity"
        );
        let copy: Vec<f64> = copy.iter().map(|&v| v as f64).collect();
        assert_close(&format!("DiT from {form}"), 0, &fp8, &copy, 1e-6);
    }
}

#[test]
fn dit_from_gguf_equals_the_same_weights_dequantized_by_gguf_py() {
    // tools/make_gguf_goldens.py: the tiny weights quantised (Q4_0..Q8_0, F16, BF16, a reshaped
    // patch embedding) and with random k-quant blocks (Q2_K..Q6_K, ComfyUI's prefix), each beside
    // gguf-py's f32 dequantisation of the same file.
    for file in ["dit_tiny_legacy", "dit_tiny_kquants"] {
        let gguf = velocity("tiny", &format!("../../gguf/{file}.gguf"), Precision::F32);
        let copy = velocity(
            "tiny",
            &format!("../../gguf/{file}.dequantized.safetensors"),
            Precision::F32,
        );
        assert!(
            gguf.iter().all(|v| v.is_finite()),
            "{file}: non-finite velocity"
        );
        let copy: Vec<f64> = copy.iter().map(|&v| v as f64).collect();
        assert_close(&format!("DiT from {file}.gguf"), 0, &gguf, &copy, 1e-6);
    }
}

#[test]
fn q8_0_weights_kept_on_the_gpu_give_the_expanded_velocity() {
    // The Q8_0 tensors (tools/make_gguf_goldens.py) stay quantised (1.125 bytes per value) and
    // are dequantised inside the matmuls: the velocity must be that of the same file expanded
    // at load (whose values equal gguf-py's dequantisation: dit_from_gguf_... checks that).
    let file = "../../gguf/dit_tiny_q8_0.gguf";
    let expand = LoadOptions {
        expand_quantized: true,
        ..Default::default()
    };
    for (precision, tol) in [(Precision::F32, 1e-6), (Precision::F16, 2e-3)] {
        if precision == Precision::F16 && !test_gpu().caps.shader_f16 {
            continue;
        }
        let (kept, kept_bytes) = velocity_with("tiny", file, precision, &LoadOptions::default());
        let (expanded, expanded_bytes) = velocity_with("tiny", file, precision, &expand);
        assert!(
            kept_bytes < expanded_bytes,
            "{precision:?}: no Q8_0 weight stayed quantised ({kept_bytes} >= {expanded_bytes} bytes)"
        );
        let expanded: Vec<f64> = expanded.iter().map(|&v| v as f64).collect();
        assert_close(
            &format!("Q8_0 kept, {precision:?}"),
            0,
            &kept,
            &expanded,
            tol,
        );
    }
    // Dense weights quantised at load: close to the f32 model (Q8_0 keeps ~2.5 digits).
    let quantize = LoadOptions {
        quantize_q8: true,
        ..Default::default()
    };
    let (dense, dense_bytes) =
        velocity_with("tiny", "diffusers", Precision::F32, &Default::default());
    let (q8, q8_bytes) = velocity_with("tiny", "diffusers", Precision::F32, &quantize);
    assert!(q8_bytes < dense_bytes);
    let dense: Vec<f64> = dense.iter().map(|&v| v as f64).collect();
    assert_close("quantised at load", 0, &q8, &dense, 3e-2);
}

#[test]
fn dit_f32_matches_diffusers_in_diffusers_layout() {
    check("tiny", "diffusers", Precision::F32, "velocity", 1e-4);
    check("heads3", "diffusers", Precision::F32, "velocity", 1e-4);
}

#[test]
fn dit_f32_matches_diffusers_in_original_layout() {
    check("tiny", "original", Precision::F32, "velocity", 1e-4);
}

#[test]
fn dit_f16_matches_diffusers() {
    check("tiny", "diffusers", Precision::F16, "velocity", 2e-2);
    check("tiny", "original", Precision::F16, "velocity", 2e-2);
}

#[test]
fn dit_reads_comfyui_bf16_and_sharded_f16_checkpoints() {
    let comfy = "comfyui/wan2.1_t2v_tiny_bfloat16.safetensors";
    check(
        "tiny",
        comfy,
        Precision::F32,
        "velocity_bfloat16_weights",
        1e-4,
    );
    check(
        "heads3",
        "original_float16_sharded",
        Precision::F32,
        "velocity_float16_weights",
        1e-4,
    );
}
