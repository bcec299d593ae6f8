//! Adapter selection and the device: what the GPU really has, asked for, and nothing assumed.

use std::sync::{Arc, Mutex};

use crate::error::{GpuError, Result};
use crate::pipeline::PipelineCache;
use crate::policy::KernelPolicy;
use crate::pool::{BufferPool, PooledBuffer};

/// How to choose an adapter. Empty fields fall back to `VDIT_BACKEND` / `VDIT_ADAPTER`, then to
/// the high-performance adapter of any backend.
#[derive(Clone, Debug)]
pub struct GpuOptions {
    /// `vulkan`, `metal`, `dx12` or `gl`.
    pub backend: Option<String>,
    /// A case-insensitive substring of the adapter name.
    pub adapter: Option<String>,
    /// Prefer the low-power adapter (integrated GPU) instead of the high-performance one.
    pub low_power: bool,
    /// Use f16 storage and arithmetic where the adapter has SHADER_F16.
    pub allow_f16: bool,
    /// Use subgroup operations where the adapter has them.
    pub allow_subgroups: bool,
    /// Use cooperative matrices (tensor cores) where the adapter has them.
    pub allow_cooperative_matrix: bool,
    /// The most bytes the buffer pool may hold (`--max-gpu-memory`); `None` for no cap.
    pub max_memory: Option<u64>,
    /// Which kernel each launcher runs where several fit (`--kernels`).
    pub kernels: KernelPolicy,
    /// Compile the kernels with wgpu's runtime checks (an index clamp on every array access
    /// and a counter on every loop), for hunting a kernel suspected of reading out of range
    /// (`--checked-shaders`). Off by default: every kernel bounds its own accesses, and the
    /// tests and `vdit selftest` run them at sizes that end mid-tile.
    pub checked_shaders: bool,
}

impl Default for GpuOptions {
    fn default() -> Self {
        Self {
            backend: None,
            adapter: None,
            low_power: false,
            allow_f16: true,
            allow_subgroups: true,
            allow_cooperative_matrix: true,
            max_memory: None,
            kernels: KernelPolicy::default(),
            checked_shaders: false,
        }
    }
}

/// A cooperative matrix shape the adapter supports (M x N x K, element types).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoopMatShape {
    pub m: u32,
    pub n: u32,
    pub k: u32,
    pub ab_type: String,
    pub cr_type: String,
}

/// What the opened device can do: the features that were both available and allowed.
#[derive(Clone, Debug, Default)]
pub struct Capabilities {
    pub shader_f16: bool,
    pub subgroups: bool,
    pub subgroup_min_size: u32,
    pub subgroup_max_size: u32,
    pub timestamps: bool,
    pub timestamps_inside_passes: bool,
    pub cooperative_matrix: Vec<CoopMatShape>,
}

impl Capabilities {
    /// The adapter offers a 16x16x16 f16 x f16 -> f32 cooperative matrix (the tensor-core path).
    pub fn coop_f16_16x16(&self) -> bool {
        self.cooperative_matrix.iter().any(|s| {
            s.m == 16 && s.n == 16 && s.k == 16 && s.ab_type == "f16" && s.cr_type == "f32"
        })
    }
}

/// The compute device: adapter, device, queue, what they can do, and the shared caches.
pub struct Gpu {
    pub adapter: wgpu::Adapter,
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub limits: wgpu::Limits,
    pub caps: Capabilities,
    /// The kernel each launcher runs where several fit; recorders start from it.
    pub policy: KernelPolicy,
    pub(crate) pipelines: PipelineCache,
    pub(crate) pool: Arc<BufferPool>,
    lost: Arc<Mutex<Option<String>>>,
    uncaptured: Arc<Mutex<Option<String>>>,
    /// Bytes of tensor writes queued since the last flush (see [`Gpu::write_tensor_bytes`]).
    staged_bytes: std::sync::atomic::AtomicU64,
}

/// Queued tensor writes above this many bytes are submitted and waited for.
const STAGING_FLUSH_BYTES: u64 = 256 << 20;

pub fn parse_backend(name: &str) -> Result<wgpu::Backends> {
    match name.to_ascii_lowercase().as_str() {
        "vulkan" | "vk" => Ok(wgpu::Backends::VULKAN),
        "metal" | "mtl" => Ok(wgpu::Backends::METAL),
        "dx12" | "d3d12" => Ok(wgpu::Backends::DX12),
        "gl" | "gles" | "opengl" => Ok(wgpu::Backends::GL),
        other => Err(GpuError::UnknownBackend(other.to_string())),
    }
}

/// Mesa's implicit Vulkan layer `VK_LAYER_MESA_device_select` asks the Wayland compositor which
/// GPU drives the display, and on a headless machine libwayland prints "error: XDG_RUNTIME_DIR is
/// invalid or not set" for every instance. Compute needs no display and picks its adapter itself,
/// so the layer is switched off (its documented `NODEVICE_SELECT`) unless the user set it.
fn quiet_display_probe() {
    // Once, before the first instance: later instances read the same environment.
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("NODEVICE_SELECT").is_none() {
            std::env::set_var("NODEVICE_SELECT", "1");
        }
    });
}

fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn instance_for(backends: wgpu::Backends) -> wgpu::Instance {
    quiet_display_probe();
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = backends;
    wgpu::Instance::new(desc)
}

/// Every adapter wgpu can see, on the given backends.
pub fn list_adapters(backend: Option<&str>) -> Result<Vec<wgpu::AdapterInfo>> {
    let backends = match backend {
        Some(b) => parse_backend(b)?,
        None => wgpu::Backends::all(),
    };
    let instance = instance_for(backends);
    let adapters = pollster::block_on(instance.enumerate_adapters(backends));
    Ok(adapters.iter().map(|a| a.get_info()).collect())
}

fn coop_shapes(adapter: &wgpu::Adapter) -> Vec<CoopMatShape> {
    adapter
        .cooperative_matrix_properties()
        .into_iter()
        .map(|p| CoopMatShape {
            m: p.m_size,
            n: p.n_size,
            k: p.k_size,
            ab_type: format!("{:?}", p.ab_type).to_ascii_lowercase(),
            cr_type: format!("{:?}", p.cr_type).to_ascii_lowercase(),
        })
        .collect()
}

fn device_type_rank(t: wgpu::DeviceType, low_power: bool) -> u32 {
    use wgpu::DeviceType::*;
    match (t, low_power) {
        (DiscreteGpu, false) | (IntegratedGpu, true) => 0,
        (IntegratedGpu, false) | (DiscreteGpu, true) => 1,
        (VirtualGpu, _) => 2,
        (Other, _) => 3,
        (Cpu, _) => 4,
    }
}

impl Gpu {
    /// Open the default device (flags and environment variables may steer the choice).
    pub fn new() -> Result<Self> {
        Self::with_options(&GpuOptions::default())
    }

    pub fn with_options(options: &GpuOptions) -> Result<Self> {
        let backend = options
            .backend
            .clone()
            .or_else(|| env_nonempty("VDIT_BACKEND"));
        let wanted_name = options
            .adapter
            .clone()
            .or_else(|| env_nonempty("VDIT_ADAPTER"));
        let backends = match &backend {
            Some(b) => parse_backend(b)?,
            None => wgpu::Backends::all(),
        };
        // Without a named backend, GL is asked only when no Vulkan, Metal or DX12 adapter exists.
        let primary = if backend.is_none() {
            wgpu::Backends::PRIMARY
        } else {
            backends
        };
        let instance = instance_for(primary);
        let mut adapters = pollster::block_on(instance.enumerate_adapters(primary));
        if adapters.is_empty() && backend.is_none() {
            let instance = instance_for(backends);
            adapters = pollster::block_on(instance.enumerate_adapters(backends));
        }
        if let Some(name) = &wanted_name {
            let needle = name.to_ascii_lowercase();
            adapters.retain(|a| a.get_info().name.to_ascii_lowercase().contains(&needle));
        }
        // Prefer the requested power class, then Vulkan/Metal/DX12 over GL.
        adapters.sort_by_key(|a| {
            let info = a.get_info();
            let backend_rank = u32::from(info.backend == wgpu::Backend::Gl);
            (
                device_type_rank(info.device_type, options.low_power),
                backend_rank,
            )
        });
        let Some(adapter) = adapters.into_iter().next() else {
            let mut filter = String::new();
            if let Some(b) = &backend {
                filter += &format!(" on backend '{b}'");
            }
            if let Some(n) = &wanted_name {
                filter += &format!(" whose name contains '{n}'");
            }
            return Err(GpuError::NoAdapter(filter));
        };
        Self::from_adapter(adapter, options)
    }

    /// Wraps a device and queue an application already has (for example the one its window
    /// renders with), so that generated frames can be drawn without leaving the GPU. The
    /// capabilities are those the device was created with.
    pub fn from_wgpu(adapter: wgpu::Adapter, device: wgpu::Device, queue: wgpu::Queue) -> Self {
        let info = adapter.get_info();
        let got = device.features();
        let cooperative_matrix = if got.contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX) {
            coop_shapes(&adapter)
        } else {
            Vec::new()
        };
        let caps = Capabilities {
            shader_f16: got.contains(wgpu::Features::SHADER_F16),
            subgroups: got.contains(wgpu::Features::SUBGROUP),
            subgroup_min_size: info.subgroup_min_size,
            subgroup_max_size: info.subgroup_max_size,
            timestamps: got.contains(wgpu::Features::TIMESTAMP_QUERY),
            timestamps_inside_passes: got.contains(wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES),
            cooperative_matrix,
        };
        let limits = device.limits();
        Self::assemble(adapter, device, queue, info, limits, caps)
    }

    /// Open a device on a chosen adapter, requesting its real limits and the allowed optional features.
    pub fn from_adapter(adapter: wgpu::Adapter, options: &GpuOptions) -> Result<Self> {
        let info = adapter.get_info();
        let available = adapter.features();
        let mut wanted = wgpu::Features::empty();
        let mut want = |f: wgpu::Features, allowed: bool| {
            if allowed && available.contains(f) {
                wanted |= f;
            }
        };
        want(wgpu::Features::SHADER_F16, options.allow_f16);
        want(wgpu::Features::SUBGROUP, options.allow_subgroups);
        want(wgpu::Features::TIMESTAMP_QUERY, true);
        want(wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES, true);
        want(wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS, true);
        want(
            wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX,
            options.allow_cooperative_matrix && options.allow_f16,
        );
        let coop = wanted.contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX);
        // SAFETY: cooperative matrices are wgpu's experimental feature; every kernel using them
        // has a portable twin tested against the same reference, and `--no-coop` turns them off.
        let experimental = if coop {
            unsafe { wgpu::ExperimentalFeatures::enabled() }
        } else {
            wgpu::ExperimentalFeatures::disabled()
        };
        let limits = adapter.limits();
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("vdit"),
            required_features: wanted,
            required_limits: limits.clone(),
            experimental_features: experimental,
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .map_err(|e| GpuError::RequestDevice {
            adapter: info.name.clone(),
            message: e.to_string(),
        })?;
        let cooperative_matrix = if coop {
            coop_shapes(&adapter)
        } else {
            Vec::new()
        };
        let got = device.features();
        let caps = Capabilities {
            shader_f16: got.contains(wgpu::Features::SHADER_F16),
            subgroups: got.contains(wgpu::Features::SUBGROUP),
            subgroup_min_size: info.subgroup_min_size,
            subgroup_max_size: info.subgroup_max_size,
            timestamps: got.contains(wgpu::Features::TIMESTAMP_QUERY),
            timestamps_inside_passes: got.contains(wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES),
            cooperative_matrix,
        };
        let mut gpu = Self::assemble(adapter, device, queue, info, limits, caps);
        gpu.policy = options.kernels;
        gpu.pipelines.checked_shaders = options.checked_shaders;
        gpu.set_memory_limit(options.max_memory);
        Ok(gpu)
    }

    fn assemble(
        adapter: wgpu::Adapter,
        device: wgpu::Device,
        queue: wgpu::Queue,
        info: wgpu::AdapterInfo,
        limits: wgpu::Limits,
        caps: Capabilities,
    ) -> Self {
        let lost = Arc::new(Mutex::new(None));
        {
            let lost = lost.clone();
            device.set_device_lost_callback(move |reason, message| {
                *lost.lock().unwrap() = Some(format!("{reason:?}: {message}"));
            });
        }
        let uncaptured = Arc::new(Mutex::new(None));
        {
            let uncaptured = uncaptured.clone();
            device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
                log::error!("wgpu: {e}");
                let mut slot = uncaptured.lock().unwrap();
                if slot.is_none() {
                    *slot = Some(e.to_string());
                }
            }));
        }
        Self {
            adapter,
            device,
            queue,
            info,
            limits,
            caps,
            policy: KernelPolicy::default(),
            pipelines: PipelineCache::default(),
            pool: Arc::new(BufferPool::default()),
            lost,
            uncaptured,
            staged_bytes: Default::default(),
        }
    }

    /// Every submission carries the queued writes: their staging copies are on their way out.
    pub(crate) fn writes_submitted(&self) {
        self.staged_bytes
            .store(0, std::sync::atomic::Ordering::Relaxed);
    }

    /// Queues a write of `bytes` into `buffer` (a multiple of 4 bytes). A queued write keeps
    /// a staging copy until a submission carries it, and on many discrete GPUs that copy sits
    /// in device memory: a model uploaded without submissions between its tensors needed
    /// twice its size there (the 14B DiT: 65 GB at load for 30 GB of tensors). So every
    /// 256 MiB of writes are submitted and waited for.
    pub(crate) fn write_tensor_bytes(&self, buffer: &wgpu::Buffer, bytes: &[u8]) {
        use std::sync::atomic::Ordering;
        self.queue.write_buffer(buffer, 0, bytes);
        let staged = self
            .staged_bytes
            .fetch_add(bytes.len() as u64, Ordering::Relaxed)
            + bytes.len() as u64;
        if staged >= STAGING_FLUSH_BYTES {
            self.staged_bytes.store(0, Ordering::Relaxed);
            let index = self.queue.submit([]);
            // A failed wait shows up as a lost device at the next check.
            let _ = self.device.poll(wgpu::PollType::Wait {
                submission_index: Some(index),
                timeout: None,
            });
        }
    }

    /// Pipelines and bind groups the caches have created since the device was opened: a
    /// repeated step adds none.
    pub fn cache_stats(&self) -> crate::pipeline::CacheStats {
        self.pipelines.stats()
    }

    /// A short description: name, backend, driver.
    pub fn describe(&self) -> String {
        format!(
            "{} ({:?}, {:?}, driver {} {})",
            self.info.name,
            self.info.backend,
            self.info.device_type,
            self.info.driver,
            self.info.driver_info
        )
    }

    /// Whether this adapter is a software rasteriser (lavapipe, WARP, SwiftShader).
    pub fn is_cpu(&self) -> bool {
        self.info.device_type == wgpu::DeviceType::Cpu
    }

    /// Fails with a clear error when a buffer of `bytes` cannot exist or cannot be bound.
    pub fn check_buffer_size(&self, what: &str, bytes: u64) -> Result<()> {
        if bytes > self.limits.max_buffer_size {
            return Err(GpuError::OverLimit {
                what: what.to_string(),
                needed: bytes,
                limit: self.limits.max_buffer_size,
                limit_name: "max_buffer_size",
            });
        }
        if bytes > self.limits.max_storage_buffer_binding_size {
            return Err(GpuError::OverLimit {
                what: what.to_string(),
                needed: bytes,
                limit: self.limits.max_storage_buffer_binding_size,
                limit_name: "max_storage_buffer_binding_size",
            });
        }
        Ok(())
    }

    /// Reports a lost device or a validation error raised since the last check.
    pub fn check_health(&self) -> Result<()> {
        if let Some(reason) = self.lost.lock().unwrap().clone() {
            return Err(GpuError::DeviceLost(reason));
        }
        if let Some(e) = self.uncaptured.lock().unwrap().take() {
            return Err(GpuError::Wgpu(e));
        }
        Ok(())
    }

    /// Blocks until all submitted work is done.
    pub fn wait(&self) -> Result<()> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| GpuError::DeviceLost(e.to_string()))?;
        self.check_health()
    }

    /// Blocks until the submission `index` is done.
    pub fn wait_for(&self, index: wgpu::SubmissionIndex) -> Result<()> {
        self.device
            .poll(wgpu::PollType::Wait {
                submission_index: Some(index),
                timeout: None,
            })
            .map_err(|e| GpuError::DeviceLost(e.to_string()))?;
        self.check_health()
    }

    /// Releases the pool's free buffers and the cached bind groups that keep them alive.
    pub fn trim_pool(&self) {
        self.pipelines.clear_bind_groups();
        self.pool.trim();
    }

    /// Bytes currently held by the buffer pool (in use and free).
    pub fn pool_bytes(&self) -> (u64, u64) {
        self.pool.bytes()
    }
}

/// The buffer pool, as the device offers it.
impl Gpu {
    /// The most bytes the buffer pool held at once (tensors in use and pooled free buffers):
    /// the GPU memory of the work since the device was opened or the last
    /// [`reset_pool_peak`](Self::reset_pool_peak).
    pub fn pool_peak_bytes(&self) -> u64 {
        self.pool.peak_bytes()
    }

    /// Starts a new high-water mark of the pool from what it holds now.
    pub fn reset_pool_peak(&self) {
        self.pool.reset_peak();
    }

    /// Caps the bytes the buffer pool may hold (`None`: as much as the device gives).
    pub fn set_memory_limit(&self, limit: Option<u64>) {
        self.pool.set_limit(limit);
    }

    pub fn memory_limit(&self) -> Option<u64> {
        self.pool.limit()
    }

    /// A buffer from the pool. At the memory limit, the free buffers (of other sizes) are
    /// released before the request is refused.
    pub(crate) fn take_buffer(
        &self,
        bytes: u64,
        usage: wgpu::BufferUsages,
        what: &str,
    ) -> Result<Arc<PooledBuffer>> {
        match self.pool.take(&self.device, bytes, usage, what) {
            Err(GpuError::OutOfMemory { limit: Some(_), .. }) if self.pool.bytes().1 > 0 => {
                self.trim_pool();
                self.pool.take(&self.device, bytes, usage, what)
            }
            taken => taken,
        }
    }
}
