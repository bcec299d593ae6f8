//! Random weights as a weight source: values drawn from (seed, name) at each read, shapes from
//! the config's manifest, read through the same checkpoint interface as a file.

use super::tiny_config;
use crate::weights::random::{RandomValues, Uniform};
use crate::weights::{Checkpoint, FileFormat, StoredDType, WeightSet};

fn std_dev(values: &[f32]) -> f32 {
    let n = values.len() as f32;
    let mean = values.iter().sum::<f32>() / n;
    (values.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / n).sqrt()
}

#[test]
fn values_are_a_function_of_seed_and_name() {
    let config = tiny_config();
    let a = config.random_weights(5);
    let b = config.random_weights(5);
    let other_seed = config.random_weights(6);
    let name = "blocks.1.attn1.to_q.weight";
    let first = a.read_f32(name).unwrap();
    assert_eq!(first, a.read_f32(name).unwrap(), "a second read differs");
    assert_eq!(
        first,
        b.read_f32(name).unwrap(),
        "another set of the same seed differs"
    );
    assert_ne!(first, other_seed.read_f32(name).unwrap());
    // Same shape, other name: another stream.
    assert_ne!(first, a.read_f32("blocks.1.attn1.to_k.weight").unwrap());
    assert_ne!(first, a.read_f32("blocks.0.attn1.to_q.weight").unwrap());
}

#[test]
fn long_tensors_are_drawn_in_chunks_of_one_stream() {
    // Over the generator's chunk: one stream, not a restart per chunk.
    let values = RandomValues::new(1, |_, _| Uniform::centred(1.0));
    let n = (1 << 20) + 3;
    let bytes = values.bytes("w", &[n]);
    let floats: &[f32] = bytemuck::cast_slice(&bytes);
    assert_eq!(floats.len(), n);
    assert_ne!(floats[..3], floats[1 << 20..]);
}

#[test]
fn the_set_lists_the_manifest_and_reads_as_a_checkpoint() {
    let config = tiny_config();
    let set = config.random_weights(1);
    assert_eq!(set.files()[0].format(), FileFormat::Random);
    let manifest = config.tensor_shapes();
    assert_eq!(set.len(), manifest.len());
    for (name, shape) in &manifest {
        let info = set.info(name).unwrap();
        assert_eq!(info.shape(), shape.as_slice(), "{name}");
        assert_eq!(info.dtype(), StoredDType::F32);
        let view = set.get(name).unwrap();
        assert_eq!(
            view.to_f32().unwrap().len(),
            shape.iter().product::<usize>()
        );
    }
    // The DiT's checks of a checkpoint pass: diffusers layout, every tensor of the config.
    let ckpt = Checkpoint::from_set(set).unwrap();
    ckpt.verify(&config).unwrap();
    assert!(ckpt.get("blocks.9.ffn.net.2.weight").is_err());
}

#[test]
fn values_are_scaled_like_trained_weights() {
    let config = tiny_config();
    let set: WeightSet = config.random_weights(3);
    let gain = set.read_f32("blocks.0.attn1.norm_q.weight").unwrap();
    assert!(gain.iter().all(|g| (0.9..=1.1).contains(g)), "{gain:?}");
    // Uniform with std 1/sqrt(fan_in): the FFN's down projection has fan_in ffn_dim.
    let w = set.read_f32("blocks.0.ffn.net.2.weight").unwrap();
    let want = 1.0 / (config.ffn_dim as f32).sqrt();
    assert!(
        (std_dev(&w) / want - 1.0).abs() < 0.1,
        "{} {want}",
        std_dev(&w)
    );
    let bound = (3.0 / config.ffn_dim as f32).sqrt();
    assert!(w.iter().all(|v| v.abs() <= bound));
}
