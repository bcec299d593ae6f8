// Fused attention: flash-style online softmax over a set of keys, plus an optional linear term
// phi_q(q_i).S and phi_q(q_i).z added before the one shared division (ARCHITECTURE.md, Attention modes: softmax,
// linear apply, hybrid{R}, one chunk of rehyat{tc, to}).
//   q: [Nq, H, D], k, v: [Nk, H, D], o: [Nq, H, D], storage IO_T; arithmetic in f32.
//   Queries: rows q_lo .. q_lo + q_count. Softmax keys: j = k_lo + t * k_stride, t < k_count.
//   HAS_LINEAR: phi: [rows, H, DF] f32 (row of query i is i - phi_lo),
//     state: [H, DF, D + 1] f32, columns 0..D hold S, column D holds z.
//   o_i = (sum_t exp(s q.k_t - m) v_t + phi.S) / (sum_t exp(s q.k_t - m) + phi.z + eps)
// Tiling: a workgroup of 16 x TY threads owns BQ = TY * RQ query rows of one head; thread (tx, ty)
// owns rows ty + TY * i (i < RQ), score columns tx + 16 * j (j < BK / 16) and output dims
// tx + 16 * j (j < DP / 16). Q stays in workgroup memory, K (transposed, so that reads along
// the key index are conflict-free) and then V of each key tile share one buffer.
// The head dim is padded with zeros to DP (a multiple of 16); SH_T is the workgroup storage type.

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

const NT: u32 = 16u * TY;
const BQ: u32 = TY * RQ;
const CJ: u32 = BK / 16u;
const DJ: u32 = DP / 16u;
// A finite stand-in for -inf: WGSL lets implementations assume no infinities.
const NEG_BIG: f32 = -1.0e30;

var<workgroup> qs: array<SH_T, QS_SIZE>; // [BQ][DP]
var<workgroup> kv: array<SH_T, KV_SIZE>; // K as [DP][BK], then V as [BK][DP]
var<workgroup> ps: array<f32, PS_SIZE>; // [BQ][BK]: probabilities, or a phi_q tile
var<workgroup> red: array<f32, RED_SIZE>; // [BQ][16]: per-thread partials of a row

@compute @workgroup_size(16, TY, 1)
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
    let head_off = h * p.d;

    for (var e = tid; e < BQ * DP; e += NT) {
        let r = e / DP;
        let dd = e % DP;
        var val = 0.0;
        if (q0 + r < p.q_count && dd < p.d) {
            val = f32(q[(p.q_lo + q0 + r) * hd + head_off + dd]);
        }
        qs[e] = SH_T(val);
    }

    var m: array<f32, RQ>;
    var l: array<f32, RQ>; // this thread's share of the row sums
    var acc: array<array<f32, DJ>, RQ>;
    for (var i = 0u; i < RQ; i++) {
        m[i] = NEG_BIG;
    }

    let ntiles = (p.k_count + BK - 1u) / BK;
    for (var kt = 0u; kt < ntiles; kt++) {
        let t0 = kt * BK;
        for (var e = tid; e < BK * DP; e += NT) {
            let c = e / DP;
            let dd = e % DP;
            var val = 0.0;
            if (t0 + c < p.k_count && dd < p.d) {
                val = f32(k[(p.k_lo + (t0 + c) * p.k_stride) * hd + head_off + dd]);
            }
            kv[dd * BK + c] = SH_T(val);
        }
        workgroupBarrier();

        var s: array<array<f32, CJ>, RQ>;
        for (var dd = 0u; dd < DP; dd++) {
            var kk: array<f32, CJ>;
            for (var j = 0u; j < CJ; j++) {
                kk[j] = f32(kv[dd * BK + tx + 16u * j]);
            }
            for (var i = 0u; i < RQ; i++) {
                let qv = f32(qs[(ty + TY * i) * DP + dd]);
                for (var j = 0u; j < CJ; j++) {
                    s[i][j] = fma(qv, kk[j], s[i][j]);
                }
            }
        }
        for (var i = 0u; i < RQ; i++) {
            var mx = NEG_BIG;
            for (var j = 0u; j < CJ; j++) {
                s[i][j] *= p.scale_log2;
                if (t0 + tx + 16u * j < p.k_count) {
                    mx = max(mx, s[i][j]);
                }
            }
            red[(ty + TY * i) * 16u + tx] = mx;
        }
        // Also: every thread is done reading K, so V may take its place.
        workgroupBarrier();

        for (var i = 0u; i < RQ; i++) {
            let r = ty + TY * i;
            var mt = m[i];
            for (var u = 0u; u < 16u; u++) {
                mt = max(mt, red[r * 16u + u]);
            }
            let alpha = exp2(m[i] - mt);
            m[i] = mt;
            var rs = 0.0;
            for (var j = 0u; j < CJ; j++) {
                let c = tx + 16u * j;
                var pv = 0.0;
                if (t0 + c < p.k_count) {
                    pv = exp2(s[i][j] - mt);
                }
                ps[r * BK + c] = pv;
                rs += pv;
            }
            l[i] = l[i] * alpha + rs;
            for (var j = 0u; j < DJ; j++) {
                acc[i][j] *= alpha;
            }
        }
        for (var e = tid; e < BK * DP; e += NT) {
            let c = e / DP;
            let dd = e % DP;
            var val = 0.0;
            if (t0 + c < p.k_count && dd < p.d) {
                val = f32(v[(p.k_lo + (t0 + c) * p.k_stride) * hd + head_off + dd]);
            }
            kv[e] = SH_T(val);
        }
        workgroupBarrier();

        for (var c = 0u; c < BK; c++) {
            var vv: array<f32, DJ>;
            for (var j = 0u; j < DJ; j++) {
                vv[j] = f32(kv[c * DP + tx + 16u * j]);
            }
            for (var i = 0u; i < RQ; i++) {
                let pv = ps[(ty + TY * i) * BK + c];
                for (var j = 0u; j < DJ; j++) {
                    acc[i][j] = fma(pv, vv[j], acc[i][j]);
                }
            }
        }
        workgroupBarrier();
    }

#if HAS_LINEAR
    // Not rescaled by exp(-m): the published hybrid form.
    let sw = p.d + 1u;
    for (var f0 = 0u; f0 < p.df; f0 += BK) {
        for (var e = tid; e < BQ * BK; e += NT) {
            let r = e / BK;
            let c = e % BK;
            var val = 0.0;
            if (q0 + r < p.q_count && f0 + c < p.df) {
                val = phi[((p.q_lo + q0 + r - p.phi_lo) * p.heads + h) * p.df + f0 + c];
            }
            ps[e] = val;
        }
        workgroupBarrier();
        let fcount = min(BK, p.df - f0);
        for (var c = 0u; c < fcount; c++) {
            let srow = (h * p.df + f0 + c) * sw;
            var sv: array<f32, DJ>;
            for (var j = 0u; j < DJ; j++) {
                let dd = tx + 16u * j;
                if (dd < p.d) {
                    sv[j] = state[srow + dd];
                }
            }
            var z = 0.0;
            if (c % 16u == tx) {
                z = state[srow + p.d];
            }
            for (var i = 0u; i < RQ; i++) {
                let pv = ps[(ty + TY * i) * BK + c];
                for (var j = 0u; j < DJ; j++) {
                    acc[i][j] = fma(pv, sv[j], acc[i][j]);
                }
                l[i] = fma(pv, z, l[i]);
            }
        }
        workgroupBarrier();
    }
#endif

    for (var i = 0u; i < RQ; i++) {
        red[(ty + TY * i) * 16u + tx] = l[i];
    }
    workgroupBarrier();
    for (var i = 0u; i < RQ; i++) {
        let r = ty + TY * i;
        if (q0 + r >= p.q_count) {
            continue;
        }
        var den = p.eps;
        for (var u = 0u; u < 16u; u++) {
            den += red[r * 16u + u];
        }
        let inv = 1.0 / den;
        let row = (p.q_lo + q0 + r) * hd + head_off;
        for (var j = 0u; j < DJ; j++) {
            let dd = tx + 16u * j;
            if (dd < p.d) {
                o[row + dd] = IO_T(acc[i][j] * inv);
            }
        }
    }
}
