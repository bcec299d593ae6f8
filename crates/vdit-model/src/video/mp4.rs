//! MP4 output: H.264 pictures from [`H264Encoder`] muxed by [`Mp4Muxer`].

use std::path::Path;

use super::error::VideoError;
use super::h264::{self, nal_type, H264Encoder, NAL_PPS, NAL_SPS};
use super::isobmff::{Mp4Muxer, TICKS_PER_FRAME};
use super::staging::StagedFile;
use super::{VideoSpec, VideoWriter};

/// Writes an H.264 MP4 file. Odd widths and heights are padded to even by repeating the edge, so
/// the stored picture is then one column or row larger than the frames.
pub struct Mp4Writer {
    spec: VideoSpec,
    encoder: H264Encoder,
    muxer: Mp4Muxer<StagedFile>,
    target: std::path::PathBuf,
    frames: usize,
    /// Ticks of frames that produced no picture before the first one.
    pending_ticks: u32,
}

impl Mp4Writer {
    pub fn create(path: impl AsRef<Path>, spec: VideoSpec) -> Result<Self, VideoError> {
        let path = path.as_ref();
        spec.check(path)?;
        h264::check_size(spec.width, spec.height).map_err(|m| VideoError::invalid(path, m))?;
        let encoder = H264Encoder::new(spec.width, spec.height, spec.fps)
            .map_err(|m| VideoError::encode(path, m))?;
        let file = StagedFile::create(path)?;
        let target = file.target().to_path_buf();
        let (width, height) = h264::coded_size(spec.width, spec.height);
        let muxer =
            Mp4Muxer::new(file, width, height, spec.fps).map_err(|e| VideoError::io(path, e))?;
        Ok(Self {
            spec,
            encoder,
            muxer,
            target,
            frames: 0,
            pending_ticks: 0,
        })
    }
}

impl VideoWriter for Mp4Writer {
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
        let picture = self
            .encoder
            .encode(rgb)
            .map_err(|m| VideoError::encode(&self.target, m))?;
        self.frames += 1;

        // Parameter sets go to the `avcC` box; repeats of the same ones are dropped from the
        // samples, changed ones stay in-band.
        let sps = picture.nals.iter().find(|n| nal_type(n) == NAL_SPS);
        let pps = picture.nals.iter().find(|n| nal_type(n) == NAL_PPS);
        if !self.muxer.has_parameter_sets() {
            if let (Some(sps), Some(pps)) = (sps, pps) {
                self.muxer.set_parameter_sets(sps, pps);
            }
        }
        let (known_sps, known_pps) = self.muxer.parameter_sets();
        let known = |nal: &[u8]| match nal_type(nal) {
            NAL_SPS => known_sps == Some(nal),
            NAL_PPS => known_pps == Some(nal),
            _ => false,
        };
        let sample: Vec<&[u8]> = picture
            .nals
            .iter()
            .map(Vec::as_slice)
            .filter(|n| !known(n))
            .collect();

        let has_picture = sample.iter().any(|n| matches!(nal_type(n), 1..=5));
        if !has_picture {
            // No picture for this frame: the previous one stays on screen longer.
            if !self.muxer.extend_last_sample(TICKS_PER_FRAME) {
                self.pending_ticks += TICKS_PER_FRAME;
            }
            return Ok(());
        }
        let duration = TICKS_PER_FRAME + std::mem::take(&mut self.pending_ticks);
        self.muxer
            .write_sample(&sample, duration, picture.keyframe)
            .map_err(|e| VideoError::io(&self.target, e))
    }

    fn finish(self: Box<Self>) -> Result<(), VideoError> {
        let this = *self;
        if this.frames == 0 || this.muxer.sample_count() == 0 {
            return Err(VideoError::new(
                &this.target,
                super::VideoErrorKind::NoFrames,
            ));
        }
        let file = this
            .muxer
            .finish()
            .map_err(|e| VideoError::io(&this.target, e))?;
        file.commit()
    }
}
