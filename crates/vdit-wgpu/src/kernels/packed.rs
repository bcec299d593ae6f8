//! What the block-quantised weight formats share: a [N, K] weight held on the GPU as packed
//! integer values and per-block scales, checked against its format's block length. The formats
//! (`q8`, `q4k`) say how GGML's blocks are repacked; the matmul kernels dequantise as they load.

use std::fmt;
use std::marker::PhantomData;

use crate::error::{shape_err, Result};
use crate::tensor::Tensor;

/// A block-quantisation format: its name and how many values along a row share a block.
pub trait BlockFormat {
    /// The type's name in messages, e.g. `Q8Weight`.
    const NAME: &'static str;
    /// Values per block along a row: K must be a multiple of it.
    const BLOCK: usize;
}

/// A [N, K] weight in the block format `F` on the GPU.
pub struct PackedWeight<F: BlockFormat> {
    /// The packed values. Held in a 4-byte tensor type only for its size: the kernels read the
    /// buffer as `array<u32>`.
    pub(crate) quants: Tensor,
    /// The blocks' scales, in the format's layout.
    pub(crate) scales: Tensor,
    shape: [usize; 2],
    format: PhantomData<F>,
}

impl<F: BlockFormat> fmt::Debug for PackedWeight<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({:?})", F::NAME, self.shape)
    }
}

impl<F: BlockFormat> PackedWeight<F> {
    pub(crate) fn from_parts(quants: Tensor, scales: Tensor, shape: [usize; 2]) -> Self {
        Self {
            quants,
            scales,
            shape,
            format: PhantomData,
        }
    }

    /// [N, K].
    pub fn shape(&self) -> [usize; 2] {
        self.shape
    }

    /// GPU bytes of the values and scales.
    pub fn bytes(&self) -> u64 {
        self.quants.bytes() + self.scales.bytes()
    }

    /// The GPU tensors behind it (values, scales), for moving it to and from host memory.
    pub fn tensors(&self) -> [&Tensor; 2] {
        [&self.quants, &self.scales]
    }

    /// A [n, k] weight has whole blocks in every row.
    pub(crate) fn check_shape(n: usize, k: usize) -> Result<()> {
        if n == 0 || k == 0 || k % F::BLOCK != 0 {
            return Err(shape_err(
                F::NAME,
                format!(
                    "[{n}, {k}]: rows of a multiple of {} values are needed",
                    F::BLOCK
                ),
            ));
        }
        Ok(())
    }

    /// [n, k] in whole blocks, given as `len` values of a row-major tensor to quantise.
    pub(crate) fn check_values(n: usize, k: usize, len: usize) -> Result<()> {
        Self::check_shape(n, k)?;
        if len != n * k {
            return Err(shape_err(
                F::NAME,
                format!(
                    "quantising [{n}, {k}]: {} values needed, {len} given",
                    n * k
                ),
            ));
        }
        Ok(())
    }

    /// [n, k] in whole blocks, given as `len` bytes of GGML blocks of `block_bytes` each.
    pub(crate) fn check_blocks(n: usize, k: usize, len: usize, block_bytes: usize) -> Result<()> {
        Self::check_shape(n, k)?;
        let want = n * k / F::BLOCK * block_bytes;
        if len != want {
            return Err(shape_err(
                F::NAME,
                format!("[{n}, {k}] needs {want} bytes of GGML blocks, {len} given"),
            ));
        }
        Ok(())
    }
}
