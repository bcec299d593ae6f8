// The constant softmax part of a distilled block, flash-style tiles (head dims up to 128; the
// same quantities as distill_softmax.wgsl, which serves wider heads):
//   m_i = max s q_i.k_j,  alpha_i = sum exp(s q_i.k_j - m_i),  A_i = sum exp(s q_i.k_j - m_i) v_j
// over the softmax keys of each query: KIND 0: j = t * rate; 1: the rehyat window of the query's
// chunk (the rows of one workgroup run over the union of their windows, each masked to its own);
// 2: none (A = 0, alpha = eps, m = 0).
//   q: [Nq, H, D], k, v: [Nk, H, D] (IO_T); soft: [Nq, H, D + 2] f32 = (A | alpha | m).
// A workgroup of 16 x BQ threads owns BQ query rows of one head; thread (tx, ty) scores key
// tx of each tile of 16 against row ty and owns output dims tx + 16 j (j < DP / 16). Q stays in
// workgroup memory; K (rows padded by one) and then V of each tile share one buffer.

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

const BK: u32 = 16u;
const NT: u32 = 16u * BQ;
const DJ: u32 = DP / 16u;
const KW: u32 = DP + 1u;
// A finite stand-in for -inf: WGSL lets implementations assume no infinities.
const NEG_BIG: f32 = -1.0e30;

var<workgroup> qs: array<f32, QS_SIZE>; // [BQ][DP]
var<workgroup> kv: array<f32, KV_SIZE>; // K as [BK][DP + 1], then V as [BK][DP]
var<workgroup> ps: array<f32, PS_SIZE>; // [BQ][BK]
var<workgroup> red: array<f32, PS_SIZE>; // [BQ][BK]

// The rehyat window [lo, hi) of query i.
fn window(i: u32) -> vec2<u32> {
    let c = i / (p.tc * p.ft);
    let lo = u32(max(i32(c * p.tc) - i32(p.to), 0)) * p.ft;
    let hi = min((c + 1u) * p.tc * p.ft, p.nk);
    return vec2<u32>(min(lo, hi), hi);
}

@compute @workgroup_size(16, BQ, 1)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) tid: u32,
) {
    let wid = wg.y * p.grid_x + wg.x;
    if (wid >= p.tiles * p.heads) {
        return;
    }
    let h = wid / p.tiles;
    let q0 = (wid % p.tiles) * BQ;
    let tx = lid.x;
    let ty = lid.y;
    let hd = p.heads * p.d;
    let i = q0 + ty;
    let row_ok = i < p.nq;

    for (var e = tid; e < BQ * DP; e += NT) {
        let r = e / DP;
        let dd = e % DP;
        var val = 0.0;
        if (q0 + r < p.nq && dd < p.d) {
            val = f32(q[(q0 + r) * hd + h * p.d + dd]);
        }
        qs[e] = val;
    }

    // The keys of this workgroup: j = base + t * stride, t < count; each row masks to its own.
    var base = 0u;
    var stride = 1u;
    var count = 0u;
    var own = vec2<u32>(0u, 0u);
    if (p.kind == 0u) {
        stride = max(p.rate, 1u);
        count = (p.nk + stride - 1u) / stride;
    } else if (p.kind == 1u) {
        let last = min(q0 + BQ, p.nq) - 1u;
        base = window(q0).x;
        count = window(last).y - base;
        own = window(min(i, last));
    }

    var m = NEG_BIG;
    var l = 0.0; // this thread's share of the row sum (its key column)
    var acc: array<f32, DJ>;
    let ntiles = (count + BK - 1u) / BK;
    for (var kt = 0u; kt < ntiles; kt++) {
        let t0 = kt * BK;
        for (var e = tid; e < BK * DP; e += NT) {
            let c = e / DP;
            let dd = e % DP;
            var val = 0.0;
            if (t0 + c < count && dd < p.d) {
                val = f32(k[(base + (t0 + c) * stride) * hd + h * p.d + dd]);
            }
            kv[c * KW + dd] = val;
        }
        workgroupBarrier();

        let j = base + (t0 + tx) * stride;
        var valid = row_ok && t0 + tx < count;
        if (p.kind == 1u) {
            valid = valid && j >= own.x && j < own.y;
        }
        var s = 0.0;
        for (var dd = 0u; dd < DP; dd++) {
            s = fma(qs[ty * DP + dd], kv[tx * KW + dd], s);
        }
        s = select(NEG_BIG, s * p.scale, valid);
        red[ty * BK + tx] = s;
        // Also: every thread is done reading K, so V may take its place.
        workgroupBarrier();

        var mt = m;
        for (var c = 0u; c < BK; c++) {
            mt = max(mt, red[ty * BK + c]);
        }
        let alpha = exp(m - mt);
        m = mt;
        let pv = select(0.0, exp(s - mt), valid);
        ps[ty * BK + tx] = pv;
        l = l * alpha + pv;
        for (var jj = 0u; jj < DJ; jj++) {
            acc[jj] *= alpha;
        }
        for (var e = tid; e < BK * DP; e += NT) {
            let c = e / DP;
            let dd = e % DP;
            var val = 0.0;
            if (t0 + c < count && dd < p.d) {
                val = f32(v[(base + (t0 + c) * stride) * hd + h * p.d + dd]);
            }
            kv[e] = val;
        }
        workgroupBarrier();

        for (var c = 0u; c < BK; c++) {
            let pc = ps[ty * BK + c];
            for (var jj = 0u; jj < DJ; jj++) {
                acc[jj] = fma(pc, kv[c * DP + tx + 16u * jj], acc[jj]);
            }
        }
        workgroupBarrier();
    }

    red[ty * BK + tx] = l;
    workgroupBarrier();
    if (!row_ok) {
        return;
    }
    var alpha_sum = 0.0;
    for (var c = 0u; c < BK; c++) {
        alpha_sum += red[ty * BK + c];
    }
    let out = (i * p.heads + h) * (p.d + 2u);
    let has_keys = m > 0.5 * NEG_BIG;
    for (var jj = 0u; jj < DJ; jj++) {
        let dd = tx + 16u * jj;
        if (dd < p.d) {
            soft[out + dd] = select(0.0, acc[jj], has_keys);
        }
    }
    if (tx == 0u) {
        soft[out + p.d] = select(p.eps, alpha_sum, has_keys);
        soft[out + p.d + 1u] = select(0.0, m, has_keys);
    }
}
