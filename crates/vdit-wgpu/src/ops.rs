//! Recorded operations (kernel launches with their resolved pipeline and buffers, and copies)
//! and their encoding into a command buffer: shared by the recorder, which collects them, and
//! the profiler, which encodes them with timestamps.

use std::borrow::Cow;
use std::sync::Arc;

use crate::cost::Cost;
use crate::gpu::Gpu;
use crate::pipeline::Kernel;
use crate::pool::PooledBuffer;

pub(crate) enum Op {
    Dispatch {
        kernel: Arc<Kernel>,
        params_offset: Option<u32>,
        buffers: Vec<Arc<PooledBuffer>>,
        workgroups: [u32; 3],
        label: Cow<'static, str>,
        cost: Cost,
    },
    Copy {
        src: Arc<PooledBuffer>,
        dst: Arc<PooledBuffer>,
        bytes: u64,
    },
}

/// Per-dispatch timestamp query indices (begin, end), when profiling with timestamps.
pub(crate) type TimestampSlot<'a> = (&'a wgpu::QuerySet, u32);

/// Encodes `ops`; when `timestamps` is given, each dispatch gets its own pass with begin/end
/// timestamps at consecutive query indices starting from the given one.
pub(crate) fn encode_ops(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    ops: &[Op],
    params: Option<&PooledBuffer>,
    timestamps: Option<TimestampSlot<'_>>,
) {
    let mut pass: Option<wgpu::ComputePass<'static>> = None;
    let mut query = timestamps.map(|t| t.1).unwrap_or(0);
    for op in ops {
        match op {
            Op::Dispatch {
                kernel,
                params_offset,
                buffers,
                workgroups,
                ..
            } => {
                let storage = gpu
                    .pipelines
                    .storage_bind_group(&gpu.device, kernel, buffers);
                let uniform = match (params_offset, params, kernel.params_size()) {
                    (Some(offset), Some(p), Some(size)) => Some((
                        gpu.pipelines.params_bind_group(&gpu.device, p, size),
                        *offset,
                    )),
                    _ => None,
                };
                if timestamps.is_some() {
                    drop(pass.take());
                }
                let p = pass.get_or_insert_with(|| {
                    enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                        label: None,
                        timestamp_writes: timestamps.map(|(qs, _)| {
                            wgpu::ComputePassTimestampWrites {
                                query_set: qs,
                                beginning_of_pass_write_index: Some(query),
                                end_of_pass_write_index: Some(query + 1),
                            }
                        }),
                    })
                    .forget_lifetime()
                });
                query += 2;
                p.set_pipeline(&kernel.pipeline);
                p.set_bind_group(0, &storage, &[]);
                if let Some((bg, offset)) = &uniform {
                    p.set_bind_group(1, bg, &[*offset]);
                }
                p.dispatch_workgroups(workgroups[0], workgroups[1], workgroups[2]);
            }
            Op::Copy { src, dst, bytes } => {
                drop(pass.take());
                enc.copy_buffer_to_buffer(&src.buffer, 0, &dst.buffer, 0, *bytes);
            }
        }
    }
}
