//! The Wan-VAE decoder against diffusers' AutoencoderKLWan on a tiny random-weight config
//! (goldens made by tools/make_vae_goldens.py), through both key layouts, whole and in tiles.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use vdit_model::dit::Precision;
use vdit_model::vae::{
    diffusers_to_original, DecodeOptions, LatentScale, VaeConfig, VaeNaming, VaeTiling, WanVae,
};
use vdit_model::weights::{WeightFile, WeightSet};
use vdit_wgpu::testing::{assert_close, test_gpu};
use vdit_wgpu::{DType, Tensor};

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/goldens/vae/tiny")
}

fn read(name: &str) -> (Vec<usize>, Vec<f32>) {
    read_from("io.safetensors", name)
}

fn read_from(file: &str, name: &str) -> (Vec<usize>, Vec<f32>) {
    let io = WeightFile::open(golden_dir().join(file)).unwrap();
    let view = io.get(name).unwrap();
    (view.shape().to_vec(), view.to_f32().unwrap())
}

fn config() -> VaeConfig {
    VaeConfig::from_json_file(golden_dir().join("diffusers/config.json")).unwrap()
}

/// Decodes the golden latent with `vae` and compares with diffusers' frames.
fn check(vae: &WanVae, what: &str, input: &str, scale: LatentScale, tol: f64) {
    let gpu = test_gpu();
    let (shape, latent) = read(input);
    let (want_shape, want) = read("frames");
    let latent = Tensor::from_f32(gpu, &shape, &latent, DType::F32).unwrap();
    let frames = vae.decode(gpu, &latent, scale).unwrap();
    assert_eq!(frames.shape(), &want_shape[..]);
    let got = frames.to_vec_f32(gpu).unwrap();
    let want: Vec<f64> = want.iter().map(|&v| v as f64).collect();
    assert_close(what, 0, &got, &want, tol);
    assert!(
        got.iter().all(|v| (-1.0..=1.0).contains(v)),
        "{what}: not clamped"
    );
}

#[test]
fn decoder_matches_diffusers_in_f32() {
    let gpu = test_gpu();
    let vae = WanVae::load(gpu, &golden_dir().join("diffusers"), Precision::F32).unwrap();
    assert_eq!(vae.naming, VaeNaming::Diffusers);
    assert_eq!(vae.config, config());
    check(
        &vae,
        "VAE f32, normalised latent",
        "latent",
        LatentScale::Normalized,
        1e-4,
    );
    check(
        &vae,
        "VAE f32, de-normalised latent",
        "latent_denormalized",
        LatentScale::Denormalized,
        1e-4,
    );
}

#[test]
fn decoder_matches_diffusers_in_f16() {
    let gpu = test_gpu();
    if !gpu.caps.shader_f16 {
        eprintln!("skipping f16: the adapter lacks SHADER_F16");
        return;
    }
    let vae = WanVae::load(gpu, &golden_dir().join("diffusers"), Precision::F16).unwrap();
    check(
        &vae,
        "VAE f16 storage",
        "latent",
        LatentScale::Normalized,
        2e-2,
    );
}

fn decode_tiled(vae: &WanVae, latent: &Tensor, tiling: VaeTiling) -> Vec<f32> {
    let gpu = test_gpu();
    let options = DecodeOptions {
        tiling: Some(tiling),
        ..Default::default()
    };
    let frames = vae.decode_with(gpu, latent, options).unwrap();
    frames.to_vec_f32(gpu).unwrap()
}

#[test]
fn tiled_decoder_matches_diffusers_tiled_decode() {
    let gpu = test_gpu();
    let vae = WanVae::load(gpu, &golden_dir().join("diffusers"), Precision::F32).unwrap();
    let (shape, latent) = read("latent");
    let latent = Tensor::from_f32(gpu, &shape, &latent, DType::F32).unwrap();
    for (tile, overlap) in [(4, 1), (4, 2)] {
        let (want_shape, want) = read_from(
            "tiled.safetensors",
            &format!("frames_tile{tile}_overlap{overlap}"),
        );
        assert_eq!(want_shape, [3, 9, 40, 56]);
        let got = decode_tiled(&vae, &latent, VaeTiling::new(tile, overlap).unwrap());
        let want: Vec<f64> = want.iter().map(|&v| v as f64).collect();
        let case = format!("VAE f32, tiles of {tile} overlapping by {overlap}");
        assert_close(&case, 0, &got, &want, 1e-4);
        assert!(
            got.iter().all(|v| (-1.0..=1.0).contains(v)),
            "{case}: not clamped"
        );
    }
}

#[test]
fn a_latent_within_one_tile_is_decoded_whole() {
    let gpu = test_gpu();
    let vae = WanVae::load(gpu, &golden_dir().join("diffusers"), Precision::F32).unwrap();
    let (shape, latent) = read("latent");
    let latent = Tensor::from_f32(gpu, &shape, &latent, DType::F32).unwrap();
    let whole = vae.decode(gpu, &latent, LatentScale::Normalized).unwrap();
    let whole = whole.to_vec_f32(gpu).unwrap();
    // The latent is 5 x 7: a tile of 7 holds it, whatever the overlap.
    for tiling in [VaeTiling::new(7, 3).unwrap(), VaeTiling::default()] {
        let tiled = decode_tiled(&vae, &latent, tiling);
        assert!(
            tiled
                .iter()
                .zip(&whole)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "tiling {tiling}: differs from the whole decode"
        );
    }
    let bad = DecodeOptions {
        tiling: Some(VaeTiling {
            tile: 4,
            overlap: 4,
        }),
        ..Default::default()
    };
    let err = vae
        .decode_with(gpu, &latent, bad)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("VAE tiling") && err.contains("overlap (4)"),
        "{err}"
    );
}

#[test]
fn decoder_reads_the_original_pth() {
    let gpu = test_gpu();
    let path = golden_dir().join("original/Wan2.1_VAE.pth");
    let vae = WanVae::load(gpu, &path, Precision::F32).unwrap();
    assert_eq!(vae.naming, VaeNaming::Original);
    // No config beside the .pth: the widths come from the tensors, the rest is Wan2.1's.
    assert_eq!(vae.config, config());
    check(
        &vae,
        "VAE f32 from the .pth",
        "latent",
        LatentScale::Normalized,
        1e-4,
    );
}

/// The diffusers tensors renamed to the original layout under a ComfyUI-like prefix, in memory.
fn renamed_tensors(prefix: &str) -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    let set = WeightSet::open(golden_dir().join("diffusers")).unwrap();
    set.names()
        .map(|name| {
            let view = set.get(name).unwrap();
            let original = format!("{prefix}{}", diffusers_to_original(name, 2));
            (original, (view.shape().to_vec(), view.to_f32().unwrap()))
        })
        .collect()
}

fn in_memory(tensors: BTreeMap<String, (Vec<usize>, Vec<f32>)>) -> WeightSet {
    WeightSet::from_f32("renamed", tensors).unwrap()
}

#[test]
fn decoder_reads_original_names_under_a_prefix() {
    let gpu = test_gpu();
    let source = in_memory(renamed_tensors("first_stage_model."));
    let vae = WanVae::from_source(gpu, &source, config(), Precision::F32).unwrap();
    assert_eq!(vae.naming, VaeNaming::Original);
    check(
        &vae,
        "VAE f32, prefixed original names",
        "latent",
        LatentScale::Normalized,
        1e-4,
    );
}

#[test]
fn bad_inputs_have_clear_errors() {
    let gpu = test_gpu();
    let vae = WanVae::load(gpu, &golden_dir().join("diffusers"), Precision::F32).unwrap();
    let latent = Tensor::empty(gpu, &[8, 3, 5, 7], DType::F32).unwrap();
    let err = vae
        .decode(gpu, &latent, LatentScale::Normalized)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("must be [16, F, H, W]"), "{err}");

    let mut tensors = renamed_tensors("");
    tensors.remove("decoder.upsamples.3.time_conv.weight");
    let err = WanVae::from_source(gpu, &in_memory(tensors), config(), Precision::F32)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("decoder.upsamples.3.time_conv.weight")
            && err.contains("decoder.up_blocks.0.upsamplers.0.time_conv.weight"),
        "{err}"
    );

    let mut tensors = renamed_tensors("");
    tensors.insert("decoder.head.2.bias".into(), (vec![4], vec![0.0; 4]));
    let err = WanVae::from_source(gpu, &in_memory(tensors), config(), Precision::F32)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("decoder.head.2.bias") && err.contains("[3]"),
        "{err}"
    );

    let empty = in_memory(BTreeMap::new());
    let err = WanVae::from_source(gpu, &empty, config(), Precision::F32)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("not a Wan VAE"), "{err}");
    // Values that do not fill their shape are refused when the set is made.
    let mut tensors = BTreeMap::new();
    tensors.insert("decoder.conv1.bias".to_string(), (vec![3, 2], vec![0.0; 5]));
    let err = WeightSet::from_f32("renamed", tensors)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("renamed") && err.contains("decoder.conv1.bias") && err.contains("[3, 2]"),
        "{err}"
    );
}

/// The shape without PyTorch's trailing ones ([C, 1, 1, 1] gammas, 1x1 kernels).
fn trimmed(shape: &[usize]) -> Vec<usize> {
    let mut s = shape.to_vec();
    while s.len() > 1 && s.last() == Some(&1) {
        s.pop();
    }
    s
}

#[test]
fn random_weights_list_the_decoder_tensors_of_diffusers_and_decode() {
    let config = config();
    let set = WeightSet::open(golden_dir().join("diffusers")).unwrap();
    let decoder: BTreeMap<String, Vec<usize>> = set
        .names()
        .filter(|n| n.starts_with("decoder.") || n.starts_with("post_quant_conv."))
        .map(|n| (n.to_string(), trimmed(set.info(n).unwrap().shape())))
        .collect();
    let random: BTreeMap<String, Vec<usize>> = (config.tensor_shapes().into_iter())
        .map(|(name, shape)| (name, trimmed(&shape)))
        .collect();
    assert_eq!(random, decoder);

    // Built through the checkpoint path, a random decoder decodes to finite frames, the same
    // for the same seed.
    let gpu = test_gpu();
    let (shape, latent) = read("latent");
    let latent = Tensor::from_f32(gpu, &shape, &latent, DType::F32).unwrap();
    let decode = |seed| {
        let vae = WanVae::random(gpu, config.clone(), Precision::F32, seed).unwrap();
        assert_eq!(vae.naming, VaeNaming::Diffusers);
        let frames = vae.decode(gpu, &latent, LatentScale::Normalized).unwrap();
        frames.to_vec_f32(gpu).unwrap()
    };
    let a = decode(1);
    assert!(a.iter().all(|v| v.is_finite()));
    assert_eq!(a, decode(1));
    assert_ne!(a, decode(2));
}
