//! The error type of video output: every failure names the output path.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// Why a video could not be written.
#[derive(Debug)]
pub enum VideoErrorKind {
    /// The output path names no format this module writes.
    UnknownFormat(String),
    /// Frames or parameters that the format cannot take (size, frame rate, buffer length).
    InvalidInput(String),
    /// Creating, writing or renaming a file or folder failed.
    Io(io::Error),
    /// The encoder of the format reported a failure.
    Encode(String),
    /// `finish` was called before any frame was pushed.
    NoFrames,
}

impl fmt::Display for VideoErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownFormat(message) => write!(f, "unknown video format: {message}"),
            Self::InvalidInput(message) => write!(f, "{message}"),
            Self::Io(err) => write!(f, "{err}"),
            Self::Encode(message) => write!(f, "encoding failed: {message}"),
            Self::NoFrames => write!(f, "no frames to write"),
        }
    }
}

/// A failure to write the video at `path`.
#[derive(Debug)]
pub struct VideoError {
    pub path: PathBuf,
    pub kind: VideoErrorKind,
}

impl VideoError {
    pub fn new(path: impl AsRef<Path>, kind: VideoErrorKind) -> Self {
        Self {
            path: path.as_ref().to_path_buf(),
            kind,
        }
    }

    pub(crate) fn invalid(path: impl AsRef<Path>, message: impl Into<String>) -> Self {
        Self::new(path, VideoErrorKind::InvalidInput(message.into()))
    }

    pub(crate) fn io(path: impl AsRef<Path>, err: io::Error) -> Self {
        Self::new(path, VideoErrorKind::Io(err))
    }

    pub(crate) fn encode(path: impl AsRef<Path>, message: impl fmt::Display) -> Self {
        Self::new(path, VideoErrorKind::Encode(message.to_string()))
    }
}

impl fmt::Display for VideoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot write video {}: {}",
            self.path.display(),
            self.kind
        )
    }
}

impl std::error::Error for VideoError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            VideoErrorKind::Io(err) => Some(err),
            _ => None,
        }
    }
}
