//! Choosing the output format from the output path.

use std::path::Path;

use super::error::{VideoError, VideoErrorKind};

/// The container and codec a video is written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VideoFormat {
    /// H.264 (OpenH264) in an MP4 file.
    Mp4,
    /// Animated WebP with lossless (VP8L) frames.
    Webp,
    /// Animated GIF, 256 colours per frame.
    Gif,
    /// A folder of PNG frames `frame_00000.png`, `frame_00001.png`, ...
    PngFrames,
}

impl VideoFormat {
    /// The format for `path`: a path ending in a separator or naming an existing folder means PNG
    /// frames; otherwise the extension (`.mp4`, `.webp`, `.gif`, any case) decides.
    pub fn from_path(path: &Path) -> Result<Self, VideoError> {
        let text = path.as_os_str().to_string_lossy();
        if text.ends_with('/') || text.ends_with(std::path::MAIN_SEPARATOR) || path.is_dir() {
            return Ok(Self::PngFrames);
        }
        let ext = path
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase());
        match ext.as_deref() {
            Some("mp4") => Ok(Self::Mp4),
            Some("webp") => Ok(Self::Webp),
            Some("gif") => Ok(Self::Gif),
            other => {
                let found = match other {
                    Some(e) => format!("extension `.{e}`"),
                    None => "no extension".to_string(),
                };
                Err(VideoError::new(
                    path,
                    VideoErrorKind::UnknownFormat(format!(
                        "{found}; use .mp4, .webp, .gif, or a folder path ending in `/` for PNG frames"
                    )),
                ))
            }
        }
    }

    /// A short lowercase name (`mp4`, `webp`, `gif`, `png`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Mp4 => "mp4",
            Self::Webp => "webp",
            Self::Gif => "gif",
            Self::PngFrames => "png",
        }
    }
}
