//! A tensor: a GPU buffer, a shape and a storage type. Arithmetic happens in kernels, in f32.

use std::sync::Arc;

use half::f16;

use crate::error::{shape_err, GpuError, Result};
use crate::gpu::Gpu;
use crate::pool::{PooledBuffer, TENSOR_USAGE};

/// Storage type of a tensor's elements. Kernels always accumulate in f32.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F16,
}

impl DType {
    pub fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 => 2,
        }
    }
    /// The WGSL scalar type of this storage.
    pub fn wgsl(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
        }
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.wgsl())
    }
}

/// A dense, row-major tensor on the GPU. Cloning shares the buffer.
#[derive(Clone)]
pub struct Tensor {
    buf: Arc<PooledBuffer>,
    shape: Vec<usize>,
    dtype: DType,
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor({:?}, {})", self.shape, self.dtype)
    }
}

impl Tensor {
    /// An uninitialised tensor (contents are whatever the pooled buffer held).
    pub fn empty(gpu: &Gpu, shape: &[usize], dtype: DType) -> Result<Self> {
        let numel: usize = shape.iter().product();
        let bytes = (numel * dtype.size()) as u64;
        let what = format!("a {dtype} tensor of shape {shape:?}");
        gpu.check_buffer_size(&what, bytes)?;
        let buf = gpu.take_buffer(bytes, TENSOR_USAGE, &what)?;
        Ok(Self {
            buf,
            shape: shape.to_vec(),
            dtype,
        })
    }

    /// Uploads f32 values, converting to the storage type.
    pub fn from_f32(gpu: &Gpu, shape: &[usize], data: &[f32], dtype: DType) -> Result<Self> {
        let numel: usize = shape.iter().product();
        if numel != data.len() {
            return Err(shape_err(
                "Tensor::from_f32",
                format!("shape {shape:?} holds {numel} values, {} given", data.len()),
            ));
        }
        let t = Self::empty(gpu, shape, dtype)?;
        t.write_f32(gpu, data)?;
        Ok(t)
    }

    /// Uploads raw little-endian bytes already in the storage type.
    pub fn from_bytes(gpu: &Gpu, shape: &[usize], dtype: DType, bytes: &[u8]) -> Result<Self> {
        let t = Self::empty(gpu, shape, dtype)?;
        if bytes.len() != t.bytes() as usize {
            return Err(shape_err(
                "Tensor::from_bytes",
                format!(
                    "shape {shape:?} of {dtype} needs {} bytes, {} given",
                    t.bytes(),
                    bytes.len()
                ),
            ));
        }
        write_padded(gpu, t.buffer(), bytes);
        Ok(t)
    }

    /// Overwrites the contents with f32 values converted to the storage type.
    pub fn write_f32(&self, gpu: &Gpu, data: &[f32]) -> Result<()> {
        if data.len() != self.numel() {
            return Err(shape_err(
                "Tensor::write_f32",
                format!(
                    "{:?} holds {} values, {} given",
                    self.shape,
                    self.numel(),
                    data.len()
                ),
            ));
        }
        match self.dtype {
            DType::F32 => write_padded(gpu, self.buffer(), bytemuck::cast_slice(data)),
            DType::F16 => {
                let mut h = vec![f16::ZERO; data.len()];
                crate::parallel::par_fill(&mut h, |first, chunk| {
                    for (j, v) in chunk.iter_mut().enumerate() {
                        *v = f16::from_f32(data[first + j]);
                    }
                });
                write_padded(gpu, self.buffer(), bytemuck::cast_slice(&h));
            }
        }
        Ok(())
    }

    /// Fills every element with NaN, so a test can tell which outputs a kernel never wrote.
    pub fn poison(&self, gpu: &Gpu) {
        let n = self.buf.size as usize;
        let bytes: Vec<u8> = match self.dtype {
            DType::F32 => f32::NAN
                .to_le_bytes()
                .iter()
                .copied()
                .cycle()
                .take(n)
                .collect(),
            DType::F16 => f16::NAN
                .to_le_bytes()
                .iter()
                .copied()
                .cycle()
                .take(n)
                .collect(),
        };
        gpu.write_tensor_bytes(self.buffer(), &bytes);
    }

    /// Downloads and converts to f32 (waits for all submitted work).
    pub fn to_vec_f32(&self, gpu: &Gpu) -> Result<Vec<f32>> {
        let bytes = self.to_bytes(gpu)?;
        Ok(match self.dtype {
            DType::F32 => bytemuck::pod_collect_to_vec::<u8, f32>(&bytes),
            DType::F16 => bytemuck::pod_collect_to_vec::<u8, f16>(&bytes)
                .into_iter()
                .map(f16::to_f32)
                .collect(),
        })
    }

    /// Downloads the raw bytes of the storage type (waits for all submitted work).
    pub fn to_bytes(&self, gpu: &Gpu) -> Result<Vec<u8>> {
        let mut all = download(gpu, &[self])?;
        let mut bytes = all.pop().unwrap_or_default();
        bytes.truncate(self.bytes() as usize);
        Ok(bytes)
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    pub fn dtype(&self) -> DType {
        self.dtype
    }
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    /// Bytes of the elements (the buffer may be a little larger).
    pub fn bytes(&self) -> u64 {
        (self.numel() * self.dtype.size()) as u64
    }
    pub fn buffer(&self) -> &wgpu::Buffer {
        &self.buf.buffer
    }
    pub(crate) fn pooled(&self) -> &Arc<PooledBuffer> {
        &self.buf
    }

    /// The same buffer seen with another shape of the same element count.
    pub fn reshape(&self, shape: &[usize]) -> Result<Self> {
        let numel: usize = shape.iter().product();
        if numel != self.numel() {
            return Err(shape_err(
                "Tensor::reshape",
                format!("{:?} cannot become {shape:?}", self.shape),
            ));
        }
        Ok(Self {
            buf: self.buf.clone(),
            shape: shape.to_vec(),
            dtype: self.dtype,
        })
    }
}

/// A tensor's contents kept in host memory, to be uploaded again into a GPU tensor of the same
/// shape and type ([`crate::Recorder::upload`]): how offloaded weights wait for their turn.
/// Cloning shares the bytes.
#[derive(Clone)]
pub struct HostTensor {
    /// The element bytes, zero-padded to a multiple of 4 as queue writes need.
    bytes: Arc<[u8]>,
    shape: Vec<usize>,
    dtype: DType,
}

impl std::fmt::Debug for HostTensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HostTensor({:?}, {})", self.shape, self.dtype)
    }
}

impl HostTensor {
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    pub fn dtype(&self) -> DType {
        self.dtype
    }
    /// Host bytes held (with the padding).
    pub fn bytes(&self) -> u64 {
        self.bytes.len() as u64
    }
    pub(crate) fn padded_bytes(&self) -> &Arc<[u8]> {
        &self.bytes
    }
}

impl Tensor {
    /// Downloads the contents into host memory (waits for all submitted work).
    pub fn to_host(&self, gpu: &Gpu) -> Result<HostTensor> {
        Ok(Self::to_host_all(gpu, &[self])?.remove(0))
    }

    /// Downloads several tensors into host memory through one staging buffer and one wait.
    pub fn to_host_all(gpu: &Gpu, tensors: &[&Tensor]) -> Result<Vec<HostTensor>> {
        let downloaded = download(gpu, tensors)?;
        Ok(tensors
            .iter()
            .zip(downloaded)
            .map(|(t, bytes)| HostTensor {
                bytes: bytes.into(),
                shape: t.shape.clone(),
                dtype: t.dtype,
            })
            .collect())
    }
}

/// Staging buffers for downloads hold at most this much (or a single larger tensor).
const DOWNLOAD_BATCH_BYTES: u64 = 256 << 20;

/// The bytes of each tensor, zero-padded to a multiple of 4, copied through as few staging
/// buffers as fit [`DOWNLOAD_BATCH_BYTES`] (waits for all submitted work).
fn download(gpu: &Gpu, tensors: &[&Tensor]) -> Result<Vec<Vec<u8>>> {
    let padded = |t: &Tensor| t.bytes().div_ceil(4) * 4;
    let mut out = Vec::with_capacity(tensors.len());
    let mut start = 0;
    while start < tensors.len() {
        let mut end = start + 1;
        let mut total = padded(tensors[start]);
        while end < tensors.len() && total + padded(tensors[end]) <= DOWNLOAD_BATCH_BYTES {
            total += padded(tensors[end]);
            end += 1;
        }
        out.extend(download_batch(gpu, &tensors[start..end])?);
        start = end;
    }
    Ok(out)
}

fn download_batch(gpu: &Gpu, tensors: &[&Tensor]) -> Result<Vec<Vec<u8>>> {
    let sizes: Vec<u64> = tensors.iter().map(|t| t.bytes().div_ceil(4) * 4).collect();
    let total: u64 = sizes.iter().sum();
    let staging = gpu.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("download"),
        size: total.max(4),
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let mut enc = gpu.device.create_command_encoder(&Default::default());
    let mut offset = 0;
    for (t, &size) in tensors.iter().zip(&sizes) {
        if size > 0 {
            enc.copy_buffer_to_buffer(t.buffer(), 0, &staging, offset, size);
        }
        offset += size;
    }
    gpu.queue.submit([enc.finish()]);
    let (tx, rx) = std::sync::mpsc::channel();
    staging
        .slice(..)
        .map_async(wgpu::MapMode::Read, move |r| drop(tx.send(r)));
    gpu.wait()?;
    rx.recv()
        .map_err(|_| GpuError::DeviceLost("buffer mapping never completed".into()))?
        .map_err(|e| GpuError::Wgpu(format!("mapping a download buffer: {e}")))?;
    let mut out = Vec::with_capacity(tensors.len());
    {
        let mapped = staging
            .slice(..)
            .get_mapped_range()
            .map_err(|e| GpuError::Wgpu(format!("reading a download buffer: {e}")))?;
        let mut offset = 0usize;
        for &size in &sizes {
            out.push(mapped[offset..offset + size as usize].to_vec());
            offset += size as usize;
        }
    }
    staging.unmap();
    Ok(out)
}

/// `queue.write_buffer` wants a multiple of 4 bytes; f16 tensors of odd length are padded.
fn write_padded(gpu: &Gpu, buffer: &wgpu::Buffer, bytes: &[u8]) {
    if bytes.len() % 4 == 0 {
        gpu.write_tensor_bytes(buffer, bytes);
    } else {
        let mut padded = bytes.to_vec();
        padded.resize(bytes.len().div_ceil(4) * 4, 0);
        gpu.write_tensor_bytes(buffer, &padded);
    }
}
