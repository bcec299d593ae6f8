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
        /// Where in `src` the copied bytes start (a multiple of 4).
        src_offset: u64,
        dst: Arc<PooledBuffer>,
        bytes: u64,
    },
    /// Host bytes written into `dst` between the ops before and the ops after. A queue write
    /// lands at the start of the next submission, so submitters end a command buffer here
    /// (see [`segments`]); `encode_ops` never sees one.
    Upload {
        dst: Arc<PooledBuffer>,
        bytes: Arc<[u8]>,
    },
}

/// A run of ops that can share a command buffer, or a run of uploads between two of them.
pub(crate) enum Segment<'a> {
    Gpu(&'a [Op]),
    Uploads(&'a [Op]),
}

/// Splits `ops` at its uploads, in order.
pub(crate) fn segments(ops: &[Op]) -> Vec<Segment<'_>> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < ops.len() {
        let upload = matches!(ops[start], Op::Upload { .. });
        let len = ops[start..]
            .iter()
            .take_while(|op| matches!(op, Op::Upload { .. }) == upload)
            .count();
        let run = &ops[start..start + len];
        out.push(if upload {
            Segment::Uploads(run)
        } else {
            Segment::Gpu(run)
        });
        start += len;
    }
    out
}

/// Queues the writes of a run of uploads (they reach the GPU with the next submission).
pub(crate) fn write_uploads(gpu: &Gpu, uploads: &[Op]) {
    for op in uploads {
        if let Op::Upload { dst, bytes } = op {
            gpu.queue.write_buffer(&dst.buffer, 0, bytes);
        }
    }
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
            Op::Copy {
                src,
                src_offset,
                dst,
                bytes,
            } => {
                drop(pass.take());
                enc.copy_buffer_to_buffer(&src.buffer, *src_offset, &dst.buffer, 0, *bytes);
            }
            Op::Upload { .. } => {
                debug_assert!(
                    false,
                    "uploads are written between submissions, not encoded"
                )
            }
        }
    }
}
