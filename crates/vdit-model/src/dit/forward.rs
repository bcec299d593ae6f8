//! One forward pass of the DiT, recorded on the GPU with buffers planned once per latent shape.

use std::collections::HashMap;

use vdit_wgpu::attention::{attention, softmax_attention, AttentionMode, AttentionWorkspace};
use vdit_wgpu::kernels::elementwise::{binary, unary, Binary, Unary};
use vdit_wgpu::kernels::matmul::Epilogue;
use vdit_wgpu::kernels::norm::{layer_norm, rms_norm_in_place, Affine};
use vdit_wgpu::kernels::patch::{patchify, unpatchify};
use vdit_wgpu::kernels::rope::{rope_in_place, RopeTable};
use vdit_wgpu::kernels::{Modulation, Row};
use vdit_wgpu::{DType, Gpu, Recorder, Tensor};

use super::tap::{reborrow, AttentionTap, BlockAttention};
use super::{timestep_sinusoid, WanDit};
use crate::error::{input_err, Result};

/// Wan's RoPE base.
const ROPE_THETA: f64 = 10000.0;

/// Wan2.1's split of a head's channel pairs between the RoPE axes (frames, rows, cols): a sixth
/// of the head dim each for rows and cols, the rest for frames (the original `rope_params`
/// split, which diffusers' `WanRotaryPosEmbed` repeats).
pub fn wan_rope_pairs(head_dim: usize) -> [usize; 3] {
    let hw = head_dim / 6;
    [head_dim / 2 - 2 * hw, hw, hw]
}

/// The prompt as the blocks see it: the embedded context and each block's cross-attention
/// keys and values ([L, heads, head_dim]), computed once per prompt.
pub struct ContextCache {
    pub rows: usize,
    keys: Vec<Tensor>,
    values: Vec<Tensor>,
}

impl ContextCache {
    pub fn bytes(&self) -> u64 {
        self.keys
            .iter()
            .chain(&self.values)
            .map(Tensor::bytes)
            .sum()
    }
}

/// The activations of one latent shape [C, F, H, W], allocated once and reused by every step.
pub struct DitRunner<'m> {
    dit: &'m WanDit,
    latent_shape: [usize; 4],
    tokens: usize,
    frame_tokens: usize,
    patches: Tensor,
    x: Tensor,
    h: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    o: Tensor,
    ffn: Tensor,
    out_tokens: Tensor,
    sinusoid: Tensor,
    temb: Tensor,
    temb_silu: Tensor,
    e0: Tensor,
    block_mod: Vec<Tensor>,
    head_mod: Tensor,
    rope: RopeTable,
    /// Each block's self-attention for this shape, and one workspace per distinct mode.
    modes: Vec<AttentionMode>,
    workspaces: HashMap<String, AttentionWorkspace>,
}

impl WanDit {
    /// Embeds a context [L, text_dim] (f32) and projects every block's cross-attention keys and
    /// values. Record it once per prompt.
    pub fn prepare_context(&self, rec: &mut Recorder, context: &Tensor) -> Result<ContextCache> {
        let c = &self.config;
        let gpu = rec.gpu();
        let &[rows, width] = context.shape() else {
            return Err(input_err(
                "context",
                format!("must be [L, {}], got {context:?}", c.text_dim),
            ));
        };
        if width != c.text_dim || context.dtype() != DType::F32 {
            return Err(input_err(
                "context",
                format!("must be f32 [L, {}], got {context:?}", c.text_dim),
            ));
        }
        let act = self.precision.dtype();
        let hidden = Tensor::empty(gpu, &[rows, c.dim], act)?;
        let embedded = Tensor::empty(gpu, &[rows, c.dim], act)?;
        self.text_1
            .forward(rec, context, &hidden, Epilogue::GeluTanh)?;
        self.text_2
            .forward(rec, &hidden, &embedded, Epilogue::None)?;
        let mut keys = Vec::with_capacity(self.blocks.len());
        let mut values = Vec::with_capacity(self.blocks.len());
        for index in 0..self.blocks.len() {
            let a = &self.blocks.prepare(rec, index)?.cross_attn;
            let k = Tensor::empty(gpu, &[rows, c.dim], act)?;
            let v = Tensor::empty(gpu, &[rows, c.dim], act)?;
            a.to_k.forward(rec, &embedded, &k, Epilogue::None)?;
            rms_norm_in_place(rec, &k, Some(&a.norm_k), c.eps)?;
            a.to_v.forward(rec, &embedded, &v, Epilogue::None)?;
            keys.push(k.reshape(&[rows, c.heads, c.head_dim])?);
            values.push(v.reshape(&[rows, c.heads, c.head_dim])?);
        }
        Ok(ContextCache { rows, keys, values })
    }

    /// Allocates the activations for latents of `latent_shape` = [C, F, H, W].
    pub fn runner(&self, gpu: &Gpu, latent_shape: [usize; 4]) -> Result<DitRunner<'_>> {
        let c = &self.config;
        let [ch, f, h, w] = latent_shape;
        let [pt, ph, pw] = c.patch;
        if ch != c.in_channels
            || f == 0
            || f % pt != 0
            || h == 0
            || h % ph != 0
            || w == 0
            || w % pw != 0
        {
            return Err(input_err(
                "latent",
                format!(
                    "shape {latent_shape:?} must be [{}, F, H, W] with F, H, W positive multiples of the patch {:?}",
                    c.in_channels, c.patch
                ),
            ));
        }
        let grid = [f / pt, h / ph, w / pw];
        let n: usize = grid.iter().product();
        let act = self.precision.dtype();
        let f32 = DType::F32;
        let empty = |shape: &[usize], dt| Tensor::empty(gpu, shape, dt);
        let frame_tokens = grid[1] * grid[2];
        let modes: Vec<AttentionMode> = self
            .plan
            .layers()
            .iter()
            .map(|l| l.mode(frame_tokens))
            .collect();
        let mut workspaces = HashMap::new();
        for (layer, mode) in modes.iter().enumerate() {
            let key = format!("{mode:?}");
            if workspaces.contains_key(&key) {
                continue;
            }
            let df = self.plan.feature_dim(layer, c.heads, c.head_dim);
            workspaces.insert(
                key,
                AttentionWorkspace::new(gpu, mode, n, n, c.heads, c.head_dim, df)?,
            );
        }
        Ok(DitRunner {
            dit: self,
            latent_shape,
            tokens: n,
            frame_tokens,
            patches: empty(&[n, c.in_channels * c.patch_volume()], f32)?,
            x: empty(&[n, c.dim], f32)?,
            h: empty(&[n, c.dim], act)?,
            q: empty(&[n, c.dim], act)?,
            k: empty(&[n, c.dim], act)?,
            v: empty(&[n, c.dim], act)?,
            o: empty(&[n, c.dim], act)?,
            ffn: empty(&[n, c.ffn_dim], act)?,
            out_tokens: empty(&[n, c.out_channels * c.patch_volume()], f32)?,
            sinusoid: empty(&[1, c.freq_dim], f32)?,
            temb: empty(&[1, c.dim], f32)?,
            temb_silu: empty(&[1, c.dim], f32)?,
            e0: empty(&[1, 6 * c.dim], f32)?,
            block_mod: (0..c.layers)
                .map(|_| empty(&[6, c.dim], f32))
                .collect::<vdit_wgpu::Result<_>>()?,
            head_mod: empty(&[2, c.dim], f32)?,
            rope: RopeTable::new(
                gpu,
                grid,
                c.head_dim,
                wan_rope_pairs(c.head_dim),
                ROPE_THETA,
            )?,
            modes,
            workspaces,
        })
    }
}

impl DitRunner<'_> {
    pub fn tokens(&self) -> usize {
        self.tokens
    }

    /// GPU bytes of the activations.
    pub fn bytes(&self) -> u64 {
        let mut t = [
            &self.patches,
            &self.x,
            &self.h,
            &self.q,
            &self.k,
            &self.v,
            &self.o,
            &self.ffn,
            &self.out_tokens,
        ]
        .iter()
        .map(|t| t.bytes())
        .sum::<u64>();
        t += self.workspaces.values().map(|w| w.bytes()).sum::<u64>();
        t
    }

    /// Records `velocity = DiT(latent, timestep, context)`. `latent` and `velocity` are f32
    /// [C, F, H, W] of the runner's shape. The timestep is written when the recorder is
    /// submitted, so record one forward per submission.
    pub fn forward(
        &self,
        rec: &mut Recorder,
        latent: &Tensor,
        timestep: f32,
        context: &ContextCache,
        velocity: &Tensor,
    ) -> Result<()> {
        self.forward_tapped(rec, latent, timestep, context, velocity, None)
    }

    /// [`DitRunner::forward`], handing every block's self-attention to `tap`.
    pub fn forward_tapped(
        &self,
        rec: &mut Recorder,
        latent: &Tensor,
        timestep: f32,
        context: &ContextCache,
        velocity: &Tensor,
        mut tap: Option<&mut dyn AttentionTap>,
    ) -> Result<()> {
        let dit = self.dit;
        let c = &dit.config;
        let gpu = rec.gpu();
        let out_shape = [
            c.out_channels,
            self.latent_shape[1],
            self.latent_shape[2],
            self.latent_shape[3],
        ];
        if latent.shape() != self.latent_shape || latent.dtype() != DType::F32 {
            return Err(input_err(
                "latent",
                format!("expected f32 {:?}, got {latent:?}", self.latent_shape),
            ));
        }
        if velocity.shape() != out_shape || velocity.dtype() != DType::F32 {
            return Err(input_err(
                "velocity",
                format!("expected f32 {out_shape:?}, got {velocity:?}"),
            ));
        }
        if context.keys.len() != dit.blocks.len() {
            return Err(input_err("context", "prepared for a different model"));
        }
        if !timestep.is_finite() {
            return Err(input_err("timestep", format!("{timestep} is not finite")));
        }

        // Time embedding: sinusoid -> Linear, SiLU -> Linear = temb; SiLU -> Linear = e0 [6, dim].
        self.sinusoid
            .write_f32(gpu, &timestep_sinusoid(timestep, c.freq_dim))?;
        let e_hidden = &self.temb_silu; // scratch, overwritten below
        dit.time_1
            .forward(rec, &self.sinusoid, e_hidden, Epilogue::Silu)?;
        dit.time_2
            .forward(rec, e_hidden, &self.temb, Epilogue::None)?;
        unary(rec, Unary::Silu, &self.temb, &self.temb_silu)?;
        dit.time_proj
            .forward(rec, &self.temb_silu, &self.e0, Epilogue::None)?;
        let e0 = self.e0.reshape(&[6, c.dim])?;
        let temb = self.temb.reshape(&[c.dim])?;
        binary(rec, Binary::Add, &dit.head_table, &temb, &self.head_mod)?;

        // Patch embedding: a Conv3d with kernel = stride = patch is a matmul over patches.
        patchify(rec, latent, &self.patches, c.patch)?;
        dit.patch_embedding
            .forward(rec, &self.patches, &self.x, Epilogue::None)?;

        for (i, m) in self.block_mod.iter().enumerate() {
            let block = dit.blocks.prepare(rec, i)?;
            // The block's modulation is its table plus e0 (recorded here, where the table is
            // on the GPU also when blocks are streamed).
            binary(rec, Binary::Add, &block.table, &e0, m)?;
            self.block(rec, i, block, m, context, reborrow(&mut tap))?;
        }

        // Head: LN(x) * (1 + scale) + shift, Linear, unpatchify.
        let head_mod = Modulation {
            shift: Row::of(&self.head_mod, 0),
            scale: Row::of(&self.head_mod, 1),
        };
        layer_norm(rec, &self.x, None, Some(head_mod), c.eps, &self.h)?;
        dit.proj_out
            .forward(rec, &self.h, &self.out_tokens, Epilogue::None)?;
        unpatchify(rec, &self.out_tokens, velocity, c.patch)?;
        Ok(())
    }

    fn block(
        &self,
        rec: &mut Recorder,
        index: usize,
        block: &super::Block,
        m: &Tensor,
        context: &ContextCache,
        tap: Option<&mut dyn AttentionTap>,
    ) -> Result<()> {
        let dit = self.dit;
        let c = &dit.config;
        let (n, heads, hd) = (self.tokens, c.heads, c.head_dim);
        let scale = 1.0 / (hd as f32).sqrt();
        let modulation = |shift, scale| Modulation {
            shift: Row::of(m, shift),
            scale: Row::of(m, scale),
        };
        let by_head = |t: &Tensor| t.reshape(&[n, heads, hd]);

        // Self-attention on the modulated LayerNorm, gated back into the residual.
        let a = &block.self_attn;
        layer_norm(rec, &self.x, None, Some(modulation(0, 1)), c.eps, &self.h)?;
        a.to_q.forward(rec, &self.h, &self.q, Epilogue::None)?;
        a.to_k.forward(rec, &self.h, &self.k, Epilogue::None)?;
        a.to_v.forward(rec, &self.h, &self.v, Epilogue::None)?;
        rms_norm_in_place(rec, &self.q, Some(&a.norm_q), c.eps)?;
        rms_norm_in_place(rec, &self.k, Some(&a.norm_k), c.eps)?;
        let (q, k, v, o) = (
            by_head(&self.q)?,
            by_head(&self.k)?,
            by_head(&self.v)?,
            by_head(&self.o)?,
        );
        rope_in_place(rec, &q, &self.rope)?;
        rope_in_place(rec, &k, &self.rope)?;
        let mode = self.modes[index];
        let ws = &self.workspaces[&format!("{mode:?}")];
        match mode {
            AttentionMode::Softmax => softmax_attention(rec, &q, &k, &v, scale, &o)?,
            _ => attention(
                rec,
                &mode,
                &q,
                &k,
                &v,
                scale,
                dit.plan.features(index),
                &o,
                ws,
            )?,
        }
        if let Some(tap) = tap {
            let seen = BlockAttention {
                block: index,
                q: &q,
                k: &k,
                v: &v,
                output: &o,
                mode: dit.plan.layers()[index],
                frame_tokens: self.frame_tokens,
            };
            tap.block_attention(rec, &seen)?;
        }
        a.to_out
            .forward(rec, &self.o, &self.x, Epilogue::ResidualGate(Row::of(m, 2)))?;

        // Cross-attention to the prompt, on the affine LayerNorm, added ungated.
        let a = &block.cross_attn;
        let affine = Affine {
            weight: &block.cross_norm_weight,
            bias: &block.cross_norm_bias,
        };
        layer_norm(rec, &self.x, Some(affine), None, c.eps, &self.h)?;
        a.to_q.forward(rec, &self.h, &self.q, Epilogue::None)?;
        rms_norm_in_place(rec, &self.q, Some(&a.norm_q), c.eps)?;
        softmax_attention(
            rec,
            &q,
            &context.keys[index],
            &context.values[index],
            scale,
            &o,
        )?;
        a.to_out
            .forward(rec, &self.o, &self.x, Epilogue::Residual)?;

        // Feed-forward on the modulated LayerNorm, gated back into the residual.
        layer_norm(rec, &self.x, None, Some(modulation(3, 4)), c.eps, &self.h)?;
        block
            .ffn_up
            .forward(rec, &self.h, &self.ffn, Epilogue::GeluTanh)?;
        block.ffn_down.forward(
            rec,
            &self.ffn,
            &self.x,
            Epilogue::ResidualGate(Row::of(m, 5)),
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod rope_split_tests {
    use super::wan_rope_pairs;

    #[test]
    fn wan_splits_the_pairs_by_the_head_dim_rule() {
        assert_eq!(wan_rope_pairs(128), [22, 21, 21]);
        assert_eq!(wan_rope_pairs(12), [2, 2, 2]);
        assert_eq!(wan_rope_pairs(24), [4, 4, 4]);
        assert_eq!(wan_rope_pairs(20), [4, 3, 3]);
    }
}
