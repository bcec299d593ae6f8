//! A window that generates a short video and plays it, as a desktop app embedding vdit would.
//!
//! The app opens its own wgpu device for its window and hands it to vdit with
//! `Gpu::from_wgpu`; generation runs on a background thread on that same device, reporting
//! progress in the window title (closing the window cancels it). Each frame of the result goes
//! from the generated tensor into a texture through `FrameTexture::show`, on the GPU, and a
//! fullscreen triangle draws that texture: the frames never pass through the host.
//!
//! ```text
//! cargo run --release --example player -- [PROMPT]
//! ```
//!
//! It uses the embedded default model (random weights, so the video is abstract motion) at the
//! model's default size, steps and frame count.

use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vdit_model::dit::Precision;
use vdit_model::pipeline::texture::FrameTexture;
use vdit_model::pipeline::{
    CancelToken, GenerateRequest, ModelPaths, Pipeline, Progress, Prompt, Stage, Video,
};
use vdit_wgpu::Gpu;
use winit::application::ApplicationHandler;
use winit::dpi::LogicalSize;
use winit::event::WindowEvent;
use winit::event_loop::{ActiveEventLoop, ControlFlow, EventLoop};
use winit::window::{Window, WindowId};

/// What the generation thread tells the window.
enum Message {
    Progress(String),
    Done(Result<Video, String>),
}

/// Progress as messages to the window (and lines on stderr).
struct ToWindow {
    tx: mpsc::Sender<Message>,
    total: usize,
}

impl ToWindow {
    fn send(&self, text: String) {
        eprintln!("{text}");
        // The window may be gone already; generation then stops at the next cancel check.
        let _ = self.tx.send(Message::Progress(text));
    }
}

impl Progress for ToWindow {
    fn begin(&mut self, stage: Stage, total: usize) {
        self.total = total;
        self.send(format!("{stage:?} 0/{total}"));
    }
    fn advance(&mut self, stage: Stage, done: usize) {
        self.send(format!("{stage:?} {done}/{}", self.total));
    }
}

/// The request of the model's own defaults.
fn default_request(paths: &ModelPaths, prompt: String) -> GenerateRequest {
    let d = paths.defaults.clone().unwrap_or_default();
    let mut request = GenerateRequest::new(Prompt::Text(prompt));
    request.width = d.width.unwrap_or(request.width);
    request.height = d.height.unwrap_or(request.height);
    request.frames = d.frames.unwrap_or(request.frames);
    request.steps = d.steps.unwrap_or(request.steps);
    request.guidance = d.guidance.unwrap_or(request.guidance);
    request.flow_shift = d.flow_shift.unwrap_or(request.flow_shift);
    request
}

/// A render pipeline drawing a texture over the viewport.
struct Draw {
    pipeline: wgpu::RenderPipeline,
    sampler: wgpu::Sampler,
}

impl Draw {
    fn new(device: &wgpu::Device, format: wgpu::TextureFormat) -> Self {
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("player"),
            source: wgpu::ShaderSource::Wgsl(include_str!("player.wgsl").into()),
        });
        let fragment = if format.is_srgb() {
            "fs_srgb"
        } else {
            "fs_main"
        };
        let pipeline = device.create_render_pipeline(&wgpu::RenderPipelineDescriptor {
            label: Some("player"),
            layout: None,
            vertex: wgpu::VertexState {
                module: &module,
                entry_point: Some("vs_main"),
                compilation_options: Default::default(),
                buffers: &[],
            },
            primitive: wgpu::PrimitiveState::default(),
            depth_stencil: None,
            multisample: wgpu::MultisampleState::default(),
            fragment: Some(wgpu::FragmentState {
                module: &module,
                entry_point: Some(fragment),
                compilation_options: Default::default(),
                targets: &[Some(wgpu::ColorTargetState {
                    format,
                    blend: None,
                    write_mask: wgpu::ColorWrites::ALL,
                })],
            }),
            multiview_mask: None,
            cache: None,
        });
        let sampler = device.create_sampler(&wgpu::SamplerDescriptor {
            label: Some("player"),
            mag_filter: wgpu::FilterMode::Linear,
            min_filter: wgpu::FilterMode::Linear,
            ..Default::default()
        });
        Self { pipeline, sampler }
    }

    fn bind(&self, device: &wgpu::Device, texture: &FrameTexture) -> wgpu::BindGroup {
        device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("player frame"),
            layout: &self.pipeline.get_bind_group_layout(0),
            entries: &[
                wgpu::BindGroupEntry {
                    binding: 0,
                    resource: wgpu::BindingResource::TextureView(texture.view()),
                },
                wgpu::BindGroupEntry {
                    binding: 1,
                    resource: wgpu::BindingResource::Sampler(&self.sampler),
                },
            ],
        })
    }
}

/// A generated video being played.
struct Playing {
    video: Video,
    texture: FrameTexture,
    bind_group: wgpu::BindGroup,
    started: Instant,
    shown: Option<usize>,
}

impl Playing {
    fn frame_at(&self, now: Instant) -> usize {
        let frames = self.video.frames.shape()[1];
        let elapsed = now.duration_since(self.started).as_secs_f64();
        (elapsed * self.video.fps as f64) as usize % frames
    }

    fn next_frame_time(&self, now: Instant) -> Instant {
        let period = 1.0 / self.video.fps as f64;
        let elapsed = now.duration_since(self.started).as_secs_f64();
        self.started + Duration::from_secs_f64(((elapsed / period).floor() + 1.0) * period)
    }
}

/// The window, its surface, and the device both the app and vdit use.
struct Running {
    window: Arc<Window>,
    surface: wgpu::Surface<'static>,
    config: wgpu::SurfaceConfiguration,
    gpu: Arc<Gpu>,
    draw: Draw,
    rx: mpsc::Receiver<Message>,
    cancel: CancelToken,
    worker: Option<JoinHandle<()>>,
    playing: Option<Playing>,
}

impl Running {
    fn open(
        event_loop: &ActiveEventLoop,
        instance: &wgpu::Instance,
        prompt: String,
    ) -> Result<Self, String> {
        let paths = ModelPaths::embedded_default().map_err(|e| e.to_string())?;
        let request = default_request(&paths, prompt);
        request.validate().map_err(|e| e.to_string())?;
        // Frames of the tiny default model are small: show them four times larger.
        let scale = if request.width < 400 { 4 } else { 1 };
        let attributes = Window::default_attributes()
            .with_title("vdit player: starting")
            .with_inner_size(LogicalSize::new(
                (request.width * scale) as u32,
                (request.height * scale) as u32,
            ));
        let window = Arc::new(
            event_loop
                .create_window(attributes)
                .map_err(|e| format!("creating the window: {e}"))?,
        );
        let surface = instance
            .create_surface(window.clone())
            .map_err(|e| format!("creating the surface: {e}"))?;
        let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions {
            power_preference: wgpu::PowerPreference::HighPerformance,
            compatible_surface: Some(&surface),
            ..Default::default()
        }))
        .map_err(|e| format!("no adapter can draw to this window: {e}"))?;
        // The kernels go faster with f16 and subgroups; ask for them where they exist, and for
        // the adapter's real limits (large models bind large buffers).
        let wanted = adapter.features() & (wgpu::Features::SHADER_F16 | wgpu::Features::SUBGROUP);
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("player"),
            required_features: wanted,
            required_limits: adapter.limits(),
            ..Default::default()
        }))
        .map_err(|e| format!("opening the device: {e}"))?;
        let gpu = Arc::new(Gpu::from_wgpu(adapter, device, queue));
        eprintln!("device: {}", gpu.describe());

        let size = window.inner_size();
        let mut config = surface
            .get_default_config(&gpu.adapter, size.width.max(1), size.height.max(1))
            .ok_or("the adapter cannot present to this window")?;
        // A surface that stores bytes as they are keeps the frame's sRGB bytes exact.
        let formats = surface.get_capabilities(&gpu.adapter).formats;
        if let Some(&plain) = formats.iter().find(|f| !f.is_srgb()) {
            config.format = plain;
        }
        config.present_mode = wgpu::PresentMode::AutoVsync;
        surface.configure(&gpu.device, &config);
        let draw = Draw::new(&gpu.device, config.format);

        let (tx, rx) = mpsc::channel();
        let cancel = CancelToken::default();
        let worker = {
            let (gpu, cancel) = (gpu.clone(), cancel.clone());
            std::thread::spawn(move || {
                let pipeline = Pipeline::new(&gpu, paths, Precision::best_for(&gpu));
                let mut progress = ToWindow {
                    tx: tx.clone(),
                    total: 0,
                };
                let result = pipeline
                    .generate(&request, &mut progress, &cancel)
                    .map_err(|e| e.to_string());
                let _ = tx.send(Message::Done(result));
            })
        };
        Ok(Self {
            window,
            surface,
            config,
            gpu,
            draw,
            rx,
            cancel,
            worker: Some(worker),
            playing: None,
        })
    }

    /// Handles the generation thread's messages; an error ends the app.
    fn receive(&mut self) -> Result<(), String> {
        while let Ok(message) = self.rx.try_recv() {
            match message {
                Message::Progress(text) => self.window.set_title(&format!("vdit player: {text}")),
                Message::Done(result) => {
                    let video = result?;
                    let texture =
                        FrameTexture::for_video(&self.gpu, &video).map_err(|e| e.to_string())?;
                    let bind_group = self.draw.bind(&self.gpu.device, &texture);
                    let [_, frames, h, w] = video.frames.shape().try_into().unwrap();
                    self.window.set_title(&format!(
                        "vdit player: {frames} frames, {w}x{h}, {} fps",
                        video.fps
                    ));
                    self.playing = Some(Playing {
                        video,
                        texture,
                        bind_group,
                        started: Instant::now(),
                        shown: None,
                    });
                    if let Some(worker) = self.worker.take() {
                        let _ = worker.join();
                    }
                }
            }
        }
        Ok(())
    }

    fn resize(&mut self, width: u32, height: u32) {
        self.config.width = width.max(1);
        self.config.height = height.max(1);
        self.surface.configure(&self.gpu.device, &self.config);
    }

    /// Draws the current frame, letterboxed to keep its aspect ratio (black while generating).
    fn redraw(&mut self) -> Result<(), String> {
        let now = Instant::now();
        if let Some(p) = &mut self.playing {
            let frame = p.frame_at(now);
            if p.shown != Some(frame) {
                p.texture
                    .show(&self.gpu, &p.video, frame)
                    .map_err(|e| e.to_string())?;
                p.shown = Some(frame);
            }
        }
        let (target, suboptimal) = match self.surface.get_current_texture() {
            wgpu::CurrentSurfaceTexture::Success(t) => (t, false),
            wgpu::CurrentSurfaceTexture::Suboptimal(t) => (t, true),
            wgpu::CurrentSurfaceTexture::Outdated | wgpu::CurrentSurfaceTexture::Lost => {
                self.surface.configure(&self.gpu.device, &self.config);
                return Ok(());
            }
            // Skip this frame; the next redraw tries again.
            wgpu::CurrentSurfaceTexture::Timeout
            | wgpu::CurrentSurfaceTexture::Occluded
            | wgpu::CurrentSurfaceTexture::Validation => return Ok(()),
        };
        let view = target
            .texture
            .create_view(&wgpu::TextureViewDescriptor::default());
        let mut enc = self
            .gpu
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("player"),
            });
        {
            let mut pass = enc.begin_render_pass(&wgpu::RenderPassDescriptor {
                label: Some("player"),
                color_attachments: &[Some(wgpu::RenderPassColorAttachment {
                    view: &view,
                    depth_slice: None,
                    resolve_target: None,
                    ops: wgpu::Operations {
                        load: wgpu::LoadOp::Clear(wgpu::Color::BLACK),
                        store: wgpu::StoreOp::Store,
                    },
                })],
                depth_stencil_attachment: None,
                timestamp_writes: None,
                occlusion_query_set: None,
                multiview_mask: None,
            });
            if let Some(p) = &self.playing {
                let (sw, sh) = (self.config.width as f32, self.config.height as f32);
                let (fw, fh) = (p.texture.width() as f32, p.texture.height() as f32);
                let fit = (sw / fw).min(sh / fh);
                let (w, h) = (fw * fit, fh * fit);
                pass.set_viewport((sw - w) / 2.0, (sh - h) / 2.0, w, h, 0.0, 1.0);
                pass.set_pipeline(&self.draw.pipeline);
                pass.set_bind_group(0, &p.bind_group, &[]);
                pass.draw(0..3, 0..1);
            }
        }
        self.gpu.queue.submit([enc.finish()]);
        self.window.pre_present_notify();
        self.gpu.queue.present(target);
        if suboptimal {
            self.surface.configure(&self.gpu.device, &self.config);
        }
        Ok(())
    }

    /// Stops a generation still running and waits for its thread.
    fn stop(&mut self) {
        self.cancel.cancel();
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

struct Player {
    instance: wgpu::Instance,
    prompt: String,
    running: Option<Running>,
    error: Option<String>,
}

impl Player {
    fn fail(&mut self, event_loop: &ActiveEventLoop, error: String) {
        eprintln!("error: {error}");
        self.error = Some(error);
        event_loop.exit();
    }
}

impl ApplicationHandler for Player {
    fn resumed(&mut self, event_loop: &ActiveEventLoop) {
        if self.running.is_some() {
            return;
        }
        match Running::open(event_loop, &self.instance, self.prompt.clone()) {
            Ok(r) => self.running = Some(r),
            Err(e) => self.fail(event_loop, e),
        }
    }

    fn window_event(&mut self, event_loop: &ActiveEventLoop, _: WindowId, event: WindowEvent) {
        let Some(r) = &mut self.running else {
            return;
        };
        match event {
            WindowEvent::CloseRequested => {
                r.stop();
                event_loop.exit();
            }
            WindowEvent::Resized(size) => r.resize(size.width, size.height),
            WindowEvent::RedrawRequested => {
                if let Err(e) = r.redraw() {
                    self.fail(event_loop, e);
                }
            }
            _ => {}
        }
    }

    fn about_to_wait(&mut self, event_loop: &ActiveEventLoop) {
        let Some(r) = &mut self.running else {
            return;
        };
        if let Err(e) = r.receive() {
            return self.fail(event_loop, e);
        }
        let now = Instant::now();
        let wake = match &r.playing {
            Some(p) => {
                if p.shown != Some(p.frame_at(now)) {
                    r.window.request_redraw();
                }
                p.next_frame_time(now)
            }
            // Look for progress a few times a second.
            None => now + Duration::from_millis(100),
        };
        event_loop.set_control_flow(ControlFlow::WaitUntil(wake));
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    env_logger::init();
    let prompt = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "a paper boat drifting on a pond at dawn".to_string());
    let event_loop = EventLoop::new()?;
    // The display handle lets the GL backend draw to windows too.
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_with_display_handle_from_env(
        Box::new(event_loop.owned_display_handle()),
    ));
    let mut player = Player {
        instance,
        prompt,
        running: None,
        error: None,
    };
    event_loop.run_app(&mut player)?;
    if let Some(mut r) = player.running.take() {
        r.stop();
    }
    match player.error {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}
