//! The whole pipeline on the embedded default model, at tiny sizes: the library API (same seed
//! same video, cancellation, progress) and `vdit generate` as a user runs it.

use std::path::PathBuf;
use std::process::Command;

use vdit_model::dit::Precision;
use vdit_model::pipeline::{
    CancelToken, GenerateRequest, ModelPaths, Pipeline, Progress, Prompt, Silent, Stage,
    VideoStream,
};
use vdit_model::vae::{DecodeOptions, VaeTiling, WanVae};
use vdit_model::ModelError;
use vdit_wgpu::testing::test_gpu;
use vdit_wgpu::{DType, Tensor};

fn tiny_request(seed: u64) -> GenerateRequest {
    let mut r = GenerateRequest::new(Prompt::Text("a red fox running through snow".into()));
    r.width = 32;
    r.height = 48;
    r.frames = 5;
    r.steps = 3;
    r.seed = seed;
    r
}

#[derive(Default)]
struct Recorded {
    events: Vec<(Stage, &'static str, usize)>,
    previews: usize,
}

impl Progress for Recorded {
    fn begin(&mut self, stage: Stage, total: usize) {
        self.events.push((stage, "begin", total));
    }
    fn advance(&mut self, stage: Stage, done: usize) {
        self.events.push((stage, "advance", done));
    }
    fn end(&mut self, stage: Stage) {
        self.events.push((stage, "end", 0));
    }
    fn preview(&mut self, _step: usize, latent: &Tensor) {
        assert_eq!(latent.shape(), [16, 2, 6, 4]);
        self.previews += 1;
    }
}

fn generate(
    seed: u64,
    progress: &mut dyn Progress,
    cancel: &CancelToken,
) -> vdit_model::Result<Vec<f32>> {
    let gpu = test_gpu();
    let pipeline = Pipeline::new(gpu, ModelPaths::embedded_default()?, Precision::F32);
    let video = pipeline.generate(&tiny_request(seed), progress, cancel)?;
    assert_eq!(video.frames.shape(), [3, 5, 48, 32]);
    Ok(video.frames.to_vec_f32(gpu)?)
}

#[test]
fn same_seed_same_video_and_progress_is_reported() {
    let mut progress = Recorded::default();
    let a = generate(7, &mut progress, &CancelToken::default()).unwrap();
    let b = generate(7, &mut Recorded::default(), &CancelToken::default()).unwrap();
    let c = generate(8, &mut Recorded::default(), &CancelToken::default()).unwrap();
    assert!(a.iter().all(|v| v.is_finite() && (-1.0..=1.0).contains(v)));
    assert_eq!(a, b, "the same seed must give the same frames");
    assert_ne!(a, c, "another seed must give other frames");
    let steps = progress
        .events
        .iter()
        .filter(|e| e.0 == Stage::Denoising && e.1 == "advance")
        .count();
    assert_eq!(steps, 3);
    assert_eq!(progress.previews, 3);
    for stage in [Stage::EncodingPrompt, Stage::Denoising, Stage::Decoding] {
        assert!(
            progress.events.contains(&(stage, "end", 0)),
            "{stage:?} never ended"
        );
    }
}

#[test]
fn an_offloaded_dit_generates_the_same_video() {
    // The request's offload reaches the DiT: its six blocks stream through two GPU slots.
    let gpu = test_gpu();
    let pipeline = Pipeline::new(gpu, ModelPaths::embedded_default().unwrap(), Precision::F32);
    let frames = |offload: bool| {
        let mut request = tiny_request(3);
        request.offload = offload;
        let video = pipeline
            .generate(&request, &mut Silent, &CancelToken::default())
            .unwrap();
        video.frames.to_vec_f32(gpu).unwrap()
    };
    assert_eq!(frames(true), frames(false));
}

/// Keeps the latent of the last preview: the final one.
#[derive(Default)]
struct FinalLatent(Vec<f32>);

impl Progress for FinalLatent {
    fn preview(&mut self, _step: usize, latent: &Tensor) {
        self.0 = latent.to_vec_f32(test_gpu()).unwrap();
    }
}

#[test]
fn a_pipeline_of_random_parts_generates_and_a_missing_part_is_named() {
    let gpu = test_gpu();
    let assets = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/default-model");
    let dit =
        vdit_model::weights::DitConfig::from_json_file(assets.join("transformer/config.json"))
            .unwrap();
    let vae = vdit_model::vae::VaeConfig::from_json_file(assets.join("vae/config.json")).unwrap();
    let context = |v: f32| {
        Prompt::Embeddings(vdit_model::tensor_file::HostTensor {
            shape: vec![3, dit.text_dim],
            data: vec![v; 3 * dit.text_dim],
        })
    };
    let mut request = tiny_request(0);
    request.prompt = context(0.1);
    request.negative_prompt = Some(context(-0.1));
    request.steps = 2;
    let pipeline = Pipeline::new(gpu, ModelPaths::default(), Precision::F32)
        .with_random_dit(dit.clone(), 3)
        .with_random_vae(vae, 4);
    let mut recorded = Recorded::default();
    let video = pipeline
        .generate(&request, &mut recorded, &CancelToken::default())
        .unwrap();
    assert_eq!(video.frames.shape(), [3, 5, 48, 32]);
    let frames = video.frames.to_vec_f32(gpu).unwrap();
    assert!(frames.iter().all(|v| v.is_finite()), "non-finite frames");
    assert!(recorded.events.contains(&(Stage::Denoising, "advance", 2)));
    // Without a VAE the decode names what is missing, after the denoising ran.
    let no_vae = Pipeline::new(gpu, ModelPaths::default(), Precision::F32).with_random_dit(dit, 3);
    let err = no_vae
        .generate(&request, &mut Silent, &CancelToken::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("no VAE weights"), "{err}");
}

#[test]
fn frames_streamed_from_the_decoder_make_the_same_file_and_a_cancelled_one_leaves_none() {
    let gpu = test_gpu();
    let pipeline = Pipeline::new(gpu, ModelPaths::embedded_default().unwrap(), Precision::F32);
    let request = tiny_request(5);
    let cancel = CancelToken::default();
    let latent = pipeline
        .sample(&request, &mut Silent, &cancel, None)
        .unwrap();
    let dir = scratch("stream");
    // The whole decode written at once, against the frames handed over per latent frame.
    let whole = dir.join("whole.gif");
    let video = pipeline.decode(&latent, &mut Silent, &cancel).unwrap();
    vdit_model::pipeline::write_video_from_gpu(gpu, &video, &whole).unwrap();
    let streamed = dir.join("streamed.gif");
    let mut stream = VideoStream::create(gpu, &streamed, 32, 48, pipeline.fps).unwrap();
    let mut recorded = Recorded::default();
    pipeline
        .decode_each(&latent, &mut recorded, &cancel, &mut |frames, n| {
            Ok(stream.push(gpu, frames, n)?)
        })
        .unwrap();
    assert_eq!(stream.frames(), 5);
    stream.finish().unwrap();
    assert_eq!(
        std::fs::read(&streamed).unwrap(),
        std::fs::read(&whole).unwrap()
    );
    // Progress in frames: 1 from the first latent frame, then 4.
    let decoding: Vec<_> = recorded
        .events
        .iter()
        .filter(|e| e.0 == Stage::Decoding)
        .cloned()
        .collect();
    assert_eq!(
        decoding,
        [
            (Stage::Decoding, "begin", 5),
            (Stage::Decoding, "advance", 1),
            (Stage::Decoding, "advance", 5),
            (Stage::Decoding, "end", 0)
        ]
    );
    // Cancelled after the first frame: an error, and no file, not even a temporary one.
    let cancelled = dir.join("cancelled.gif");
    let mut stream = VideoStream::create(gpu, &cancelled, 32, 48, pipeline.fps).unwrap();
    let stop = CancelToken::default();
    let err = pipeline
        .decode_each(&latent, &mut Silent, &stop, &mut |frames, n| {
            stream.push(gpu, frames, n)?;
            stop.cancel();
            Ok(())
        })
        .unwrap_err();
    assert!(matches!(err, ModelError::Cancelled), "{err}");
    drop(stream);
    let mut left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(left, ["streamed.gif", "whole.gif"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn vae_tiling_reaches_the_decoder() {
    let gpu = test_gpu();
    let paths = ModelPaths::embedded_default().unwrap();
    let vae = WanVae::load(gpu, paths.vae.as_ref().unwrap(), Precision::F32).unwrap();
    // The latent is 6 x 4: tiles of 4 cut it in two rows.
    let tiling = VaeTiling::new(4, 1).unwrap();
    let pipeline = Pipeline::new(gpu, paths, Precision::F32).with_vae_tiling(tiling);
    let mut last = FinalLatent::default();
    let video = pipeline
        .generate(&tiny_request(3), &mut last, &CancelToken::default())
        .unwrap();
    let got = video.frames.to_vec_f32(gpu).unwrap();
    let latent = Tensor::from_f32(gpu, &[16, 2, 6, 4], &last.0, DType::F32).unwrap();
    let decode = |tiling| {
        let options = DecodeOptions {
            tiling,
            ..Default::default()
        };
        let frames = vae.decode_with(gpu, &latent, options).unwrap();
        frames.to_vec_f32(gpu).unwrap()
    };
    assert_eq!(got, decode(Some(tiling)), "not the tiled decode");
    assert_ne!(got, decode(None), "the tiling was not used");
}

#[test]
fn cancellation_stops_the_generation() {
    let cancel = CancelToken::default();
    cancel.cancel();
    let err = generate(1, &mut Recorded::default(), &cancel).unwrap_err();
    assert!(matches!(err, ModelError::Cancelled), "{err}");
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vdit-generate-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn vdit_generate(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vdit"))
        .arg("generate")
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!stderr.contains("panicked"), "{stderr}");
    (out.status.success(), stderr)
}

#[test]
fn the_command_writes_a_playable_mp4() {
    let dir = scratch("mp4");
    let path = dir.join("fox.mp4");
    let (ok, stderr) = vdit_generate(&[
        "--prompt",
        "a red fox",
        "--width",
        "32",
        "--height",
        "48",
        "--frames",
        "5",
        "--steps",
        "2",
        "--quiet",
        "--output",
        path.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    let bytes = std::fs::read(&path).unwrap();
    let mp4 =
        mp4::Mp4Reader::read_header(std::io::Cursor::new(&bytes), bytes.len() as u64).unwrap();
    let track = mp4.tracks().values().next().expect("a video track");
    assert_eq!((track.width(), track.height()), (32, 48));
    assert_eq!(track.sample_count(), 5);
    let seconds = track.duration().as_secs_f64();
    assert!(
        (seconds - 5.0 / 16.0).abs() < 1e-3,
        "5 frames at 16 fps last {seconds} s"
    );
    // A real decoder: OpenH264's, on every sample of the track.
    let (frames, size) = decode_h264_track(&bytes);
    assert_eq!((frames, size), (5, (32, 48)), "OpenH264 decoded this");
    // And ffmpeg's, where one is installed.
    if let Ok(out) = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-count_frames",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=nb_read_frames,width,height,r_frame_rate",
            "-of",
            "csv=p=0",
        ])
        .arg(&path)
        .output()
    {
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("32,48,16/1,5"), "ffprobe says {text}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `vdit generate` from a k-quant DiT and a Q8_0 umT5 under llama.cpp's names
/// (tools/make_gguf_goldens.py) with the tiny golden VAE, and `extra` arguments; a 32 x 48 GIF.
fn generate_from_gguf_files(name: &str, extra: &[&str]) {
    let goldens = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/goldens");
    let arg = |rel: &str| goldens.join(rel).to_str().unwrap().to_string();
    let dir = scratch(name);
    let path = dir.join("fox.gif");
    let mut args = vec![
        "--dit".to_string(),
        arg("gguf/dit_tiny_kquants.gguf"),
        "--text-encoder".into(),
        arg("gguf/umt5_tiny_q8_0.gguf"),
        "--vae".into(),
        arg("vae/tiny/diffusers"),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    for a in [
        "--prompt",
        "a red fox",
        "--width",
        "32",
        "--height",
        "48",
        "--frames",
        "1",
        "--steps",
        "1",
        "--quiet",
        "--output",
    ] {
        args.push(a.into());
    }
    args.push(path.to_str().unwrap().into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, stderr) = vdit_generate(&args);
    assert!(ok, "{stderr}");
    let bytes = std::fs::read(&path).unwrap();
    assert!(bytes.starts_with(b"GIF89a"), "not a GIF");
    // The logical screen size of the GIF: 32 x 48.
    assert_eq!((bytes[6], bytes[8]), (32, 48));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_command_runs_from_gguf_files() {
    let tokenizer = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("assets/goldens/t5/tokenizer/tokenizer.json");
    generate_from_gguf_files("gguf", &["--tokenizer", tokenizer.to_str().unwrap()]);
}

#[test]
fn the_command_runs_from_gguf_files_with_the_text_encoders_own_tokenizer() {
    // No --tokenizer: the umT5 GGUF file's metadata carries it.
    generate_from_gguf_files("gguf-own-tokenizer", &[]);
}

#[test]
fn bad_sizes_are_refused_before_any_work() {
    let dir = scratch("bad");
    let path = dir.join("never.mp4");
    for (flag, value, needle) in [("--width", "30", "--width"), ("--frames", "6", "4k + 1")] {
        let (ok, stderr) = vdit_generate(&[
            "--prompt",
            "x",
            flag,
            value,
            "--output",
            path.to_str().unwrap(),
        ]);
        assert!(!ok && stderr.contains(needle), "{flag} {value}: {stderr}");
        assert!(!path.exists());
    }
    let (ok, stderr) = vdit_generate(&[
        "--prompt",
        "x",
        "--output",
        dir.join("x.avi").to_str().unwrap(),
    ]);
    assert!(!ok && stderr.contains("x.avi"), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_command_reports_where_and_how_long_and_nothing_spurious() {
    let dir = scratch("report");
    let path = dir.join("report.mp4");
    let out = Command::new(env!("CARGO_BIN_EXE_vdit"))
        .args([
            "generate",
            "--prompt",
            "a red ball moving left on a gray background",
        ])
        .args([
            "--width", "32", "--height", "32", "--frames", "5", "--steps", "2",
        ])
        .arg("--output")
        .arg(&path)
        // A headless machine: no display, no session directory.
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("WAYLAND_DISPLAY")
        .env_remove("DISPLAY")
        .env_remove("NODEVICE_SELECT")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let report = stderr
        .lines()
        .find(|l| l.starts_with("wrote "))
        .unwrap_or_else(|| panic!("no 'wrote' line in:\n{stderr}"));
    assert!(report.contains(path.to_str().unwrap()), "{report}");
    for stage in ["prompt", "denoise", "decode", "write"] {
        assert!(
            report.contains(&format!("{stage} ")),
            "no {stage} time: {report}"
        );
    }
    for line in stderr.lines() {
        assert!(
            !line.to_lowercase().contains("error"),
            "spurious error line {line:?} in:\n{stderr}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Decodes every sample of an mp4's first track with OpenH264's decoder: the number of frames
/// it gave and their size. The samples hold length-prefixed NAL units and the track's avcC box
/// the parameter sets; the decoder takes Annex B (start codes).
fn decode_h264_track(bytes: &[u8]) -> (usize, (usize, usize)) {
    use openh264::formats::YUVSource;
    let mut mp4 =
        mp4::Mp4Reader::read_header(std::io::Cursor::new(bytes), bytes.len() as u64).unwrap();
    let track = mp4.tracks().values().next().expect("a video track");
    let id = track.track_id();
    let samples = track.sample_count();
    let avcc = &track
        .trak
        .mdia
        .minf
        .stbl
        .stsd
        .avc1
        .as_ref()
        .expect("an avc1 track")
        .avcc;
    let prefix = avcc.length_size_minus_one as usize + 1;
    const START: [u8; 4] = [0, 0, 0, 1];
    let mut stream = Vec::new();
    for nal in avcc
        .sequence_parameter_sets
        .iter()
        .chain(&avcc.picture_parameter_sets)
    {
        stream.extend(START.iter().chain(&nal.bytes));
    }
    let mut decoder = openh264::decoder::Decoder::new().unwrap();
    let mut frames = 0;
    let mut size = (0, 0);
    for sample_id in 1..=samples {
        let sample = mp4.read_sample(id, sample_id).unwrap().expect("a sample");
        let mut data = &sample.bytes[..];
        while data.len() >= prefix {
            let len = data[..prefix]
                .iter()
                .fold(0usize, |n, &b| (n << 8) | b as usize);
            let nal = &data[prefix..prefix + len];
            stream.extend(START.iter().chain(nal));
            data = &data[prefix + len..];
        }
        if let Some(yuv) = decoder.decode(&stream).unwrap() {
            frames += 1;
            size = yuv.dimensions();
        }
        stream.clear();
    }
    for yuv in decoder.flush_remaining().unwrap() {
        frames += 1;
        size = yuv.dimensions();
    }
    (frames, size)
}
