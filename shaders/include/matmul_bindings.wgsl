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
@group(0) @binding(2) var<storage, read> w: array<W_T>;
#if HAS_BIAS
@group(0) @binding(3) var<storage, read> bias: array<B_T>;
#endif
#if HAS_GATE
@group(0) @binding(4) var<storage, read> gate: array<f32>;
#endif
@group(0) @binding(5) var<storage, read_write> y: array<Y_T>;
