// The parameter block and bindings of the scalar matmul kernels (matmul.wgsl, matmul_direct.wgsl):
//   X: [M, K] (X_T storage), W: [N, K] (W_T), b: [N] (B_T), gate: f32 values from gate_offset,
//   Y: [M, N] (Y_T).

struct Params {
    m: u32,
    n: u32,
    k: u32,
    gate_offset: u32,
}

@group(1) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<X_T>;
#if W_Q8
// W in Q8_0 (kernels/q8.rs): int8 values four to a word, one f32 scale per 32 values of a row.
@group(0) @binding(2) var<storage, read> w: array<u32>;
@group(0) @binding(6) var<storage, read> w_scale: array<f32>;
#else
#if W_Q4K
// W in Q4_K (kernels/q4k.rs): 4-bit values eight to a word; six words per 256 values: d and dmin
// (f32 bits), then the 6-bit scale and minimum of each 32 values, two sub-blocks to a word.
@group(0) @binding(2) var<storage, read> w: array<u32>;
@group(0) @binding(6) var<storage, read> w_scale: array<u32>;
#else
@group(0) @binding(2) var<storage, read> w: array<W_T>;
#endif
#endif
#if HAS_BIAS
@group(0) @binding(3) var<storage, read> bias: array<B_T>;
#endif
#if HAS_GATE
@group(0) @binding(4) var<storage, read> gate: array<f32>;
#endif
@group(0) @binding(5) var<storage, read_write> y: array<Y_T>;

// Element i of W ([N, K] row-major) as f32, dequantised where W is Q8_0 (K a multiple of 32, so
// word i / 4 and scale i / 32 are those of the element's row) or Q4_K (K a multiple of 256:
// super-block i / 256, sub-block i / 32).
fn w_at(i: u32) -> f32 {
#if W_Q8
    let byte = (w[i / 4u] >> (8u * (i % 4u))) & 0xffu;
    return f32(bitcast<i32>(byte << 24u) >> 24u) * w_scale[i / 32u];
#else
#if W_Q4K
    let s = (i / 256u) * 6u;
    let j = (i / 32u) % 8u;
    let pair = w_scale[s + 2u + j / 2u] >> (16u * (j % 2u));
    let scale = bitcast<f32>(w_scale[s]) * f32(pair & 63u);
    let offset = bitcast<f32>(w_scale[s + 1u]) * f32((pair >> 8u) & 63u);
    let q = (w[i / 8u] >> (4u * (i % 8u))) & 15u;
    return scale * f32(q) - offset;
#else
    return f32(w[i]);
#endif
#endif
}
