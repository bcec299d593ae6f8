// Linear-attention state by chunked updates (ATTENTION.md, linear): S = sum_j phi_k(k_j) v_j^T,
// z = sum_j phi_k(k_j), over keys j in [k_lo, k_hi), leaving out j % rate == 0 when rate > 1
// (the softmax keys of hybrid{R}).
//   phi: [rows, H, DF] f32 (row of key j is j - phi_lo), v: [Nk, H, D] (IO_T),
//   partial: [chunks, H, DF, D + 1] f32, state: [H, DF, D + 1] f32 (column D holds z).
// Entry `partial`: one workgroup per (head, chunk of keys, 64 x 64 tile of S), phi^T V as a
//   tiled product through workgroup memory, 4 x 4 outputs per thread, f32 throughout.
// Entry `reduce`: state = (accumulate ? state : 0) + sum over chunks of partial.

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

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> phi: array<f32>;
@group(0) @binding(2) var<storage, read> v: array<IO_T>;
@group(0) @binding(3) var<storage, read_write> partial: array<f32>;
@group(0) @binding(4) var<storage, read_write> state: array<f32>;

const TB: u32 = 64u;
const TK: u32 = 16u;

var<workgroup> tile_a: array<f32, 1024>; // [TK][TB] phi
var<workgroup> tile_b: array<f32, 1024>; // [TK][TB] v

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

    var acc: array<array<f32, 4>, 4>;
    var zacc: array<f32, 4>;
    // Each thread stages 4 consecutive columns of one key row per step.
    let load_r = tid / 16u;
    let load_c = (tid % 16u) * 4u;
    for (var j0 = j_lo; j0 < j_hi; j0 += TK) {
        let j = j0 + load_r;
        let keep = j < j_hi && !(p.rate > 1u && j % p.rate == 0u);
        for (var e = 0u; e < 4u; e++) {
            let f = f0 + load_c + e;
            var a = 0.0;
            if (keep && f < p.df) {
                a = phi[((j - p.phi_lo) * p.heads + h) * p.df + f];
            }
            tile_a[load_r * TB + load_c + e] = a;
            let dd = e0 + load_c + e;
            var b = 0.0;
            if (keep && dd < p.d) {
                b = f32(v[(j * p.heads + h) * p.d + dd]);
            }
            tile_b[load_r * TB + load_c + e] = b;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TK; kk++) {
            var a: array<f32, 4>;
            var b: array<f32, 4>;
            for (var i = 0u; i < 4u; i++) {
                a[i] = tile_a[kk * TB + lid.y + 16u * i];
                b[i] = tile_b[kk * TB + lid.x + 16u * i];
            }
            for (var i = 0u; i < 4u; i++) {
                zacc[i] += a[i];
                for (var jj = 0u; jj < 4u; jj++) {
                    acc[i][jj] = fma(a[i], b[jj], acc[i][jj]);
                }
            }
        }
        workgroupBarrier();
    }
    let base = (chunk * p.heads + h) * p.df;
    for (var i = 0u; i < 4u; i++) {
        let f = f0 + lid.y + 16u * i;
        if (f >= p.df) {
            continue;
        }
        let row = (base + f) * sw;
        for (var jj = 0u; jj < 4u; jj++) {
            let dd = e0 + lid.x + 16u * jj;
            if (dd < p.d) {
                partial[row + dd] = acc[i][jj];
            }
        }
        if (et == 0u && lid.x == 0u) {
            partial[row + p.d] = zacc[i];
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
