//! The tensors the decoder of a given config reads: diffusers names and shapes, and seeded
//! random weights of those names and shapes.

use super::config::VaeConfig;
use crate::weights::{Uniform, WeightSet};

/// What random VAE weights are called in errors.
pub(crate) const RANDOM_ORIGIN: &str = "random VAE weights";

/// Scaled like trained weights: RMS_norm gammas near 1, small biases, convolutions with
/// standard deviation 1/sqrt(fan_in), so that activations keep their scale through the decoder.
fn random_init(name: &str, shape: &[usize]) -> Uniform {
    if name.ends_with(".gamma") {
        Uniform::gain()
    } else if name.ends_with(".bias") {
        Uniform::centred(0.05)
    } else {
        Uniform::fan_in(shape)
    }
}

impl VaeConfig {
    /// Every tensor the decoder reads, by diffusers name, with its shape. The trailing ones of
    /// PyTorch's 1x1 kernels and gammas ([C, 1, 1, 1]) are left out: the decoder ignores them.
    /// The config must be valid ([`VaeConfig::validate`]).
    pub fn tensor_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let mut m = Manifest::default();
        let z = self.z_dim;
        let dims = self.stage_dims();
        m.conv("post_quant_conv", vec![z, z]);
        m.conv("decoder.conv_in", vec![dims[0], z, 3, 3, 3]);
        let mid = "decoder.mid_block";
        m.resnet(&format!("{mid}.resnets.0"), dims[0], dims[0]);
        m.resnet(&format!("{mid}.resnets.1"), dims[0], dims[0]);
        let attention = format!("{mid}.attentions.0");
        m.add(format!("{attention}.norm.gamma"), vec![dims[0]]);
        m.conv(&format!("{attention}.to_qkv"), vec![3 * dims[0], dims[0]]);
        m.conv(&format!("{attention}.proj"), vec![dims[0], dims[0]]);
        let last = dims.len() - 2;
        for i in 0..=last {
            // After an upsampler the width is halved (the Wan2.1 decoder).
            let cin = if i == 0 { dims[0] } else { dims[i] / 2 };
            let cout = dims[i + 1];
            let stage = format!("decoder.up_blocks.{i}");
            for j in 0..=self.num_res_blocks {
                let from = if j == 0 { cin } else { cout };
                m.resnet(&format!("{stage}.resnets.{j}"), from, cout);
            }
            if i < last {
                let up = format!("{stage}.upsamplers.0");
                if self.temporal_upsample[i] {
                    m.conv(&format!("{up}.time_conv"), vec![2 * cout, cout, 3, 1, 1]);
                }
                m.conv(&format!("{up}.resample.1"), vec![cout / 2, cout, 3, 3]);
            }
        }
        let out = dims[dims.len() - 1];
        m.add("decoder.norm_out.gamma".into(), vec![out]);
        m.conv("decoder.conv_out", vec![3, out, 3, 3, 3]);
        m.0.sort();
        m.0
    }

    /// Seeded random weights of every tensor in [`Self::tensor_shapes`], in diffusers naming;
    /// drawn tensor by tensor as they are read (benchmarks, where values do not matter).
    pub fn random_weights(&self, seed: u64) -> WeightSet {
        WeightSet::random(RANDOM_ORIGIN, seed, self.tensor_shapes(), random_init)
    }
}

/// Names and shapes, added module by module.
#[derive(Default)]
struct Manifest(Vec<(String, Vec<usize>)>);

impl Manifest {
    fn add(&mut self, name: String, shape: Vec<usize>) {
        self.0.push((name, shape));
    }

    /// A convolution's (or 1x1 convolution's) `weight` of shape `weight`, and its `bias`.
    fn conv(&mut self, name: &str, weight: Vec<usize>) {
        self.add(format!("{name}.bias"), vec![weight[0]]);
        self.add(format!("{name}.weight"), weight);
    }

    /// A residual block from `cin` to `cout` channels.
    fn resnet(&mut self, name: &str, cin: usize, cout: usize) {
        self.add(format!("{name}.norm1.gamma"), vec![cin]);
        self.conv(&format!("{name}.conv1"), vec![cout, cin, 3, 3, 3]);
        self.add(format!("{name}.norm2.gamma"), vec![cout]);
        self.conv(&format!("{name}.conv2"), vec![cout, cout, 3, 3, 3]);
        if cin != cout {
            self.conv(&format!("{name}.conv_shortcut"), vec![cout, cin]);
        }
    }
}
