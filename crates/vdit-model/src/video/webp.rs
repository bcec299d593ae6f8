//! Animated WebP output: lossless VP8L frames from `image-webp` in the extended (VP8X) container
//! with an ANIM chunk and one ANMF chunk per frame.
//!
//! Container layout (all integers little-endian, each chunk padded to an even length):
//! `RIFF <size> WEBP`, `VP8X` (animation flag, canvas size - 1 in 24-bit fields), `ANIM`
//! (background colour, loop count 0 = forever), then per frame `ANMF` (offset / 2, size - 1 and
//! duration in ms as 24-bit fields, a flags byte) wrapping the frame's `VP8L` chunk.

use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use image_webp::{ColorType, WebPEncoder};

use super::error::VideoError;
use super::staging::StagedFile;
use super::{frame_duration, VideoErrorKind, VideoSpec, VideoWriter};

/// Largest side a VP8L bitstream encodes (14-bit size fields).
const MAX_SIDE: u32 = 16384;
/// VP8X flag: the file is an animation.
const FLAG_ANIMATION: u8 = 0x02;
/// ANMF flag: draw the frame over the canvas without alpha blending.
const FLAG_NO_BLEND: u8 = 0x02;

fn u24le(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes()[..3]);
}

/// Appends a RIFF chunk: fourcc, little-endian payload length, payload, a pad byte if odd.
pub(crate) fn chunk(out: &mut Vec<u8>, fourcc: &[u8; 4], payload: &[u8]) {
    out.extend_from_slice(fourcc);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
    if payload.len() % 2 == 1 {
        out.push(0);
    }
}

/// The VP8L bitstream of one lossless frame.
fn encode_vp8l(rgb: &[u8], width: u32, height: u32) -> Result<Vec<u8>, String> {
    let mut file = Vec::new();
    WebPEncoder::new(&mut file)
        .encode(rgb, width, height, ColorType::Rgb8)
        .map_err(|e| e.to_string())?;
    // The encoder writes a simple file: `RIFF <size> WEBP VP8L <len> <bitstream>`.
    if file.len() < 20
        || &file[0..4] != b"RIFF"
        || &file[8..12] != b"WEBP"
        || &file[12..16] != b"VP8L"
    {
        return Err("unexpected WebP encoder output".into());
    }
    let len = u32::from_le_bytes(file[16..20].try_into().unwrap()) as usize;
    file.get(20..20 + len)
        .map(<[u8]>::to_vec)
        .ok_or_else(|| "truncated WebP encoder output".into())
}

/// Writes an animated WebP file of lossless frames, looping forever.
pub struct WebpWriter {
    spec: VideoSpec,
    file: StagedFile,
    target: PathBuf,
    frames: usize,
}

impl WebpWriter {
    pub fn create(path: impl AsRef<Path>, spec: VideoSpec) -> Result<Self, VideoError> {
        let path = path.as_ref();
        spec.check(path)?;
        if spec.width > MAX_SIDE || spec.height > MAX_SIDE {
            return Err(VideoError::invalid(
                path,
                format!(
                    "{}x{} is larger than WebP allows ({MAX_SIDE}x{MAX_SIDE})",
                    spec.width, spec.height
                ),
            ));
        }
        let mut file = StagedFile::create(path)?;
        let mut head = Vec::new();
        head.extend_from_slice(b"RIFF");
        head.extend_from_slice(&[0; 4]); // patched by `finish`
        head.extend_from_slice(b"WEBP");
        let mut vp8x = vec![FLAG_ANIMATION, 0, 0, 0];
        u24le(&mut vp8x, spec.width - 1);
        u24le(&mut vp8x, spec.height - 1);
        chunk(&mut head, b"VP8X", &vp8x);
        // Background colour (B, G, R, A: opaque black) and loop count 0 (forever).
        chunk(&mut head, b"ANIM", &[0, 0, 0, 0xff, 0, 0]);
        file.write_all(&head).map_err(|e| VideoError::io(path, e))?;
        Ok(Self {
            spec,
            target: file.target().to_path_buf(),
            file,
            frames: 0,
        })
    }
}

impl VideoWriter for WebpWriter {
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
        let (w, h) = (self.spec.width, self.spec.height);
        let bitstream = encode_vp8l(rgb, w, h).map_err(|m| VideoError::encode(&self.target, m))?;
        let duration = frame_duration(self.frames as u64, self.spec.fps, 1000) as u32;
        let mut anmf = Vec::with_capacity(bitstream.len() + 32);
        u24le(&mut anmf, 0); // x / 2
        u24le(&mut anmf, 0); // y / 2
        u24le(&mut anmf, w - 1);
        u24le(&mut anmf, h - 1);
        u24le(&mut anmf, duration);
        anmf.push(FLAG_NO_BLEND);
        chunk(&mut anmf, b"VP8L", &bitstream);
        let mut out = Vec::with_capacity(anmf.len() + 9);
        chunk(&mut out, b"ANMF", &anmf);
        self.file
            .write_all(&out)
            .map_err(|e| VideoError::io(&self.target, e))?;
        self.frames += 1;
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<(), VideoError> {
        let mut this = *self;
        if this.frames == 0 {
            return Err(VideoError::new(&this.target, VideoErrorKind::NoFrames));
        }
        let target = this.target.clone();
        let io_err = |e| VideoError::io(&target, e);
        let len = this.file.stream_position().map_err(io_err)?;
        let riff_size = u32::try_from(len - 8)
            .map_err(|_| VideoError::invalid(&target, "the WebP file would exceed 4 GiB"))?;
        this.file.seek(SeekFrom::Start(4)).map_err(io_err)?;
        this.file
            .write_all(&riff_size.to_le_bytes())
            .map_err(io_err)?;
        this.file.seek(SeekFrom::End(0)).map_err(io_err)?;
        this.file.commit()
    }
}
