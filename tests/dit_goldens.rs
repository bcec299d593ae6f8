//! The DiT against diffusers' WanTransformer3DModel on tiny random-weight configs
//! (goldens made by tools/make_dit_goldens.py), through every checkpoint layout.

use std::path::{Path, PathBuf};

use vdit_model::dit::{LoadOptions, Precision, Quantize, WanDit};
use vdit_model::weights::{diffusers_to_original, Checkpoint, DitConfig, WeightFile};
use vdit_wgpu::kernels::matmul::{matmul_weight, Epilogue, WeightRef};
use vdit_wgpu::kernels::q4k::{dequantize_q4k, quantize_q4k, Q4KWeight, Q4K_BLOCK};
use vdit_wgpu::rng::Rng;
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
    let latent = read(&io, "latent");
    let context = read(&io, "context");
    let (_, t) = read(&io, "timestep");
    (forward(&dit, &latent, &context, t[0]), dit.weight_bytes().0)
}

/// One forward of `dit` on a latent and a context (each a shape and values): the velocity.
fn forward(
    dit: &WanDit,
    (latent_shape, latent): &(Vec<usize>, Vec<f32>),
    (context_shape, context): &(Vec<usize>, Vec<f32>),
    t: f32,
) -> Vec<f32> {
    let gpu = test_gpu();
    let latent = Tensor::from_f32(gpu, latent_shape, latent, DType::F32).unwrap();
    let context = Tensor::from_f32(gpu, context_shape, context, DType::F32).unwrap();
    let velocity = Tensor::empty(gpu, latent_shape, DType::F32).unwrap();
    velocity.poison(gpu);
    let shape: [usize; 4] = latent_shape.clone().try_into().unwrap();
    let runner = dit.runner(gpu, shape).unwrap();
    let mut rec = Recorder::new(gpu);
    let cache = dit.prepare_context(&mut rec, &context).unwrap();
    rec.run().unwrap();
    let mut rec = Recorder::new(gpu);
    runner
        .forward(&mut rec, &latent, t, &cache, &velocity)
        .unwrap();
    rec.run().unwrap();
    velocity.to_vec_f32(gpu).unwrap()
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
        quantize: Some(Quantize::Q8_0),
        ..Default::default()
    };
    let (dense, dense_bytes) =
        velocity_with("tiny", "diffusers", Precision::F32, &Default::default());
    let (q8, q8_bytes) = velocity_with("tiny", "diffusers", Precision::F32, &quantize);
    assert!(q8_bytes < dense_bytes);
    let dense: Vec<f64> = dense.iter().map(|&v| v as f64).collect();
    assert_close("quantised at load", 0, &q8, &dense, 3e-2);
}

/// Bit-for-bit equality, zeros of either sign alike.
fn assert_same_bits(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            g.to_bits() == w.to_bits() || (*g == 0.0 && *w == 0.0),
            "{what}: value {i} is {g}, want {w}"
        );
    }
}

#[test]
fn q4_k_blocks_dequantise_on_the_gpu_as_gguf_py_does() {
    // gguf-py's random Q4_K blocks (random bytes, random finite f16 d and dmin: subnormals,
    // zeros and negative scales; tools/make_gguf_goldens.py) and its dequantisation of them.
    let blocks = WeightFile::open(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/goldens/gguf/blocks.safetensors"),
    )
    .unwrap();
    let bytes = blocks.get("Q4_K.random.bytes").unwrap().bytes().to_vec();
    let want = blocks.get("Q4_K.random.values").unwrap().to_f32().unwrap();
    assert_same_bits("Q4_K on the CPU", &dequantize_q4k(&bytes), &want);
    // On the GPU as a [n, k] weight: X = I gives Y = W^T, each value a product by 1 plus zeros.
    let gpu = test_gpu();
    let k = 2 * Q4K_BLOCK;
    let n = want.len() / k;
    let w = Q4KWeight::from_ggml_blocks(gpu, n, k, &bytes).unwrap();
    let eye: Vec<f32> = (0..k * k)
        .map(|i| if i / k == i % k { 1.0 } else { 0.0 })
        .collect();
    let x = Tensor::from_f32(gpu, &[k, k], &eye, DType::F32).unwrap();
    let y = Tensor::empty(gpu, &[k, n], DType::F32).unwrap();
    y.poison(gpu);
    let mut rec = Recorder::new(gpu);
    matmul_weight(&mut rec, &x, WeightRef::Q4K(&w), None, &y, Epilogue::None).unwrap();
    rec.run().unwrap();
    let got = y.to_vec_f32(gpu).unwrap();
    let transposed: Vec<f32> = (0..n * k).map(|i| got[(i % k) * n + i / k]).collect();
    assert_same_bits("Q4_K on the GPU", &transposed, &want);
}

/// The tiny golden DiT's config widened so that every Linear's rows are whole Q4_K super-blocks
/// of 256 values (the golden models are narrower).
fn q4_k_config() -> DitConfig {
    let mut c =
        DitConfig::from_json_file(golden_dir("tiny").join("diffusers/config.json")).unwrap();
    (c.dim, c.heads, c.head_dim, c.ffn_dim) = (256, 2, 128, 512);
    (c.text_dim, c.freq_dim, c.layers) = (256, 256, 2);
    c.validate().unwrap();
    c
}

/// A Wan GGUF file (original names) of random weights of `config` (the same whatever `quantise`
/// says): each 2-D weight whose rows are whole super-blocks and whose canonical name `quantise`
/// accepts stored as Q4_K (`quantize_q4k`), the rest F32. Returns the Q4_K tensors' canonical
/// names and blocks.
fn write_q4_k_gguf(
    path: &Path,
    config: &DitConfig,
    quantise: impl Fn(&str) -> bool,
) -> Vec<(String, Vec<u8>)> {
    let mut rng = Rng::new(1616);
    let mut tensors = Vec::new();
    let mut quantised = Vec::new();
    for (name, shape) in config.tensor_shapes() {
        let n: usize = shape.iter().product();
        let inp = *shape.last().unwrap();
        let values = if shape.len() == 2 {
            rng.vec_normal(n, 1.0 / (inp as f32).sqrt())
        } else if name.contains("norm") && name.ends_with("weight") {
            rng.vec_uniform(n, 0.1).iter().map(|v| 1.0 + v).collect()
        } else {
            rng.vec_normal(n, 0.1)
        };
        let (ty, data) = if quantise(&name) && shape.len() == 2 && inp % Q4K_BLOCK == 0 {
            let blocks = quantize_q4k(&values);
            quantised.push((name.clone(), blocks.clone()));
            (12u32, blocks)
        } else {
            (0u32, values.iter().flat_map(|v| v.to_le_bytes()).collect())
        };
        tensors.push((diffusers_to_original(&name), shape, ty, data));
    }
    let string = |s: &str| {
        let mut b = (s.len() as u64).to_le_bytes().to_vec();
        b.extend_from_slice(s.as_bytes());
        b
    };
    // GGUF v3: header, one metadata entry, tensor infos (dimensions innermost first, data
    // offsets aligned to 32 bytes), then the data.
    let mut b = b"GGUF".to_vec();
    b.extend(3u32.to_le_bytes());
    b.extend((tensors.len() as u64).to_le_bytes());
    b.extend(1u64.to_le_bytes());
    b.extend(string("general.architecture"));
    b.extend(8u32.to_le_bytes());
    b.extend(string("wan"));
    let mut offset = 0u64;
    for (name, shape, ty, data) in &tensors {
        b.extend(string(name));
        b.extend((shape.len() as u32).to_le_bytes());
        for &d in shape.iter().rev() {
            b.extend((d as u64).to_le_bytes());
        }
        b.extend(ty.to_le_bytes());
        b.extend(offset.to_le_bytes());
        offset += (data.len() as u64).div_ceil(32) * 32;
    }
    for (_, _, _, data) in &tensors {
        b.resize(b.len().div_ceil(32) * 32, 0);
        b.extend(data);
    }
    std::fs::write(path, b).unwrap();
    quantised
}

#[test]
fn q4_k_weights_kept_on_the_gpu_give_the_expanded_velocity() {
    let config = q4_k_config();
    let path = std::env::temp_dir().join(format!("vdit-q4k-{}.gguf", std::process::id()));
    let quantised = write_q4_k_gguf(&path, &config, |_| true);
    // Every Linear but the patch embedding (a Conv3d) holds Q4_K blocks, which the GGUF reader
    // expands to what vdit-wgpu's reference says they stand for.
    assert_eq!(quantised.len(), 6 + 10 * config.layers);
    let ckpt = Checkpoint::open(&path).unwrap();
    for (name, blocks) in &quantised {
        assert_same_bits(name, &ckpt.read_f32(name).unwrap(), &dequantize_q4k(blocks));
    }
    let mut rng = Rng::new(17);
    let latent = (vec![16, 2, 4, 6], rng.vec_normal(16 * 2 * 4 * 6, 1.0));
    let context = (vec![7, 256], rng.vec_normal(7 * 256, 1.0));
    let load = |precision, options: &LoadOptions| {
        WanDit::load_with_options(test_gpu(), &path, Some(config.clone()), precision, options)
            .unwrap()
    };
    let expand = LoadOptions {
        expand_quantized: true,
        ..Default::default()
    };
    for (precision, tol) in [(Precision::F32, 1e-6), (Precision::F16, 2e-3)] {
        if precision == Precision::F16 && !test_gpu().caps.shader_f16 {
            continue;
        }
        let kept = load(precision, &LoadOptions::default());
        let expanded = load(precision, &expand);
        // The quantised matrices take 4.75 bits per value instead of 32 or 16: under a third of
        // the weights' bytes in f32, under two thirds in f16 (whose time embedding stays f32).
        let (kept_bytes, expanded_bytes) = (kept.weight_bytes().0, expanded.weight_bytes().0);
        let at_most = if precision == Precision::F32 { 3 } else { 2 };
        assert!(
            kept_bytes * 3 < expanded_bytes * at_most,
            "{precision:?}: Q4_K weights not kept ({kept_bytes} against {expanded_bytes} bytes)"
        );
        let want: Vec<f64> = forward(&expanded, &latent, &context, 500.0)
            .iter()
            .map(|&v| v as f64)
            .collect();
        let got = forward(&kept, &latent, &context, 500.0);
        assert_close(&format!("Q4_K kept, {precision:?}"), 0, &got, &want, tol);
        // Asked to quantise to Q8_0 as well, the file's Q4_K weights stay Q4_K.
        let q8 = LoadOptions {
            quantize: Some(Quantize::Q8_0),
            ..Default::default()
        };
        assert_eq!(load(precision, &q8).weight_bytes().0, kept_bytes);
    }
    // The same weights in f32, quantised at load by the same quantiser: the Q4_K file's model.
    let dense_path = path.with_extension("f32.gguf");
    write_q4_k_gguf(&dense_path, &config, |_| false);
    let from_dense = |options: &LoadOptions| {
        let dit = WanDit::load_with_options(
            test_gpu(),
            &dense_path,
            Some(config.clone()),
            Precision::F32,
            options,
        )
        .unwrap();
        let bytes = dit.weight_bytes().0;
        (forward(&dit, &latent, &context, 500.0), bytes)
    };
    let quantize = LoadOptions {
        quantize: Some(Quantize::Q4_K),
        ..Default::default()
    };
    let (q4k, q4k_bytes) = from_dense(&quantize);
    let kept = load(Precision::F32, &LoadOptions::default());
    assert_eq!(q4k_bytes, kept.weight_bytes().0);
    let want: Vec<f64> = forward(&kept, &latent, &context, 500.0)
        .iter()
        .map(|&v| v as f64)
        .collect();
    assert_close("Q4_K quantised at load", 0, &q4k, &want, 1e-6);
    // And near the f32 model: 4-bit values are off by about 8% of a weight's size (RMS), which
    // grows to about 16% of this random model's velocity.
    let (dense, dense_bytes) = from_dense(&LoadOptions::default());
    assert!(q4k_bytes * 3 < dense_bytes);
    let dense: Vec<f64> = dense.iter().map(|&v| v as f64).collect();
    assert_close("Q4_K against f32", 0, &q4k, &dense, 0.25);
    // Offloaded blocks take turns in two GPU slots, so all must be stored alike: a file that
    // quantises one block's matrix and not another's is refused, and loads expanded.
    let mixed_path = path.with_extension("mixed.gguf");
    write_q4_k_gguf(&mixed_path, &config, |name| {
        name != "blocks.1.ffn.net.2.weight"
    });
    let offload = |expand_quantized| LoadOptions {
        offload: true,
        expand_quantized,
        ..Default::default()
    };
    let load_mixed = |options: &LoadOptions| {
        WanDit::load_with_options(
            test_gpu(),
            &mixed_path,
            Some(config.clone()),
            Precision::F32,
            options,
        )
    };
    let message = load_mixed(&offload(false)).err().unwrap().to_string();
    assert!(
        message.contains("--offload")
            && message.contains("block 1")
            && message.contains("--expand-quantized"),
        "{message}"
    );
    assert!(load_mixed(&offload(true)).unwrap().is_offloaded());
    for p in [&dense_path, &mixed_path] {
        std::fs::remove_file(p).unwrap();
    }
    std::fs::remove_file(&path).unwrap();
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
