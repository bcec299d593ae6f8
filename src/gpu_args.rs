//! The flags every GPU command shares: which adapter, which fast paths it may use, and how
//! much memory it may take.

use clap::Args;
use vdit_model::weights::WeightError;
use vdit_model::{ModelError, ModelPart};
use vdit_wgpu::size::parse_size;
use vdit_wgpu::{Gpu, GpuError, GpuOptions, KernelPolicy};

#[derive(Args, Debug, Clone, Default)]
pub struct GpuArgs {
    /// Graphics API: vulkan, metal, dx12 or gl (default: the best available).
    #[arg(long, global = true, env = "VDIT_BACKEND")]
    pub backend: Option<String>,
    /// Use the adapter whose name contains this text (case-insensitive).
    #[arg(long, global = true, env = "VDIT_ADAPTER")]
    pub adapter: Option<String>,
    /// Prefer the low-power (integrated) adapter.
    #[arg(long, global = true)]
    pub low_power: bool,
    /// Do not use cooperative matrices (tensor cores) even where the adapter has them.
    #[arg(long, global = true)]
    pub no_coop: bool,
    /// Do not use subgroup operations even where the adapter has them.
    #[arg(long, global = true)]
    pub no_subgroups: bool,
    /// Do not use f16 storage or arithmetic (the portable f32 paths only).
    #[arg(long = "f32", global = true)]
    pub f32_only: bool,
    /// The most GPU memory the tensors may take (e.g. 512M, 2G): beyond it a command stops
    /// with an out-of-memory error instead of crowding a shared GPU.
    #[arg(long, global = true, value_name = "SIZE", value_parser = parse_size)]
    pub max_gpu_memory: Option<u64>,
    /// Which kernel each family runs where several fit, e.g. `flash=coop-narrow,matmul=portable`
    /// (families: matmul, flash, conv; default: the fastest that fits). For comparing kernels.
    #[arg(long, global = true, value_name = "FAMILY=KERNEL,..", value_parser = parse_kernels)]
    pub kernels: Option<KernelPolicy>,
    /// Compile the kernels with wgpu's bounds checks and loop counters (slower): for hunting a
    /// kernel suspected of reading out of range.
    #[arg(long, global = true)]
    pub checked_shaders: bool,
}

fn parse_kernels(spec: &str) -> Result<KernelPolicy, String> {
    KernelPolicy::parse(spec).map_err(|e| e.to_string())
}

impl GpuArgs {
    pub fn options(&self) -> GpuOptions {
        GpuOptions {
            backend: self.backend.clone(),
            adapter: self.adapter.clone(),
            low_power: self.low_power,
            allow_f16: !self.f32_only,
            allow_subgroups: !self.no_subgroups,
            allow_cooperative_matrix: !self.no_coop,
            max_memory: self.max_gpu_memory,
            kernels: self.kernels.unwrap_or_default(),
            checked_shaders: self.checked_shaders,
        }
    }

    pub fn open(&self) -> vdit_wgpu::Result<Gpu> {
        Gpu::with_options(&self.options())
    }
}

/// A command's error, with the model part named when it is running out of GPU memory.
pub fn in_part(e: Box<dyn std::error::Error>, part: ModelPart) -> Box<dyn std::error::Error> {
    let e = match e.downcast::<ModelError>() {
        Ok(m) => return Box::new(m.in_part(part)),
        Err(e) => e,
    };
    let e = match e.downcast::<GpuError>() {
        Ok(g) => return Box::new(ModelError::Gpu(*g).in_part(part)),
        Err(e) => e,
    };
    match e.downcast::<WeightError>() {
        Ok(w) => Box::new(ModelError::Weights(*w).in_part(part)),
        Err(e) => e,
    }
}
