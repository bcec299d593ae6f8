//! Text-to-video generation: prompt encoding, the denoising loop, decoding, and the video.

pub mod noise;
pub mod request;

pub use noise::gaussian_noise;
pub use request::{GenerateRequest, Prompt, SamplerKind};
