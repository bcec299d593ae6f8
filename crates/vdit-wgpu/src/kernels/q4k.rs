//! Linear weights kept in GGML's Q4_K form on the GPU: 4.75 bits per parameter instead of f16's
//! 16. The matmul kernels dequantise as they load W (`W_Q4K` in `matmul_bindings.wgsl` and
//! `matmul_coop.wgsl`).
//!
//! GGML's Q4_K super-block holds 256 values of a row in 144 bytes: f16 `d` and `dmin`, twelve
//! bytes packing eight 6-bit scales `sc` and eight 6-bit minimums `mn` (one pair per 32 values),
//! and 128 bytes of 4-bit values `q`, two 32-value sub-blocks interleaved per 32 bytes (low
//! nibbles the first, high nibbles the second). Value `e` of the super-block, in sub-block
//! `j = e / 32`, is `(d * sc[j]) * q[e] - dmin * mn[j]`, computed in f32.
//!
//! GPU layout, repacked at upload so that a kernel finds everything of an element with shifts:
//! - `quants`: the 4-bit values of W in row-major order, eight to a little-endian word (element
//!   `i` of the [N, K] matrix in bits `4 (i % 8)` of word `i / 8`): [N, K/8] words;
//! - `scales`: six words per super-block (super-block `s` covers elements `256 s ..`): `d` and
//!   `dmin` widened to f32 (their bits), then four words each holding two sub-blocks (sub-block
//!   `2p` in the low half, `2p + 1` in the high half; per half, `sc` in bits 0-5 and `mn` in bits
//!   8-13): [N, K/256 * 6] words.
//!
//! Every factor is exact in f32 (`d * sc` has at most 17 significant bits, times `q` at most 21),
//! so the single rounding is the final subtraction, fused or not: the kernels' values equal
//! GGML's (and gguf-py's) bit for bit.

use half::f16;

use super::packed::{BlockFormat, PackedWeight};
use crate::error::Result;
use crate::gpu::Gpu;
use crate::tensor::{DType, Tensor};

/// Values per Q4_K super-block.
pub const Q4K_BLOCK: usize = 256;
/// Bytes of a GGML Q4_K super-block.
pub const Q4K_BLOCK_BYTES: usize = 144;
/// Values per sub-block (one 6-bit scale and minimum).
const SUB: usize = 32;
/// Words of `scales` per super-block.
const SCALE_WORDS: usize = 6;

/// GGML's Q4_K format (see the module's description).
pub struct Q4KFormat;

impl BlockFormat for Q4KFormat {
    const NAME: &'static str = "Q4KWeight";
    const BLOCK: usize = Q4K_BLOCK;
}

/// A [N, K] weight in Q4_K on the GPU: the 4-bit values eight to a word ([N, K/8] words) and
/// six scale words per super-block ([N, K/256 * 6]).
pub type Q4KWeight = PackedWeight<Q4KFormat>;

impl PackedWeight<Q4KFormat> {
    /// Uploads GGML Q4_K super-blocks of a row-major [n, k] tensor (k a multiple of 256).
    pub fn from_ggml_blocks(gpu: &Gpu, n: usize, k: usize, blocks: &[u8]) -> Result<Self> {
        Self::check_blocks(n, k, blocks.len(), Q4K_BLOCK_BYTES)?;
        let (quants, scales) = repack(blocks);
        Ok(Self::from_parts(
            Tensor::from_bytes(gpu, &[n, k / 8], DType::F32, bytemuck::cast_slice(&quants))?,
            Tensor::from_bytes(
                gpu,
                &[n, k / Q4K_BLOCK * SCALE_WORDS],
                DType::F32,
                bytemuck::cast_slice(&scales),
            )?,
            [n, k],
        ))
    }

    /// Quantises f32 values of a row-major [n, k] tensor to Q4_K (see [`quantize_q4k`]), for
    /// random benchmark weights and dense weights quantised at load.
    pub fn quantize(gpu: &Gpu, n: usize, k: usize, values: &[f32]) -> Result<Self> {
        Self::check_values(n, k, values.len())?;
        Self::from_ggml_blocks(gpu, n, k, &quantize_q4k(values))
    }
}

fn half_at(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// The eight 6-bit scales and minimums of a super-block from its twelve packed bytes: bytes 0-3
/// hold scales 0-3 in their low six bits, bytes 4-7 minimums 0-3; scales and minimums 4-7 take
/// their low four bits from the nibbles of bytes 8-11 and their top two from the top bits of
/// bytes 0-3 and 4-7.
fn unpack_scales(s: &[u8]) -> ([u8; 8], [u8; 8]) {
    let mut sc = [0u8; 8];
    let mut mn = [0u8; 8];
    for j in 0..4 {
        sc[j] = s[j] & 63;
        mn[j] = s[j + 4] & 63;
        sc[j + 4] = (s[j + 8] & 15) | ((s[j] >> 6) << 4);
        mn[j + 4] = (s[j + 8] >> 4) | ((s[j + 4] >> 6) << 4);
    }
    (sc, mn)
}

/// The inverse of [`unpack_scales`] (values below 64).
fn pack_scales(sc: &[u8; 8], mn: &[u8; 8]) -> [u8; 12] {
    let mut s = [0u8; 12];
    for j in 0..4 {
        s[j] = sc[j] | ((sc[j + 4] >> 4) << 6);
        s[j + 4] = mn[j] | ((mn[j + 4] >> 4) << 6);
        s[j + 8] = (sc[j + 4] & 15) | ((mn[j + 4] & 15) << 4);
    }
    s
}

/// The 4-bit value `e` (0..256) of a super-block's 128 bytes of values.
fn nibble(qs: &[u8], e: usize) -> u8 {
    let (j, l) = (e / SUB, e % SUB);
    (qs[(j / 2) * SUB + l] >> (4 * (j % 2))) & 15
}

/// GGML super-blocks to the GPU layout: (values eight to a word, six scale words per block).
fn repack(blocks: &[u8]) -> (Vec<u32>, Vec<u32>) {
    let count = blocks.len() / Q4K_BLOCK_BYTES;
    let mut out = vec![([0u32; Q4K_BLOCK / 8], [0u32; SCALE_WORDS]); count];
    crate::parallel::par_fill(&mut out, |first, chunk| {
        for (i, (quants, scales)) in chunk.iter_mut().enumerate() {
            let b = &blocks[(first + i) * Q4K_BLOCK_BYTES..][..Q4K_BLOCK_BYTES];
            let (sc, mn) = unpack_scales(&b[4..16]);
            scales[0] = half_at(b, 0).to_bits();
            scales[1] = half_at(b, 2).to_bits();
            for p in 0..4 {
                let half = |j: usize| sc[j] as u32 | (mn[j] as u32) << 8;
                scales[2 + p] = half(2 * p) | half(2 * p + 1) << 16;
            }
            let qs = &b[16..];
            for (w, word) in quants.iter_mut().enumerate() {
                *word = (0..8).fold(0, |acc, t| acc | (nibble(qs, 8 * w + t) as u32) << (4 * t));
            }
        }
    });
    let quants = out.iter().flat_map(|b| b.0).collect();
    let scales = out.iter().flat_map(|b| b.1).collect();
    (quants, scales)
}

/// The values GGML Q4_K super-blocks stand for (the CPU reference's W): GGML's dequantisation,
/// in f32 as GGML computes it.
pub fn dequantize_q4k(blocks: &[u8]) -> Vec<f32> {
    let mut out = Vec::with_capacity(blocks.len() / Q4K_BLOCK_BYTES * Q4K_BLOCK);
    for b in blocks.chunks_exact(Q4K_BLOCK_BYTES) {
        let (d, dmin) = (half_at(b, 0), half_at(b, 2));
        let (sc, mn) = unpack_scales(&b[4..16]);
        for e in 0..Q4K_BLOCK {
            let j = e / SUB;
            let scale = d * sc[j] as f32;
            let offset = dmin * mn[j] as f32;
            out.push(scale * nibble(&b[16..], e) as f32 - offset);
        }
    }
    out
}

/// Quantises f32 values (a whole number of 256-value super-blocks, in order) to GGML Q4_K
/// blocks. Each 32-value sub-block spans its range [min(0, lo), hi] in 15 steps; the super-block
/// scales `d` and `dmin` (f16) are the largest sub-block step and offset over 63, and the 6-bit
/// scales and minimums round the sub-blocks' own to multiples of them. Simpler than llama.cpp's
/// search for the best scales (7.6% RMS error on normal values), and a valid Q4_K block all the
/// same: [`dequantize_q4k`] gives the values it stands for.
pub fn quantize_q4k(values: &[f32]) -> Vec<u8> {
    let mut blocks = vec![[0u8; Q4K_BLOCK_BYTES]; values.len() / Q4K_BLOCK];
    crate::parallel::par_fill(&mut blocks, |first, chunk| {
        for (i, block) in chunk.iter_mut().enumerate() {
            let x = &values[(first + i) * Q4K_BLOCK..][..Q4K_BLOCK];
            *block = quantize_block(x);
        }
    });
    blocks.concat()
}

/// An f32 rounded to f16 within its finite range, and the f32 it stands for.
fn to_half(v: f32) -> (f16, f32) {
    let h = f16::from_f32(v.min(f16::MAX.to_f32()));
    (h, h.to_f32())
}

/// The step and offset (both at least 0) of one sub-block: its range [min(0, lo), hi] in 15
/// steps.
fn fit_sub_block(x: &[f32]) -> (f32, f32) {
    let lo = x.iter().fold(0f32, |m, &v| m.min(v));
    let hi = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    ((hi - lo).max(0.0) / 15.0, -lo)
}

fn quantize_block(x: &[f32]) -> [u8; Q4K_BLOCK_BYTES] {
    // Each sub-block's step and offset: values are step * q - offset, q in 0..=15.
    let mut step = [0f32; 8];
    let mut offset = [0f32; 8];
    for j in 0..8 {
        (step[j], offset[j]) = fit_sub_block(&x[j * SUB..][..SUB]);
    }
    let (d_half, d) = to_half(step.iter().fold(0f32, |m, &v| m.max(v)) / 63.0);
    let (dmin_half, dmin) = to_half(offset.iter().fold(0f32, |m, &v| m.max(v)) / 63.0);
    let six_bits = |v: f32, unit: f32| {
        if unit > 0.0 {
            (v / unit).round().clamp(0.0, 63.0) as u8
        } else {
            0
        }
    };
    let sc: [u8; 8] = std::array::from_fn(|j| six_bits(step[j], d));
    let mn: [u8; 8] = std::array::from_fn(|j| six_bits(offset[j], dmin));
    let mut block = [0u8; Q4K_BLOCK_BYTES];
    block[0..2].copy_from_slice(&d_half.to_le_bytes());
    block[2..4].copy_from_slice(&dmin_half.to_le_bytes());
    block[4..16].copy_from_slice(&pack_scales(&sc, &mn));
    for (e, &v) in x.iter().enumerate() {
        let j = e / SUB;
        // The sub-block's step and offset as the block stores them.
        let scale = d * sc[j] as f32;
        let off = dmin * mn[j] as f32;
        let q = if scale > 0.0 {
            ((v + off) / scale).round().clamp(0.0, 15.0) as u8
        } else {
            0
        };
        block[16 + (j / 2) * SUB + e % SUB] |= q << (4 * (j % 2));
    }
    block
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::matmul::{
        coop_fits, matmul_reference, matmul_weight, Epilogue, ReferenceEpilogue, WeightRef,
    };
    use crate::policy::{CoopTiles, KernelPolicy, MatmulKernel};
    use crate::recorder::Recorder;
    use crate::rng::Rng;
    use crate::testing::{assert_close, rel_l2, round_f16, test_gpu};

    /// Random GGML Q4_K blocks: random bytes, with random finite f16 `d` and `dmin` (every
    /// exponent but the all-ones one: subnormals, zero and negative scales included).
    fn random_blocks(rng: &mut Rng, count: usize) -> Vec<u8> {
        let mut blocks = Vec::with_capacity(count * Q4K_BLOCK_BYTES);
        for _ in 0..count {
            let start = blocks.len();
            for _ in 0..Q4K_BLOCK_BYTES / 4 {
                blocks.extend((rng.next_u64() as u32).to_le_bytes());
            }
            for at in [0, 2] {
                let mut bits = u16::from_le_bytes([blocks[start + at], blocks[start + at + 1]]);
                if (bits >> 10) & 31 == 31 {
                    bits &= 0xBFFF;
                }
                blocks[start + at..start + at + 2].copy_from_slice(&bits.to_le_bytes());
            }
        }
        blocks
    }

    #[test]
    fn scales_pack_and_unpack() {
        let mut rng = Rng::new(3);
        for _ in 0..100 {
            let sc: [u8; 8] = std::array::from_fn(|_| (rng.next_u64() % 64) as u8);
            let mn: [u8; 8] = std::array::from_fn(|_| (rng.next_u64() % 64) as u8);
            assert_eq!(unpack_scales(&pack_scales(&sc, &mn)), (sc, mn));
        }
        // GGML's layout, written out: scale 5 is the low nibble of byte 9 under the top two
        // bits of byte 1; minimum 6 the high nibble of byte 10 under those of byte 6.
        let mut s = [0u8; 12];
        s[9] = 0x0A;
        s[1] = 0xC0;
        s[10] = 0x50;
        s[6] = 0x80;
        let (sc, mn) = unpack_scales(&s);
        assert_eq!((sc[5], mn[6], sc[1], mn[2]), (0x3A, 0x25, 0, 0));
    }

    #[test]
    fn quantisation_gives_valid_close_blocks() {
        let mut rng = Rng::new(7);
        let mut x = rng.vec_normal(4 * Q4K_BLOCK, 0.05);
        // A sub-block of zeros, one all positive, one all negative, a large value.
        x[32..64].fill(0.0);
        x[64..96].iter_mut().for_each(|v| *v = v.abs() + 0.01);
        x[96..128].iter_mut().for_each(|v| *v = -v.abs() - 0.01);
        x[300] = 1.5;
        let blocks = quantize_q4k(&x);
        assert_eq!(blocks.len(), 4 * Q4K_BLOCK_BYTES);
        let back = dequantize_q4k(&blocks);
        assert!(
            back[32..64].iter().all(|&v| v == 0.0),
            "{:?}",
            &back[32..64]
        );
        // Within about half a step of 1/15 of each sub-block's range, plus the 6-bit rounding of
        // the scales.
        for (j, (sub, got)) in x.chunks(SUB).zip(back.chunks(SUB)).enumerate() {
            let lo = sub.iter().fold(0f32, |m, &v| m.min(v));
            let hi = sub.iter().fold(0f32, |m, &v| m.max(v));
            for (a, b) in sub.iter().zip(got) {
                assert!(
                    (a - b).abs() <= (hi - lo) / 15.0 + 0.02 * (hi - lo).max(0.01),
                    "sub-block {j}: {a} -> {b}"
                );
            }
        }
        let err = rel_l2(&back, &x.iter().map(|&v| v as f64).collect::<Vec<_>>());
        assert!(err < 0.12, "relative error {err}");
        // The last two super-blocks hold normal values only.
        let normal: Vec<f64> = x[512..].iter().map(|&v| v as f64).collect();
        let err = rel_l2(&back[512..], &normal);
        assert!(err < 0.08, "relative error {err} on normal values");
        // All zeros: zero scales, zero values.
        let zeros = quantize_q4k(&[0.0; Q4K_BLOCK]);
        assert!(dequantize_q4k(&zeros).iter().all(|&v| v == 0.0));
    }

    #[test]
    fn ggml_blocks_of_the_wrong_size_or_shape_are_refused() {
        let gpu = test_gpu();
        let b = Q4K_BLOCK_BYTES;
        assert!(Q4KWeight::from_ggml_blocks(gpu, 2, 384, &vec![0; 3 * b]).is_err());
        assert!(Q4KWeight::from_ggml_blocks(gpu, 2, 256, &vec![0; b]).is_err());
        assert!(Q4KWeight::quantize(gpu, 2, 256, &[0.0; 256]).is_err());
        let w = Q4KWeight::from_ggml_blocks(gpu, 2, 256, &vec![0; 2 * b]).unwrap();
        // 4.75 bits per value.
        assert_eq!(w.bytes(), 2 * 256 * 19 / 32);
    }

    /// The kernels of `matmul` the adapter runs for these operands.
    fn kernels(x: &Tensor, w: &Q4KWeight, k: usize) -> Vec<MatmulKernel> {
        let gpu = test_gpu();
        let mut v = vec![MatmulKernel::Portable, MatmulKernel::Direct];
        // The tuned tiles and the scalar 256-row ones: both load paths of W.
        let scalar_256 = CoopTiles {
            wide_k: false,
            vec_tiles: false,
            wide_tile: true,
        };
        for tiles in [CoopTiles::TUNED, scalar_256] {
            if coop_fits(gpu, tiles, x, WeightRef::Q4K(w), k) {
                v.push(MatmulKernel::Cooperative(tiles));
            }
        }
        v
    }

    #[test]
    fn q4k_upload_dequantises_random_blocks_as_ggml() {
        // X = I: Y = W^T holds every dequantised value, each a sum of one product by 1 and
        // zeros, so exact; they must equal the CPU's bit for bit (or both be zeros).
        let gpu = test_gpu();
        let mut rng = Rng::new(21);
        for (n, k) in [(3, 256), (5, 512)] {
            let blocks = random_blocks(&mut rng, n * k / Q4K_BLOCK);
            let want = dequantize_q4k(&blocks);
            assert!(want.iter().all(|v| v.is_finite()));
            let eye: Vec<f32> = (0..k * k)
                .map(|i| if i / k == i % k { 1.0 } else { 0.0 })
                .collect();
            let x = Tensor::from_f32(gpu, &[k, k], &eye, DType::F32).unwrap();
            let w = Q4KWeight::from_ggml_blocks(gpu, n, k, &blocks).unwrap();
            for kernel in [MatmulKernel::Portable, MatmulKernel::Direct] {
                let y = Tensor::empty(gpu, &[k, n], DType::F32).unwrap();
                y.poison(gpu);
                let mut rec = Recorder::new(gpu);
                rec.set_policy(KernelPolicy {
                    matmul: kernel,
                    ..Default::default()
                });
                matmul_weight(&mut rec, &x, WeightRef::Q4K(&w), None, &y, Epilogue::None).unwrap();
                rec.run().unwrap();
                let got = y.to_vec_f32(gpu).unwrap();
                for c in 0..n {
                    for i in 0..k {
                        let (g, e) = (got[i * n + c], want[c * k + i]);
                        assert!(
                            g.to_bits() == e.to_bits() || (g == 0.0 && e == 0.0),
                            "{kernel:?} [{n}, {k}]: W[{c}, {i}] is {g}, GGML gives {e}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn q4k_matmuls_match_the_reference_on_the_dequantised_weights() {
        let gpu = test_gpu();
        let mut rng = Rng::new(9);
        for (m, n, k, xt) in [
            (7, 5, 256, DType::F32),
            (70, 67, 512, DType::F32),
            (131, 129, 768, DType::F32),
            (3, 129, 256, DType::F16),
            (133, 131, 512, DType::F16),
        ] {
            if xt == DType::F16 && !gpu.caps.shader_f16 {
                continue;
            }
            let mut x = rng.vec_normal(m * k, 1.0);
            if xt == DType::F16 {
                x = round_f16(&x);
            }
            let blocks = quantize_q4k(&rng.vec_normal(n * k, 1.0 / (k as f32).sqrt()));
            let w = dequantize_q4k(&blocks);
            let mut b = rng.vec_normal(n, 0.5);
            if xt == DType::F16 {
                b = round_f16(&b);
            }
            let r = rng.vec_normal(2 * n, 1.0);
            let residual = rng.vec_normal(m * n, 1.0);
            let xt_ = Tensor::from_f32(gpu, &[m, k], &x, xt).unwrap();
            let bt = Tensor::from_f32(gpu, &[n], &b, xt).unwrap();
            let gate = Tensor::from_f32(gpu, &[2, n], &r, DType::F32).unwrap();
            let q4k = Q4KWeight::from_ggml_blocks(gpu, n, k, &blocks).unwrap();
            for kernel in kernels(&xt_, &q4k, k) {
                for gated in [false, true] {
                    let (epi, reference) = if gated {
                        (
                            Epilogue::ResidualGate(crate::kernels::Row::of(&gate, 1)),
                            ReferenceEpilogue::ResidualGate {
                                residual: &residual,
                                gate: &r[n..],
                            },
                        )
                    } else {
                        (Epilogue::GeluTanh, ReferenceEpilogue::GeluTanh)
                    };
                    let want = matmul_reference(&x, &w, Some(&b), (m, n, k), reference);
                    let yt = if gated {
                        Tensor::from_f32(gpu, &[m, n], &residual, DType::F32).unwrap()
                    } else {
                        let y = Tensor::empty(gpu, &[m, n], DType::F32).unwrap();
                        y.poison(gpu);
                        y
                    };
                    let mut rec = Recorder::new(gpu);
                    rec.set_policy(KernelPolicy {
                        matmul: kernel,
                        ..Default::default()
                    });
                    matmul_weight(&mut rec, &xt_, WeightRef::Q4K(&q4k), Some(&bt), &yt, epi)
                        .unwrap();
                    rec.run().unwrap();
                    let got = yt.to_vec_f32(gpu).unwrap();
                    // f16 operands of the cooperative kernel round W to f16 as well.
                    let tol = if matches!(kernel, MatmulKernel::Cooperative(_)) {
                        2e-3
                    } else {
                        1e-5
                    };
                    assert_close(
                        &format!("q4_k {kernel:?} {m}x{n}x{k} {xt} gated:{gated}"),
                        9,
                        &got,
                        &want,
                        tol,
                    );
                }
            }
        }
    }
}
