//! Linear weights kept in GGML's Q8_0 form on the GPU: each run of 32 values along a row shares
//! one scale and the values are int8, so a weight takes 1.125 bytes per parameter instead of
//! f16's 2. The matmul kernels dequantise as they load W (`W_Q8` in `matmul_bindings.wgsl` and
//! `matmul_coop.wgsl`).
//!
//! GPU layout: the int8 values of row r, in order, packed four to a little-endian 32-bit word
//! ([N, K/4] words), and the scales as f32 ([N, K/32]). GGML stores a block as an f16 scale then
//! 32 int8; the scale is widened exactly, so the dequantised values are GGML's.

use half::f16;

use super::packed::{BlockFormat, PackedWeight};
use crate::error::Result;
use crate::gpu::Gpu;
use crate::tensor::{DType, Tensor};

/// Values per Q8_0 block.
pub const Q8_BLOCK: usize = 32;
/// Bytes of a GGML Q8_0 block: an f16 scale and 32 int8.
pub const Q8_BLOCK_BYTES: usize = 2 + Q8_BLOCK;

/// GGML's Q8_0 format (see the module's description).
pub struct Q8Format;

impl BlockFormat for Q8Format {
    const NAME: &'static str = "Q8Weight";
    const BLOCK: usize = Q8_BLOCK;
}

/// A [N, K] weight in Q8_0 on the GPU: int8 values four to a word ([N, K/4] words) and one f32
/// scale per 32 values ([N, K/32]).
pub type Q8Weight = PackedWeight<Q8Format>;

impl PackedWeight<Q8Format> {
    /// Uploads GGML Q8_0 blocks of a row-major [n, k] tensor (k a multiple of 32).
    pub fn from_ggml_blocks(gpu: &Gpu, n: usize, k: usize, blocks: &[u8]) -> Result<Self> {
        Self::check_blocks(n, k, blocks.len(), Q8_BLOCK_BYTES)?;
        let mut quants = Vec::with_capacity(n * k);
        let mut scales = Vec::with_capacity(n * k / Q8_BLOCK);
        for block in blocks.chunks_exact(Q8_BLOCK_BYTES) {
            scales.push(f16::from_le_bytes([block[0], block[1]]).to_f32());
            quants.extend_from_slice(&block[2..]);
        }
        Self::upload(gpu, n, k, &quants, &scales)
    }

    /// Quantises f32 values of a row-major [n, k] tensor as GGML does (scale = max |x| / 127
    /// rounded to f16, values rounded to nearest), for random benchmark weights and tests.
    pub fn quantize(gpu: &Gpu, n: usize, k: usize, values: &[f32]) -> Result<Self> {
        Self::check_values(n, k, values.len())?;
        let (quants, scales) = quantize_q8(values);
        Self::upload(gpu, n, k, &quants, &scales)
    }

    fn upload(gpu: &Gpu, n: usize, k: usize, quants: &[u8], scales: &[f32]) -> Result<Self> {
        Ok(Self::from_parts(
            Tensor::from_bytes(gpu, &[n, k / 4], DType::F32, quants)?,
            Tensor::from_f32(gpu, &[n, k / Q8_BLOCK], scales, DType::F32)?,
            [n, k],
        ))
    }
}

/// GGML's Q8_0 quantisation of whole blocks: the int8 values and one scale per 32.
pub fn quantize_q8(values: &[f32]) -> (Vec<u8>, Vec<f32>) {
    let mut blocks = vec![(0.0f32, [0u8; Q8_BLOCK]); values.len() / Q8_BLOCK];
    crate::parallel::par_fill(&mut blocks, |first, chunk| {
        for (j, (scale, quants)) in chunk.iter_mut().enumerate() {
            let block = &values[(first + j) * Q8_BLOCK..][..Q8_BLOCK];
            let amax = block.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let d = amax / 127.0;
            let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
            for (q, v) in quants.iter_mut().zip(block) {
                *q = (v * inv).round() as i8 as u8;
            }
            *scale = f16::from_f32(d).to_f32();
        }
    });
    let scales = blocks.iter().map(|b| b.0).collect();
    let quants = blocks.iter().flat_map(|b| b.1).collect();
    (quants, scales)
}

/// The values a Q8_0 weight stands for (the CPU reference's W).
pub fn dequantize_q8(quants: &[u8], scales: &[f32]) -> Vec<f32> {
    quants
        .iter()
        .enumerate()
        .map(|(i, &q)| q as i8 as f32 * scales[i / Q8_BLOCK])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::matmul::{matmul_reference, matmul_weight, Epilogue, ReferenceEpilogue};
    use crate::policy::{KernelPolicy, MatmulKernel};
    use crate::recorder::Recorder;
    use crate::rng::Rng;
    use crate::testing::{rel_l2, test_gpu};

    #[test]
    fn quantisation_follows_ggml() {
        // A block whose largest magnitude is 2.54: d = 0.02, values round to nearest.
        let mut block = vec![0.0f32; 32];
        block[0] = 2.54;
        block[1] = -1.0;
        block[2] = 0.011;
        let (q, s) = quantize_q8(&block);
        assert_eq!(s, vec![f16::from_f32(0.02).to_f32()]);
        assert_eq!(q[0] as i8, 127);
        assert_eq!(q[1] as i8, -50);
        assert_eq!(q[2] as i8, 1);
        let back = dequantize_q8(&q, &s);
        assert!((back[1] + 1.0).abs() < 1e-3, "{}", back[1]);
        // An all-zero block has scale 0 and zero values.
        let (q, s) = quantize_q8(&[0.0; 32]);
        assert!(q.iter().all(|&v| v == 0) && s == vec![0.0]);
    }

    #[test]
    fn ggml_blocks_of_the_wrong_size_or_shape_are_refused() {
        let gpu = test_gpu();
        assert!(Q8Weight::from_ggml_blocks(gpu, 2, 48, &[0; 2 * 34]).is_err());
        assert!(Q8Weight::from_ggml_blocks(gpu, 2, 32, &[0; 34]).is_err());
        assert!(Q8Weight::from_ggml_blocks(gpu, 2, 32, &[0; 2 * 34]).is_ok());
    }

    #[test]
    fn q8_matmuls_match_the_reference_on_the_dequantised_weights() {
        let gpu = test_gpu();
        let mut rng = Rng::new(5);
        for (kernel, label) in [
            (MatmulKernel::Portable, ""),
            (MatmulKernel::Direct, " direct"),
        ] {
            for (m, n, k) in [(7, 5, 32), (70, 67, 96), (3, 129, 160)] {
                let x = rng.vec_normal(m * k, 1.0);
                let w = rng.vec_normal(n * k, 0.2);
                let b = rng.vec_normal(n, 0.5);
                let (quants, scales) = quantize_q8(&w);
                let mut blocks = Vec::new();
                for (s, q) in scales.iter().zip(quants.chunks_exact(Q8_BLOCK)) {
                    blocks.extend(f16::from_f32(*s).to_le_bytes());
                    blocks.extend(q);
                }
                let want = matmul_reference(
                    &x,
                    &dequantize_q8(&quants, &scales),
                    Some(&b),
                    (m, n, k),
                    ReferenceEpilogue::GeluTanh,
                );
                let xt = Tensor::from_f32(gpu, &[m, k], &x, DType::F32).unwrap();
                let bt = Tensor::from_f32(gpu, &[n], &b, DType::F32).unwrap();
                let yt = Tensor::empty(gpu, &[m, n], DType::F32).unwrap();
                yt.poison(gpu);
                let q8 = Q8Weight::from_ggml_blocks(gpu, n, k, &blocks).unwrap();
                let mut rec = Recorder::new(gpu);
                rec.set_policy(KernelPolicy {
                    matmul: kernel,
                    ..Default::default()
                });
                let w = crate::kernels::matmul::WeightRef::Q8(&q8);
                matmul_weight(&mut rec, &xt, w, Some(&bt), &yt, Epilogue::GeluTanh).unwrap();
                rec.run().unwrap();
                let got = yt.to_vec_f32(gpu).unwrap();
                let err = rel_l2(&got, &want);
                assert!(err < 1e-5, "{kernel:?}{label} {m}x{n}x{k}: rel err {err}");
            }
        }
    }
}
