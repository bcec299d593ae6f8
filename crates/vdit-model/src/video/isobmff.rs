//! A minimal ISO base media file (MP4) muxer for one H.264 video track.
//!
//! Layout: `ftyp`, then `free` + `mdat` holding the samples as they arrive (length-prefixed NAL
//! units, all in one chunk), then `moov` once the sample table is known. Memory use is a few
//! bytes per sample; the picture data goes straight to the writer.

use std::io::{self, Seek, SeekFrom, Write};

/// Movie-level time unit: milliseconds.
const MOVIE_TIMESCALE: u32 = 1000;
/// Sample durations are in units of `1 / (fps * TICKS_PER_FRAME)` seconds.
pub(crate) const TICKS_PER_FRAME: u32 = 1000;

const UNITY_MATRIX: [u32; 9] = [0x0001_0000, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000];

/// Appends a box: its size and type, whatever `body` writes, and the size patched in.
fn boxed(out: &mut Vec<u8>, kind: &[u8; 4], body: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(kind);
    body(out);
    let size = (out.len() - start) as u32;
    out[start..start + 4].copy_from_slice(&size.to_be_bytes());
}

/// Appends a full box (one with a version byte and 24 bits of flags).
fn full_box(
    out: &mut Vec<u8>,
    kind: &[u8; 4],
    version: u8,
    flags: u32,
    body: impl FnOnce(&mut Vec<u8>),
) {
    boxed(out, kind, |out| {
        out.push(version);
        out.extend_from_slice(&flags.to_be_bytes()[1..]);
        body(out);
    });
}

fn u16be(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn u32be(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn u64be(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn ftyp() -> Vec<u8> {
    let mut out = Vec::new();
    boxed(&mut out, b"ftyp", |out| {
        out.extend_from_slice(b"isom");
        u32be(out, 0x200);
        for brand in [b"isom", b"iso2", b"avc1", b"mp41"] {
            out.extend_from_slice(brand);
        }
    });
    out
}

/// Muxes H.264 samples for one video track into `W`.
pub(crate) struct Mp4Muxer<W: Write + Seek> {
    out: W,
    width: u32,
    height: u32,
    /// Media time units per second.
    timescale: u32,
    /// File offset of the 16 bytes reserved for the `mdat` header.
    mdat_header: u64,
    /// Bytes of sample data written so far.
    data_len: u64,
    sizes: Vec<u32>,
    durations: Vec<u32>,
    sync: Vec<u32>,
    sps: Option<Vec<u8>>,
    pps: Option<Vec<u8>>,
}

impl<W: Write + Seek> Mp4Muxer<W> {
    /// Writes the file header. `width x height` is the coded picture size; samples last
    /// `TICKS_PER_FRAME` ticks per frame at `fps`.
    pub(crate) fn new(mut out: W, width: u32, height: u32, fps: u32) -> io::Result<Self> {
        out.write_all(&ftyp())?;
        let mdat_header = out.stream_position()?;
        // 8 bytes of `free` then an 8-byte `mdat` header; `finish` turns them into a 16-byte
        // large-size `mdat` header when the data outgrows 32 bits.
        out.write_all(&[0, 0, 0, 8])?;
        out.write_all(b"free")?;
        out.write_all(&[0, 0, 0, 0])?;
        out.write_all(b"mdat")?;
        Ok(Self {
            out,
            width,
            height,
            timescale: fps * TICKS_PER_FRAME,
            mdat_header,
            data_len: 0,
            sizes: Vec::new(),
            durations: Vec::new(),
            sync: Vec::new(),
            sps: None,
            pps: None,
        })
    }

    /// The parameter sets for the `avcC` box, without start codes.
    pub(crate) fn set_parameter_sets(&mut self, sps: &[u8], pps: &[u8]) {
        self.sps = Some(sps.to_vec());
        self.pps = Some(pps.to_vec());
    }

    pub(crate) fn has_parameter_sets(&self) -> bool {
        self.sps.is_some() && self.pps.is_some()
    }

    pub(crate) fn parameter_sets(&self) -> (Option<&[u8]>, Option<&[u8]>) {
        (self.sps.as_deref(), self.pps.as_deref())
    }

    pub(crate) fn sample_count(&self) -> usize {
        self.sizes.len()
    }

    /// Appends one sample made of `nals` (without start codes), lasting `duration` ticks.
    pub(crate) fn write_sample(
        &mut self,
        nals: &[&[u8]],
        duration: u32,
        keyframe: bool,
    ) -> io::Result<()> {
        let mut size = 0u64;
        for nal in nals {
            let len = u32::try_from(nal.len())
                .map_err(|_| io::Error::other("a NAL unit is larger than 4 GiB"))?;
            self.out.write_all(&len.to_be_bytes())?;
            self.out.write_all(nal)?;
            size += 4 + nal.len() as u64;
        }
        let size =
            u32::try_from(size).map_err(|_| io::Error::other("a sample is larger than 4 GiB"))?;
        self.sizes.push(size);
        self.durations.push(duration);
        if keyframe {
            self.sync.push(self.sizes.len() as u32);
        }
        self.data_len += size as u64;
        Ok(())
    }

    /// Lengthens the last sample by `ticks` (a frame the encoder produced no picture for).
    pub(crate) fn extend_last_sample(&mut self, ticks: u32) -> bool {
        match self.durations.last_mut() {
            Some(d) => {
                *d += ticks;
                true
            }
            None => false,
        }
    }

    /// Completes the `mdat` header, appends `moov` and returns the writer.
    pub(crate) fn finish(mut self) -> io::Result<W> {
        let (Some(sps), Some(pps)) = (self.sps.take(), self.pps.take()) else {
            return Err(io::Error::other("the encoder produced no SPS/PPS"));
        };
        if sps.len() < 4 {
            return Err(io::Error::other("the SPS is truncated"));
        }
        let end = self.out.stream_position()?;
        self.out.seek(SeekFrom::Start(self.mdat_header))?;
        if let Ok(size) = u32::try_from(8 + self.data_len) {
            // Keep `free`; the `mdat` box starts 8 bytes later.
            self.out.seek(SeekFrom::Current(8))?;
            self.out.write_all(&size.to_be_bytes())?;
        } else {
            self.out.write_all(&1u32.to_be_bytes())?;
            self.out.write_all(b"mdat")?;
            self.out.write_all(&(16 + self.data_len).to_be_bytes())?;
        }
        self.out.seek(SeekFrom::Start(end))?;
        let moov = self.moov(&sps, &pps);
        self.out.write_all(&moov)?;
        self.out.flush()?;
        Ok(self.out)
    }

    fn moov(&self, sps: &[u8], pps: &[u8]) -> Vec<u8> {
        let media_duration: u64 = self.durations.iter().map(|&d| d as u64).sum();
        let movie_duration =
            (media_duration * MOVIE_TIMESCALE as u64).div_ceil(self.timescale as u64);
        // Version 1 boxes carry 64-bit durations; version 0 suffices for any realistic video.
        let movie_duration = u32::try_from(movie_duration).unwrap_or(u32::MAX);
        let media_duration = u32::try_from(media_duration).unwrap_or(u32::MAX);
        let first_sample = self.mdat_header + 16;

        let mut out = Vec::new();
        boxed(&mut out, b"moov", |out| {
            full_box(out, b"mvhd", 0, 0, |out| {
                u32be(out, 0); // creation time
                u32be(out, 0); // modification time
                u32be(out, MOVIE_TIMESCALE);
                u32be(out, movie_duration);
                u32be(out, 0x0001_0000); // rate 1.0
                u16be(out, 0x0100); // volume 1.0
                out.extend_from_slice(&[0; 10]);
                UNITY_MATRIX.iter().for_each(|&m| u32be(out, m));
                out.extend_from_slice(&[0; 24]);
                u32be(out, 2); // next track id
            });
            boxed(out, b"trak", |out| {
                full_box(out, b"tkhd", 0, 0x3, |out| {
                    u32be(out, 0);
                    u32be(out, 0);
                    u32be(out, 1); // track id
                    u32be(out, 0);
                    u32be(out, movie_duration);
                    out.extend_from_slice(&[0; 8]);
                    u16be(out, 0); // layer
                    u16be(out, 0); // alternate group
                    u16be(out, 0); // volume
                    u16be(out, 0);
                    UNITY_MATRIX.iter().for_each(|&m| u32be(out, m));
                    u32be(out, self.width << 16);
                    u32be(out, self.height << 16);
                });
                boxed(out, b"mdia", |out| {
                    full_box(out, b"mdhd", 0, 0, |out| {
                        u32be(out, 0);
                        u32be(out, 0);
                        u32be(out, self.timescale);
                        u32be(out, media_duration);
                        u16be(out, 0x55c4); // language "und"
                        u16be(out, 0);
                    });
                    full_box(out, b"hdlr", 0, 0, |out| {
                        u32be(out, 0);
                        out.extend_from_slice(b"vide");
                        out.extend_from_slice(&[0; 12]);
                        out.extend_from_slice(b"VideoHandler\0");
                    });
                    boxed(out, b"minf", |out| {
                        full_box(out, b"vmhd", 0, 1, |out| out.extend_from_slice(&[0; 8]));
                        boxed(out, b"dinf", |out| {
                            full_box(out, b"dref", 0, 0, |out| {
                                u32be(out, 1);
                                // Flag 1: the media data is in this file.
                                full_box(out, b"url ", 0, 1, |_| {});
                            });
                        });
                        self.stbl(out, sps, pps, first_sample);
                    });
                });
            });
        });
        out
    }

    fn stbl(&self, out: &mut Vec<u8>, sps: &[u8], pps: &[u8], first_sample: u64) {
        boxed(out, b"stbl", |out| {
            full_box(out, b"stsd", 0, 0, |out| {
                u32be(out, 1);
                boxed(out, b"avc1", |out| {
                    out.extend_from_slice(&[0; 6]);
                    u16be(out, 1); // data reference index
                    out.extend_from_slice(&[0; 16]);
                    u16be(out, self.width as u16);
                    u16be(out, self.height as u16);
                    u32be(out, 0x0048_0000); // 72 dpi
                    u32be(out, 0x0048_0000);
                    u32be(out, 0);
                    u16be(out, 1); // frames per sample
                    let mut name = [0u8; 32];
                    let label = b"OpenH264";
                    name[0] = label.len() as u8;
                    name[1..1 + label.len()].copy_from_slice(label);
                    out.extend_from_slice(&name);
                    u16be(out, 0x18); // depth
                    u16be(out, 0xffff); // pre-defined -1
                    boxed(out, b"avcC", |out| avc_config(out, sps, pps));
                });
            });
            full_box(out, b"stts", 0, 0, |out| {
                let mut runs: Vec<(u32, u32)> = Vec::new();
                for &d in &self.durations {
                    match runs.last_mut() {
                        Some((count, delta)) if *delta == d => *count += 1,
                        _ => runs.push((1, d)),
                    }
                }
                u32be(out, runs.len() as u32);
                for (count, delta) in runs {
                    u32be(out, count);
                    u32be(out, delta);
                }
            });
            full_box(out, b"stss", 0, 0, |out| {
                u32be(out, self.sync.len() as u32);
                self.sync.iter().for_each(|&s| u32be(out, s));
            });
            full_box(out, b"stsc", 0, 0, |out| {
                u32be(out, 1);
                u32be(out, 1); // first chunk
                u32be(out, self.sizes.len() as u32); // samples per chunk
                u32be(out, 1); // sample description index
            });
            full_box(out, b"stsz", 0, 0, |out| {
                u32be(out, 0);
                u32be(out, self.sizes.len() as u32);
                self.sizes.iter().for_each(|&s| u32be(out, s));
            });
            match u32::try_from(first_sample) {
                Ok(offset) => full_box(out, b"stco", 0, 0, |out| {
                    u32be(out, 1);
                    u32be(out, offset);
                }),
                Err(_) => full_box(out, b"co64", 0, 0, |out| {
                    u32be(out, 1);
                    u64be(out, first_sample);
                }),
            }
        });
    }
}

/// The `avcC` decoder configuration record: profile and level from the SPS, 4-byte NAL lengths.
fn avc_config(out: &mut Vec<u8>, sps: &[u8], pps: &[u8]) {
    let profile = sps[1];
    out.push(1); // version
    out.push(profile);
    out.push(sps[2]); // constraint flags
    out.push(sps[3]); // level
    out.push(0xfc | 3); // NAL length size - 1
    out.push(0xe0 | 1); // one SPS
    u16be(out, sps.len() as u16);
    out.extend_from_slice(sps);
    out.push(1); // one PPS
    u16be(out, pps.len() as u16);
    out.extend_from_slice(pps);
    if matches!(profile, 100 | 110 | 122 | 144) {
        // High profiles: 4:2:0, 8-bit luma and chroma, no SPS extensions.
        out.extend_from_slice(&[0xfc | 1, 0xf8, 0xf8, 0]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boxes_carry_their_size() {
        let mut out = Vec::new();
        full_box(&mut out, b"test", 1, 0x010203, |out| out.push(9));
        assert_eq!(out, [0, 0, 0, 13, b't', b'e', b's', b't', 1, 1, 2, 3, 9]);
    }
}
