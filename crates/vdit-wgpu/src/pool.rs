//! A buffer pool: tensors of a shape seen before reuse a freed buffer of the same size, so a
//! steady-state loop (one denoising step after another) allocates nothing. The pool also keeps
//! the most bytes it ever held, the GPU memory a workload needs. It may be given a limit
//! (`--max-gpu-memory`): an allocation beyond it, or one the device refuses (caught by an
//! error scope), is an `OutOfMemory` error instead of a crash.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use crate::error::{GpuError, Result};

/// Every tensor buffer can be a storage binding and a copy source or destination.
pub(crate) const TENSOR_USAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

/// Buffers are sized in multiples of 16 bytes: any vec4 load of the last element stays inside.
pub(crate) fn padded_size(bytes: u64) -> u64 {
    bytes.max(16).div_ceil(16) * 16
}

static NEXT_BUFFER_ID: AtomicU64 = AtomicU64::new(1);

/// A free buffer and its identity.
type FreeBuffer = (wgpu::Buffer, u64);

#[derive(Default)]
pub struct BufferPool {
    /// Free buffers by (size, usage), each with the identity it keeps from loan to loan.
    free: Mutex<HashMap<(u64, u32), Vec<FreeBuffer>>>,
    in_use_bytes: AtomicU64,
    free_bytes: AtomicU64,
    /// High-water mark of in use + free bytes.
    peak_bytes: AtomicU64,
    /// The most bytes the pool may hold (in use and free); 0 for no limit.
    limit: AtomicU64,
}

/// A buffer on loan from the pool; it returns there when the last tensor holding it drops.
pub struct PooledBuffer {
    pub(crate) buffer: wgpu::Buffer,
    /// The buffer's identity, the same on every loan of the same buffer: the bind-group cache's
    /// key, so a repeated step binds the same buffers through the same bind groups.
    pub(crate) id: u64,
    pub(crate) size: u64,
    pool: Weak<BufferPool>,
}

impl PooledBuffer {
    pub fn buffer(&self) -> &wgpu::Buffer {
        &self.buffer
    }
    pub fn id(&self) -> u64 {
        self.id
    }
    pub fn size(&self) -> u64 {
        self.size
    }
}

impl Drop for PooledBuffer {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.upgrade() {
            pool.give_back(self.buffer.clone(), self.id, self.size);
        }
    }
}

impl BufferPool {
    /// A buffer of exactly `padded_size(bytes)` bytes with `usage`; reused when one is free.
    /// `what` names it in wgpu's labels and in an out-of-memory error.
    pub(crate) fn take(
        self: &Arc<Self>,
        device: &wgpu::Device,
        bytes: u64,
        usage: wgpu::BufferUsages,
        what: &str,
    ) -> Result<Arc<PooledBuffer>> {
        let size = padded_size(bytes);
        // The free count changes only under the free list's lock, with the list itself: tests
        // share one GPU across threads, and a `trim` between a give-back's count and its push
        // would otherwise let the count wrap below zero.
        let reused = {
            let mut free = self.free.lock().unwrap();
            let b = free.get_mut(&(size, usage.bits())).and_then(|v| v.pop());
            if b.is_some() {
                self.free_bytes.fetch_sub(size, Ordering::Relaxed);
            }
            b
        };
        let (buffer, id) = match reused {
            Some(b) => b,
            None => {
                let (in_use, free) = self.bytes();
                let out_of_memory = |limit| GpuError::OutOfMemory {
                    what: what.to_string(),
                    requested: size,
                    held: in_use + free,
                    limit,
                };
                let limit = self.limit();
                if limit.is_some_and(|l| in_use + free + size > l) {
                    return Err(out_of_memory(limit));
                }
                // The device's own refusal arrives as an error, not a panic, inside a scope.
                let scope = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
                let buffer = device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some(what),
                    size,
                    usage,
                    mapped_at_creation: false,
                });
                if pollster::block_on(scope.pop()).is_some() {
                    return Err(out_of_memory(None));
                }
                self.peak_bytes
                    .fetch_max(in_use + free + size, Ordering::Relaxed);
                (buffer, NEXT_BUFFER_ID.fetch_add(1, Ordering::Relaxed))
            }
        };
        self.in_use_bytes.fetch_add(size, Ordering::Relaxed);
        Ok(Arc::new(PooledBuffer {
            id,
            buffer,
            size,
            pool: Arc::downgrade(self),
        }))
    }

    /// The most bytes the pool may hold, if limited.
    pub fn limit(&self) -> Option<u64> {
        Some(self.limit.load(Ordering::Relaxed)).filter(|&l| l > 0)
    }

    pub fn set_limit(&self, limit: Option<u64>) {
        self.limit.store(limit.unwrap_or(0), Ordering::Relaxed);
    }

    fn give_back(&self, buffer: wgpu::Buffer, id: u64, size: u64) {
        let mut free = self.free.lock().unwrap();
        self.in_use_bytes.fetch_sub(size, Ordering::Relaxed);
        self.free_bytes.fetch_add(size, Ordering::Relaxed);
        free.entry((size, buffer.usage().bits()))
            .or_default()
            .push((buffer, id));
    }

    /// Releases every free buffer to the driver (for example between model stages).
    pub fn trim(&self) {
        let mut free = self.free.lock().unwrap();
        free.clear();
        self.free_bytes.store(0, Ordering::Relaxed);
    }

    /// (bytes in use by live tensors, bytes held free for reuse).
    pub fn bytes(&self) -> (u64, u64) {
        (
            self.in_use_bytes.load(Ordering::Relaxed),
            self.free_bytes.load(Ordering::Relaxed),
        )
    }

    /// The most bytes held at once (in use and free) since the pool was made or the last
    /// [`reset_peak`](Self::reset_peak).
    pub fn peak_bytes(&self) -> u64 {
        let (in_use, free) = self.bytes();
        self.peak_bytes.load(Ordering::Relaxed).max(in_use + free)
    }

    /// Starts a new high-water mark from what is held now.
    pub fn reset_peak(&self) {
        let (in_use, free) = self.bytes();
        self.peak_bytes.store(in_use + free, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::test_gpu;

    #[test]
    fn the_pool_keeps_its_high_water_mark() {
        let device = &test_gpu().device;
        let pool = Arc::new(BufferPool::default());
        let take = |bytes| pool.take(device, bytes, TENSOR_USAGE, "test").unwrap();
        let (a, b) = (take(1024), take(4096));
        assert_eq!(pool.peak_bytes(), 5120);
        let first_id = a.id;
        drop((a, b));
        // Reused, not allocated: the mark stays, and so does the buffer's identity.
        let a = take(1024);
        assert_eq!(a.id, first_id);
        assert_eq!(pool.bytes(), (1024, 4096));
        assert_eq!(pool.peak_bytes(), 5120);
        drop(a);
        pool.trim();
        assert_eq!(pool.peak_bytes(), 5120);
        pool.reset_peak();
        assert_eq!(pool.peak_bytes(), 0);
        let c = take(2048);
        assert_eq!(pool.peak_bytes(), 2048);
        drop(c);
    }

    #[test]
    fn the_limit_refuses_what_would_exceed_it() {
        let device = &test_gpu().device;
        let pool = Arc::new(BufferPool::default());
        pool.set_limit(Some(8192));
        let a = pool.take(device, 4096, TENSOR_USAGE, "a").unwrap();
        let e = pool
            .take(device, 8192, TENSOR_USAGE, "the big one")
            .err()
            .expect("over the limit");
        let text = e.to_string();
        assert!(
            text.contains("out of GPU memory: the big one needs 8.00 KiB more")
                && text.contains("4.00 KiB are held")
                && text.contains("(limit 8.00 KiB)"),
            "{text}"
        );
        // Exactly at the limit is allowed, and a freed buffer is reused, not added.
        let b = pool.take(device, 4096, TENSOR_USAGE, "b").unwrap();
        drop(b);
        let b = pool.take(device, 4096, TENSOR_USAGE, "b").unwrap();
        assert_eq!(pool.bytes(), (8192, 0));
        drop((a, b));
    }
}
