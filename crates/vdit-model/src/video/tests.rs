//! Round trips through real decoders: each writer's file is read back and compared to its input.

use std::fs;
use std::path::{Path, PathBuf};

use super::*;

const W: u32 = 64;
const H: u32 = 48;
const T: usize = 9;
const FPS: u32 = 16;

/// A folder under the system temp dir, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "vdit-video-{name}-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// Names of everything in the folder, sorted.
    fn entries(&self) -> Vec<String> {
        list(&self.0)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn list(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Smooth colour waves drifting across the frame, a different phase per frame.
fn gradient(width: u32, height: u32, frames: usize) -> Frames {
    let mut data = Vec::with_capacity(frames * (width * height * 3) as usize);
    for t in 0..frames {
        let t = t as f32;
        for y in 0..height {
            for x in 0..width {
                let (x, y) = (x as f32, y as f32);
                let r = 128.0 + 90.0 * ((x + 2.0 * t) / 11.0).sin();
                let g = 128.0 + 90.0 * ((y - 1.5 * t) / 9.0).cos();
                let b = 128.0 + 90.0 * ((x + y + 3.0 * t) / 17.0).sin();
                data.extend([r, g, b].map(|v| v.round() as u8));
            }
        }
    }
    Frames {
        width,
        height,
        fps: FPS,
        data,
    }
}

/// PSNR in dB between two RGB8 images of the same size.
fn psnr(a: &[u8], b: &[u8]) -> f64 {
    assert_eq!(a.len(), b.len());
    let mse: f64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 - y as f64).powi(2))
        .sum::<f64>()
        / a.len() as f64;
    if mse == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (255.0f64 * 255.0 / mse).log10()
    }
}

/// The top-left `width x height` part of an RGB8 image `stride` pixels wide.
fn crop(rgb: &[u8], stride: usize, width: usize, height: usize) -> Vec<u8> {
    (0..height)
        .flat_map(|y| rgb[y * stride * 3..][..width * 3].iter().copied())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// MP4

/// The types of the top-level boxes of an MP4 file, and the byte range of each.
fn top_level_boxes(file: &[u8]) -> Vec<(String, usize, usize)> {
    let mut boxes = Vec::new();
    let mut at = 0;
    while at + 8 <= file.len() {
        let mut size = u32::from_be_bytes(file[at..at + 4].try_into().unwrap()) as usize;
        let kind = String::from_utf8_lossy(&file[at + 4..at + 8]).into_owned();
        if size == 1 {
            size = u64::from_be_bytes(file[at + 8..at + 16].try_into().unwrap()) as usize;
        }
        assert!(
            size >= 8 && at + size <= file.len(),
            "box {kind} overruns the file"
        );
        boxes.push((kind, at, at + size));
        at += size;
    }
    assert_eq!(at, file.len(), "trailing bytes after the last box");
    boxes
}

/// Decodes every sample of an MP4's H.264 track with OpenH264; returns the RGB8 pictures.
/// What the MP4's track header says.
struct TrackInfo {
    codec: String,
    width: u32,
    height: u32,
    samples: usize,
    timescale: u32,
    duration: std::time::Duration,
}

fn decode_mp4(path: &Path) -> (TrackInfo, Vec<Vec<u8>>) {
    let size = fs::metadata(path).unwrap().len();
    let reader = std::io::BufReader::new(fs::File::open(path).unwrap());
    let mut mp4 = ::mp4::Mp4Reader::read_header(reader, size).expect("mp4 crate parses the file");
    assert_eq!(mp4.tracks().len(), 1);
    let track = mp4.tracks().values().next().unwrap();
    let id = track.track_id();
    let info = TrackInfo {
        codec: track.box_type().unwrap().to_string(),
        width: track.width() as u32,
        height: track.height() as u32,
        samples: track.sample_count() as usize,
        timescale: track.timescale(),
        duration: track.duration(),
    };

    let annex_b = |nal: &[u8], out: &mut Vec<u8>| {
        out.extend_from_slice(&[0, 0, 0, 1]);
        out.extend_from_slice(nal);
    };
    let mut stream = Vec::new();
    annex_b(track.sequence_parameter_set().unwrap(), &mut stream);
    annex_b(track.picture_parameter_set().unwrap(), &mut stream);
    let sample_count = track.sample_count();

    let mut decoder = openh264::decoder::Decoder::new().unwrap();
    let mut pictures = Vec::new();
    let keep = |yuv: openh264::decoder::DecodedYUV<'_>, pictures: &mut Vec<Vec<u8>>| {
        use openh264::formats::YUVSource;
        let (w, h) = yuv.dimensions();
        let mut rgb = vec![0u8; w * h * 3];
        yuv.write_rgb8(&mut rgb);
        pictures.push(rgb);
    };
    for sample_id in 1..=sample_count {
        let sample = mp4.read_sample(id, sample_id).unwrap().unwrap();
        if sample_id == 1 {
            assert!(sample.is_sync, "the first sample is a keyframe");
        }
        let mut data = &sample.bytes[..];
        while !data.is_empty() {
            let len = u32::from_be_bytes(data[..4].try_into().unwrap()) as usize;
            annex_b(&data[4..4 + len], &mut stream);
            data = &data[4 + len..];
        }
        if let Some(yuv) = decoder
            .decode(&stream)
            .expect("OpenH264 decodes the sample")
        {
            keep(yuv, &mut pictures);
        }
        stream.clear();
    }
    for yuv in decoder.flush_remaining().unwrap() {
        keep(yuv, &mut pictures);
    }
    (info, pictures)
}

/// Frame count, size and frame rate that `ffprobe` reports, when it is installed.
fn ffprobe(path: &Path) -> Option<String> {
    let out = std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-count_frames",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=codec_name,width,height,r_frame_rate,nb_read_frames",
            "-of",
            "csv=p=0",
        ])
        .arg(path)
        .output()
        .ok()?;
    assert!(
        out.status.success(),
        "ffprobe failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn check_mp4(frames: &Frames, path: &Path) {
    let file = fs::read(path).unwrap();
    let kinds: Vec<String> = top_level_boxes(&file).into_iter().map(|b| b.0).collect();
    assert_eq!(kinds, ["ftyp", "free", "mdat", "moov"]);

    let (coded_w, coded_h) = (
        frames.width + (frames.width & 1),
        frames.height + (frames.height & 1),
    );
    let (track, pictures) = decode_mp4(path);
    assert_eq!(track.codec, "avc1");
    assert_eq!((track.width, track.height), (coded_w, coded_h));
    assert_eq!(track.samples, frames.frame_count());
    assert_eq!(track.timescale % frames.fps, 0);
    let expected =
        std::time::Duration::from_secs_f64(frames.frame_count() as f64 / frames.fps as f64);
    assert_eq!(track.duration, expected);

    assert_eq!(pictures.len(), frames.frame_count(), "decoded pictures");
    for (i, picture) in pictures.iter().enumerate() {
        assert_eq!(picture.len(), (coded_w * coded_h * 3) as usize);
        let picture = crop(
            picture,
            coded_w as usize,
            frames.width as usize,
            frames.height as usize,
        );
        let db = psnr(&picture, frames.frame(i));
        assert!(db > 30.0, "frame {i}: PSNR {db:.1} dB");
    }

    if let Some(report) = ffprobe(path) {
        assert_eq!(
            report,
            format!(
                "h264,{coded_w},{coded_h},{}/1,{}",
                frames.fps,
                frames.frame_count()
            )
        );
    }
}

#[test]
fn mp4_decodes_back_to_the_frames() {
    let dir = Scratch::new("mp4");
    let frames = gradient(W, H, T);
    let path = dir.path("out.mp4");
    write_video(&path, &frames).unwrap();
    check_mp4(&frames, &path);
    assert_eq!(dir.entries(), ["out.mp4"], "no temporary file is left");
}

#[test]
fn mp4_pads_odd_sizes() {
    let dir = Scratch::new("mp4-odd");
    let frames = gradient(W - 1, H - 3, 3);
    let path = dir.path("odd.MP4");
    write_video(&path, &frames).unwrap();
    check_mp4(&frames, &path);
}

// ---------------------------------------------------------------------------------------------
// WebP

struct Chunk<'a> {
    fourcc: [u8; 4],
    payload: &'a [u8],
}

/// Splits a run of RIFF chunks, checking lengths and padding.
fn riff_chunks(mut data: &[u8]) -> Vec<Chunk<'_>> {
    let mut chunks = Vec::new();
    while !data.is_empty() {
        assert!(data.len() >= 8, "truncated chunk header");
        let fourcc: [u8; 4] = data[..4].try_into().unwrap();
        let len = u32::from_le_bytes(data[4..8].try_into().unwrap()) as usize;
        let padded = len + (len & 1);
        assert!(8 + padded <= data.len(), "chunk overruns its parent");
        chunks.push(Chunk {
            fourcc,
            payload: &data[8..8 + len],
        });
        data = &data[8 + padded..];
    }
    chunks
}

fn u24(b: &[u8]) -> u32 {
    b[0] as u32 | (b[1] as u32) << 8 | (b[2] as u32) << 16
}

#[test]
fn webp_container_holds_lossless_frames() {
    let dir = Scratch::new("webp");
    let frames = gradient(W, H, T);
    let path = dir.path("out.webp");
    write_video(&path, &frames).unwrap();
    let file = fs::read(&path).unwrap();

    // The container, parsed by hand.
    assert_eq!(&file[..4], b"RIFF");
    assert_eq!(
        u32::from_le_bytes(file[4..8].try_into().unwrap()) as usize,
        file.len() - 8
    );
    assert_eq!(&file[8..12], b"WEBP");
    let chunks = riff_chunks(&file[12..]);
    assert_eq!(&chunks[0].fourcc, b"VP8X");
    let vp8x = chunks[0].payload;
    assert_eq!(vp8x.len(), 10);
    assert_eq!(vp8x[0], 0x02, "animation flag only");
    assert_eq!((u24(&vp8x[4..]) + 1, u24(&vp8x[7..]) + 1), (W, H));
    assert_eq!(&chunks[1].fourcc, b"ANIM");
    assert_eq!(&chunks[1].payload[4..6], &[0, 0], "loops forever");
    let frames_in_file: Vec<&Chunk> = chunks[2..].iter().collect();
    assert_eq!(frames_in_file.len(), T);
    let mut total_ms = 0;
    for (i, anmf) in frames_in_file.iter().enumerate() {
        assert_eq!(&anmf.fourcc, b"ANMF");
        let p = anmf.payload;
        assert_eq!((u24(&p[0..]), u24(&p[3..])), (0, 0));
        assert_eq!((u24(&p[6..]) + 1, u24(&p[9..]) + 1), (W, H));
        let ms = u24(&p[12..]);
        assert!(ms == 62 || ms == 63, "frame duration {ms} ms at 16 fps");
        total_ms += ms;
        let inner = riff_chunks(&p[16..]);
        assert_eq!(inner.len(), 1);
        assert_eq!(&inner[0].fourcc, b"VP8L");

        // Each frame's bitstream, as a still image, decodes to the exact input.
        let mut still = Vec::new();
        still.extend_from_slice(b"RIFF");
        still.extend_from_slice(
            &(4 + 8 + inner[0].payload.len() as u32 + (inner[0].payload.len() as u32 & 1))
                .to_le_bytes(),
        );
        still.extend_from_slice(b"WEBP");
        webp::chunk(&mut still, b"VP8L", inner[0].payload);
        let mut decoder = image_webp::WebPDecoder::new(std::io::Cursor::new(still)).unwrap();
        assert_eq!(decoder.dimensions(), (W, H));
        assert!(!decoder.has_alpha());
        let mut rgb = vec![0u8; decoder.output_buffer_size().unwrap()];
        decoder.read_image(&mut rgb).unwrap();
        assert_eq!(rgb, frames.frame(i), "frame {i} is lossless");
    }
    assert_eq!(total_ms, 563, "9 frames at 16 fps, rounded once");

    // The whole animation, read by image-webp's own container parser.
    let mut decoder = image_webp::WebPDecoder::new(std::io::Cursor::new(&file)).unwrap();
    assert!(decoder.is_animated());
    assert_eq!(decoder.num_frames() as usize, T);
    assert_eq!(decoder.dimensions(), (W, H));
    let mut canvas = vec![0u8; decoder.output_buffer_size().unwrap()];
    let channels = canvas.len() / (W * H) as usize;
    for i in 0..T {
        decoder.read_frame(&mut canvas).unwrap();
        let rgb: Vec<u8> = canvas
            .chunks_exact(channels)
            .flat_map(|p| [p[0], p[1], p[2]])
            .collect();
        assert_eq!(rgb, frames.frame(i), "animation frame {i}");
    }
}

// ---------------------------------------------------------------------------------------------
// GIF and PNG

#[test]
fn gif_decodes_with_every_frame() {
    let dir = Scratch::new("gif");
    let frames = gradient(W, H, T);
    let path = dir.path("out.gif");
    write_video(&path, &frames).unwrap();

    let mut options = ::gif::DecodeOptions::new();
    options.set_color_output(::gif::ColorOutput::RGBA);
    let mut decoder = options.read_info(fs::File::open(&path).unwrap()).unwrap();
    assert_eq!((decoder.width() as u32, decoder.height() as u32), (W, H));
    assert_eq!(decoder.repeat(), ::gif::Repeat::Infinite);
    let mut count = 0;
    let mut centis = 0;
    while let Some(frame) = decoder.read_next_frame().unwrap() {
        assert_eq!((frame.width as u32, frame.height as u32), (W, H));
        centis += frame.delay as u32;
        let rgb: Vec<u8> = frame
            .buffer
            .chunks_exact(4)
            .flat_map(|p| [p[0], p[1], p[2]])
            .collect();
        let db = psnr(&rgb, frames.frame(count));
        assert!(
            db > 25.0,
            "frame {count}: PSNR {db:.1} dB after quantization"
        );
        count += 1;
    }
    assert_eq!(count, T);
    assert_eq!(centis, 56, "9 frames at 16 fps in hundredths of a second");
}

fn read_png(path: &Path) -> (u32, u32, Vec<u8>) {
    let decoder = png::Decoder::new(std::io::BufReader::new(fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0u8; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(info.color_type, png::ColorType::Rgb);
    buf.truncate(info.buffer_size());
    (info.width, info.height, buf)
}

#[test]
fn png_folder_holds_every_frame() {
    let dir = Scratch::new("png");
    let frames = gradient(W, H, T);
    let out = dir.path("frames/");
    assert_eq!(
        VideoFormat::from_path(&out).unwrap(),
        VideoFormat::PngFrames
    );
    write_video(&out, &frames).unwrap();
    assert_eq!(
        dir.entries(),
        ["frames"],
        "only the folder, renamed into place"
    );
    let names = list(&out);
    assert_eq!(names.len(), T);
    for (i, name) in names.iter().enumerate() {
        assert_eq!(name, &frame_file_name(i));
        let (w, h, rgb) = read_png(&out.join(name));
        assert_eq!((w, h), (W, H));
        assert_eq!(rgb, frames.frame(i));
    }

    // Into the existing folder (no trailing slash): fewer frames replace the old ones; frames of
    // the earlier, longer video go, other files stay.
    fs::write(out.join("notes.txt"), "keep").unwrap();
    let shorter = gradient(W, H, 4);
    let existing = dir.path("frames");
    assert_eq!(
        VideoFormat::from_path(&existing).unwrap(),
        VideoFormat::PngFrames
    );
    write_video(&existing, &shorter).unwrap();
    let mut expected: Vec<String> = (0..4).map(frame_file_name).collect();
    expected.push("notes.txt".into());
    assert_eq!(list(&out), expected);
    assert_eq!(read_png(&out.join(frame_file_name(3))).2, shorter.frame(3));
}

// ---------------------------------------------------------------------------------------------
// Streaming, failures and paths

#[test]
fn frames_can_be_pushed_one_by_one() {
    let dir = Scratch::new("stream");
    let frames = gradient(W, H, T);
    for name in ["s.mp4", "s.webp", "s.gif", "s/"] {
        let path = dir.path(name);
        let mut writer = create_writer(&path, frames.spec()).unwrap();
        assert_eq!(writer.spec(), frames.spec());
        for i in 0..T {
            writer.push_frame(frames.frame(i)).unwrap();
        }
        assert_eq!(writer.frames_written(), T);
        assert!(
            !path.exists(),
            "{name}: nothing at the target before finish"
        );
        writer.finish().unwrap();
        assert!(path.exists(), "{name}");
    }
    check_mp4(&frames, &dir.path("s.mp4"));
    let mut names = dir.entries();
    names.sort();
    assert_eq!(names, ["s", "s.gif", "s.mp4", "s.webp"]);
}

#[test]
fn dropped_or_failed_writers_leave_nothing() {
    let dir = Scratch::new("fail");
    let frames = gradient(W, H, 3);
    for name in ["a.mp4", "a.webp", "a.gif", "a/"] {
        let path = dir.path(name);
        // Interrupted: dropped after some frames.
        let mut writer = create_writer(&path, frames.spec()).unwrap();
        writer.push_frame(frames.frame(0)).unwrap();
        drop(writer);
        // Failed: a frame of the wrong size.
        let mut writer = create_writer(&path, frames.spec()).unwrap();
        writer.push_frame(frames.frame(0)).unwrap();
        let err = writer.push_frame(&frames.data[..10]).unwrap_err();
        assert!(matches!(err.kind, VideoErrorKind::InvalidInput(_)), "{err}");
        assert!(err.to_string().contains(&*path.to_string_lossy()), "{err}");
        drop(writer);
        // Finished without frames.
        let writer = create_writer(&path, frames.spec()).unwrap();
        let err = writer.finish().unwrap_err();
        assert!(matches!(err.kind, VideoErrorKind::NoFrames), "{err}");
        assert_eq!(
            dir.entries(),
            Vec::<String>::new(),
            "{name}: no file, no temporary"
        );
    }

    // A failed write keeps an existing file as it was.
    let path = dir.path("keep.gif");
    fs::write(&path, "old").unwrap();
    let mut bad = frames.clone();
    bad.data.pop();
    let err = write_video(&path, &bad).unwrap_err();
    assert!(err.to_string().contains("keep.gif"), "{err}");
    assert_eq!(fs::read(&path).unwrap(), b"old");
    assert_eq!(dir.entries(), ["keep.gif"]);
}

#[test]
fn missing_or_unwritable_folders_are_clear_errors() {
    let dir = Scratch::new("paths");
    let frames = gradient(W, H, 2);
    for name in [
        "missing/out.mp4",
        "missing/out.webp",
        "missing/out.gif",
        "missing/deeper/",
    ] {
        let path = dir.path(name);
        let err = write_video(&path, &frames).unwrap_err();
        let text = err.to_string();
        assert!(text.contains(&*path.to_string_lossy()), "{text}");
        assert!(text.contains("does not exist"), "{text}");
    }
    assert_eq!(dir.entries(), Vec::<String>::new());

    // A folder that cannot be written (unless running as root, whom permissions do not stop).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let locked = dir.path("locked");
        fs::create_dir(&locked).unwrap();
        fs::set_permissions(&locked, fs::Permissions::from_mode(0o555)).unwrap();
        let probe = locked.join("probe");
        let privileged = fs::write(&probe, "").is_ok();
        let _ = fs::remove_file(&probe);
        if !privileged {
            for name in ["out.mp4", "out.webp", "out.gif", "out/"] {
                let path = locked.join(name);
                let err = write_video(&path, &frames).unwrap_err();
                assert!(matches!(err.kind, VideoErrorKind::Io(_)), "{err}");
                assert!(err.to_string().contains(&*path.to_string_lossy()), "{err}");
            }
            assert_eq!(list(&locked), Vec::<String>::new());
        }
        fs::set_permissions(&locked, fs::Permissions::from_mode(0o755)).unwrap();
    }

    // The folder vanishes while the video is written: the rename fails, nothing is left behind.
    let vanishing = dir.path("vanishing");
    fs::create_dir(&vanishing).unwrap();
    let path = vanishing.join("out.mp4");
    let mut writer = create_writer(&path, frames.spec()).unwrap();
    writer.push_frame(frames.frame(0)).unwrap();
    fs::remove_dir_all(&vanishing).unwrap();
    let err = writer.finish().unwrap_err();
    assert!(err.to_string().contains("out.mp4"), "{err}");
    assert!(!path.exists());
}

#[test]
fn formats_follow_the_path() {
    let f = |p: &str| VideoFormat::from_path(Path::new(p));
    assert_eq!(f("a/b.mp4").unwrap(), VideoFormat::Mp4);
    assert_eq!(f("B.WEBP").unwrap(), VideoFormat::Webp);
    assert_eq!(f("c.gif").unwrap(), VideoFormat::Gif);
    assert_eq!(f("frames/").unwrap(), VideoFormat::PngFrames);
    assert_eq!(f(".").unwrap(), VideoFormat::PngFrames);
    for bad in ["out.avi", "out"] {
        let err = f(bad).unwrap_err();
        assert!(matches!(err.kind, VideoErrorKind::UnknownFormat(_)));
        let text = err.to_string();
        assert!(text.contains(bad) && text.contains(".mp4"), "{text}");
    }
}

#[test]
fn bad_specs_are_rejected() {
    let dir = Scratch::new("spec");
    let path = dir.path("x.mp4");
    for spec in [
        VideoSpec::new(0, 8, 16),
        VideoSpec::new(8, 8, 0),
        VideoSpec::new(8, 8, 5000),
    ] {
        let err = create_writer(&path, spec).err().expect("rejected");
        assert!(matches!(err.kind, VideoErrorKind::InvalidInput(_)), "{err}");
    }
    let err = create_writer(dir.path("x.mp4"), VideoSpec::new(4000, 3000, 16))
        .err()
        .unwrap();
    assert!(err.to_string().contains("larger than"), "{err}");
    let err = create_writer(dir.path("x.gif"), VideoSpec::new(70000, 8, 16))
        .err()
        .unwrap();
    assert!(err.to_string().contains("larger than"), "{err}");
    let frames = Frames {
        width: 4,
        height: 4,
        fps: 16,
        data: vec![0; 47],
    };
    let err = write_video(dir.path("y.webp"), &frames).unwrap_err();
    assert!(err.to_string().contains("whole number"), "{err}");
    assert_eq!(dir.entries(), Vec::<String>::new());
}

#[test]
fn frame_durations_add_up() {
    let ms: Vec<u64> = (0..4).map(|i| frame_duration(i, 16, 1000)).collect();
    assert_eq!(ms, [63, 62, 63, 62]);
    let total: u64 = (0..81).map(|i| frame_duration(i, 16, 1000)).sum();
    assert_eq!(total, 5063); // 81 / 16 s = 5062.5 ms
    let total: u64 = (0..30).map(|i| frame_duration(i, 30, 100)).sum();
    assert_eq!(total, 100);
}

#[test]
fn vae_output_becomes_frames() {
    let (t, h, w) = (2, 2, 2);
    let data: Vec<f32> = (0..3 * t * h * w).map(|i| i as f32 / 12.0 - 1.0).collect();
    let frames = Frames::from_vae_output(&data, t, h, w, 16);
    assert_eq!(frames.frame_count(), 2);
    assert_eq!((frames.width, frames.height, frames.fps), (2, 2, 16));
    // Pixel (0, 0) of frame 1: R at channel 0 index 4, G at 12, B at 20.
    let px = &frames.frame(1)[..3];
    assert_eq!(
        px,
        [4, 12, 20].map(|i: usize| unit_to_u8(i as f32 / 12.0 - 1.0))
    );
}
