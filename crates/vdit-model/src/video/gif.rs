//! Animated GIF output: each frame gets its own 256-colour palette (NeuQuant, through the `gif`
//! crate), looping forever.

use std::path::{Path, PathBuf};

use gif::{Encoder, Frame, Repeat};

use super::error::VideoError;
use super::staging::StagedFile;
use super::{frame_duration, VideoErrorKind, VideoSpec, VideoWriter};

/// NeuQuant speed (1 best ..= 30 fastest): a good balance for video frames.
const QUANTIZER_SPEED: i32 = 10;

/// Writes an animated GIF. Frame delays are in hundredths of a second, rounded so that the total
/// running time stays exact (16 fps: 6, 6, 7, 6, ...).
pub struct GifWriter {
    spec: VideoSpec,
    encoder: Encoder<StagedFile>,
    target: PathBuf,
    frames: usize,
}

impl GifWriter {
    pub fn create(path: impl AsRef<Path>, spec: VideoSpec) -> Result<Self, VideoError> {
        let path = path.as_ref();
        spec.check(path)?;
        let (Ok(w), Ok(h)) = (u16::try_from(spec.width), u16::try_from(spec.height)) else {
            return Err(VideoError::invalid(
                path,
                format!(
                    "{}x{} is larger than GIF allows (65535x65535)",
                    spec.width, spec.height
                ),
            ));
        };
        let file = StagedFile::create(path)?;
        let target = file.target().to_path_buf();
        let mut encoder = Encoder::new(file, w, h, &[]).map_err(|e| VideoError::encode(path, e))?;
        encoder
            .set_repeat(Repeat::Infinite)
            .map_err(|e| VideoError::encode(path, e))?;
        Ok(Self {
            spec,
            encoder,
            target,
            frames: 0,
        })
    }
}

impl VideoWriter for GifWriter {
    fn spec(&self) -> VideoSpec {
        self.spec
    }

    fn path(&self) -> &Path {
        &self.target
    }

    fn frames_written(&self) -> usize {
        self.frames
    }

    fn push_frame(&mut self, rgb: &[u8]) -> Result<(), VideoError> {
        self.spec.check_frame(&self.target, rgb)?;
        let (w, h) = (self.spec.width as u16, self.spec.height as u16);
        let mut frame = Frame::from_rgb_speed(w, h, rgb, QUANTIZER_SPEED);
        frame.delay =
            frame_duration(self.frames as u64, self.spec.fps, 100).min(u16::MAX as u64) as u16;
        self.encoder
            .write_frame(&frame)
            .map_err(|e| VideoError::encode(&self.target, e))?;
        self.frames += 1;
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<(), VideoError> {
        let this = *self;
        if this.frames == 0 {
            return Err(VideoError::new(&this.target, VideoErrorKind::NoFrames));
        }
        let target = this.target;
        let file = this
            .encoder
            .into_inner()
            .map_err(|e| VideoError::encode(&target, e))?;
        file.commit()
    }
}
