//! H.264 encoding of RGB8 frames with OpenH264 (built from source by the `openh264` crate).
//!
//! Frames are converted to I420 with BT.601 limited-range coefficients (signalled in the SPS
//! VUI). H.264 4:2:0 needs even dimensions: odd widths or heights are padded by one column or row
//! repeating the edge pixels.

use openh264::encoder::{
    Complexity, Encoder, EncoderConfig, FrameRate, FrameType, IntraFramePeriod, RateControlMode,
    VuiConfig,
};
use openh264::formats::YUVSlices;
use openh264::{OpenH264API, Timestamp};

/// Largest frame OpenH264 encodes (level 5.2).
const MAX_LONG_SIDE: u32 = 3840;
const MAX_SHORT_SIDE: u32 = 2160;

/// NAL unit types used here.
pub(crate) const NAL_IDR: u8 = 5;
pub(crate) const NAL_SPS: u8 = 7;
pub(crate) const NAL_PPS: u8 = 8;

/// The NAL units of one encoded picture, start codes removed.
pub(crate) struct EncodedPicture {
    pub nals: Vec<Vec<u8>>,
    pub keyframe: bool,
}

pub(crate) fn nal_type(nal: &[u8]) -> u8 {
    nal.first().map_or(0, |b| b & 0x1f)
}

/// Removes a leading Annex B start code (`00 00 01` or `00 00 00 01`).
fn strip_start_code(nal: &[u8]) -> &[u8] {
    if nal.starts_with(&[0, 0, 0, 1]) {
        &nal[4..]
    } else if nal.starts_with(&[0, 0, 1]) {
        &nal[3..]
    } else {
        nal
    }
}

/// The even size that frames of `width x height` are encoded at.
pub(crate) fn coded_size(width: u32, height: u32) -> (u32, u32) {
    (width + (width & 1), height + (height & 1))
}

/// Checks that OpenH264 can encode frames of this size.
pub(crate) fn check_size(width: u32, height: u32) -> Result<(), String> {
    let (w, h) = coded_size(width, height);
    if w.max(h) > MAX_LONG_SIDE || w.min(h) > MAX_SHORT_SIDE {
        return Err(format!(
            "{width}x{height} is larger than H.264 encodes here ({MAX_LONG_SIDE}x{MAX_SHORT_SIDE})"
        ));
    }
    Ok(())
}

/// Converts an RGB8 frame to I420 (planar Y, then U, then V) at the coded (even) size,
/// repeating the last column and row where the frame is odd.
pub(crate) fn rgb_to_i420(rgb: &[u8], width: usize, height: usize, out: &mut Vec<u8>) {
    let (cw, ch) = (width + (width & 1), height + (height & 1));
    out.clear();
    out.resize(cw * ch * 3 / 2, 0);
    let (y_plane, chroma) = out.split_at_mut(cw * ch);
    let (u_plane, v_plane) = chroma.split_at_mut(cw * ch / 4);
    let pixel = |x: usize, y: usize| {
        let i = (y.min(height - 1) * width + x.min(width - 1)) * 3;
        [rgb[i] as i32, rgb[i + 1] as i32, rgb[i + 2] as i32]
    };
    for y in 0..ch {
        for x in 0..cw {
            let [r, g, b] = pixel(x, y);
            y_plane[y * cw + x] = (((66 * r + 129 * g + 25 * b + 128) >> 8) + 16) as u8;
        }
    }
    for cy in 0..ch / 2 {
        for cx in 0..cw / 2 {
            let mut sum = [0i32; 3];
            for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                let p = pixel(2 * cx + dx, 2 * cy + dy);
                for c in 0..3 {
                    sum[c] += p[c];
                }
            }
            let [r, g, b] = sum;
            // The sum of four pixels carries two extra bits: shift by 10 instead of 8.
            let u = ((-38 * r - 74 * g + 112 * b + 512) >> 10) + 128;
            let v = ((112 * r - 94 * g - 18 * b + 512) >> 10) + 128;
            u_plane[cy * (cw / 2) + cx] = u.clamp(0, 255) as u8;
            v_plane[cy * (cw / 2) + cx] = v.clamp(0, 255) as u8;
        }
    }
}

/// An OpenH264 encoder for frames of one size and frame rate.
pub(crate) struct H264Encoder {
    encoder: Encoder,
    width: usize,
    height: usize,
    fps: u32,
    frames: u64,
    yuv: Vec<u8>,
}

impl H264Encoder {
    pub(crate) fn new(width: u32, height: u32, fps: u32) -> Result<Self, String> {
        check_size(width, height)?;
        // Without rate control OpenH264 codes every picture at its base quantizer (26, adjusted
        // per macroblock by adaptive quantization): constant quality, file size following the
        // content, and no frame ever skipped.
        let config = EncoderConfig::new()
            .max_frame_rate(FrameRate::from_hz(fps as f32))
            .rate_control_mode(RateControlMode::Off)
            .skip_frames(false)
            .complexity(Complexity::High)
            // A keyframe every two seconds keeps seeking cheap.
            .intra_frame_period(IntraFramePeriod::from_num_frames(fps.saturating_mul(2)))
            .vui(VuiConfig::bt601());
        let encoder = Encoder::with_api_config(OpenH264API::from_source(), config)
            .map_err(|e| e.to_string())?;
        Ok(Self {
            encoder,
            width: width as usize,
            height: height as usize,
            fps,
            frames: 0,
            yuv: Vec::new(),
        })
    }

    /// Encodes one RGB8 frame of the size given to `new`.
    pub(crate) fn encode(&mut self, rgb: &[u8]) -> Result<EncodedPicture, String> {
        debug_assert_eq!(rgb.len(), self.width * self.height * 3);
        rgb_to_i420(rgb, self.width, self.height, &mut self.yuv);
        let (cw, ch) = (
            self.width + (self.width & 1),
            self.height + (self.height & 1),
        );
        let (y, chroma) = self.yuv.split_at(cw * ch);
        let (u, v) = chroma.split_at(cw * ch / 4);
        let source = YUVSlices::new((y, u, v), (cw, ch), (cw, cw / 2, cw / 2));
        let millis = self.frames * 1000 / self.fps as u64;
        self.frames += 1;
        let stream = self
            .encoder
            .encode_at(&source, Timestamp::from_millis(millis))
            .map_err(|e| e.to_string())?;
        let mut nals = Vec::new();
        for l in 0..stream.num_layers() {
            let Some(layer) = stream.layer(l) else {
                continue;
            };
            for n in 0..layer.nal_count() {
                if let Some(nal) = layer.nal_unit(n) {
                    let nal = strip_start_code(nal);
                    if !nal.is_empty() {
                        nals.push(nal.to_vec());
                    }
                }
            }
        }
        let keyframe =
            stream.frame_type() == FrameType::IDR || nals.iter().any(|n| nal_type(n) == NAL_IDR);
        Ok(EncodedPicture { nals, keyframe })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_codes_are_stripped() {
        assert_eq!(strip_start_code(&[0, 0, 0, 1, 0x67, 1]), &[0x67, 1]);
        assert_eq!(strip_start_code(&[0, 0, 1, 0x68]), &[0x68]);
        assert_eq!(strip_start_code(&[0x65, 0]), &[0x65, 0]);
    }

    #[test]
    fn grey_and_primaries_convert_to_bt601_limited() {
        let mut out = Vec::new();
        // 2x2 of one colour: one chroma sample.
        let convert = |rgb: [u8; 3], out: &mut Vec<u8>| {
            let frame: Vec<u8> = rgb.iter().copied().cycle().take(12).collect();
            rgb_to_i420(&frame, 2, 2, out);
            (out[0], out[4], out[5])
        };
        assert_eq!(convert([0, 0, 0], &mut out), (16, 128, 128));
        assert_eq!(convert([255, 255, 255], &mut out), (235, 128, 128));
        let (y, u, v) = convert([255, 0, 0], &mut out);
        assert_eq!((y, u, v), (82, 90, 240));
    }

    #[test]
    fn odd_sizes_repeat_the_edge() {
        // 3x1 frame: columns red, green, blue; coded as 4x2.
        let rgb = [255, 0, 0, 0, 255, 0, 0, 0, 255];
        let mut out = Vec::new();
        rgb_to_i420(&rgb, 3, 1, &mut out);
        assert_eq!(out.len(), 4 * 2 * 3 / 2);
        let y = &out[..8];
        assert_eq!(y[2], y[3], "last column repeated");
        assert_eq!(&y[0..4], &y[4..8], "last row repeated");
    }
}
