//! The weights of one model: a single safetensors file, a sharded checkpoint described by a
//! `*.safetensors.index.json`, or a folder holding either.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Component, Path, PathBuf};

use serde_json::Value;
use vdit_wgpu::{DType, Gpu, Tensor};

use super::error::{Result, WeightError};
use super::file::WeightFile;
use super::header::TensorInfo;
use super::random::InitRule;
use super::view::TensorView;

/// The file name diffusers gives a model's weights; shards and index derive from it.
const DIFFUSERS_WEIGHTS: &str = "diffusion_pytorch_model.safetensors";

/// Tensors by name across one or more memory-mapped files.
#[derive(Debug)]
pub struct WeightSet {
    /// What was opened: the file, the index or the folder's choice of either.
    source: PathBuf,
    files: Vec<WeightFile>,
    /// Tensor name -> index into `files`; sorted so that listings are stable. The scales and
    /// markers of scaled fp8 files are not listed: they are applied when their weight is read.
    location: BTreeMap<String, usize>,
    /// Weight name -> the scale its values are multiplied by (scaled fp8 files).
    scales: HashMap<String, f32>,
}

impl WeightSet {
    /// Opens a `.safetensors` or GGUF file, a `*.safetensors.index.json` or a folder holding one
    /// of them.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        if path.is_dir() {
            let chosen = choose_in_folder(path)?;
            return Self::open(chosen);
        }
        let set = if is_index_name(path) {
            Self::open_index(path)?
        } else {
            Self::from_file(WeightFile::open(path)?)
        };
        set.with_scales()
    }

    /// Takes the per-tensor scales of a scaled fp8 checkpoint out of the listing and applies
    /// them to their weights.
    fn with_scales(mut self) -> Result<Self> {
        let (scales, auxiliary) = read_scales(&self)?;
        self.location.retain(|name, _| !auxiliary.contains(name));
        self.scales = scales;
        Ok(self)
    }

    /// A set of one already opened file, read as it is (the scales of scaled fp8 weights are
    /// applied by [`WeightSet::open`]).
    pub fn from_file(file: WeightFile) -> Self {
        let location = file.names().map(|n| (n.to_string(), 0)).collect();
        Self {
            source: file.path().to_path_buf(),
            files: vec![file],
            location,
            scales: HashMap::new(),
        }
    }

    /// f32 tensors held in memory, seen as a set called `origin` (see [`WeightFile::from_f32`]).
    pub fn from_f32(
        origin: impl Into<PathBuf>,
        tensors: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
    ) -> Result<Self> {
        Ok(Self::from_file(WeightFile::from_f32(origin, tensors)?))
    }

    /// Seeded random f32 tensors, seen as a set called `origin` (see [`WeightFile::random`]).
    pub fn random(
        origin: impl Into<PathBuf>,
        seed: u64,
        shapes: impl IntoIterator<Item = (String, Vec<usize>)>,
        rule: InitRule,
    ) -> Self {
        Self::from_file(WeightFile::random(origin, seed, shapes, rule))
    }

    /// Opens every shard the index's `weight_map` names (paths relative to the index) and
    /// checks that each tensor is where the index says.
    fn open_index(index_path: &Path) -> Result<Self> {
        let index_err = |reason: String| WeightError::Index {
            path: index_path.to_path_buf(),
            reason,
        };
        let text = std::fs::read_to_string(index_path).map_err(|source| WeightError::Io {
            path: index_path.to_path_buf(),
            action: "cannot read",
            source,
        })?;
        let json: Value =
            serde_json::from_str(&text).map_err(|e| index_err(format!("not valid JSON: {e}")))?;
        let Some(Value::Object(weight_map)) = json.get("weight_map") else {
            return Err(index_err("no 'weight_map' object".into()));
        };
        let folder = index_path.parent().unwrap_or(Path::new(""));
        let mut files = Vec::new();
        let mut file_of_shard: HashMap<&str, usize> = HashMap::new();
        let mut location = BTreeMap::new();
        for (tensor, shard) in weight_map {
            let Some(shard) = shard.as_str() else {
                return Err(index_err(format!(
                    "tensor '{tensor}' maps to {shard}, not a file name"
                )));
            };
            let slot = match file_of_shard.get(shard) {
                Some(&slot) => slot,
                None => {
                    if !is_plain_relative(Path::new(shard)) {
                        return Err(index_err(format!(
                            "shard '{shard}' is not a path inside the index's folder"
                        )));
                    }
                    files.push(WeightFile::open(folder.join(shard))?);
                    file_of_shard.insert(shard, files.len() - 1);
                    files.len() - 1
                }
            };
            if !files[slot].contains(tensor) {
                return Err(index_err(format!(
                    "tensor '{tensor}' is mapped to {shard}, which has no such tensor"
                )));
            }
            location.insert(tensor.clone(), slot);
        }
        Ok(Self {
            source: index_path.to_path_buf(),
            files,
            location,
            scales: HashMap::new(),
        })
    }

    /// The file or index that was opened.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// The folder of the source, where a `config.json` would sit.
    pub fn folder(&self) -> &Path {
        self.source.parent().unwrap_or(Path::new(""))
    }

    pub fn files(&self) -> &[WeightFile] {
        &self.files
    }

    /// Tensor names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.location.keys().map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.location.len()
    }

    pub fn is_empty(&self) -> bool {
        self.location.is_empty()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.location.contains_key(name)
    }

    /// Dtype and shape of a tensor, without touching its data.
    pub fn info(&self, name: &str) -> Option<&TensorInfo> {
        let &slot = self.location.get(name)?;
        self.files[slot].info(name)
    }

    /// The tensor called `name`; an error naming the set's source when there is none.
    pub fn get(&self, name: &str) -> Result<TensorView<'_>> {
        match self.location.get(name) {
            Some(&slot) => {
                let view = self.files[slot].get(name)?;
                Ok(match self.scales.get(name) {
                    Some(&s) => view.with_scale(s),
                    None => view,
                })
            }
            None => Err(WeightError::Missing {
                path: self.source.clone(),
                tensor: name.to_string(),
                hint: String::new(),
            }),
        }
    }

    /// The tensor's elements as f32.
    pub fn read_f32(&self, name: &str) -> Result<Vec<f32>> {
        self.get(name)?.to_f32()
    }

    /// The tensor's bytes in a GPU storage type (borrowed when the file stores that type).
    pub fn read_storage(&self, name: &str, storage: DType) -> Result<Cow<'_, [u8]>> {
        self.get(name)?.to_storage(storage)
    }

    /// Uploads the tensor in `storage`, after checking that its shape is `expected_shape`.
    pub fn upload(
        &self,
        gpu: &Gpu,
        name: &str,
        expected_shape: &[usize],
        storage: DType,
    ) -> Result<Tensor> {
        self.get(name)?.upload(gpu, expected_shape, storage)
    }
}

/// The per-tensor scale of a scaled fp8 weight `X.weight`: ComfyUI's `X.scale_weight` (with
/// a `scaled_fp8` marker tensor) or the newer `X.weight_scale` (with `_quantization_metadata`).
const WEIGHT_SCALE_SUFFIXES: [&str; 2] = [".scale_weight", ".weight_scale"];
/// Activation scales for fp8 matmuls and per-layer format records; vdit multiplies in f16 or
/// f32, so these are not needed.
const IGNORED_SUFFIXES: [&str; 3] = [".scale_input", ".input_scale", ".comfy_quant"];
/// The marker tensor of ComfyUI's scaled fp8 files.
const SCALED_FP8_MARKER: &str = "scaled_fp8";

/// The scales and auxiliary tensors (scales, markers, activation scales) of a scaled fp8 file,
/// checked against its weights.
fn read_scales(set: &WeightSet) -> Result<(HashMap<String, f32>, HashSet<String>)> {
    let (mut scales, mut auxiliary) = (HashMap::new(), HashSet::new());
    for name in set.names() {
        let bad = |reason: String| WeightError::BadTensor {
            path: set.source().to_path_buf(),
            tensor: name.to_string(),
            reason,
        };
        if name.rsplit('.').next() == Some(SCALED_FP8_MARKER)
            || IGNORED_SUFFIXES.iter().any(|s| name.ends_with(s))
        {
            auxiliary.insert(name.to_string());
            continue;
        }
        let Some(layer) = WEIGHT_SCALE_SUFFIXES
            .iter()
            .find_map(|s| name.strip_suffix(s))
        else {
            continue;
        };
        let weight = format!("{layer}.weight");
        if !set.contains(&weight) {
            return Err(bad(format!("a weight scale without its weight '{weight}'")));
        }
        let values = set.read_f32(name)?;
        let [scale] = values[..] else {
            return Err(bad(format!(
                "a scale of {} values: only one scale per tensor is read (not block-wise scales)",
                values.len()
            )));
        };
        if !scale.is_finite() {
            return Err(bad(format!("the scale is {scale}")));
        }
        scales.insert(weight, scale);
        auxiliary.insert(name.to_string());
    }
    Ok((scales, auxiliary))
}

fn is_index_name(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    // `model.safetensors.index.json`, and diffusers' variants such as `….index.fp16.json`.
    name.contains(".safetensors.index") && name.ends_with(".json")
}

/// A single-file checkpoint: safetensors or GGUF.
fn is_single_file_name(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e == "safetensors" || e == "gguf")
}

/// Shard names are plain relative paths: nothing absolute, nothing climbing out of the folder.
fn is_plain_relative(path: &Path) -> bool {
    path.components().all(|c| matches!(c, Component::Normal(_)))
}

/// Picks the weights of a folder: diffusers' index, then diffusers' single file, then the only
/// index, then the only `.safetensors` or `.gguf` file. Anything more ambiguous is an error listing the choices.
fn choose_in_folder(folder: &Path) -> Result<PathBuf> {
    let entries = std::fs::read_dir(folder).map_err(|source| WeightError::Io {
        path: folder.to_path_buf(),
        action: "cannot list",
        source,
    })?;
    let mut indexes = Vec::new();
    let mut singles = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if !path.is_file() {
            continue;
        }
        if is_index_name(&path) {
            indexes.push(path);
        } else if is_single_file_name(&path) {
            singles.push(path);
        }
    }
    indexes.sort();
    singles.sort();
    let preferred_index = folder.join(format!("{DIFFUSERS_WEIGHTS}.index.json"));
    let preferred_single = folder.join(DIFFUSERS_WEIGHTS);
    if indexes.contains(&preferred_index) {
        return Ok(preferred_index);
    }
    if singles.contains(&preferred_single) {
        return Ok(preferred_single);
    }
    let not_found = |reason: String| WeightError::NotFound {
        path: folder.to_path_buf(),
        reason,
    };
    let names = |paths: &[PathBuf]| {
        paths
            .iter()
            .filter_map(|p| p.file_name()?.to_str().map(str::to_string))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match (indexes.len(), singles.len()) {
        (1, _) => Ok(indexes.remove(0)),
        (0, 1) => Ok(singles.remove(0)),
        (0, 0) => Err(not_found(
            "the folder holds no .safetensors or .gguf file and no .safetensors.index.json".into(),
        )),
        (0, _) => Err(not_found(format!(
            "several weight files and no index to say which belong together ({}); name one",
            names(&singles)
        ))),
        _ => Err(not_found(format!(
            "several indexes ({}); name one",
            names(&indexes)
        ))),
    }
}
