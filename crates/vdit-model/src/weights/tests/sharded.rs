//! Sharded checkpoints through an index, and choosing the weights of a folder.

use super::*;
use crate::weights::WeightSet;

fn write_index(path: &Path, entries: &[(&str, &str)]) {
    let map: serde_json::Map<String, serde_json::Value> = entries
        .iter()
        .map(|(t, f)| (t.to_string(), serde_json::Value::from(*f)))
        .collect();
    let json = serde_json::json!({"metadata": {"total_size": 0}, "weight_map": map});
    std::fs::write(path, json.to_string()).unwrap();
}

const SHARD1: &str = "diffusion_pytorch_model-00001-of-00002.safetensors";
const SHARD2: &str = "diffusion_pytorch_model-00002-of-00002.safetensors";
const INDEX: &str = "diffusion_pytorch_model.safetensors.index.json";

fn write_two_shards(dir: &TempDir) {
    write_safetensors(
        &dir.join(SHARD1),
        &[
            Raw::f32("a", &[2], &[1.0, 2.0]),
            Raw::f32("b", &[1], &[3.0]),
        ],
    );
    write_safetensors(&dir.join(SHARD2), &[Raw::f32("c", &[3], &[4.0, 5.0, 6.0])]);
}

#[test]
fn index_joins_shards() {
    let dir = TempDir::new("shards");
    write_two_shards(&dir);
    write_index(
        &dir.join(INDEX),
        &[("a", SHARD1), ("b", SHARD1), ("c", SHARD2)],
    );
    for opened in [dir.join(INDEX), dir.path().to_path_buf()] {
        let set = WeightSet::open(&opened).unwrap();
        assert_eq!(set.source(), dir.join(INDEX));
        assert_eq!(set.folder(), dir.path());
        assert_eq!(set.files().len(), 2);
        assert_eq!(set.names().collect::<Vec<_>>(), ["a", "b", "c"]);
        assert_eq!(set.read_f32("c").unwrap(), [4.0, 5.0, 6.0]);
        assert_eq!(set.read_f32("a").unwrap(), [1.0, 2.0]);
        assert_eq!(set.get("c").unwrap().path(), dir.join(SHARD2));
    }
}

#[test]
fn index_errors_name_the_index_and_tensor() {
    let dir = TempDir::new("badindex");
    write_two_shards(&dir);
    let index = dir.join(INDEX);
    let index_text = index.display().to_string();
    write_index(&index, &[("a", SHARD2)]);
    assert_names(WeightSet::open(&index), &[&index_text, "'a'", SHARD2]);
    write_index(&index, &[("a", "../elsewhere.safetensors")]);
    assert_names(WeightSet::open(&index), &[&index_text, "elsewhere"]);
    write_index(&index, &[("a", "missing-shard.safetensors")]);
    assert_names(WeightSet::open(&index), &["missing-shard.safetensors"]);
    std::fs::write(&index, "{\"nothing\": 1}").unwrap();
    assert_names(WeightSet::open(&index), &[&index_text, "weight_map"]);
    std::fs::write(&index, "not json").unwrap();
    assert_names(WeightSet::open(&index), &[&index_text, "JSON"]);
}

#[test]
fn folder_choice() {
    let dir = TempDir::new("folder");
    let folder_text = dir.path().display().to_string();
    assert_names(
        WeightSet::open(dir.path()),
        &[&folder_text, "no .safetensors"],
    );

    write_safetensors(&dir.join("one.safetensors"), &[Raw::f32("x", &[1], &[1.0])]);
    assert_eq!(
        WeightSet::open(dir.path()).unwrap().source(),
        dir.join("one.safetensors")
    );

    write_safetensors(&dir.join("two.safetensors"), &[Raw::f32("y", &[1], &[1.0])]);
    assert_names(
        WeightSet::open(dir.path()),
        &[&folder_text, "one.safetensors", "two.safetensors"],
    );

    // diffusers' own file name wins over other files.
    write_safetensors(
        &dir.join("diffusion_pytorch_model.safetensors"),
        &[Raw::f32("z", &[1], &[1.0])],
    );
    let set = WeightSet::open(dir.path()).unwrap();
    assert_eq!(set.names().collect::<Vec<_>>(), ["z"]);
}
