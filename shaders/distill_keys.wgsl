// The key side of the backward (DISTILL.md, Backward): dg_j = dS v_j + dz for the linear keys
// j in [k_lo, k_hi) of one segment, with (dS | dz) summed over the queries of every segment
// whose state holds key j (the suffix sum over segments, built by the launcher).
//   v: [Nk, H, D] (IO_T); dsz: [H, DF, D + 2] f32 (dS in columns 0..D, dz in column D);
//   dg: [Nk, H, DF] f32. Keys left out of the state (j % rate == 0 when rate > 1, or every key
//   when has_state == 0) get dg = 0.
// One workgroup of 64 threads per (key, head); v_j is staged in workgroup memory.

struct Params {
    heads: u32,
    d: u32,
    df: u32,
    k_lo: u32,
    k_count: u32,
    rate: u32,
    has_state: u32,
    grid_x: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> v: array<IO_T>;
@group(0) @binding(2) var<storage, read> dsz: array<f32>;
@group(0) @binding(3) var<storage, read_write> dg: array<f32>;

const NT: u32 = 64u;

var<workgroup> vs: array<f32, 512>;

@compute @workgroup_size(64, 1, 1)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) tid: u32,
) {
    let wid = wg.y * p.grid_x + wg.x;
    if (wid >= p.k_count * p.heads) {
        return;
    }
    let j = p.k_lo + wid / p.heads;
    let h = wid % p.heads;
    let keep = p.has_state != 0u && !(p.rate > 1u && j % p.rate == 0u);
    let vrow = (j * p.heads + h) * p.d;
    for (var e = tid; e < p.d; e += NT) {
        vs[e] = f32(v[vrow + e]);
    }
    workgroupBarrier();
    let sw = p.d + 2u;
    for (var f = tid; f < p.df; f += NT) {
        var g = 0.0;
        if (keep) {
            let row = (h * p.df + f) * sw;
            g = dsz[row + p.d];
            for (var e = 0u; e < p.d; e++) {
                g = fma(dsz[row + e], vs[e], g);
            }
        }
        dg[(j * p.heads + h) * p.df + f] = g;
    }
}
