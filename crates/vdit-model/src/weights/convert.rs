//! Converting stored float elements (f64, f32, f16, bf16, little-endian; GGUF's quantised
//! blocks) to f32 values or to the little-endian bytes of a GPU storage type.
//!
//! Work goes through small stack buffers a chunk at a time: no allocation besides the output,
//! and the f16 conversions use the CPU's vector instructions where `half` finds them.

use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};

use super::dtype::StoredDType;
use super::quant;

/// Elements converted per step: large enough to amortise the loop, small enough to stay in cache.
const CHUNK: usize = 4096;

/// Calls `sink` with consecutive runs of the elements of `src` as f32, in order.
/// Returns false, without calling `sink`, when `dtype` is not a readable float.
fn for_each_f32_chunk(src: &[u8], dtype: StoredDType, mut sink: impl FnMut(&[f32])) -> bool {
    let mut values = [0f32; CHUNK];
    match dtype {
        StoredDType::F32 => {
            for bytes in src.chunks(CHUNK * 4) {
                let n = bytes.len() / 4;
                for (v, b) in values[..n].iter_mut().zip(bytes.chunks_exact(4)) {
                    *v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                }
                sink(&values[..n]);
            }
        }
        StoredDType::F16 => {
            let mut halves = [f16::ZERO; CHUNK];
            for bytes in src.chunks(CHUNK * 2) {
                let n = bytes.len() / 2;
                for (h, b) in halves[..n].iter_mut().zip(bytes.chunks_exact(2)) {
                    *h = f16::from_bits(u16::from_le_bytes([b[0], b[1]]));
                }
                halves[..n].convert_to_f32_slice(&mut values[..n]);
                sink(&values[..n]);
            }
        }
        StoredDType::BF16 => {
            for bytes in src.chunks(CHUNK * 2) {
                let n = bytes.len() / 2;
                for (v, b) in values[..n].iter_mut().zip(bytes.chunks_exact(2)) {
                    *v = bf16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32();
                }
                sink(&values[..n]);
            }
        }
        StoredDType::F64 => {
            for bytes in src.chunks(CHUNK * 8) {
                let n = bytes.len() / 8;
                for (v, b) in values[..n].iter_mut().zip(bytes.chunks_exact(8)) {
                    let mut le = [0u8; 8];
                    le.copy_from_slice(b);
                    *v = f64::from_le_bytes(le) as f32;
                }
                sink(&values[..n]);
            }
        }
        StoredDType::F8E4M3 | StoredDType::F8E5M2 => {
            let expand = if dtype == StoredDType::F8E4M3 {
                f8_e4m3_to_f32
            } else {
                f8_e5m2_to_f32
            };
            for bytes in src.chunks(CHUNK) {
                for (v, &b) in values.iter_mut().zip(bytes) {
                    *v = expand(b);
                }
                sink(&values[..bytes.len()]);
            }
        }
        StoredDType::Quant(q) if q.is_readable() => {
            // CHUNK is a multiple of every block size (32, 64, 128, 256).
            let bytes_per_chunk = CHUNK / q.elements() * q.bytes();
            for bytes in src.chunks(bytes_per_chunk) {
                let n = bytes.len() / q.bytes() * q.elements();
                if !quant::dequantize_blocks(q, bytes, &mut values[..n]) {
                    return false;
                }
                sink(&values[..n]);
            }
        }
        _ => return false,
    }
    true
}

/// An OCP float8 E4M3 ("e4m3fn") value: bias 7, three mantissa bits, subnormals, no infinities,
/// NaN only for the all-ones exponent and mantissa.
fn f8_e4m3_to_f32(b: u8) -> f32 {
    let sign = if b & 0x80 != 0 { -1.0 } else { 1.0 };
    let (e, m) = ((b >> 3) & 0xF, b & 0x7);
    let magnitude = match (e, m) {
        (0xF, 0x7) => f32::NAN,
        (0, m) => m as f32 / 8.0 * 2f32.powi(-6),
        (e, m) => (1.0 + m as f32 / 8.0) * 2f32.powi(e as i32 - 7),
    };
    sign * magnitude
}

/// A float8 E5M2 value: the upper byte of an IEEE f16.
fn f8_e5m2_to_f32(b: u8) -> f32 {
    f16::from_bits((b as u16) << 8).to_f32()
}

/// Elements in `src` for a readable float dtype.
fn element_count(src: &[u8], dtype: StoredDType) -> usize {
    match dtype {
        StoredDType::Quant(q) => src.len() / q.bytes() * q.elements(),
        d => src.len() / (d.bits() / 8).max(1),
    }
}

/// The elements as f32 values; None when `dtype` is not a readable float.
pub(crate) fn to_f32_values(src: &[u8], dtype: StoredDType) -> Option<Vec<f32>> {
    let mut out = Vec::with_capacity(element_count(src, dtype));
    for_each_f32_chunk(src, dtype, |chunk| out.extend_from_slice(chunk)).then_some(out)
}

/// The elements as the little-endian bytes of a GPU storage type.
pub(crate) fn to_storage_bytes(
    src: &[u8],
    dtype: StoredDType,
    storage: vdit_wgpu::DType,
) -> Option<Vec<u8>> {
    match storage {
        vdit_wgpu::DType::F32 => to_f32_bytes(src, dtype),
        vdit_wgpu::DType::F16 => to_f16_bytes(src, dtype),
    }
}

/// The elements as little-endian f32 bytes; None when `dtype` is not a readable float.
pub(crate) fn to_f32_bytes(src: &[u8], dtype: StoredDType) -> Option<Vec<u8>> {
    let mut out = vec![0u8; element_count(src, dtype) * 4];
    let mut at = 0;
    let readable = for_each_f32_chunk(src, dtype, |chunk| {
        let dst = &mut out[at..at + chunk.len() * 4];
        for (d, v) in dst.chunks_exact_mut(4).zip(chunk) {
            d.copy_from_slice(&v.to_le_bytes());
        }
        at += chunk.len() * 4;
    });
    readable.then_some(out)
}

/// The elements rounded to nearest f16, as little-endian bytes; None when `dtype` is not a
/// readable float. Values beyond the f16 range become infinities, as a cast in PyTorch does.
pub(crate) fn to_f16_bytes(src: &[u8], dtype: StoredDType) -> Option<Vec<u8>> {
    let mut out = vec![0u8; element_count(src, dtype) * 2];
    let mut halves = [f16::ZERO; CHUNK];
    let mut at = 0;
    let readable = for_each_f32_chunk(src, dtype, |chunk| {
        let halves = &mut halves[..chunk.len()];
        halves.convert_from_f32_slice(chunk);
        let dst = &mut out[at..at + chunk.len() * 2];
        for (d, h) in dst.chunks_exact_mut(2).zip(halves.iter()) {
            d.copy_from_slice(&h.to_le_bytes());
        }
        at += chunk.len() * 2;
    });
    readable.then_some(out)
}
