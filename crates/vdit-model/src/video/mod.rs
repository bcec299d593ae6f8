//! Video files from RGB8 frames: H.264 MP4, animated WebP, animated GIF, or a folder of PNGs.
//!
//! No system tools are needed: H.264 comes from OpenH264 (compiled from source by the `openh264`
//! crate) in a small MP4 muxer of our own, WebP frames from `image-webp` (lossless) in our own
//! animation container, GIF from the `gif` crate, PNG from the `png` crate.
//!
//! The format follows the output path ([`VideoFormat::from_path`]). Every writer writes under a
//! hidden temporary name in the target's folder and renames it when [`VideoWriter::finish`]
//! succeeds; a failed or dropped writer deletes its temporary file, so the target path never
//! holds a half-written video.
//!
//! Frames can be handed over all at once ([`write_video`] with [`Frames`]) or one by one
//! ([`create_writer`] and [`VideoWriter::push_frame`]), so a long video need not be held in
//! memory. [`vae_frame_to_rgb8`] and [`Frames::from_vae_output`] convert the VAE's output.

mod convert;
mod error;
mod format;
mod gif;
mod h264;
mod isobmff;
mod mp4;
mod png_frames;
mod staging;
mod webp;

#[cfg(test)]
mod tests;

use std::path::Path;

pub use convert::{unit_to_u8, vae_frame_to_rgb8, vae_to_rgb8};
pub use error::{VideoError, VideoErrorKind};
pub use format::VideoFormat;
pub use gif::GifWriter;
pub use mp4::Mp4Writer;
pub use png_frames::{frame_file_name, PngFramesWriter};
pub use webp::WebpWriter;

/// The highest frame rate accepted.
pub const MAX_FPS: u32 = 1000;

/// Size and rate of the frames given to a writer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VideoSpec {
    pub width: u32,
    pub height: u32,
    /// Frames per second (16 for Wan2.1).
    pub fps: u32,
}

impl VideoSpec {
    pub fn new(width: u32, height: u32, fps: u32) -> Self {
        Self { width, height, fps }
    }

    /// Bytes in one RGB8 frame.
    pub fn frame_len(&self) -> usize {
        self.width as usize * self.height as usize * 3
    }

    /// Checks the parts every format needs: a non-empty size and a frame rate in 1..=MAX_FPS.
    pub(crate) fn check(&self, path: &Path) -> Result<(), VideoError> {
        if self.width == 0 || self.height == 0 {
            return Err(VideoError::invalid(
                path,
                format!("frame size {}x{} is empty", self.width, self.height),
            ));
        }
        if self.fps == 0 || self.fps > MAX_FPS {
            return Err(VideoError::invalid(
                path,
                format!("frame rate {} is not in 1..={MAX_FPS}", self.fps),
            ));
        }
        Ok(())
    }

    /// Checks that `rgb` holds exactly one frame.
    pub(crate) fn check_frame(&self, path: &Path, rgb: &[u8]) -> Result<(), VideoError> {
        if rgb.len() != self.frame_len() {
            return Err(VideoError::invalid(
                path,
                format!(
                    "a frame has {} bytes, expected {} ({}x{} RGB8)",
                    rgb.len(),
                    self.frame_len(),
                    self.width,
                    self.height
                ),
            ));
        }
        Ok(())
    }
}

/// The duration of frame `index` in `units_per_second` units at `fps`, rounded so that the
/// durations add up to the exact running time (16 fps in milliseconds: 62, 63, 62, 63, ...).
pub(crate) fn frame_duration(index: u64, fps: u32, units_per_second: u64) -> u64 {
    let at = |i: u64| (2 * i * units_per_second + fps as u64) / (2 * fps as u64);
    at(index + 1) - at(index)
}

/// A whole video in memory: `data` holds the frames one after another, each `height * width * 3`
/// bytes of row-major interleaved RGB.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frames {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub data: Vec<u8>,
}

impl Frames {
    /// Converts the VAE's f32 `[3, frames, height, width]` output in [-1, 1] to RGB8 frames.
    ///
    /// # Panics
    /// If `data` is not `3 * frames * height * width` long.
    pub fn from_vae_output(
        data: &[f32],
        frames: usize,
        height: usize,
        width: usize,
        fps: u32,
    ) -> Self {
        Self {
            width: width as u32,
            height: height as u32,
            fps,
            data: vae_to_rgb8(data, frames, height, width),
        }
    }

    pub fn spec(&self) -> VideoSpec {
        VideoSpec::new(self.width, self.height, self.fps)
    }

    /// The number of frames (0 when the size is empty).
    pub fn frame_count(&self) -> usize {
        self.data
            .len()
            .checked_div(self.spec().frame_len())
            .unwrap_or(0)
    }

    /// Frame `index` as `height * width * 3` bytes.
    ///
    /// # Panics
    /// If `index >= self.frame_count()`.
    pub fn frame(&self, index: usize) -> &[u8] {
        let len = self.spec().frame_len();
        &self.data[index * len..(index + 1) * len]
    }
}

/// A video being written frame by frame.
pub trait VideoWriter: Send {
    /// The size and rate the frames must have.
    fn spec(&self) -> VideoSpec;

    /// The final path the video is renamed to by `finish`.
    fn path(&self) -> &Path;

    /// Frames pushed so far.
    fn frames_written(&self) -> usize;

    /// Encodes and writes one RGB8 frame of `spec().frame_len()` bytes.
    fn push_frame(&mut self, rgb: &[u8]) -> Result<(), VideoError>;

    /// Completes the file and renames it to its final path. Dropping a writer without calling
    /// `finish` (or when `finish` fails) deletes everything it wrote.
    fn finish(self: Box<Self>) -> Result<(), VideoError>;
}

/// Opens a writer for `path` in the format its name asks for.
pub fn create_writer(
    path: impl AsRef<Path>,
    spec: VideoSpec,
) -> Result<Box<dyn VideoWriter>, VideoError> {
    let path = path.as_ref();
    Ok(match VideoFormat::from_path(path)? {
        VideoFormat::Mp4 => Box::new(Mp4Writer::create(path, spec)?),
        VideoFormat::Webp => Box::new(WebpWriter::create(path, spec)?),
        VideoFormat::Gif => Box::new(GifWriter::create(path, spec)?),
        VideoFormat::PngFrames => Box::new(PngFramesWriter::create(path, spec)?),
    })
}

/// Writes all of `frames` to `path` in the format its name asks for.
pub fn write_video(path: impl AsRef<Path>, frames: &Frames) -> Result<(), VideoError> {
    let path = path.as_ref();
    let spec = frames.spec();
    spec.check(path)?;
    let len = spec.frame_len();
    if frames.data.len() % len != 0 {
        return Err(VideoError::invalid(
            path,
            format!(
                "{} bytes of frame data is not a whole number of {}x{} RGB8 frames",
                frames.data.len(),
                spec.width,
                spec.height
            ),
        ));
    }
    let mut writer = create_writer(path, spec)?;
    for frame in frames.data.chunks_exact(len) {
        writer.push_frame(frame)?;
    }
    writer.finish()
}
