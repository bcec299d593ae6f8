//! vdit-wgpu's GPU trainer ([`PhiTrainer`]) as the distillation's [`PairTrainer`].

use vdit_wgpu::attention::reference::{FeatureSpec, HostFeatureMap};
use vdit_wgpu::attention::{FeatureMap, FeatureMapWeights};
use vdit_wgpu::distill::{
    AdamW, BlockCapture, ParamState, PhiInit, PhiTrainer, PhiTrainerConfig, QuerySubset,
    TrainerState,
};
use vdit_wgpu::Gpu;

use super::distill::PairTrainer;
use crate::dit::BlockAttention;
use crate::error::{input_err, Result};
use crate::plan::LayerAttention;
use crate::tensor_file::HostTensor;

/// The sizes and optimiser settings shared by every pair of a run.
#[derive(Clone, Debug)]
pub struct FeatureDims {
    pub heads: usize,
    pub head_dim: usize,
    /// The map trained for every pair (hedgehog or poly) and its sizes.
    pub feature: FeatureSpec,
    pub lr: f32,
    /// Tokens per latent frame of the captures (the chunk-recurrent mode's unit).
    pub frame_tokens: usize,
}

/// A trainer of `dims.feature` maps for `mode`, seeded, with LoLCATs' AdamW at learning rate
/// `dims.lr`.
pub fn gpu_trainer<'g>(
    gpu: &'g Gpu,
    dims: &FeatureDims,
    mode: LayerAttention,
    seed: u64,
) -> Result<PhiTrainer<'g>> {
    gpu_trainer_from(gpu, dims, mode, PhiInit::Seeded(seed))
}

/// A trainer like [`gpu_trainer`]'s whose maps start from `init` (a previous run's maps, for
/// a student run).
pub fn gpu_trainer_from<'g>(
    gpu: &'g Gpu,
    dims: &FeatureDims,
    mode: LayerAttention,
    init: PhiInit,
) -> Result<PhiTrainer<'g>> {
    if matches!(dims.feature, FeatureSpec::Elu1) {
        return Err(input_err(
            "--feature-map",
            "elu1 has no weights to train (hedgehog or poly)",
        ));
    }
    let mut cfg = PhiTrainerConfig::hedgehog(
        dims.heads,
        dims.head_dim,
        1,
        mode.mode(dims.frame_tokens),
        0,
    );
    cfg.init = init;
    cfg.feature = dims.feature;
    cfg.optimizer = AdamW {
        lr: dims.lr,
        ..AdamW::default()
    };
    Ok(PhiTrainer::new(gpu, cfg)?)
}

/// A feature map's weights brought to the host, with the sizes read off their shapes
/// (hedgehog W [H, DF/2, D]; poly W1 [H, HID, D], W2 [H, DF, HID]).
pub fn host_map(gpu: &Gpu, map: &FeatureMap) -> Result<HostFeatureMap> {
    Ok(match map {
        FeatureMap::Hedgehog { w, b } => HostFeatureMap::Hedgehog {
            w: w.to_vec_f32(gpu)?,
            b: b.to_vec_f32(gpu)?,
            half: w.shape()[1],
        },
        FeatureMap::Poly {
            w1,
            b1,
            w2,
            b2,
            powers,
        } => HostFeatureMap::Poly {
            w1: w1.to_vec_f32(gpu)?,
            b1: b1.to_vec_f32(gpu)?,
            w2: w2.to_vec_f32(gpu)?,
            b2: b2.to_vec_f32(gpu)?,
            hid: w1.shape()[1],
            df: w2.shape()[1],
            powers: *powers,
        },
        FeatureMap::Elu1 => HostFeatureMap::Elu1,
    })
}

/// The trainable map `map` is an instance of (none for elu1).
pub fn spec_of(map: &HostFeatureMap) -> Option<FeatureSpec> {
    match *map {
        HostFeatureMap::Hedgehog { half, .. } => Some(FeatureSpec::Hedgehog { half }),
        HostFeatureMap::Poly {
            hid, df, powers, ..
        } => Some(FeatureSpec::Poly {
            hid,
            d1: df / powers.max(1),
            powers,
        }),
        HostFeatureMap::Elu1 => None,
    }
}

fn capture(seen: &BlockAttention<'_>) -> BlockCapture {
    BlockCapture {
        q: seen.q.clone(),
        k: seen.k.clone(),
        v: seen.v.clone(),
        y: seen.output.clone(),
        frame_tokens: seen.frame_tokens,
    }
}

impl PairTrainer for PhiTrainer<'_> {
    fn prepare(&mut self, seen: &BlockAttention<'_>) -> Result<()> {
        Ok(PhiTrainer::prepare(self, &capture(seen))?)
    }

    fn steps(&mut self, subsets: &[(usize, usize)]) -> Result<Vec<f32>> {
        let subsets: Vec<QuerySubset> = subsets
            .iter()
            .map(|&(start, step)| QuerySubset::Strided { start, step })
            .collect();
        Ok(PhiTrainer::steps(self, &subsets)?)
    }

    fn release(&mut self) {
        PhiTrainer::release(self);
    }

    fn error(&mut self, seen: &BlockAttention<'_>) -> Result<f64> {
        Ok(PhiTrainer::error(self, &capture(seen))?)
    }

    fn steps_taken(&self) -> u64 {
        self.step_count()
    }

    fn weights(&self) -> Result<FeatureMapWeights> {
        Ok(PhiTrainer::weights(self)?)
    }

    /// `step` [1] and per parameter `NAME.value`, `NAME.m`, `NAME.v`.
    fn state(&self) -> Result<Vec<(String, HostTensor)>> {
        let s = PhiTrainer::state(self)?;
        let mut out = vec![(
            "step".to_string(),
            HostTensor {
                shape: vec![1],
                data: vec![s.step as f32],
            },
        )];
        for p in s.params {
            for (part, data) in [("value", p.value), ("m", p.m), ("v", p.v)] {
                out.push((
                    format!("{}.{part}", p.name),
                    HostTensor {
                        shape: p.shape.clone(),
                        data,
                    },
                ));
            }
        }
        Ok(out)
    }

    fn load_state(&mut self, state: &[(String, HostTensor)]) -> Result<()> {
        let get = |name: &str| -> Result<&HostTensor> {
            state
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, t)| t)
                .ok_or_else(|| input_err("checkpoint", format!("no tensor '{name}'")))
        };
        let current = PhiTrainer::state(self)?;
        let mut params = Vec::new();
        for p in current.params {
            let part = |s: &str| -> Result<Vec<f32>> {
                let t = get(&format!("{}.{s}", p.name))?;
                if t.shape != p.shape {
                    return Err(input_err(
                        "checkpoint",
                        format!(
                            "'{}.{s}' is {:?}, the trainer's is {:?}",
                            p.name, t.shape, p.shape
                        ),
                    ));
                }
                Ok(t.data.clone())
            };
            params.push(ParamState {
                value: part("value")?,
                m: part("m")?,
                v: part("v")?,
                name: p.name,
                shape: p.shape,
            });
        }
        let step = get("step")?.data.first().copied().unwrap_or(0.0) as u64;
        Ok(PhiTrainer::load_state(
            self,
            &TrainerState { step, params },
        )?)
    }
}
