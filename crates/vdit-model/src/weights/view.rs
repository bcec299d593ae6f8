//! A tensor of an open file (borrowed from its mapping, or drawn as it is read), with the
//! conversions and the GPU upload.

use std::borrow::Cow;
use std::path::Path;

use vdit_wgpu::{DType, Gpu, Tensor};

use super::convert;
use super::dtype::StoredDType;
use super::error::{Result, WeightError};
use super::header::TensorInfo;

/// One tensor of an open file: its header entry, its bytes and the file it came from (for errors).
#[derive(Clone, Debug)]
pub struct TensorView<'a> {
    info: &'a TensorInfo,
    /// Borrowed from the file, or owned by the view where the file makes them on each read
    /// (random weights): then they are dropped with the view.
    bytes: Cow<'a, [u8]>,
    path: &'a Path,
    /// The factor every value is multiplied by when read (a scaled fp8 weight's scale).
    scale: Option<f32>,
}

impl<'a> TensorView<'a> {
    /// `bytes` must be the tensor's bytes, as sliced (or made) by the owning file.
    pub(crate) fn new(info: &'a TensorInfo, bytes: Cow<'a, [u8]>, path: &'a Path) -> Self {
        Self {
            info,
            bytes,
            path,
            scale: None,
        }
    }

    /// The same tensor read multiplied by `scale`.
    pub(crate) fn with_scale(self, scale: f32) -> Self {
        Self {
            scale: Some(scale),
            ..self
        }
    }

    /// The factor applied when reading, for a scaled fp8 weight.
    pub fn scale(&self) -> Option<f32> {
        self.scale
    }

    /// The name stored in the file.
    pub fn name(&self) -> &'a str {
        self.info.name()
    }
    pub fn dtype(&self) -> StoredDType {
        self.info.dtype()
    }
    pub fn shape(&self) -> &'a [usize] {
        self.info.shape()
    }
    pub fn numel(&self) -> usize {
        self.info.numel()
    }
    /// The raw little-endian bytes as stored: without the [`scale`](Self::scale) of a scaled
    /// fp8 weight, which the conversions apply.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
    /// The file holding the tensor.
    pub fn path(&self) -> &'a Path {
        self.path
    }

    /// Fails, naming the file and tensor, unless the shape is exactly `expected`.
    pub fn check_shape(&self, expected: &[usize]) -> Result<()> {
        if self.shape() == expected {
            Ok(())
        } else {
            Err(WeightError::Shape {
                path: self.path.to_path_buf(),
                tensor: self.name().to_string(),
                expected: expected.to_vec(),
                found: self.shape().to_vec(),
            })
        }
    }

    /// The elements converted to f32 (and scaled, for a scaled fp8 weight).
    pub fn to_f32(&self) -> Result<Vec<f32>> {
        let mut values =
            convert::to_f32_values(&self.bytes, self.dtype()).ok_or_else(|| self.unsupported())?;
        if let Some(s) = self.scale {
            values.iter_mut().for_each(|v| *v *= s);
        }
        Ok(values)
    }

    /// The elements as little-endian bytes of `storage`, ready for [`Tensor::from_bytes`].
    /// Borrowed straight from the mapping when the file already stores that type.
    pub fn to_storage(&self, storage: DType) -> Result<Cow<'a, [u8]>> {
        match &self.bytes {
            Cow::Borrowed(bytes) => self.convert(bytes, storage),
            Cow::Owned(bytes) => Ok(Cow::Owned(self.convert(bytes, storage)?.into_owned())),
        }
    }

    /// `bytes` (this tensor's) in `storage`, borrowed when no conversion is needed.
    fn convert<'b>(&self, bytes: &'b [u8], storage: DType) -> Result<Cow<'b, [u8]>> {
        if self.scale.is_some() {
            let values = self.to_f32()?;
            return convert::to_storage_bytes(
                bytemuck::cast_slice(&values),
                StoredDType::F32,
                storage,
            )
            .map(Cow::Owned)
            .ok_or_else(|| self.unsupported());
        }
        let converted = match (storage, self.dtype()) {
            (DType::F32, StoredDType::F32) | (DType::F16, StoredDType::F16) => {
                return Ok(Cow::Borrowed(bytes))
            }
            (DType::F32, stored) => convert::to_f32_bytes(bytes, stored),
            (DType::F16, stored) => convert::to_f16_bytes(bytes, stored),
        };
        converted.map(Cow::Owned).ok_or_else(|| self.unsupported())
    }

    /// Checks the shape against `expected_shape`, converts to `storage` and uploads.
    pub fn upload(&self, gpu: &Gpu, expected_shape: &[usize], storage: DType) -> Result<Tensor> {
        self.check_shape(expected_shape)?;
        // Converted from the view's own bytes: bytes made for this read are not copied again.
        let bytes = self.convert(&self.bytes, storage)?;
        Tensor::from_bytes(gpu, expected_shape, storage, &bytes).map_err(|source| {
            WeightError::Gpu {
                path: self.path.to_path_buf(),
                tensor: self.name().to_string(),
                source,
            }
        })
    }

    fn unsupported(&self) -> WeightError {
        WeightError::UnsupportedDType {
            path: self.path.to_path_buf(),
            tensor: self.name().to_string(),
            dtype: self.dtype().to_string(),
        }
    }
}
