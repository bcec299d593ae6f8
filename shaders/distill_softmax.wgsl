// The constant softmax part of a distilled block (DISTILL.md, Forward): for every query i and
// head h, over its softmax keys T_S(i),
//   m_i = max s q_i.k_j,  alpha_i = sum exp(s q_i.k_j - m_i),  A_i = sum exp(s q_i.k_j - m_i) v_j,
// with the inference kernel's stabiliser m_i (the true maximum; the online rescaling below gives
// the same alpha and A up to rounding). q, k and v are frozen in stage 1, so this runs once per
// capture and mode.
//   q: [Nq, H, D], k, v: [Nk, H, D] (IO_T); soft: [Nq, H, D + 2] f32 = (A | alpha | m).
//   Key sets: KIND 0: j = t * rate (hybrid{R}); 1: the rehyat window of the query's chunk,
//   frames [max(c * tc - to, 0), (c + 1) * tc) of ft tokens; 2: none (linear: A = 0,
//   alpha = eps, the denominator's epsilon of linear attention, m = 0).
// One thread per (query, head); neighbouring threads take neighbouring queries of one head, so
// a key row read is shared. q and the accumulator live in private arrays of DP values.

struct Params {
    nq: u32,
    nk: u32,
    heads: u32,
    d: u32,
    kind: u32,
    rate: u32,
    tc: u32,
    to: u32,
    ft: u32,
    tiles: u32,
    grid_x: u32,
    _pad0: u32,
    scale: f32,
    eps: f32,
    _pad1: u32,
    _pad2: u32,
}

@group(1) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<IO_T>;
@group(0) @binding(2) var<storage, read> k: array<IO_T>;
@group(0) @binding(3) var<storage, read> v: array<IO_T>;
@group(0) @binding(4) var<storage, read_write> soft: array<f32>;

// A finite stand-in for -inf: WGSL lets implementations assume no infinities.
const NEG_BIG: f32 = -1.0e30;

@compute @workgroup_size(64, 1, 1)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) tid: u32,
) {
    let wid = wg.y * p.grid_x + wg.x;
    if (wid >= p.tiles * p.heads) {
        return;
    }
    let h = wid / p.tiles;
    let i = (wid % p.tiles) * 64u + tid;
    if (i >= p.nq) {
        return;
    }
    let hd = p.heads * p.d;
    let out = (i * p.heads + h) * (p.d + 2u);

    // The softmax keys of this query: j = lo + t * stride, t < count.
    var lo = 0u;
    var stride = 1u;
    var count = 0u;
    if (p.kind == 0u) {
        stride = max(p.rate, 1u);
        count = (p.nk + stride - 1u) / stride;
    } else if (p.kind == 1u) {
        let c = i / (p.tc * p.ft);
        lo = u32(max(i32(c * p.tc) - i32(p.to), 0)) * p.ft;
        let hi = min((c + 1u) * p.tc * p.ft, p.nk);
        count = select(0u, hi - lo, hi > lo);
    }

    var qv: array<f32, DP>;
    var acc: array<f32, DP>;
    for (var e = 0u; e < p.d; e++) {
        qv[e] = f32(q[i * hd + h * p.d + e]);
    }
    var m = NEG_BIG;
    var alpha = 0.0;
    for (var t = 0u; t < count; t++) {
        let kr = (lo + t * stride) * hd + h * p.d;
        var s = 0.0;
        for (var e = 0u; e < p.d; e++) {
            s = fma(qv[e], f32(k[kr + e]), s);
        }
        s *= p.scale;
        if (s > m) {
            // A new maximum: rescale what was summed so far.
            let r = exp(m - s);
            alpha *= r;
            for (var e = 0u; e < p.d; e++) {
                acc[e] *= r;
            }
            m = s;
        }
        let pv = exp(s - m);
        alpha += pv;
        for (var e = 0u; e < p.d; e++) {
            acc[e] = fma(pv, f32(v[kr + e]), acc[e]);
        }
    }
    if (count == 0u) {
        m = 0.0;
        alpha = p.eps;
    }
    for (var e = 0u; e < p.d; e++) {
        soft[out + e] = acc[e];
    }
    soft[out + p.d] = alpha;
    soft[out + p.d + 1u] = m;
}
