//! The flags every GPU command shares: which adapter, and which fast paths it may use.

use clap::Args;
use vdit_wgpu::{Gpu, GpuOptions};

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
        }
    }

    pub fn open(&self) -> vdit_wgpu::Result<Gpu> {
        Gpu::with_options(&self.options())
    }
}
