//! Where the blocks' weights live: all on the GPU, or in host memory with two GPU slots that
//! the blocks take turns in (`--offload`).
//!
//! Streamed blocks are uploaded one block ahead: while block `i` runs from one slot, block
//! `i + 1`'s weights are already in the other, and block `i + 2`'s are written into the slot
//! block `i` used as soon as it is done. The recorder submits the work in parts split at those
//! uploads, so the host copies the next block's bytes while the GPU computes. The GPU then
//! holds two blocks' weights instead of all of them; the price is one upload of every block
//! per pass (per forward, and once per prompt for the cross-attention keys and values).

use vdit_wgpu::{HostTensor, Recorder, Tensor};

use super::layers::{Attention, Block, Linear};
use super::Loader;
use crate::error::{input_err, Result};
use crate::weights::DitConfig;

/// The transformer blocks' weights.
pub(crate) enum BlockWeights {
    Resident(Vec<Block>),
    Streamed(StreamedBlocks),
}

/// Every block's weights in host memory, and the two GPU blocks they are uploaded into.
pub(crate) struct StreamedBlocks {
    /// Per block, its tensors in [`Block::tensors`] order.
    host: Vec<Vec<HostTensor>>,
    slots: Box<[Block; 2]>,
}

impl BlockWeights {
    /// Loads every block through `ld`, on the GPU or, when `streamed`, into host memory one
    /// block at a time (so loading never holds more than a few blocks on the GPU either).
    pub fn load(ld: &mut Loader, c: &DitConfig, streamed: bool) -> Result<Self> {
        if !streamed || c.layers < 2 {
            // One block streamed would still be one block on the GPU.
            let blocks = (0..c.layers).map(|i| Block::load(ld, c, i));
            return Ok(Self::Resident(blocks.collect::<Result<_>>()?));
        }
        let mut host = Vec::with_capacity(c.layers);
        let mut slots = Vec::with_capacity(2);
        // Every block is uploaded into the slots: all must hold the same tensor shapes and types.
        let layout = |b: &Block| -> Vec<(Vec<usize>, vdit_wgpu::DType)> {
            b.tensors()
                .iter()
                .map(|t| (t.shape().to_vec(), t.dtype()))
                .collect()
        };
        let mut first = Vec::new();
        for i in 0..c.layers {
            let block = Block::load(ld, c, i)?;
            if i == 0 {
                first = layout(&block);
            } else if layout(&block) != first {
                return Err(input_err(
                    "--offload",
                    format!(
                        "block {i}'s weights are stored in other types than block 0's (a \
                         file that quantises blocks differently, or a LoRA on some blocks of a \
                         quantised file): load it without --offload, or with --expand-quantized"
                    ),
                ));
            }
            host.push(Tensor::to_host_all(ld.gpu, &block.tensors())?);
            // The first two blocks' tensors become the slots; the others go back to the
            // buffer pool, where the next block's tensors find them.
            if i < 2 {
                slots.push(block);
            }
        }
        let slots = <[Block; 2]>::try_from(slots)
            .map_err(|_| input_err("offload", "two blocks are needed to stream blocks"))?;
        ld.gpu.trim_pool();
        Ok(Self::Streamed(StreamedBlocks {
            host,
            slots: Box::new(slots),
        }))
    }

    pub fn len(&self) -> usize {
        match self {
            Self::Resident(blocks) => blocks.len(),
            Self::Streamed(s) => s.host.len(),
        }
    }

    pub fn is_streamed(&self) -> bool {
        matches!(self, Self::Streamed(_))
    }

    /// Block `index`'s weights as the ops recorded next will see them. A pass over the blocks
    /// calls this for 0, 1, 2, ... in order, right before recording each block's work.
    pub fn prepare(&self, rec: &mut Recorder, index: usize) -> Result<&Block> {
        match self {
            Self::Resident(blocks) => Ok(&blocks[index]),
            Self::Streamed(s) => {
                if index == 0 {
                    s.upload(rec, 0)?;
                }
                // Block index + 1 goes into the slot block index - 1 has just finished with.
                if index + 1 < s.host.len() {
                    s.upload(rec, index + 1)?;
                }
                Ok(&s.slots[index % 2])
            }
        }
    }

    /// GPU bytes of the blocks' weights, and host bytes of the streamed copies.
    pub fn bytes(&self) -> (u64, u64) {
        let gpu = |blocks: &[Block]| -> u64 {
            blocks
                .iter()
                .flat_map(|b| b.tensors())
                .map(|t| t.bytes())
                .sum()
        };
        match self {
            Self::Resident(blocks) => (gpu(blocks), 0),
            Self::Streamed(s) => (
                gpu(&s.slots[..]),
                s.host.iter().flatten().map(HostTensor::bytes).sum(),
            ),
        }
    }
}

impl StreamedBlocks {
    fn upload(&self, rec: &mut Recorder, index: usize) -> Result<()> {
        let slot = &self.slots[index % 2];
        for (src, dst) in self.host[index].iter().zip(slot.tensors()) {
            rec.upload(src, dst)?;
        }
        Ok(())
    }
}

impl Linear {
    fn tensors(&self) -> Vec<&Tensor> {
        let mut t = self.weight.tensors();
        t.push(&self.bias);
        t
    }
}

impl Attention {
    fn tensors(&self) -> Vec<&Tensor> {
        let mut t = Vec::with_capacity(10);
        for linear in [&self.to_q, &self.to_k, &self.to_v, &self.to_out] {
            t.extend(linear.tensors());
        }
        t.extend([&self.norm_q, &self.norm_k]);
        t
    }
}

impl Block {
    /// Every weight of the block, in a fixed order.
    pub(crate) fn tensors(&self) -> Vec<&Tensor> {
        let mut t = vec![&self.table];
        t.extend(self.self_attn.tensors());
        t.extend(self.cross_attn.tensors());
        t.extend([&self.cross_norm_weight, &self.cross_norm_bias]);
        t.extend(self.ffn_up.tensors());
        t.extend(self.ffn_down.tensors());
        t
    }
}
