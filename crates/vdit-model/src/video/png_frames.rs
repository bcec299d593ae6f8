//! A folder of PNG frames: `frame_00000.png`, `frame_00001.png`, ...

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use super::error::VideoError;
use super::staging::StagedDir;
use super::{VideoErrorKind, VideoSpec, VideoWriter};

/// The file name of frame `index`.
pub fn frame_file_name(index: usize) -> String {
    format!("frame_{index:05}.png")
}

/// Whether `name` is a frame file this writer makes (`frame_` + at least five digits + `.png`).
fn is_frame_file(name: &str) -> bool {
    name.strip_prefix("frame_")
        .and_then(|rest| rest.strip_suffix(".png"))
        .is_some_and(|digits| digits.len() >= 5 && digits.bytes().all(|b| b.is_ascii_digit()))
}

/// Writes each frame as an RGB PNG into a folder.
///
/// The frames go to a hidden temporary folder first. On `finish`, a target folder that does not
/// exist yet is created by renaming it; into an existing folder the frames are moved, replacing
/// frame files of the same names and deleting frame files left from a longer earlier video, so the
/// folder then holds exactly this video's frames (other files are left alone).
pub struct PngFramesWriter {
    spec: VideoSpec,
    dir: StagedDir,
    target: PathBuf,
    frames: usize,
}

impl PngFramesWriter {
    pub fn create(path: impl AsRef<Path>, spec: VideoSpec) -> Result<Self, VideoError> {
        let path = path.as_ref();
        spec.check(path)?;
        let dir = StagedDir::create(path)?;
        Ok(Self {
            spec,
            target: dir.target().to_path_buf(),
            dir,
            frames: 0,
        })
    }

    fn write_png(&self, file: &Path, rgb: &[u8]) -> Result<(), String> {
        let file = File::create(file).map_err(|e| e.to_string())?;
        let mut encoder =
            png::Encoder::new(BufWriter::new(file), self.spec.width, self.spec.height);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().map_err(|e| e.to_string())?;
        writer.write_image_data(rgb).map_err(|e| e.to_string())?;
        writer.finish().map_err(|e| e.to_string())
    }
}

impl VideoWriter for PngFramesWriter {
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
        let file = self.dir.path().join(frame_file_name(self.frames));
        self.write_png(&file, rgb)
            .map_err(|m| VideoError::encode(&self.target, m))?;
        self.frames += 1;
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<(), VideoError> {
        let this = *self;
        if this.frames == 0 {
            return Err(VideoError::new(&this.target, VideoErrorKind::NoFrames));
        }
        this.dir.commit(is_frame_file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_names() {
        assert_eq!(frame_file_name(0), "frame_00000.png");
        assert_eq!(frame_file_name(123456), "frame_123456.png");
        assert!(is_frame_file("frame_00042.png"));
        assert!(is_frame_file("frame_123456.png"));
        assert!(!is_frame_file("frame_42.png"));
        assert!(!is_frame_file("frame_0004x.png"));
        assert!(!is_frame_file("notes.txt"));
    }
}
