//! Reading and writing the small f32 tensor files the commands exchange (latents, contexts,
//! velocities, frames) as safetensors. Writes go to a temporary name and are renamed when
//! complete, so a failed run never leaves a half-written file.

use std::path::Path;

use crate::error::{input_err, Result};
use crate::weights::WeightFile;

/// A named f32 tensor on the host.
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// Reads tensor `name` of a safetensors file as f32. When the file holds a single tensor, any
/// name is accepted for it.
pub fn read_tensor(path: &Path, name: &str) -> Result<HostTensor> {
    let file = WeightFile::open(path)?;
    let names: Vec<&str> = file.names().collect();
    let chosen = if file.contains(name) {
        name.to_string()
    } else if names.len() == 1 {
        names[0].to_string()
    } else {
        return Err(input_err(
            path.display().to_string(),
            format!("no tensor '{name}' (found: {})", names.join(", ")),
        ));
    };
    let view = file.get(&chosen)?;
    Ok(HostTensor {
        shape: view.shape().to_vec(),
        data: view.to_f32()?,
    })
}

/// Writes f32 tensors as one safetensors file, atomically.
pub fn write_tensors(path: &Path, tensors: &[(&str, &HostTensor)]) -> Result<()> {
    let io_err = |e: String| input_err(path.display().to_string(), e);
    for (name, t) in tensors {
        if t.shape.iter().product::<usize>() != t.data.len() {
            return Err(io_err(format!(
                "tensor '{name}': shape {:?} does not match its data",
                t.shape
            )));
        }
    }
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(name, t)| {
            safetensors::tensor::TensorView::new(
                safetensors::Dtype::F32,
                t.shape.clone(),
                bytemuck::cast_slice(&t.data),
            )
            .map(|v| (name.to_string(), v))
            .map_err(|e| io_err(e.to_string()))
        })
        .collect::<Result<_>>()?;
    let bytes = safetensors::serialize(views, None).map_err(|e| io_err(e.to_string()))?;
    write_atomically(path, &bytes)
}

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let io_err = |e: std::io::Error| input_err(path.display().to_string(), e.to_string());
    let file_name = path
        .file_name()
        .ok_or_else(|| input_err(path.display().to_string(), "not a file name"))?;
    let tmp = path.with_file_name(format!(".{}.partial", file_name.to_string_lossy()));
    std::fs::write(&tmp, bytes).map_err(io_err)?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io_err(e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_single_tensor_fallback() {
        let dir = std::env::temp_dir().join(format!("vdit-tensor-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.safetensors");
        let t = HostTensor {
            shape: vec![2, 3],
            data: vec![1.0, 2.0, 3.0, 4.0, 5.0, -6.5],
        };
        write_tensors(&path, &[("velocity", &t)]).unwrap();
        assert_eq!(read_tensor(&path, "velocity").unwrap(), t);
        assert_eq!(read_tensor(&path, "other").unwrap(), t);
        let two = dir.join("two.safetensors");
        write_tensors(&two, &[("a", &t), ("b", &t)]).unwrap();
        let err = read_tensor(&two, "c").unwrap_err().to_string();
        assert!(
            err.contains("no tensor 'c'") && err.contains("two.safetensors"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
