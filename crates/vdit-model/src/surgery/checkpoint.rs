//! The resumable state of a distillation run: one safetensors file in the output folder that
//! holds every trainer's tensors and, in its metadata, the run's settings and progress. It is
//! rewritten atomically after each sample, so an interrupted run loses at most one sample.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{input_err, Result};
use crate::tensor_file::{write_atomically, HostTensor};

pub const CHECKPOINT_FILE: &str = "checkpoint.safetensors";

/// How far a run got; `settings` must match for a run to resume.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    pub settings: serde_json::Value,
    /// Training samples (prompt x seed) finished.
    pub samples_done: usize,
    /// Held-out errors before training and with elu1, per pair name (`block.mode`), once
    /// measured.
    #[serde(default)]
    pub initial_error: HashMap<String, f64>,
    #[serde(default)]
    pub elu1_error: HashMap<String, f64>,
}

/// Writes `tensors` and `progress` as `DIR/checkpoint.safetensors`.
pub fn save(dir: &Path, progress: &Progress, tensors: &[(String, HostTensor)]) -> Result<()> {
    let path = dir.join(CHECKPOINT_FILE);
    let err = |m: String| input_err(path.display().to_string(), m);
    let views = tensors
        .iter()
        .map(|(name, t)| {
            safetensors::tensor::TensorView::new(
                safetensors::Dtype::F32,
                t.shape.clone(),
                bytemuck::cast_slice(&t.data),
            )
            .map(|v| (name.clone(), v))
            .map_err(|e| err(e.to_string()))
        })
        .collect::<Result<Vec<_>>>()?;
    let meta = HashMap::from([(
        "progress".to_string(),
        serde_json::to_string(progress).map_err(|e| err(e.to_string()))?,
    )]);
    let bytes = safetensors::serialize(views, Some(meta)).map_err(|e| err(e.to_string()))?;
    write_atomically(&path, &bytes)
}

/// Reads `DIR/checkpoint.safetensors`, or `None` when the folder holds none.
pub fn load(dir: &Path) -> Result<Option<(Progress, HashMap<String, HostTensor>)>> {
    let path = dir.join(CHECKPOINT_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let err = |m: String| input_err(path.display().to_string(), m);
    let bytes = std::fs::read(&path).map_err(|e| err(e.to_string()))?;
    let (_, meta) =
        safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| err(e.to_string()))?;
    let text = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get("progress"))
        .ok_or_else(|| err("no progress record: not a vdit distill checkpoint".into()))?;
    let progress: Progress = serde_json::from_str(text).map_err(|e| err(e.to_string()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| err(e.to_string()))?;
    let mut tensors = HashMap::new();
    for (name, view) in st.tensors() {
        if view.dtype() != safetensors::Dtype::F32 {
            return Err(err(format!("tensor '{name}' is not f32")));
        }
        let data: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        tensors.insert(
            name,
            HostTensor {
                shape: view.shape().to_vec(),
                data,
            },
        );
    }
    Ok(Some((progress, tensors)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let dir = std::env::temp_dir().join(format!("vdit-ckpt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(load(&dir).unwrap().is_none());
        let p = Progress {
            settings: serde_json::json!({"steps": 3}),
            samples_done: 2,
            initial_error: HashMap::from([("0.linear".to_string(), 0.5)]),
            elu1_error: HashMap::new(),
        };
        let t = HostTensor {
            shape: vec![2],
            data: vec![1.5, -2.0],
        };
        save(&dir, &p, &[("a".into(), t.clone())]).unwrap();
        let (q, ts) = load(&dir).unwrap().unwrap();
        assert_eq!(q, p);
        assert_eq!(ts["a"], t);
        std::fs::write(dir.join(CHECKPOINT_FILE), b"garbage").unwrap();
        let e = load(&dir).unwrap_err().to_string();
        assert!(e.contains(CHECKPOINT_FILE), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
