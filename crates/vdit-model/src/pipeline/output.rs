//! A generated video from the GPU to its file, one frame at a time: each frame is converted to
//! RGBA8 on the GPU (`frames_to_rgba`), downloaded (4 bytes a pixel instead of 12 for f32 RGB)
//! and handed to the writer, so the host never holds the whole video; fed by the decoder as it
//! goes ([`VideoStream`]), neither does the GPU. A failure on the way
//! leaves no file (the writers write under a temporary name until `finish`).

use std::path::Path;

use vdit_wgpu::kernels::rgba::frames_to_rgba;
use vdit_wgpu::{DType, Gpu, GpuError, Recorder, Tensor};

use super::generate::Video;
use crate::video::{create_writer, VideoError, VideoSpec};

/// Why a video could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteVideoError {
    #[error(transparent)]
    Gpu(#[from] GpuError),
    #[error(transparent)]
    Video(#[from] VideoError),
}

impl From<WriteVideoError> for crate::error::ModelError {
    fn from(e: WriteVideoError) -> Self {
        match e {
            WriteVideoError::Gpu(g) => g.into(),
            WriteVideoError::Video(v) => v.into(),
        }
    }
}

/// A video file being written from frames on the GPU, as they come. Dropped before
/// [`finish`](Self::finish) (an error, a cancellation), it leaves no file behind.
pub struct VideoStream {
    writer: Box<dyn crate::video::VideoWriter>,
    /// One RGBA8 pixel per 4-byte element, rows unpadded.
    rgba: Tensor,
    rgb: Vec<u8>,
    width: usize,
    height: usize,
    frames: usize,
}

impl VideoStream {
    /// Starts `path` (its format from its name) for frames of `width` x `height`.
    pub fn create(
        gpu: &Gpu,
        path: impl AsRef<Path>,
        width: usize,
        height: usize,
        fps: u32,
    ) -> Result<Self, WriteVideoError> {
        let path = path.as_ref();
        let spec = VideoSpec::new(width as u32, height as u32, fps);
        spec.check(path)?;
        Ok(Self {
            writer: create_writer(path, spec)?,
            rgba: Tensor::empty(gpu, &[height * width], DType::F32)?,
            rgb: vec![0u8; spec.frame_len()],
            width,
            height,
            frames: 0,
        })
    }

    /// Appends the first `count` frames of `frames` ([3, n >= count, H, W] in [-1, 1]).
    pub fn push(
        &mut self,
        gpu: &Gpu,
        frames: &Tensor,
        count: usize,
    ) -> Result<(), WriteVideoError> {
        match *frames.shape() {
            [3, n, h, w] if n >= count && h == self.height && w == self.width => {}
            _ => {
                return Err(GpuError::InvalidArgument(format!(
                    "frames for a {}x{} video must be [3, >= {count}, {}, {}], got {frames:?}",
                    self.width, self.height, self.height, self.width
                ))
                .into())
            }
        }
        for frame in 0..count {
            let mut rec = Recorder::new(gpu);
            frames_to_rgba(&mut rec, frames, frame, self.width, &self.rgba)?;
            rec.run()?;
            let pixels = self.rgba.to_bytes(gpu)?;
            for (out, px) in self.rgb.chunks_exact_mut(3).zip(pixels.chunks_exact(4)) {
                out.copy_from_slice(&px[..3]);
            }
            self.writer.push_frame(&self.rgb)?;
        }
        self.frames += count;
        Ok(())
    }

    /// Frames written so far.
    pub fn frames(&self) -> usize {
        self.frames
    }

    /// Completes the file under its name.
    pub fn finish(self) -> Result<(), WriteVideoError> {
        Ok(self.writer.finish()?)
    }
}

/// Writes `video` ([3, F, H, W] in [-1, 1] on the GPU) to `path` in the format its name asks
/// for, frame by frame, with the same pixels as `Frames::from_vae_output` gives on the host.
pub fn write_video_from_gpu(
    gpu: &Gpu,
    video: &Video,
    path: impl AsRef<Path>,
) -> Result<(), WriteVideoError> {
    let &[_, frames, height, width] = video.frames.shape() else {
        return Err(GpuError::InvalidArgument(format!(
            "a video must be [3, F, H, W], got {:?}",
            video.frames
        ))
        .into());
    };
    let mut stream = VideoStream::create(gpu, path, width, height, video.fps)?;
    stream.push(gpu, &video.frames, frames)?;
    stream.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::video::{write_video, Frames};
    use vdit_wgpu::rng::Rng;
    use vdit_wgpu::testing::test_gpu;

    #[test]
    fn frame_by_frame_from_the_gpu_equals_the_host_conversion() {
        let gpu = test_gpu();
        let (f, h, w) = (5, 18, 26);
        let mut rng = Rng::new(7);
        // Values past [-1, 1] on both sides, to exercise the clamp.
        let data = rng.vec_normal(3 * f * h * w, 0.8);
        let frames = Tensor::from_f32(gpu, &[3, f, h, w], &data, DType::F32).unwrap();
        let video = Video { frames, fps: 16 };
        let dir = std::env::temp_dir().join(format!("vdit-output-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for name in ["streamed.gif", "streamed.mp4"] {
            let streamed = dir.join(name);
            let whole = dir.join(format!("whole-{name}"));
            write_video_from_gpu(gpu, &video, &streamed).unwrap();
            write_video(&whole, &Frames::from_vae_output(&data, f, h, w, 16)).unwrap();
            assert_eq!(
                std::fs::read(&streamed).unwrap(),
                std::fs::read(&whole).unwrap(),
                "{name}"
            );
        }
        // A path no writer takes: an error, and nothing written.
        let bad = dir.join("video.avi");
        assert!(write_video_from_gpu(gpu, &video, &bad).is_err());
        assert!(!bad.exists());
        std::fs::remove_dir_all(&dir).ok();
    }
}
