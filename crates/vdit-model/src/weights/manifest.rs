//! The tensors a Wan DiT of a given config holds: canonical (diffusers) names and shapes, and
//! seeded random weights of those names and shapes.

use super::config::DitConfig;
use super::random::Uniform;
use super::set::WeightSet;

/// What random DiT weights are called in errors.
const RANDOM_ORIGIN: &str = "random DiT weights";

/// Scaled like trained weights: norm gains near 1, everything else (biases and modulation
/// tables included) with standard deviation 1/sqrt(fan_in).
fn random_init(name: &str, shape: &[usize]) -> Uniform {
    if name.contains("norm") && name.ends_with("weight") {
        Uniform::gain()
    } else {
        Uniform::fan_in(shape)
    }
}

impl DitConfig {
    /// Every weight the model reads, by canonical name, with its shape. Linear weights are
    /// [out, in] as PyTorch stores them; the patch embedding is the Conv3d's 5-D kernel.
    pub fn tensor_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let d = self.dim;
        let [pt, ph, pw] = self.patch;
        let mut shapes: Vec<(String, Vec<usize>)> = Vec::new();
        let mut linear = |name: &str, out: usize, inp: usize| {
            shapes.push((format!("{name}.weight"), vec![out, inp]));
            shapes.push((format!("{name}.bias"), vec![out]));
        };
        linear(
            "condition_embedder.time_embedder.linear_1",
            d,
            self.freq_dim,
        );
        linear("condition_embedder.time_embedder.linear_2", d, d);
        linear("condition_embedder.time_proj", 6 * d, d);
        linear(
            "condition_embedder.text_embedder.linear_1",
            d,
            self.text_dim,
        );
        linear("condition_embedder.text_embedder.linear_2", d, d);
        linear("proj_out", self.out_channels * self.patch_volume(), d);
        for block in 0..self.layers {
            let b = format!("blocks.{block}");
            for attn in ["attn1", "attn2"] {
                for proj in ["to_q", "to_k", "to_v", "to_out.0"] {
                    linear(&format!("{b}.{attn}.{proj}"), d, d);
                }
            }
            linear(&format!("{b}.ffn.net.0.proj"), self.ffn_dim, d);
            linear(&format!("{b}.ffn.net.2"), d, self.ffn_dim);
        }
        shapes.push((
            "patch_embedding.weight".into(),
            vec![d, self.in_channels, pt, ph, pw],
        ));
        shapes.push(("patch_embedding.bias".into(), vec![d]));
        shapes.push(("scale_shift_table".into(), vec![1, 2, d]));
        for block in 0..self.layers {
            let b = format!("blocks.{block}");
            shapes.push((format!("{b}.scale_shift_table"), vec![1, 6, d]));
            if self.qk_norm {
                for attn in ["attn1", "attn2"] {
                    shapes.push((format!("{b}.{attn}.norm_q.weight"), vec![d]));
                    shapes.push((format!("{b}.{attn}.norm_k.weight"), vec![d]));
                }
            }
            if self.cross_attn_norm {
                shapes.push((format!("{b}.norm2.weight"), vec![d]));
                shapes.push((format!("{b}.norm2.bias"), vec![d]));
            }
        }
        shapes.sort();
        shapes
    }

    /// Seeded random weights of every tensor in [`Self::tensor_shapes`], under their canonical
    /// names; drawn tensor by tensor as they are read (benchmarks, where values do not matter).
    pub fn random_weights(&self, seed: u64) -> WeightSet {
        WeightSet::random(RANDOM_ORIGIN, seed, self.tensor_shapes(), random_init)
    }
}
