//! Text-to-video generation: prompt encoding, the denoising loop, decoding, and the video.

pub mod denoise;
pub mod generate;
pub mod noise;
pub mod output;
pub mod parts;
pub mod paths;
pub mod progress;
pub mod request;
pub mod texture;

pub use crate::scheduler::SamplerKind;
pub use denoise::{denoise, denoise_tapped};
pub use generate::{Pipeline, Video};
pub use noise::gaussian_noise;
pub use output::{write_video_from_gpu, VideoStream, WriteVideoError};
pub use parts::PartWeights;
pub use paths::{ModelDefaults, ModelPaths};
pub use progress::{CancelToken, Progress, Silent, Stage};
pub use request::{GenerateRequest, Preset, Prompt};
