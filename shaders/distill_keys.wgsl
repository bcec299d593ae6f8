// The key side of the backward (DISTILL.md, Backward): dg_j = dS v_j + dz for the linear keys
// j in [k_lo, k_lo + k_count) of one segment, with (dS | dz) summed over the queries of every
// segment whose state holds key j (the suffix sum over segments, built by the launcher).
//   v: [Nk, H, D] (IO_T); dsz: [H, DF, D + 2] f32 (dS in columns 0..D, dz in column D);
//   dg: [Nk, H, DF] f32. Keys left out of the state (j % rate == 0 when rate > 0, or every key
//   when has_state == 0) get dg = 0.
// A tiled product V dS^T: one workgroup per (head, 64 keys, 64 features), 16 head-dim values
// of V and dS staged per step, 4 x 4 outputs per thread, f32 throughout.

struct Params {
    heads: u32,
    d: u32,
    df: u32,
    k_lo: u32,
    k_count: u32,
    rate: u32,
    has_state: u32,
    grid_x: u32,
    ktiles: u32,
    ftiles: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(1) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> v: array<IO_T>;
@group(0) @binding(2) var<storage, read> dsz: array<f32>;
@group(0) @binding(3) var<storage, read_write> dg: array<f32>;

const TB: u32 = 64u;
const TE: u32 = 16u;

// Accumulators are named vectors: arrays indexed by loop counters may end in local memory.
var<workgroup> tile_v: array<vec4<f32>, 256>; // [TE][TB / 4] v, keys along the vector
var<workgroup> tile_s: array<vec4<f32>, 256>; // [TE][TB / 4] dS^T, features along the vector

fn store4(j: u32, h: u32, f0: u32, val: vec4<f32>) {
    let keep = p.has_state != 0u && !(p.rate > 0u && j % p.rate == 0u);
    let row = (j * p.heads + h) * p.df;
    for (var c = 0u; c < 4u; c++) {
        if (f0 + c < p.df) {
            dg[row + f0 + c] = select(0.0, val[c], keep);
        }
    }
}

@compute @workgroup_size(16, 16, 1)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) tid: u32,
) {
    let wid = wg.y * p.grid_x + wg.x;
    let per_head = p.ktiles * p.ftiles;
    if (wid >= per_head * p.heads) {
        return;
    }
    let h = wid / per_head;
    let kt = (wid % per_head) / p.ftiles;
    let ft = wid % p.ftiles;
    let j0 = p.k_lo + kt * TB;
    let f0 = ft * TB;
    let k_hi = p.k_lo + p.k_count;
    let sw = p.d + 2u;

    // Thread (x, y) owns keys j0 + 4y .. +3 (acc0..acc3) and features f0 + 4x .. +3.
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    // Each thread stages 4 keys (or 4 features) of one head-dim row per step.
    let load_r = tid / 16u;
    let load_c = tid % 16u;
    if (p.has_state != 0u) {
        for (var e0 = 0u; e0 < p.d; e0 += TE) {
            let e = e0 + load_r;
            var a = vec4<f32>(0.0);
            var b = vec4<f32>(0.0);
            if (e < p.d) {
                for (var c = 0u; c < 4u; c++) {
                    let j = j0 + 4u * load_c + c;
                    if (j < k_hi) {
                        a[c] = f32(v[(j * p.heads + h) * p.d + e]);
                    }
                    let f = f0 + 4u * load_c + c;
                    if (f < p.df) {
                        b[c] = dsz[(h * p.df + f) * sw + e];
                    }
                }
            }
            tile_v[load_r * 16u + load_c] = a;
            tile_s[load_r * 16u + load_c] = b;
            workgroupBarrier();
            for (var ee = 0u; ee < TE; ee++) {
                let a4 = tile_v[ee * 16u + lid.y];
                let b4 = tile_s[ee * 16u + lid.x];
                acc0 = fma(vec4<f32>(a4.x), b4, acc0);
                acc1 = fma(vec4<f32>(a4.y), b4, acc1);
                acc2 = fma(vec4<f32>(a4.z), b4, acc2);
                acc3 = fma(vec4<f32>(a4.w), b4, acc3);
            }
            workgroupBarrier();
        }
    }
    // + dz
    let fc = f0 + 4u * lid.x;
    var dz = vec4<f32>(0.0);
    if (p.has_state != 0u) {
        for (var c = 0u; c < 4u; c++) {
            if (fc + c < p.df) {
                dz[c] = dsz[(h * p.df + fc + c) * sw + p.d];
            }
        }
    }
    let jr = j0 + 4u * lid.y;
    if (jr < k_hi) {
        store4(jr, h, fc, acc0 + dz);
    }
    if (jr + 1u < k_hi) {
        store4(jr + 1u, h, fc, acc1 + dz);
    }
    if (jr + 2u < k_hi) {
        store4(jr + 2u, h, fc, acc2 + dz);
    }
    if (jr + 3u < k_hi) {
        store4(jr + 3u, h, fc, acc3 + dz);
    }
}
