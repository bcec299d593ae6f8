//! The DiT's modules: Linear, attention projections, and the transformer block.

use vdit_wgpu::kernels::matmul::{matmul_weight, Epilogue, Weight};
use vdit_wgpu::{DType, Recorder, Tensor};

use super::Loader;
use crate::error::Result;
use crate::weights::DitConfig;

/// PyTorch's Linear: `y = x W^T + b`, W [out, in].
pub struct Linear {
    pub weight: Weight,
    pub bias: Tensor,
}

impl Linear {
    pub(crate) fn load(
        ld: &mut Loader,
        name: &str,
        out: usize,
        inp: usize,
        dtype: DType,
    ) -> Result<Self> {
        Ok(Self {
            weight: ld.matrix(&format!("{name}.weight"), out, inp, dtype)?,
            bias: ld.tensor(&format!("{name}.bias"), &[out], dtype)?,
        })
    }

    pub fn forward(
        &self,
        rec: &mut Recorder,
        x: &Tensor,
        y: &Tensor,
        epilogue: Epilogue<'_>,
    ) -> Result<()> {
        Ok(matmul_weight(
            rec,
            x,
            self.weight.as_ref(),
            Some(&self.bias),
            y,
            epilogue,
        )?)
    }
}

/// Projections and q/k RMSNorm weights of one attention (self or cross).
pub struct Attention {
    pub to_q: Linear,
    pub to_k: Linear,
    pub to_v: Linear,
    pub to_out: Linear,
    /// RMSNorm weights over the full width (all heads), f32.
    pub norm_q: Tensor,
    pub norm_k: Tensor,
}

impl Attention {
    fn load(ld: &mut Loader, prefix: &str, dim: usize) -> Result<Self> {
        let wd = ld.dtype;
        Ok(Self {
            to_q: Linear::load(ld, &format!("{prefix}.to_q"), dim, dim, wd)?,
            to_k: Linear::load(ld, &format!("{prefix}.to_k"), dim, dim, wd)?,
            to_v: Linear::load(ld, &format!("{prefix}.to_v"), dim, dim, wd)?,
            to_out: Linear::load(ld, &format!("{prefix}.to_out.0"), dim, dim, wd)?,
            norm_q: ld.tensor(&format!("{prefix}.norm_q.weight"), &[dim], DType::F32)?,
            norm_k: ld.tensor(&format!("{prefix}.norm_k.weight"), &[dim], DType::F32)?,
        })
    }
}

/// One transformer block: modulated self-attention, cross-attention, modulated FFN.
pub struct Block {
    /// (shift1, scale1, gate1, shift2, scale2, gate2) before the time embedding is added: [6, dim].
    pub table: Tensor,
    pub self_attn: Attention,
    pub cross_attn: Attention,
    /// The affine LayerNorm before cross-attention (diffusers `norm2`, original `norm3`).
    pub cross_norm_weight: Tensor,
    pub cross_norm_bias: Tensor,
    pub ffn_up: Linear,
    pub ffn_down: Linear,
}

impl Block {
    pub(crate) fn load(ld: &mut Loader, c: &DitConfig, i: usize) -> Result<Self> {
        let p = format!("blocks.{i}");
        let wd = ld.dtype;
        Ok(Self {
            table: ld
                .tensor(
                    &format!("{p}.scale_shift_table"),
                    &[1, 6, c.dim],
                    DType::F32,
                )?
                .reshape(&[6, c.dim])?,
            self_attn: Attention::load(ld, &format!("{p}.attn1"), c.dim)?,
            cross_attn: Attention::load(ld, &format!("{p}.attn2"), c.dim)?,
            cross_norm_weight: ld.tensor(&format!("{p}.norm2.weight"), &[c.dim], DType::F32)?,
            cross_norm_bias: ld.tensor(&format!("{p}.norm2.bias"), &[c.dim], DType::F32)?,
            ffn_up: Linear::load(ld, &format!("{p}.ffn.net.0.proj"), c.ffn_dim, c.dim, wd)?,
            ffn_down: Linear::load(ld, &format!("{p}.ffn.net.2"), c.dim, c.ffn_dim, wd)?,
        })
    }
}
