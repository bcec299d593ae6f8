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
@group(0) @binding(2) var<storage, read> w: array<W_T>;
#endif
#if HAS_BIAS
@group(0) @binding(3) var<storage, read> bias: array<B_T>;
#endif
#if HAS_GATE
@group(0) @binding(4) var<storage, read> gate: array<f32>;
#endif
@group(0) @binding(5) var<storage, read_write> y: array<Y_T>;

// Element i of W ([N, K] row-major) as f32, dequantised where W is Q8_0 (K a multiple of 32, so
// word i / 4 and scale i / 32 are those of the element's row).
fn w_at(i: u32) -> f32 {
#if W_Q8
    let byte = (w[i / 4u] >> (8u * (i % 4u))) & 0xffu;
    return f32(bitcast<i32>(byte << 24u) >> 24u) * w_scale[i / 32u];
#else
    return f32(w[i]);
#endif
}
