// Linear-attention state by chunked updates (ARCHITECTURE.md, Attention modes, linear): S = sum_j phi_k(k_j) v_j^T,
// z = sum_j phi_k(k_j), over keys j in [k_lo, k_hi), leaving out j % rate == 0 when rate > 0 (every key at rate 1: hybrid at R = 1 has no linear part)
// (the softmax keys of hybrid{R}).
//   phi: [rows, H, DF] f32 (row of key j is j - phi_lo), v: [Nk, H, D] (IO_T),
//   partial: [chunks, H, DF, D + 1] f32, state: [H, DF, D + 1] f32 (column D holds z).
// Entry `partial_main`: one workgroup per (head, chunk of keys, 64 x 64 tile of S), phi^T V as a
//   tiled product through workgroup memory, 4 x 4 outputs per thread, f32 throughout.
// Entry `reduce_main`: state = (accumulate ? state : 0) + sum over chunks of partial.

struct Params {
    heads: u32,
    d: u32,
    df: u32,
    chunk: u32,
    k_lo: u32,
    k_hi: u32,
    rate: u32,
    phi_lo: u32,
    ftiles: u32,
    etiles: u32,
    nchunks: u32,
    grid_x: u32,
    accumulate: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(1) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> phi: array<f32>;
@group(0) @binding(2) var<storage, read> v: array<IO_T>;
@group(0) @binding(3) var<storage, read_write> partial: array<f32>;
@group(0) @binding(4) var<storage, read_write> state: array<f32>;

const TB: u32 = 64u;
const TK: u32 = 16u;

// Accumulators are named vectors: arrays indexed by loop counters may end in local memory.
var<workgroup> tile_a: array<vec4<f32>, 256>; // [TK][TB / 4] phi
var<workgroup> tile_b: array<vec4<f32>, 256>; // [TK][TB / 4] v

fn store4(row: u32, e0: u32, val: vec4<f32>) {
    for (var j = 0u; j < 4u; j++) {
        if (e0 + j < p.d) {
            partial[row + e0 + j] = val[j];
        }
    }
}

@compute @workgroup_size(16, 16, 1)
fn partial_main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) tid: u32,
) {
    let wid = wg.y * p.grid_x + wg.x;
    let per_head = p.nchunks * p.ftiles * p.etiles;
    if (wid >= per_head * p.heads) {
        return;
    }
    let h = wid / per_head;
    let rest = wid % per_head;
    let chunk = rest / (p.ftiles * p.etiles);
    let ft = (rest / p.etiles) % p.ftiles;
    let et = rest % p.etiles;
    let f0 = ft * TB;
    let e0 = et * TB;
    let sw = p.d + 1u;
    let j_lo = p.k_lo + chunk * p.chunk;
    let j_hi = min(j_lo + p.chunk, p.k_hi);

    // Thread (x, y) owns S rows f0 + 4y .. +3 (acc0..acc3) and columns e0 + 4x .. +3.
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    var z = vec4<f32>(0.0);
    // Each thread stages 4 consecutive columns of one key row per step.
    let load_r = tid / 16u;
    let load_c = tid % 16u;
    for (var j0 = j_lo; j0 < j_hi; j0 += TK) {
        let j = j0 + load_r;
        let keep = j < j_hi && !(p.rate > 0u && j % p.rate == 0u);
        var a = vec4<f32>(0.0);
        var b = vec4<f32>(0.0);
        if (keep) {
            for (var e = 0u; e < 4u; e++) {
                let f = f0 + 4u * load_c + e;
                if (f < p.df) {
                    a[e] = phi[((j - p.phi_lo) * p.heads + h) * p.df + f];
                }
                let dd = e0 + 4u * load_c + e;
                if (dd < p.d) {
                    b[e] = f32(v[(j * p.heads + h) * p.d + dd]);
                }
            }
        }
        tile_a[load_r * 16u + load_c] = a;
        tile_b[load_r * 16u + load_c] = b;
        workgroupBarrier();
        for (var kk = 0u; kk < TK; kk++) {
            let a4 = tile_a[kk * 16u + lid.y];
            let b4 = tile_b[kk * 16u + lid.x];
            z += a4;
            acc0 = fma(vec4<f32>(a4.x), b4, acc0);
            acc1 = fma(vec4<f32>(a4.y), b4, acc1);
            acc2 = fma(vec4<f32>(a4.z), b4, acc2);
            acc3 = fma(vec4<f32>(a4.w), b4, acc3);
        }
        workgroupBarrier();
    }
    let base = (chunk * p.heads + h) * p.df;
    let fr = f0 + 4u * lid.y;
    let ec = e0 + 4u * lid.x;
    if (fr < p.df) {
        store4((base + fr) * sw, ec, acc0);
    }
    if (fr + 1u < p.df) {
        store4((base + fr + 1u) * sw, ec, acc1);
    }
    if (fr + 2u < p.df) {
        store4((base + fr + 2u) * sw, ec, acc2);
    }
    if (fr + 3u < p.df) {
        store4((base + fr + 3u) * sw, ec, acc3);
    }
    if (et == 0u && lid.x == 0u) {
        for (var i = 0u; i < 4u; i++) {
            if (fr + i < p.df) {
                partial[(base + fr + i) * sw + p.d] = z[i];
            }
        }
    }
}

@compute @workgroup_size(256, 1, 1)
fn reduce_main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) tid: u32,
) {
    let total = p.heads * p.df * (p.d + 1u);
    let idx = (wg.y * p.grid_x + wg.x) * 256u + tid;
    if (idx >= total) {
        return;
    }
    var sum = 0.0;
    if (p.accumulate != 0u) {
        sum = state[idx];
    }
    for (var c = 0u; c < p.nchunks; c++) {
        sum += partial[c * total + idx];
    }
    state[idx] = sum;
}
