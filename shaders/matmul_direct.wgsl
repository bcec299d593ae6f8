// Y = X W^T + b with a fused epilogue: the contract of matmul.wgsl (same bindings, storage types
// and epilogues) without workgroup memory or barriers, for CPU adapters (lavapipe, SwiftShader),
// which run a workgroup's invocations as SIMD lanes of one thread and pay for every barrier by
// saving and restoring each lane's state. Each invocation computes a 4 x 4 block of Y straight
// from the storage buffers; neighbouring invocations take neighbouring column blocks of the same
// rows, so their X reads are the same addresses.

#include matmul_bindings

#include matmul_epilogue

const WG: u32 = 64u;

@compute @workgroup_size(WG, 1, 1)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) tid: u32,
) {
    // The grid is folded: invocation index across rows of workgroups.
    let idx = (wg.y * groups.x + wg.x) * WG + tid;
    let col_blocks = (p.n + 3u) / 4u;
    let r0 = (idx / col_blocks) * 4u;
    let c0 = (idx % col_blocks) * 4u;
    if (r0 >= p.m) {
        return;
    }
    // Rows and columns past the matrix read its last one (their outputs are not stored).
    let xr0 = r0 * p.k;
    let xr1 = min(r0 + 1u, p.m - 1u) * p.k;
    let xr2 = min(r0 + 2u, p.m - 1u) * p.k;
    let xr3 = min(r0 + 3u, p.m - 1u) * p.k;
    let wr0 = min(c0, p.n - 1u) * p.k;
    let wr1 = min(c0 + 1u, p.n - 1u) * p.k;
    let wr2 = min(c0 + 2u, p.n - 1u) * p.k;
    let wr3 = min(c0 + 3u, p.n - 1u) * p.k;
    // Row i of the block is acc_i; column j is lane j (named vectors, not an array).
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var kk = 0u; kk < p.k; kk++) {
        let b = vec4<f32>(w_at(wr0 + kk), w_at(wr1 + kk), w_at(wr2 + kk), w_at(wr3 + kk));
        acc0 = fma(vec4<f32>(f32(x[xr0 + kk])), b, acc0);
        acc1 = fma(vec4<f32>(f32(x[xr1 + kk])), b, acc1);
        acc2 = fma(vec4<f32>(f32(x[xr2 + kk])), b, acc2);
        acc3 = fma(vec4<f32>(f32(x[xr3 + kk])), b, acc3);
    }
    store_block_row(r0, c0, acc0);
    store_block_row(r0 + 1u, c0, acc1);
    store_block_row(r0 + 2u, c0, acc2);
    store_block_row(r0 + 3u, c0, acc3);
}

fn store_block_row(r: u32, c0: u32, acc: vec4<f32>) {
    store_output(r, c0, acc.x);
    store_output(r, c0 + 1u, acc.y);
    store_output(r, c0 + 2u, acc.z);
    store_output(r, c0 + 3u, acc.w);
}
