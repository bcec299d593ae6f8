//! Recording kernel launches: a list of dispatches and copies, turned into one command buffer
//! (one compute pass) at `submit`. Parameter blocks of all dispatches share one uniform buffer
//! bound with dynamic offsets, so a step creates neither buffers nor bind groups once warm.

use std::borrow::Cow;

use crate::error::{GpuError, Result};
use crate::gpu::Gpu;
use crate::ops::{encode_ops, segments, write_uploads, Op, Segment};
use crate::param_block::ParamBytes;
use crate::pipeline::PipelineKey;
use crate::policy::KernelPolicy;
use crate::profiler::{Cost, Profiler};
use crate::shader::{Defines, ShaderFile};
use crate::tensor::{HostTensor, Tensor};

/// One kernel launch, as a launcher describes it.
pub struct Dispatch<'a> {
    pub shader: &'static ShaderFile,
    pub entry: &'static str,
    pub defines: Defines,
    /// Pipeline-overridable constants (`override` in WGSL).
    pub constants: Vec<(String, f64)>,
    /// The kernel's parameter block (its only uniform binding), or `ParamBytes::none()`.
    pub params: ParamBytes<'a>,
    /// Storage bindings, in binding order.
    pub tensors: &'a [&'a Tensor],
    pub workgroups: [u32; 3],
    /// The name the profiler reports (kernel family and variant).
    pub label: Cow<'static, str>,
    pub cost: Cost,
}

/// Collects launches; nothing reaches the GPU before `submit`.
pub struct Recorder<'g> {
    gpu: &'g Gpu,
    policy: KernelPolicy,
    ops: Vec<Op>,
    params: Vec<u8>,
}

impl<'g> Recorder<'g> {
    pub fn new(gpu: &'g Gpu) -> Self {
        Self {
            gpu,
            policy: gpu.policy,
            ops: Vec::new(),
            params: Vec::new(),
        }
    }

    pub fn gpu(&self) -> &'g Gpu {
        self.gpu
    }

    /// The kernel policy this recorder's launchers follow (the device's unless set).
    pub fn policy(&self) -> KernelPolicy {
        self.policy
    }

    /// Makes this recorder's launchers follow `policy` (tests and `vdit selftest` reach every
    /// variant this way).
    pub fn set_policy(&mut self, policy: KernelPolicy) {
        self.policy = policy;
    }

    /// Number of recorded operations.
    pub fn len(&self) -> usize {
        self.ops.len()
    }
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Records one kernel launch, checking its bindings and grid against the adapter's limits.
    pub fn dispatch(&mut self, d: Dispatch<'_>) -> Result<()> {
        let key = PipelineKey {
            shader: d.shader.name,
            entry: d.entry,
            defines: d.defines,
            constants: d
                .constants
                .iter()
                .map(|(n, v)| (n.clone(), v.to_bits()))
                .collect(),
        };
        let kernel =
            self.gpu
                .pipelines
                .kernel(&self.gpu.device, d.shader, &key, d.params.members)?;
        let max = self.gpu.limits.max_compute_workgroups_per_dimension;
        if let Some(&n) = d.workgroups.iter().find(|&&n| n > max) {
            return Err(GpuError::OverLimit {
                what: format!("kernel {}", d.label),
                needed: n as u64,
                limit: max as u64,
                limit_name: "max_compute_workgroups_per_dimension",
            });
        }
        if kernel.storage_count() != d.tensors.len() {
            return Err(GpuError::Shader {
                shader: d.shader.name.into(),
                message: format!(
                    "{} storage bindings, {} tensors given",
                    kernel.storage_count(),
                    d.tensors.len()
                ),
            });
        }
        let params_offset = match kernel.params_size() {
            Some(size) => {
                if (d.params.bytes.len() as u64) != size {
                    return Err(GpuError::Shader {
                        shader: d.shader.name.into(),
                        message: format!(
                            "parameter block is {size} bytes, {} given",
                            d.params.bytes.len()
                        ),
                    });
                }
                let align = self.gpu.limits.min_uniform_buffer_offset_alignment as usize;
                let offset = self.params.len().div_ceil(align) * align;
                self.params.resize(offset, 0);
                self.params.extend_from_slice(d.params.bytes);
                Some(offset as u32)
            }
            None => None,
        };
        if d.workgroups.contains(&0) {
            return Ok(()); // nothing to do (an empty tensor)
        }
        self.ops.push(Op::Dispatch {
            kernel,
            params_offset,
            buffers: d.tensors.iter().map(|t| t.pooled().clone()).collect(),
            workgroups: d.workgroups,
            label: d.label,
            cost: d.cost,
        });
        Ok(())
    }

    /// Records a copy of `src`'s bytes into `dst` (same byte size).
    pub fn copy(&mut self, src: &Tensor, dst: &Tensor) -> Result<()> {
        if src.bytes() != dst.bytes() {
            return Err(crate::error::shape_err(
                "copy",
                format!("{src:?} and {dst:?} differ in size"),
            ));
        }
        self.ops.push(Op::Copy {
            src: src.pooled().clone(),
            src_offset: 0,
            dst: dst.pooled().clone(),
            bytes: src.bytes().div_ceil(4) * 4,
        });
        Ok(())
    }

    /// Records a copy of `dst.shape()[0]` frames of `src` (frames along the first dimension,
    /// of `dst`'s frame shape and type), starting at frame `first`, into `dst`. Returns
    /// `Ok(false)`, recording nothing, when the frames' bytes are not 4-byte aligned (buffer
    /// copies need that): the caller then copies with a kernel.
    pub fn copy_frames(&mut self, src: &Tensor, first: usize, dst: &Tensor) -> Result<bool> {
        let (Some((&count, frame)), Some((&frames, src_frame))) =
            (dst.shape().split_first(), src.shape().split_first())
        else {
            return Err(crate::error::shape_err(
                "copy_frames",
                format!("{src:?} and {dst:?} must be frames"),
            ));
        };
        if frame != src_frame || src.dtype() != dst.dtype() || first + count > frames {
            return Err(crate::error::shape_err(
                "copy_frames",
                format!(
                    "frames {first}..{} of {src:?} cannot fill {dst:?}",
                    first + count
                ),
            ));
        }
        let frame_bytes = (frame.iter().product::<usize>() * src.dtype().size()) as u64;
        if frame_bytes % 4 != 0 {
            return Ok(false);
        }
        self.ops.push(Op::Copy {
            src: src.pooled().clone(),
            src_offset: first as u64 * frame_bytes,
            dst: dst.pooled().clone(),
            bytes: count as u64 * frame_bytes,
        });
        Ok(true)
    }

    /// Records a write of host bytes into `dst`: the ops recorded before it see the old
    /// contents, those recorded after see `src`. The recording splits there into separate
    /// submissions (see [`Recorder::submit`]).
    pub fn upload(&mut self, src: &HostTensor, dst: &Tensor) -> Result<()> {
        if src.shape() != dst.shape() || src.dtype() != dst.dtype() {
            return Err(crate::error::shape_err(
                "upload",
                format!("host tensor {src:?} cannot fill {dst:?}"),
            ));
        }
        self.ops.push(Op::Upload {
            dst: dst.pooled().clone(),
            bytes: src.padded_bytes().clone(),
        });
        Ok(())
    }

    /// Sends everything to the GPU (one command buffer, or one per launch when a profiler
    /// without timestamps needs host timings). Does not wait, except where the recording
    /// holds uploads: it is submitted in parts split at them, and before writing each run of
    /// uploads the host waits for all but the latest part, so that at most about two parts'
    /// uploads sit in staging memory while the GPU works on the previous part.
    pub fn submit(self, profiler: Option<&mut Profiler>) -> Result<()> {
        let gpu = self.gpu;
        let params = if self.params.is_empty() {
            None
        } else {
            let buf = gpu.take_buffer(
                (self.params.len() as u64).next_power_of_two().max(256),
                wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                "the kernels' parameter blocks",
            )?;
            gpu.queue.write_buffer(&buf.buffer, 0, &self.params);
            Some(buf)
        };
        match profiler {
            Some(p) => p.run(gpu, &self.ops, params.as_deref())?,
            None => {
                let mut older: Option<wgpu::SubmissionIndex> = None;
                let mut latest: Option<wgpu::SubmissionIndex> = None;
                let mut pending_writes = false;
                for segment in segments(&self.ops) {
                    match segment {
                        Segment::Gpu(ops) => {
                            let mut enc = gpu.device.create_command_encoder(&Default::default());
                            encode_ops(gpu, &mut enc, ops, params.as_deref(), None);
                            older = latest.replace(gpu.queue.submit([enc.finish()]));
                            pending_writes = false;
                        }
                        Segment::Uploads(ops) => {
                            if let Some(index) = older.take() {
                                gpu.wait_for(index)?;
                            }
                            write_uploads(gpu, ops);
                            pending_writes = true;
                        }
                    }
                }
                if pending_writes {
                    // Queued writes reach the GPU with a submission.
                    gpu.queue.submit([]);
                }
            }
        }
        gpu.writes_submitted();
        gpu.check_health()
    }

    /// Submits and waits for completion.
    pub fn run(self) -> Result<()> {
        let gpu = self.gpu;
        self.submit(None)?;
        gpu.wait()
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::test_gpu;
    use crate::{DType, Recorder, Tensor};

    #[test]
    fn copy_frames_copies_the_named_frames_or_declines_unaligned_ones() {
        let gpu = test_gpu();
        let values: Vec<f32> = (0..4 * 3 * 2).map(|v| v as f32).collect();
        let src = Tensor::from_f32(gpu, &[4, 3, 2], &values, DType::F32).unwrap();
        let dst = Tensor::empty(gpu, &[2, 3, 2], DType::F32).unwrap();
        let mut rec = Recorder::new(gpu);
        assert!(rec.copy_frames(&src, 1, &dst).unwrap());
        rec.run().unwrap();
        assert_eq!(dst.to_vec_f32(gpu).unwrap(), values[6..18].to_vec());
        // Past the end, or frames of another shape: errors.
        let mut rec = Recorder::new(gpu);
        assert!(rec.copy_frames(&src, 3, &dst).is_err());
        let other = Tensor::empty(gpu, &[1, 2, 3], DType::F32).unwrap();
        assert!(rec.copy_frames(&src, 0, &other).is_err());
        // f16 frames of 3 values are 6 bytes: buffer copies cannot start between them.
        if gpu.caps.shader_f16 {
            let half = Tensor::from_f32(gpu, &[4, 3], &values[..12], DType::F16).unwrap();
            let one = Tensor::empty(gpu, &[1, 3], DType::F16).unwrap();
            assert!(!rec.copy_frames(&half, 1, &one).unwrap());
            assert!(rec.is_empty());
        }
    }
}
