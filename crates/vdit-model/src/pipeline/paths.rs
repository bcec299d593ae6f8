//! Where a model's parts are: a diffusers Wan folder, an original Wan2.1 folder, or explicit
//! files as ComfyUI users have them.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{input_err, Result};

/// The files of each part of a text-to-video model.
#[derive(Clone, Debug, Default)]
pub struct ModelPaths {
    pub dit: Option<PathBuf>,
    pub vae: Option<PathBuf>,
    pub text_encoder: Option<PathBuf>,
    pub tokenizer: Option<PathBuf>,
    /// Generation defaults shipped with the model (`vdit.json`), if any.
    pub defaults: Option<ModelDefaults>,
}

/// Generation settings a model folder recommends (`vdit.json` beside `model_index.json`).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ModelDefaults {
    pub width: Option<usize>,
    pub height: Option<usize>,
    pub frames: Option<usize>,
    pub steps: Option<usize>,
    pub guidance: Option<f32>,
    pub flow_shift: Option<f32>,
    pub fps: Option<u32>,
    pub note: Option<String>,
}

fn first_existing(root: &Path, candidates: &[&str]) -> Option<PathBuf> {
    candidates.iter().map(|c| root.join(c)).find(|p| p.exists())
}

impl ModelPaths {
    /// The parts of the model folder `root`: a diffusers Wan pipeline folder (model_index.json
    /// with transformer/, vae/, text_encoder/, tokenizer/) or the original Wan2.1 release
    /// (diffusion_pytorch_model*.safetensors, Wan2.1_VAE.pth, models_t5_umt5-xxl-enc-bf16.pth,
    /// google/umt5-xxl/).
    pub fn resolve(root: &Path) -> Result<Self> {
        if !root.is_dir() {
            return Err(input_err(
                root.display().to_string(),
                "not a model folder (use --dit, --vae, --text-encoder and --tokenizer for single files)",
            ));
        }
        let defaults = match root.join("vdit.json") {
            p if p.is_file() => {
                let text = std::fs::read_to_string(&p)
                    .map_err(|e| input_err(p.display().to_string(), e.to_string()))?;
                Some(
                    serde_json::from_str(&text)
                        .map_err(|e| input_err(p.display().to_string(), e.to_string()))?,
                )
            }
            _ => None,
        };
        let paths = if root.join("model_index.json").is_file() {
            Self {
                dit: first_existing(root, &["transformer"]),
                vae: first_existing(root, &["vae"]),
                text_encoder: first_existing(root, &["text_encoder"]),
                tokenizer: first_existing(root, &["tokenizer"]),
                defaults,
            }
        } else {
            let has_dit = std::fs::read_dir(root)
                .map(|d| {
                    d.flatten().any(|e| {
                        let n = e.file_name().to_string_lossy().to_string();
                        n.starts_with("diffusion_pytorch_model") && n.contains(".safetensors")
                    })
                })
                .unwrap_or(false);
            Self {
                dit: has_dit.then(|| root.to_path_buf()),
                vae: first_existing(root, &["Wan2.1_VAE.pth", "vae"]),
                text_encoder: first_existing(
                    root,
                    &["models_t5_umt5-xxl-enc-bf16.pth", "text_encoder"],
                ),
                tokenizer: first_existing(root, &["google/umt5-xxl", "tokenizer"]),
                defaults,
            }
        };
        if paths.dit.is_none() {
            return Err(input_err(
                root.display().to_string(),
                "no DiT weights found (expected transformer/ with model_index.json, or diffusion_pytorch_model*.safetensors)",
            ));
        }
        Ok(paths)
    }

    /// The embedded default model shipped in `assets/default-model` of the source tree.
    pub fn embedded_default() -> Result<Self> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets/default-model");
        Self::resolve(&root)
    }
}
