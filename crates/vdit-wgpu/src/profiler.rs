//! Per-kernel GPU timings from timestamp queries (one begin/end pair around every dispatch),
//! aggregated into a table (time, count, share, GFLOP/s, GB/s) and a Chrome trace. Where the
//! adapter has no timestamps, every dispatch is submitted alone and timed on the host instead.

use std::collections::BTreeMap;
use std::time::Instant;

use serde::Serialize;

pub use crate::cost::Cost;
use crate::error::{GpuError, Result};
use crate::gpu::Gpu;
use crate::ops::{encode_ops, segments, write_uploads, Op, Segment};
use crate::pool::PooledBuffer;

/// One timed launch.
#[derive(Clone, Debug, Serialize)]
pub struct Sample {
    pub label: String,
    /// Start, in nanoseconds from the first sample of the profiler.
    pub start_ns: f64,
    pub duration_ns: f64,
    pub flops: f64,
    pub bytes: f64,
}

/// Totals of one kernel label.
#[derive(Clone, Debug, Serialize)]
pub struct KernelStats {
    pub label: String,
    pub count: usize,
    pub total_ms: f64,
    pub mean_ms: f64,
    pub share: f64,
    pub gflops: f64,
    pub gbps: f64,
}

/// Where the durations come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Clock {
    GpuTimestamps,
    HostWallClock,
}

const QUERIES_PER_BATCH: u32 = 4096;

pub struct Profiler {
    clock: Clock,
    queries: Option<wgpu::QuerySet>,
    resolve: Option<wgpu::Buffer>,
    readback: Option<wgpu::Buffer>,
    period_ns: f64,
    samples: Vec<Sample>,
    /// GPU time of the first sample, for the trace origin.
    origin_ticks: Option<u64>,
    host_origin: Instant,
}

impl Profiler {
    /// A profiler on GPU timestamps when the device has them, else on the host clock.
    pub fn new(gpu: &Gpu) -> Self {
        Self::with_clock(gpu, !gpu.caps.timestamps)
    }

    /// `force_wall_clock` measures on the host even when timestamps exist.
    pub fn with_clock(gpu: &Gpu, force_wall_clock: bool) -> Self {
        let clock = if gpu.caps.timestamps && !force_wall_clock {
            Clock::GpuTimestamps
        } else {
            Clock::HostWallClock
        };
        let (queries, resolve, readback) = if clock == Clock::GpuTimestamps {
            let bytes = QUERIES_PER_BATCH as u64 * 8;
            (
                Some(gpu.device.create_query_set(&wgpu::QuerySetDescriptor {
                    label: Some("profiler"),
                    ty: wgpu::QueryType::Timestamp,
                    count: QUERIES_PER_BATCH,
                })),
                Some(gpu.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("profiler resolve"),
                    size: bytes,
                    usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                    mapped_at_creation: false,
                })),
                Some(gpu.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("profiler readback"),
                    size: bytes,
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                })),
            )
        } else {
            (None, None, None)
        };
        Self {
            clock,
            queries,
            resolve,
            readback,
            period_ns: gpu.queue.get_timestamp_period() as f64,
            samples: Vec::new(),
            origin_ticks: None,
            host_origin: Instant::now(),
        }
    }

    pub fn clock(&self) -> Clock {
        self.clock
    }

    pub fn samples(&self) -> &[Sample] {
        &self.samples
    }

    pub fn clear(&mut self) {
        self.samples.clear();
        self.origin_ticks = None;
    }

    /// Runs the recorded ops to completion, timing each dispatch.
    pub(crate) fn run(
        &mut self,
        gpu: &Gpu,
        ops: &[Op],
        params: Option<&PooledBuffer>,
    ) -> Result<()> {
        // Each part waits for its work, so uploads are written as they come.
        for segment in segments(ops) {
            match segment {
                Segment::Gpu(part) => self.run_part(gpu, part, params)?,
                Segment::Uploads(part) => write_uploads(gpu, part),
            }
        }
        if matches!(ops.last(), Some(Op::Upload { .. })) {
            gpu.queue.submit([]);
        }
        Ok(())
    }

    /// [`Profiler::run`] for ops holding no upload.
    fn run_part(&mut self, gpu: &Gpu, ops: &[Op], params: Option<&PooledBuffer>) -> Result<()> {
        match self.clock {
            Clock::GpuTimestamps => {
                // Batches of dispatches that fit the query set.
                let per_batch = (QUERIES_PER_BATCH / 2) as usize;
                let mut start = 0;
                while start < ops.len() {
                    let mut end = start;
                    let mut n = 0;
                    while end < ops.len() && n < per_batch {
                        if matches!(ops[end], Op::Dispatch { .. }) {
                            n += 1;
                        }
                        end += 1;
                    }
                    self.run_timestamped(gpu, &ops[start..end], params)?;
                    start = end;
                }
                Ok(())
            }
            Clock::HostWallClock => {
                gpu.wait()?;
                for op in ops {
                    let mut enc = gpu.device.create_command_encoder(&Default::default());
                    encode_ops(gpu, &mut enc, std::slice::from_ref(op), params, None);
                    let t0 = Instant::now();
                    gpu.queue.submit([enc.finish()]);
                    gpu.wait()?;
                    let dt = t0.elapsed().as_secs_f64() * 1e9;
                    if let Op::Dispatch { label, cost, .. } = op {
                        self.samples.push(Sample {
                            label: label.to_string(),
                            start_ns: (t0 - self.host_origin).as_secs_f64() * 1e9,
                            duration_ns: dt,
                            flops: cost.flops,
                            bytes: cost.bytes,
                        });
                    }
                }
                Ok(())
            }
        }
    }

    fn run_timestamped(
        &mut self,
        gpu: &Gpu,
        ops: &[Op],
        params: Option<&PooledBuffer>,
    ) -> Result<()> {
        let (qs, resolve, readback) = (
            self.queries.as_ref().unwrap(),
            self.resolve.as_ref().unwrap(),
            self.readback.as_ref().unwrap(),
        );
        let dispatches = ops
            .iter()
            .filter(|o| matches!(o, Op::Dispatch { .. }))
            .count() as u32;
        let mut enc = gpu.device.create_command_encoder(&Default::default());
        encode_ops(gpu, &mut enc, ops, params, Some((qs, 0)));
        if dispatches > 0 {
            enc.resolve_query_set(qs, 0..dispatches * 2, resolve, 0);
            enc.copy_buffer_to_buffer(resolve, 0, readback, 0, dispatches as u64 * 16);
        }
        gpu.queue.submit([enc.finish()]);
        if dispatches == 0 {
            return Ok(());
        }
        let (tx, rx) = std::sync::mpsc::channel();
        readback
            .slice(..dispatches as u64 * 16)
            .map_async(wgpu::MapMode::Read, move |r| drop(tx.send(r)));
        gpu.wait()?;
        rx.recv()
            .map_err(|_| GpuError::DeviceLost("timestamp readback never completed".into()))?
            .map_err(|e| GpuError::Wgpu(format!("mapping timestamps: {e}")))?;
        let ticks: Vec<u64> = bytemuck::pod_collect_to_vec(
            &readback
                .slice(..dispatches as u64 * 16)
                .get_mapped_range()
                .map_err(|e| GpuError::Wgpu(format!("reading timestamps: {e}")))?,
        );
        readback.unmap();
        let mut i = 0;
        for op in ops {
            if let Op::Dispatch { label, cost, .. } = op {
                let (t0, t1) = (ticks[2 * i], ticks[2 * i + 1]);
                let origin = *self.origin_ticks.get_or_insert(t0);
                self.samples.push(Sample {
                    label: label.to_string(),
                    start_ns: t0.saturating_sub(origin) as f64 * self.period_ns,
                    duration_ns: t1.saturating_sub(t0) as f64 * self.period_ns,
                    flops: cost.flops,
                    bytes: cost.bytes,
                });
                i += 1;
            }
        }
        Ok(())
    }

    /// Totals per label, largest first.
    pub fn stats(&self) -> Vec<KernelStats> {
        let total: f64 = self.samples.iter().map(|s| s.duration_ns).sum();
        let mut by_label: BTreeMap<&str, (usize, f64, f64, f64)> = BTreeMap::new();
        for s in &self.samples {
            let e = by_label.entry(&s.label).or_default();
            e.0 += 1;
            e.1 += s.duration_ns;
            e.2 += s.flops;
            e.3 += s.bytes;
        }
        let mut out: Vec<KernelStats> = by_label
            .into_iter()
            .map(|(label, (count, ns, flops, bytes))| KernelStats {
                label: label.to_string(),
                count,
                total_ms: ns / 1e6,
                mean_ms: ns / 1e6 / count as f64,
                share: if total > 0.0 { ns / total } else { 0.0 },
                gflops: if ns > 0.0 { flops / ns } else { 0.0 },
                gbps: if ns > 0.0 { bytes / ns } else { 0.0 },
            })
            .collect();
        out.sort_by(|a, b| b.total_ms.total_cmp(&a.total_ms));
        out
    }

    /// Sum of all kernel times, in milliseconds.
    pub fn total_ms(&self) -> f64 {
        self.samples.iter().map(|s| s.duration_ns).sum::<f64>() / 1e6
    }

    /// A fixed-width table of `stats()`.
    pub fn table(&self) -> String {
        format_table(&self.stats(), self.clock)
    }

    /// A Chrome trace (chrome://tracing, Perfetto) of every sample.
    pub fn chrome_trace(&self) -> serde_json::Value {
        let events: Vec<serde_json::Value> = self
            .samples
            .iter()
            .map(|s| {
                serde_json::json!({
                    "name": s.label, "cat": "kernel", "ph": "X", "pid": 0, "tid": 0,
                    "ts": s.start_ns / 1e3, "dur": s.duration_ns / 1e3,
                    "args": {"gflop": s.flops / 1e9, "mbytes": s.bytes / 1e6},
                })
            })
            .collect();
        serde_json::json!({ "traceEvents": events, "displayTimeUnit": "ms" })
    }
}

pub fn format_table(stats: &[KernelStats], clock: Clock) -> String {
    let mut s = String::new();
    let clock_name = match clock {
        Clock::GpuTimestamps => "GPU timestamps",
        Clock::HostWallClock => "host wall clock, one submission per kernel",
    };
    s += &format!("timing: {clock_name}\n");
    s += &format!(
        "{:<44} {:>6} {:>11} {:>10} {:>7} {:>10} {:>9}\n",
        "kernel", "count", "total ms", "mean ms", "share", "GFLOP/s", "GB/s"
    );
    for k in stats {
        s += &format!(
            "{:<44} {:>6} {:>11.3} {:>10.4} {:>6.1}% {:>10.1} {:>9.1}\n",
            k.label,
            k.count,
            k.total_ms,
            k.mean_ms,
            k.share * 100.0,
            k.gflops,
            k.gbps
        );
    }
    let total: f64 = stats.iter().map(|k| k.total_ms).sum();
    s += &format!("{:<44} {:>6} {:>11.3}\n", "total", "", total);
    s
}
