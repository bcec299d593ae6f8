//! The pipeline cache (keyed by shader, entry point, defines and specialisation constants) and
//! the bind-group caches, so that a repeated step creates nothing. Storage bind groups are keyed
//! by the kernel and its buffers' identities (a pooled buffer keeps its identity from loan to
//! loan); the parameter block has its own group, one bind group per uniform buffer.

use std::collections::HashMap;
use std::num::NonZeroU64;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::{GpuError, Result};
use crate::param_block::check_members;
use crate::pool::PooledBuffer;
use crate::shader::{self, BindingKind, Defines, ShaderFile, PARAMS_GROUP};

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
    /// Group 0: the storage buffers.
    pub(crate) storage_layout: wgpu::BindGroupLayout,
    /// Storage bindings in binding order (read-only or not).
    pub(crate) storage: Vec<(u32, bool)>,
    /// The parameter block's size in bytes, if the kernel has one (group 1).
    pub(crate) params_size: Option<u64>,
}

impl Kernel {
    pub fn key(&self) -> &PipelineKey {
        &self.key
    }
    /// The parameter block size in bytes, if the kernel takes one.
    pub fn params_size(&self) -> Option<u64> {
        self.params_size
    }
    pub fn storage_count(&self) -> usize {
        self.storage.len()
    }
}

static NEXT_KERNEL_ID: AtomicU64 = AtomicU64::new(1);

/// Storage bind groups: (kernel, storage buffer ids) -> bind group and the tick of its last use.
type StorageKey = (u64, Vec<u64>);

/// What the caches have created since the device was opened: a steady-state loop adds nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub pipelines: u64,
    pub bind_groups: u64,
}

#[derive(Default)]
pub struct PipelineCache {
    kernels: Mutex<HashMap<PipelineKey, Arc<Kernel>>>,
    storage_groups: Mutex<HashMap<StorageKey, (wgpu::BindGroup, u64)>>,
    /// Parameter-block layouts by block size, shared by every kernel with that size.
    params_layouts: Mutex<HashMap<u64, wgpu::BindGroupLayout>>,
    params_groups: Mutex<HashMap<(u64, u64), wgpu::BindGroup>>,
    tick: AtomicU64,
    pipelines_created: AtomicU64,
    bind_groups_created: AtomicU64,
    /// Build kernels with wgpu's runtime checks (see `GpuOptions::checked_shaders`).
    pub(crate) checked_shaders: bool,
}

/// Past this many storage bind groups, the least recently used half is dropped (shapes changed,
/// old buffers no longer bound).
const MAX_BIND_GROUPS: usize = 8192;

impl PipelineCache {
    fn params_layout(&self, device: &wgpu::Device, size: u64) -> wgpu::BindGroupLayout {
        let mut layouts = self.params_layouts.lock().unwrap();
        layouts
            .entry(size)
            .or_insert_with(|| {
                device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                    label: Some("parameter block"),
                    entries: &[wgpu::BindGroupLayoutEntry {
                        binding: 0,
                        visibility: wgpu::ShaderStages::COMPUTE,
                        ty: wgpu::BindingType::Buffer {
                            ty: wgpu::BufferBindingType::Uniform,
                            has_dynamic_offset: true,
                            min_binding_size: NonZeroU64::new(size),
                        },
                        count: None,
                    }],
                })
            })
            .clone()
    }

    /// The kernel of `key` (built from `file` on first use). `params` is the layout of the
    /// launcher's parameter block, checked against the WGSL's when the kernel is built.
    pub(crate) fn kernel(
        &self,
        device: &wgpu::Device,
        file: &ShaderFile,
        key: &PipelineKey,
        params: &[(&str, usize)],
    ) -> Result<Arc<Kernel>> {
        if let Some(k) = self.kernels.lock().unwrap().get(key) {
            return Ok(k.clone());
        }
        let shader_err = |message: String| GpuError::Shader {
            shader: key.shader.to_string(),
            message,
        };
        let wgsl = shader::preprocess(key.shader, file.source, &key.defines)?;
        let (module, _) = shader::parse_and_validate(key.shader, &wgsl)?;
        let bindings = shader::reflect_bindings(key.shader, &module)?;
        let mut storage = Vec::new();
        let mut params_size = None;
        for (_, binding, kind) in &bindings {
            match kind {
                BindingKind::Storage { read_only } => storage.push((*binding, *read_only)),
                BindingKind::Params { size, members } => {
                    check_members(params, members)
                        .map_err(|e| shader_err(format!("parameter block: {e}")))?;
                    params_size = Some(*size);
                }
            }
        }
        let entries: Vec<wgpu::BindGroupLayoutEntry> = storage
            .iter()
            .map(|(binding, read_only)| wgpu::BindGroupLayoutEntry {
                binding: *binding,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Storage {
                        read_only: *read_only,
                    },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            })
            .collect();
        let label = format!("{}::{}", key.shader, key.entry);
        let storage_layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some(&label),
            entries: &entries,
        });
        let params_layout = params_size.map(|size| self.params_layout(device, size));
        let mut groups = vec![Some(&storage_layout)];
        if let Some(l) = &params_layout {
            debug_assert_eq!(PARAMS_GROUP, 1);
            groups.push(Some(l));
        }
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some(&label),
            bind_group_layouts: &groups,
            immediate_size: 0,
        });
        let descriptor = wgpu::ShaderModuleDescriptor {
            label: Some(&label),
            source: wgpu::ShaderSource::Naga(std::borrow::Cow::Owned(module)),
        };
        let module = if self.checked_shaders {
            device.create_shader_module(descriptor)
        } else {
            // SAFETY: every kernel in shaders/ guards its buffer and workgroup-array indices
            // with its own bounds logic (tested at sizes that end mid-tile, and on real GPUs by
            // `vdit selftest`), and every loop runs to a bound taken from its parameter block.
            // The checks wgpu would add (a clamp per array index, a counter per loop) cost the
            // inner loops of the matmul and attention kernels measurable time.
            unsafe {
                device.create_shader_module_trusted(
                    descriptor,
                    wgpu::ShaderRuntimeChecks::unchecked(),
                )
            }
        };
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
            storage_layout,
            storage,
            params_size,
        });
        self.pipelines_created.fetch_add(1, Ordering::Relaxed);
        self.kernels
            .lock()
            .unwrap()
            .insert(key.clone(), kernel.clone());
        Ok(kernel)
    }

    /// The storage bind group of `kernel` over these buffers; created once, then reused.
    pub(crate) fn storage_bind_group(
        &self,
        device: &wgpu::Device,
        kernel: &Kernel,
        buffers: &[Arc<PooledBuffer>],
    ) -> wgpu::BindGroup {
        let key: StorageKey = (kernel.id, buffers.iter().map(|b| b.id).collect());
        let tick = self.tick.fetch_add(1, Ordering::Relaxed);
        let mut cache = self.storage_groups.lock().unwrap();
        if let Some((bg, used)) = cache.get_mut(&key) {
            *used = tick;
            return bg.clone();
        }
        if cache.len() >= MAX_BIND_GROUPS {
            let mut ticks: Vec<u64> = cache.values().map(|(_, t)| *t).collect();
            ticks.sort_unstable();
            let median = ticks[ticks.len() / 2];
            cache.retain(|_, (_, t)| *t >= median);
        }
        let entries: Vec<wgpu::BindGroupEntry> = kernel
            .storage
            .iter()
            .zip(buffers)
            .map(|((binding, _), b)| wgpu::BindGroupEntry {
                binding: *binding,
                resource: b.buffer.as_entire_binding(),
            })
            .collect();
        let bg = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(kernel.key.shader),
            layout: &kernel.storage_layout,
            entries: &entries,
        });
        self.bind_groups_created.fetch_add(1, Ordering::Relaxed);
        cache.insert(key, (bg.clone(), tick));
        bg
    }

    /// The bind group of a uniform buffer holding parameter blocks of `size` bytes.
    pub(crate) fn params_bind_group(
        &self,
        device: &wgpu::Device,
        params: &PooledBuffer,
        size: u64,
    ) -> wgpu::BindGroup {
        let mut cache = self.params_groups.lock().unwrap();
        if let Some(bg) = cache.get(&(params.id, size)) {
            return bg.clone();
        }
        let layout = self.params_layout(device, size);
        let bg = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("parameter blocks"),
            layout: &layout,
            entries: &[wgpu::BindGroupEntry {
                binding: 0,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: &params.buffer,
                    offset: 0,
                    size: NonZeroU64::new(size),
                }),
            }],
        });
        self.bind_groups_created.fetch_add(1, Ordering::Relaxed);
        cache.insert((params.id, size), bg.clone());
        bg
    }

    /// Forgets cached bind groups (they keep their buffers alive): when the pool releases its
    /// free buffers.
    pub fn clear_bind_groups(&self) {
        self.storage_groups.lock().unwrap().clear();
        self.params_groups.lock().unwrap().clear();
    }

    pub fn kernel_count(&self) -> usize {
        self.kernels.lock().unwrap().len()
    }

    /// Pipelines and bind groups created so far.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            pipelines: self.pipelines_created.load(Ordering::Relaxed),
            bind_groups: self.bind_groups_created.load(Ordering::Relaxed),
        }
    }
}
