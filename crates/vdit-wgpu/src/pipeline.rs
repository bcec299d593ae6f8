//! The pipeline cache (keyed by shader, entry point, defines and specialisation constants) and
//! the bind-group cache (keyed by pipeline and buffers), so a repeated step creates nothing.

use std::collections::HashMap;
use std::num::NonZeroU64;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::{GpuError, Result};
use crate::shader::{self, BindingKind, Defines};

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PipelineKey {
    pub shader: &'static str,
    pub entry: &'static str,
    pub defines: Defines,
    /// Pipeline-overridable constants, by name, as f64 bit patterns.
    pub constants: Vec<(String, u64)>,
}

/// A compiled compute pipeline and the binding layout reflected from its WGSL.
pub struct Kernel {
    pub(crate) id: u64,
    pub(crate) key: PipelineKey,
    pub(crate) pipeline: wgpu::ComputePipeline,
    pub(crate) layout: wgpu::BindGroupLayout,
    pub(crate) bindings: Vec<(u32, BindingKind)>,
}

impl Kernel {
    pub fn key(&self) -> &PipelineKey {
        &self.key
    }
    /// The parameter block size in bytes, if the kernel takes one.
    pub fn params_size(&self) -> Option<u64> {
        self.bindings.iter().find_map(|(_, k)| match k {
            BindingKind::Params { size } => Some(*size),
            _ => None,
        })
    }
    pub fn storage_count(&self) -> usize {
        self.bindings
            .iter()
            .filter(|(_, k)| matches!(k, BindingKind::Storage { .. }))
            .count()
    }
}

static NEXT_KERNEL_ID: AtomicU64 = AtomicU64::new(1);

/// Bind groups: (kernel, params buffer, storage buffers) -> bind group.
type BindKey = (u64, u64, Vec<u64>);

#[derive(Default)]
pub struct PipelineCache {
    kernels: Mutex<HashMap<PipelineKey, Arc<Kernel>>>,
    bind_groups: Mutex<HashMap<BindKey, wgpu::BindGroup>>,
}

/// Past this many cached bind groups the cache starts over (shapes changed, old buffers gone).
const MAX_BIND_GROUPS: usize = 8192;

impl PipelineCache {
    pub(crate) fn kernel(&self, device: &wgpu::Device, key: &PipelineKey) -> Result<Arc<Kernel>> {
        if let Some(k) = self.kernels.lock().unwrap().get(key) {
            return Ok(k.clone());
        }
        let file = shader::find_shader(key.shader).ok_or_else(|| GpuError::Shader {
            shader: key.shader.to_string(),
            message: "no such shader in shaders/".into(),
        })?;
        let wgsl = shader::preprocess(key.shader, file.source, &key.defines)?;
        let (module, _) = shader::parse_and_validate(key.shader, &wgsl)?;
        let bindings = shader::reflect_bindings(key.shader, &module)?;
        let entries: Vec<wgpu::BindGroupLayoutEntry> = bindings
            .iter()
            .map(|(binding, kind)| wgpu::BindGroupLayoutEntry {
                binding: *binding,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: match kind {
                    BindingKind::Params { size } => wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Uniform,
                        has_dynamic_offset: true,
                        min_binding_size: NonZeroU64::new(*size),
                    },
                    BindingKind::Storage { read_only } => wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Storage {
                            read_only: *read_only,
                        },
                        has_dynamic_offset: false,
                        min_binding_size: None,
                    },
                },
                count: None,
            })
            .collect();
        let label = format!("{}::{}", key.shader, key.entry);
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some(&label),
            entries: &entries,
        });
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some(&label),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(&label),
            source: wgpu::ShaderSource::Naga(std::borrow::Cow::Owned(module)),
        });
        let constants: Vec<(&str, f64)> = key
            .constants
            .iter()
            .map(|(n, bits)| (n.as_str(), f64::from_bits(*bits)))
            .collect();
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(&label),
            layout: Some(&pipeline_layout),
            module: &module,
            entry_point: Some(key.entry),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants: &constants,
                zero_initialize_workgroup_memory: false,
            },
            cache: None,
        });
        let kernel = Arc::new(Kernel {
            id: NEXT_KERNEL_ID.fetch_add(1, Ordering::Relaxed),
            key: key.clone(),
            pipeline,
            layout,
            bindings,
        });
        self.kernels
            .lock()
            .unwrap()
            .insert(key.clone(), kernel.clone());
        Ok(kernel)
    }

    /// The bind group of `kernel` over these buffers; created once, then reused.
    pub(crate) fn bind_group(
        &self,
        device: &wgpu::Device,
        kernel: &Kernel,
        params: Option<(u64, &wgpu::Buffer)>,
        storage: &[(u64, &wgpu::Buffer)],
    ) -> wgpu::BindGroup {
        let key: BindKey = (
            kernel.id,
            params.map(|p| p.0).unwrap_or(0),
            storage.iter().map(|s| s.0).collect(),
        );
        let mut cache = self.bind_groups.lock().unwrap();
        if let Some(bg) = cache.get(&key) {
            return bg.clone();
        }
        if cache.len() >= MAX_BIND_GROUPS {
            cache.clear();
        }
        let mut next_storage = storage.iter();
        let entries: Vec<wgpu::BindGroupEntry> = kernel
            .bindings
            .iter()
            .map(|(binding, kind)| wgpu::BindGroupEntry {
                binding: *binding,
                resource: match kind {
                    BindingKind::Params { size } => {
                        wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                            buffer: params.expect("checked by the recorder").1,
                            offset: 0,
                            size: NonZeroU64::new(*size),
                        })
                    }
                    BindingKind::Storage { .. } => next_storage
                        .next()
                        .expect("checked by the recorder")
                        .1
                        .as_entire_binding(),
                },
            })
            .collect();
        let bg = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(kernel.key.shader),
            layout: &kernel.layout,
            entries: &entries,
        });
        cache.insert(key, bg.clone());
        bg
    }

    /// Forgets cached bind groups (they keep their buffers alive).
    pub fn clear_bind_groups(&self) {
        self.bind_groups.lock().unwrap().clear();
    }

    pub fn kernel_count(&self) -> usize {
        self.kernels.lock().unwrap().len()
    }
}
