// The fast twin of attention_flash.wgsl (same parameters, bindings and math) for head dims up
// to 128: every per-thread value lives in named vectors, never in arrays indexed by a loop
// counter, which drivers may leave in slow local memory.
// A workgroup of TX = DP / 8 by TY threads owns BQ = 4 * TY query rows of one head; thread
// (tx, ty) owns rows 4 ty .. 4 ty + 3 (the components of each vec4), score columns 2 tx and
// 2 tx + 1 of each BK = 2 * TX key tile, and output dims 8 tx .. 8 tx + 7.
// Workgroup memory: Q as [DP][BQ/4] vec4 (four rows at once), K as [DP][BK/2] vec2, V as
// [BK][DP/4] vec4, P (or a phi_q tile) as [BK][BQ/4] vec4, row partials as [TX][BQ/4] vec4.

#include flash_params

@group(1) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<IO_T>;
@group(0) @binding(2) var<storage, read> k: array<IO_T>;
@group(0) @binding(3) var<storage, read> v: array<IO_T>;
#if HAS_LINEAR
@group(0) @binding(4) var<storage, read> phi: array<f32>;
@group(0) @binding(5) var<storage, read> state: array<f32>;
#endif
@group(0) @binding(6) var<storage, read_write> o: array<IO_T>;

const TX: u32 = DP / 8u;
const NT: u32 = TX * TY;
const BQ: u32 = 4u * TY;
const BK: u32 = 2u * TX;
const D4: u32 = DP / 4u;
const NEG_BIG: f32 = -1.0e30;

var<workgroup> qs: array<vec4<SH_T>, QS_SIZE>;
var<workgroup> kt: array<vec2<SH_T>, KT_SIZE>;
var<workgroup> vs: array<vec4<SH_T>, VS_SIZE>;
var<workgroup> ps: array<vec4<f32>, PS_SIZE>;
var<workgroup> red: array<vec4<f32>, RED_SIZE>;

fn load_q(row: u32, off: u32, dd: u32) -> f32 {
    if (row < p.q_count && dd < p.d) {
        return f32(q[(p.q_lo + row) * p.heads * p.d + off + dd]);
    }
    return 0.0;
}

fn load_kv(t: u32, off: u32, dd: u32, is_v: bool) -> f32 {
    if (t < p.k_count && dd < p.d) {
        let idx = (p.k_lo + t * p.k_stride) * p.heads * p.d + off + dd;
        if (is_v) {
            return f32(v[idx]);
        }
        return f32(k[idx]);
    }
    return 0.0;
}

fn store_row(row: u32, off: u32, d0: u32, a: vec4<f32>, b: vec4<f32>) {
    if (row >= p.q_count) {
        return;
    }
    let base = (p.q_lo + row) * p.heads * p.d + off;
    for (var j = 0u; j < 4u; j++) {
        if (d0 + j < p.d) {
            o[base + d0 + j] = IO_T(a[j]);
        }
        if (d0 + 4u + j < p.d) {
            o[base + d0 + 4u + j] = IO_T(b[j]);
        }
    }
}

@compute @workgroup_size(TX, TY, 1)
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
    let off = h * p.d;

    for (var e = tid; e < TY * DP; e += NT) {
        let g = e / DP;
        let dd = e % DP;
        let r = q0 + 4u * g;
        qs[dd * TY + g] = vec4<SH_T>(vec4<f32>(
            load_q(r, off, dd),
            load_q(r + 1u, off, dd),
            load_q(r + 2u, off, dd),
            load_q(r + 3u, off, dd),
        ));
    }

    var m = vec4<f32>(NEG_BIG);
    var l = vec4<f32>(0.0); // this thread's share of the row sums
    var o0a = vec4<f32>(0.0);
    var o0b = vec4<f32>(0.0);
    var o1a = vec4<f32>(0.0);
    var o1b = vec4<f32>(0.0);
    var o2a = vec4<f32>(0.0);
    var o2b = vec4<f32>(0.0);
    var o3a = vec4<f32>(0.0);
    var o3b = vec4<f32>(0.0);

    let ntiles = (p.k_count + BK - 1u) / BK;
    for (var kti = 0u; kti < ntiles; kti++) {
        let t0 = kti * BK;
        for (var e = tid; e < TX * DP; e += NT) {
            let u = e / DP;
            let dd = e % DP;
            let t = t0 + 2u * u;
            kt[dd * TX + u] = vec2<SH_T>(vec2<f32>(
                load_kv(t, off, dd, false),
                load_kv(t + 1u, off, dd, false),
            ));
        }
        for (var e = tid; e < BK * D4; e += NT) {
            let c = e / D4;
            let d0 = (e % D4) * 4u;
            let t = t0 + c;
            vs[e] = vec4<SH_T>(vec4<f32>(
                load_kv(t, off, d0, true),
                load_kv(t, off, d0 + 1u, true),
                load_kv(t, off, d0 + 2u, true),
                load_kv(t, off, d0 + 3u, true),
            ));
        }
        workgroupBarrier();

        var s0 = vec4<f32>(0.0);
        var s1 = vec4<f32>(0.0);
        for (var dd = 0u; dd < DP; dd++) {
            let q4 = vec4<f32>(qs[dd * TY + ty]);
            let k2 = vec2<f32>(kt[dd * TX + tx]);
            s0 = fma(q4, vec4<f32>(k2.x), s0);
            s1 = fma(q4, vec4<f32>(k2.y), s1);
        }
        let ok0 = t0 + 2u * tx < p.k_count;
        let ok1 = t0 + 2u * tx + 1u < p.k_count;
        s0 *= p.scale_log2;
        s1 *= p.scale_log2;
        var mx = vec4<f32>(NEG_BIG);
        if (ok0) {
            mx = max(mx, s0);
        }
        if (ok1) {
            mx = max(mx, s1);
        }
        red[tx * TY + ty] = mx;
        workgroupBarrier();

        var mt = m;
        for (var u = 0u; u < TX; u++) {
            mt = max(mt, red[u * TY + ty]);
        }
        let alpha = exp2(m - mt);
        m = mt;
        let p0 = select(vec4<f32>(0.0), exp2(s0 - mt), ok0);
        let p1 = select(vec4<f32>(0.0), exp2(s1 - mt), ok1);
        ps[(2u * tx) * TY + ty] = p0;
        ps[(2u * tx + 1u) * TY + ty] = p1;
        l = l * alpha + p0 + p1;
        o0a *= alpha.x;
        o0b *= alpha.x;
        o1a *= alpha.y;
        o1b *= alpha.y;
        o2a *= alpha.z;
        o2b *= alpha.z;
        o3a *= alpha.w;
        o3b *= alpha.w;
        workgroupBarrier();

        for (var c = 0u; c < BK; c++) {
            let p4 = ps[c * TY + ty];
            let va = vec4<f32>(vs[c * D4 + 2u * tx]);
            let vb = vec4<f32>(vs[c * D4 + 2u * tx + 1u]);
            o0a = fma(vec4<f32>(p4.x), va, o0a);
            o0b = fma(vec4<f32>(p4.x), vb, o0b);
            o1a = fma(vec4<f32>(p4.y), va, o1a);
            o1b = fma(vec4<f32>(p4.y), vb, o1b);
            o2a = fma(vec4<f32>(p4.z), va, o2a);
            o2b = fma(vec4<f32>(p4.z), vb, o2b);
            o3a = fma(vec4<f32>(p4.w), va, o3a);
            o3b = fma(vec4<f32>(p4.w), vb, o3b);
        }
        workgroupBarrier();
    }

#if HAS_LINEAR
    // Not rescaled by exp(-m): the published hybrid form.
    let sw = p.d + 1u;
    let d0 = 8u * tx;
    for (var f0 = 0u; f0 < p.df; f0 += BK) {
        for (var e = tid; e < BK * TY; e += NT) {
            let c = e / TY;
            let g = e % TY;
            let f = f0 + c;
            var val = vec4<f32>(0.0);
            if (f < p.df) {
                for (var j = 0u; j < 4u; j++) {
                    let r = q0 + 4u * g + j;
                    if (r < p.q_count) {
                        val[j] = phi[((p.q_lo + r - p.phi_lo) * p.heads + h) * p.df + f];
                    }
                }
            }
            ps[c * TY + g] = val;
        }
        workgroupBarrier();
        let fcount = min(BK, p.df - f0);
        for (var c = 0u; c < fcount; c++) {
            let srow = (h * p.df + f0 + c) * sw;
            var sa = vec4<f32>(0.0);
            var sb = vec4<f32>(0.0);
            for (var j = 0u; j < 4u; j++) {
                if (d0 + j < p.d) {
                    sa[j] = state[srow + d0 + j];
                }
                if (d0 + 4u + j < p.d) {
                    sb[j] = state[srow + d0 + 4u + j];
                }
            }
            let p4 = ps[c * TY + ty];
            o0a = fma(vec4<f32>(p4.x), sa, o0a);
            o0b = fma(vec4<f32>(p4.x), sb, o0b);
            o1a = fma(vec4<f32>(p4.y), sa, o1a);
            o1b = fma(vec4<f32>(p4.y), sb, o1b);
            o2a = fma(vec4<f32>(p4.z), sa, o2a);
            o2b = fma(vec4<f32>(p4.z), sb, o2b);
            o3a = fma(vec4<f32>(p4.w), sa, o3a);
            o3b = fma(vec4<f32>(p4.w), sb, o3b);
            if (c % TX == tx) {
                l = fma(p4, vec4<f32>(state[srow + p.d]), l);
            }
        }
        workgroupBarrier();
    }
#endif

    red[tx * TY + ty] = l;
    workgroupBarrier();
    var den = vec4<f32>(p.eps);
    for (var u = 0u; u < TX; u++) {
        den += red[u * TY + ty];
    }
    let inv = 1.0 / den;
    let r0 = q0 + 4u * ty;
    store_row(r0, off, 8u * tx, o0a * inv.x, o0b * inv.x);
    store_row(r0 + 1u, off, 8u * tx, o1a * inv.y, o1b * inv.y);
    store_row(r0 + 2u, off, 8u * tx, o2a * inv.z, o2b * inv.z);
    store_row(r0 + 3u, off, 8u * tx, o3a * inv.w, o3b * inv.w);
}
