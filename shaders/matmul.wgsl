// Y = X W^T + b with a fused epilogue, the Linear layer of PyTorch.
//   X: [M, K] (X_T storage), W: [N, K] as PyTorch stores Linear weights (W_T), b: [N],
//   Y: [M, N] (Y_T). Accumulation in f32 whatever the storage.
// Epilogues: EPI_GELU (GELU tanh), EPI_SILU, HAS_RESIDUAL (Y = Y + (X W^T + b), in place) and
// HAS_GATE with it (Y = Y + gate * (X W^T + b); gate: N f32 values from element gate_offset).
// Portable tiling: a 64 x 64 output tile per workgroup of 16 x 16 threads, 4 x 4 outputs per thread,
// K in steps of 16 through workgroup memory.

#include matmul_bindings

const BM: u32 = 64u;
const BN: u32 = 64u;
const BK: u32 = 16u;

var<workgroup> tile_x: array<f32, 1024>; // [BK][BM]
var<workgroup> tile_w: array<f32, 1024>; // [BK][BN]

#include matmul_epilogue

@compute @workgroup_size(16, 16, 1)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) tid: u32,
) {
    let row0 = wg.y * BM;
    let col0 = wg.x * BN;
    // Accumulators as named vectors, not arrays: some drivers put loop-indexed private arrays
    // in slow local memory. Row i of this thread's 4 x 4 block is acc_i; column j is lane j.
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    // Each thread stages 4 consecutive k of one row of X and one row of W per K step.
    let load_r = tid / 4u;
    let load_k = (tid % 4u) * 4u;
    for (var k0 = 0u; k0 < p.k; k0 += BK) {
        for (var e = 0u; e < 4u; e++) {
            let kk = k0 + load_k + e;
            let xr = row0 + load_r;
            var xv = 0.0;
            if (xr < p.m && kk < p.k) {
                xv = f32(x[xr * p.k + kk]);
            }
            tile_x[(load_k + e) * BM + load_r] = xv;
            let wr = col0 + load_r;
            var wv = 0.0;
            if (wr < p.n && kk < p.k) {
                wv = w_at(wr * p.k + kk);
            }
            tile_w[(load_k + e) * BN + load_r] = wv;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk++) {
            let xo = kk * BM + lid.y;
            let wo = kk * BN + lid.x;
            let a = vec4<f32>(tile_x[xo], tile_x[xo + 16u], tile_x[xo + 32u], tile_x[xo + 48u]);
            let b = vec4<f32>(tile_w[wo], tile_w[wo + 16u], tile_w[wo + 32u], tile_w[wo + 48u]);
            acc0 = fma(vec4<f32>(a.x), b, acc0);
            acc1 = fma(vec4<f32>(a.y), b, acc1);
            acc2 = fma(vec4<f32>(a.z), b, acc2);
            acc3 = fma(vec4<f32>(a.w), b, acc3);
        }
        workgroupBarrier();
    }
    store_row(row0 + lid.y, col0 + lid.x, acc0);
    store_row(row0 + lid.y + 16u, col0 + lid.x, acc1);
    store_row(row0 + lid.y + 32u, col0 + lid.x, acc2);
    store_row(row0 + lid.y + 48u, col0 + lid.x, acc3);
}

// Finishes the 4 outputs of one row owned by a thread (columns c0, c0+16, c0+32, c0+48).
fn store_row(r: u32, c0: u32, acc: vec4<f32>) {
    store_output(r, c0, acc.x);
    store_output(r, c0 + 16u, acc.y);
    store_output(r, c0 + 32u, acc.z);
    store_output(r, c0 + 48u, acc.w);
}
