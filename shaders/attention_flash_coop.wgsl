// The fused attention of attention_flash.wgsl (same parameters and math) on cooperative matrices,
// for f16 storage and head dim 128: QK^T and PV run on 16x16x16 f16 -> f32 tensor-core products.
//
// WGSL cannot scale the rows of a cooperative matrix, so the online softmax's rescaling of the
// output goes through workgroup memory (store, scale, reload). Two ways around its cost:
// - SINGLE_PASS (lazy rescale; the default where it fits, see `FlashCoopLayout`): one pass over
//   the keys with a per-row reference max m_ref, set by the first key tile. Probabilities are exp2(s - m_ref); while no score of a later tile
//   exceeds m_ref by more than MARGIN (log2 units, so p <= 2^MARGIN stays well inside f16)
//   nothing is rescaled. When one does (a workgroup-wide flag), the rows get a new reference
//   before the tile's probabilities are computed, and the output accumulators and sums are
//   scaled by exp2(m_ref - m_new). The flag is read with workgroupUniformLoad, so the branch is
//   uniform and may hold barriers. At the end the sums and outputs are taken from m_ref to the
//   true row max (a factor <= 1), so that the hybrid's linear term is weighed as in two passes.
// - otherwise two passes: the first finds each row's max m and sum l, the second accumulates
//   exp(s - m) V with the output held in cooperative accumulators for the whole pass. The scores
//   are computed twice; in exchange nothing is rescaled.
//
// A workgroup of NSUB subgroups of 32 owns BQ = 16 NSUB query rows of one head, 16 per subgroup;
// its Q fragments stay in registers. Without WIDE_Q: 4 subgroups, Q staged through workgroup
// memory. With WIDE_Q: 8 subgroups share each staged key tile, and Q fragments are loaded
// straight from the storage buffer; a fragment that would run past the last query row is
// moved back to end on it (the rows before its own start are computed but not stored), so the
// launcher needs Nq >= 16. Keys go by in tiles of BK = 32 through workgroup memory. Scores
// and probabilities of a subgroup pass through workgroup memory (its own 16 x 32 block), where
// lane l works on row l / 2, key columns 16 (l % 2) .. + 16. The launcher picks this kernel only
// where subgroups are 32 wide, so invocations 32s .. 32s + 31 form subgroup s.
enable wgpu_cooperative_matrix;

#include flash_params

// Vectors of 4 halves: the head dim (128) and the row strides are multiples of 4.
@group(1) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<vec4<f16>>;
@group(0) @binding(2) var<storage, read> k: array<vec4<f16>>;
@group(0) @binding(3) var<storage, read> v: array<vec4<f16>>;
#if HAS_LINEAR
@group(0) @binding(4) var<storage, read> phi: array<f32>;
@group(0) @binding(5) var<storage, read> state: array<f32>;
#endif
@group(0) @binding(6) var<storage, read_write> o: array<f16>;

alias FragA = coop_mat16x16<f16, A>;
alias FragB = coop_mat16x16<f16, B>;
alias FragC = coop_mat16x16<f32, C>;

const D: u32 = 128u;
const DV: u32 = 32u; // vectors per head row
#if WIDE_Q
const NSUB: u32 = 8u;
#else
const NSUB: u32 = 4u;
#endif
const NT: u32 = 32u * NSUB;
const BQ: u32 = 16u * NSUB;
const BK: u32 = 32u;
// Row stride of staged Q, K and V in halves: 8 of padding, rows stay 16-byte aligned.
const LD: u32 = 136u;
const NEG_BIG: f32 = -1.0e30;

#ifndef WIDE_Q
var<workgroup> qs: array<f16, BQ * LD>;
#endif
var<workgroup> ks: array<f16, BK * LD>;
var<workgroup> vs: array<f16, BK * LD>;
var<workgroup> ss: array<f32, NSUB * 512u>; // per subgroup [16][BK] scores, then one 16 x 16 output fragment
var<workgroup> ps: array<f16, NSUB * 512u>; // per subgroup [16][BK] probabilities
var<workgroup> stat_m: array<f32, NT>; // per lane: running max of its half row
var<workgroup> stat_l: array<f32, NT>;
var<workgroup> den: array<f32, BQ>; // per query row of the tile: the shared denominator
#if SINGLE_PASS
// Per query row: the output's rescale factor while a rescale runs, then the final correction
// from the reference to the true row max.
var<workgroup> alpha_row: array<f32, BQ>;
// Set by any lane whose scores of tile kt pass its reference by more than MARGIN; indexed by
// the tile's parity so that clearing the next one cannot race with reading this one. Four
// words, not two: every workgroup array stays a multiple of 16 bytes, as cooperative loads and
// stores need 16-byte aligned pointers whatever order the driver lays the arrays out in.
var<workgroup> need_rescale: array<u32, 4>;
const MARGIN: f32 = 10.0;
#endif

#ifndef WIDE_Q
fn put_q(o: u32, x: vec4<f16>) {
    qs[o] = x.x;
    qs[o + 1u] = x.y;
    qs[o + 2u] = x.z;
    qs[o + 3u] = x.w;
}
#endif

fn put_k(o: u32, x: vec4<f16>) {
    ks[o] = x.x;
    ks[o + 1u] = x.y;
    ks[o + 2u] = x.z;
    ks[o + 3u] = x.w;
}

fn put_v(o: u32, x: vec4<f16>) {
    vs[o] = x.x;
    vs[o + 1u] = x.y;
    vs[o + 2u] = x.z;
    vs[o + 3u] = x.w;
}

// Stages keys t0 .. t0 + BK (and their values when `with_v`) of head h; zeros past k_count.
fn stage_keys(t0: u32, h: u32, tid: u32, with_v: bool) {
    for (var e = tid; e < BK * DV; e += NT) {
        let t = e / DV;
        let dv = e % DV;
        var kx = vec4<f16>(0.0);
        var vx = vec4<f16>(0.0);
        if (t0 + t < p.k_count) {
            let idx = ((p.k_lo + (t0 + t) * p.k_stride) * p.heads + h) * DV + dv;
            kx = k[idx];
            if (with_v) {
                vx = v[idx];
            }
        }
        put_k(t * LD + dv * 4u, kx);
        if (with_v) {
            put_v(t * LD + dv * 4u, vx);
        }
    }
}

// Scores of this subgroup's 16 rows against keys key0 .. key0 + 16 of the staged tile:
// B = K^T, i.e. the rows of K read column-major.
fn scores(key0: u32, a0: FragA, a1: FragA, a2: FragA, a3: FragA, a4: FragA, a5: FragA, a6: FragA,
          a7: FragA) -> FragC {
    let kb = key0 * LD;
    var s = FragC();
    s = coopMultiplyAdd(a0, coopLoad<FragB>(&ks[kb], LD), s);
    s = coopMultiplyAdd(a1, coopLoad<FragB>(&ks[kb + 16u], LD), s);
    s = coopMultiplyAdd(a2, coopLoad<FragB>(&ks[kb + 32u], LD), s);
    s = coopMultiplyAdd(a3, coopLoad<FragB>(&ks[kb + 48u], LD), s);
    s = coopMultiplyAdd(a4, coopLoad<FragB>(&ks[kb + 64u], LD), s);
    s = coopMultiplyAdd(a5, coopLoad<FragB>(&ks[kb + 80u], LD), s);
    s = coopMultiplyAdd(a6, coopLoad<FragB>(&ks[kb + 96u], LD), s);
    s = coopMultiplyAdd(a7, coopLoad<FragB>(&ks[kb + 112u], LD), s);
    return s;
}

// acc + P V for output dims d0 .. d0 + 16 (V rows read row-major).
fn pv(acc: FragC, p0: FragA, p1: FragA, d0: u32) -> FragC {
    let r = coopMultiplyAdd(p0, coopLoadT<FragB>(&vs[d0], LD), acc);
    return coopMultiplyAdd(p1, coopLoadT<FragB>(&vs[16u * LD + d0], LD), r);
}

// Whether query row `row` (absolute) is one this call computes and stores.
fn owned(row: u32) -> bool {
    return row >= p.q_lo && row < p.q_lo + p.q_count;
}

// Finishes output dims d0 .. d0 + 16 of this subgroup's rows (absolute rows row0 .. row0 + 16,
// of which it stores those from `first`, its own start): the linear term where there is one,
// the division by the shared denominator, the store. Uniform: every subgroup calls it.
fn finish(acc: FragC, sub: u32, lane: u32, d0: u32, h: u32, row0: u32, first: u32) {
    let base = sub * 512u;
    coopStoreT(acc, &ss[base], 16u);
    workgroupBarrier();
    for (var e = lane; e < 256u; e += 32u) {
        let row = row0 + e / 16u;
        let c = d0 + e % 16u;
        if (row >= first && owned(row)) {
            var num = ss[base + e];
#if SINGLE_PASS
            num *= alpha_row[sub * 16u + e / 16u];
#endif
#if HAS_LINEAR
            let prow = ((row - p.phi_lo) * p.heads + h) * p.df;
            for (var f = 0u; f < p.df; f++) {
                num = fma(phi[prow + f], state[(h * p.df + f) * (D + 1u) + c], num);
            }
#endif
            o[(row * p.heads + h) * D + c] = f16(num / den[sub * 16u + e / 16u]);
        }
    }
    workgroupBarrier();
}

#if SINGLE_PASS
// This lane's probabilities exp2(s - m) of the staged tile (its row, its 16 key columns) into ps;
// returns their sum.
fn probabilities(base: u32, my_row: u32, my_col: u32, t0: u32, m: f32) -> f32 {
    var sum = 0.0;
    for (var c = 0u; c < 16u; c++) {
        let i = base + my_row * BK + my_col + c;
        var pr = 0.0;
        if (t0 + my_col + c < p.k_count) {
            pr = exp2(ss[i] * p.scale_log2 - m);
        }
        sum += pr;
        ps[i] = f16(pr);
    }
    return sum;
}

// acc with each row scaled by alpha_row (this subgroup's 16 rows), through workgroup memory.
// Uniform: every subgroup calls it.
fn rescale(acc: FragC, sub: u32, lane: u32) -> FragC {
    let base = sub * 512u;
    coopStore(acc, &ss[base], 16u);
    workgroupBarrier();
    for (var e = lane; e < 256u; e += 32u) {
        // Column-major store: element e is row e % 16, column e / 16.
        ss[base + e] = ss[base + e] * alpha_row[sub * 16u + e % 16u];
    }
    workgroupBarrier();
    let scaled = coopLoad<FragC>(&ss[base], 16u);
    // The next call stores into the same block: every lane's load must be done first.
    workgroupBarrier();
    return scaled;
}

#endif
@compute @workgroup_size(NT, 1, 1)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) tid: u32,
) {
    // The grid is folded: trailing workgroups have nothing to do (a uniform exit).
    let wid = wg.y * p.grid_x + wg.x;
    if (wid >= p.tiles * p.heads) {
        return;
    }
    let h = wid / p.tiles;
    let q0 = (wid % p.tiles) * BQ;
    let sub = tid / 32u;
    let lane = tid % 32u;
    let base = sub * 512u;
    // This lane's row of the subgroup's scores and its half of the key columns.
    let my_row = lane / 2u;
    let my_col = (lane % 2u) * 16u;

    // This subgroup's own rows start at `first`.
    let first = p.q_lo + q0 + sub * 16u;
#if WIDE_Q
    // Its 16 rows, moved back to end on the last query row where they would run past.
    let row0 = min(first, p.q_rows - 16u);
    let qb = (row0 * p.heads + h) * DV;
    let qstride = p.heads * DV;
    let a0 = coopLoadT<FragA>(&q[qb], qstride);
    let a1 = coopLoadT<FragA>(&q[qb + 4u], qstride);
    let a2 = coopLoadT<FragA>(&q[qb + 8u], qstride);
    let a3 = coopLoadT<FragA>(&q[qb + 12u], qstride);
    let a4 = coopLoadT<FragA>(&q[qb + 16u], qstride);
    let a5 = coopLoadT<FragA>(&q[qb + 20u], qstride);
    let a6 = coopLoadT<FragA>(&q[qb + 24u], qstride);
    let a7 = coopLoadT<FragA>(&q[qb + 28u], qstride);
#else
    let row0 = first;
    for (var e = tid; e < BQ * DV; e += NT) {
        let r = e / DV;
        let dv = e % DV;
        var x = vec4<f16>(0.0);
        if (q0 + r < p.q_count) {
            x = q[((p.q_lo + q0 + r) * p.heads + h) * DV + dv];
        }
        put_q(r * LD + dv * 4u, x);
    }
    workgroupBarrier();
    let qb = sub * 16u * LD;
    let a0 = coopLoadT<FragA>(&qs[qb], LD);
    let a1 = coopLoadT<FragA>(&qs[qb + 16u], LD);
    let a2 = coopLoadT<FragA>(&qs[qb + 32u], LD);
    let a3 = coopLoadT<FragA>(&qs[qb + 48u], LD);
    let a4 = coopLoadT<FragA>(&qs[qb + 64u], LD);
    let a5 = coopLoadT<FragA>(&qs[qb + 80u], LD);
    let a6 = coopLoadT<FragA>(&qs[qb + 96u], LD);
    let a7 = coopLoadT<FragA>(&qs[qb + 112u], LD);
#endif

#if SINGLE_PASS
    let ntiles = (p.k_count + BK - 1u) / BK;
    var m_ref = NEG_BIG; // this row's reference max (both lanes of a row hold the same)
    var m_run = NEG_BIG; // this lane's true max over its half of the row
    var l = 0.0; // this lane's half of the row's sum of exp2(s - m_ref)
    var o0 = FragC();
    var o1 = FragC();
    var o2 = FragC();
    var o3 = FragC();
    var o4 = FragC();
    var o5 = FragC();
    var o6 = FragC();
    var o7 = FragC();
    if (tid == 0u) {
        need_rescale[0] = 0u;
        need_rescale[1] = 0u;
    }
    for (var kt = 0u; kt < ntiles; kt++) {
        let t0 = kt * BK;
        let parity = kt & 1u;
        workgroupBarrier(); // the previous tile's readers are done with ks, vs, ps and its flag
        if (tid == 0u) {
            need_rescale[parity ^ 1u] = 0u;
        }
        stage_keys(t0, h, tid, true);
        workgroupBarrier();
        coopStoreT(scores(0u, a0, a1, a2, a3, a4, a5, a6, a7), &ss[base], BK);
        coopStoreT(scores(16u, a0, a1, a2, a3, a4, a5, a6, a7), &ss[base + 16u], BK);
        workgroupBarrier();
        // This lane's max over its half of the tile's row; a rescale when it passes the row's
        // reference by more than MARGIN anywhere in the workgroup.
        var mt = NEG_BIG;
        var sum = 0.0;
        for (var c = 0u; c < 16u; c++) {
            if (t0 + my_col + c < p.k_count) {
                mt = max(mt, ss[base + my_row * BK + my_col + c] * p.scale_log2);
            }
        }
        m_run = max(m_run, mt);
        if (kt == 0u) {
            // The first tile sets each row's reference: its max over the tile (both halves).
            stat_m[tid] = mt;
            workgroupBarrier();
            m_ref = max(mt, stat_m[tid ^ 1u]);
            sum = probabilities(base, my_row, my_col, t0, m_ref);
        } else {
            if (mt > m_ref + MARGIN) {
                need_rescale[parity] = 1u;
            }
            // A barrier, then one value for the whole workgroup: the rescale branch is uniform.
            if (workgroupUniformLoad(&need_rescale[parity]) != 0u) {
                // A new reference for every row: the larger of the old one and the tile's max.
                stat_m[tid] = mt;
                workgroupBarrier();
                let m_new = max(m_ref, max(mt, stat_m[tid ^ 1u]));
                let alpha = exp2(m_ref - m_new);
                if (lane % 2u == 0u) {
                    alpha_row[sub * 16u + my_row] = alpha;
                }
                l = l * alpha;
                m_ref = m_new;
                sum = probabilities(base, my_row, my_col, t0, m_ref);
                workgroupBarrier(); // alpha_row written, the scores in ss read
                o0 = rescale(o0, sub, lane);
                o1 = rescale(o1, sub, lane);
                o2 = rescale(o2, sub, lane);
                o3 = rescale(o3, sub, lane);
                o4 = rescale(o4, sub, lane);
                o5 = rescale(o5, sub, lane);
                o6 = rescale(o6, sub, lane);
                o7 = rescale(o7, sub, lane);
            } else {
                sum = probabilities(base, my_row, my_col, t0, m_ref);
            }
        }
        workgroupBarrier(); // every lane's probabilities are in ps
        l += sum;
        let p0 = coopLoadT<FragA>(&ps[base], BK);
        let p1 = coopLoadT<FragA>(&ps[base + 16u], BK);
        o0 = pv(o0, p0, p1, 0u);
        o1 = pv(o1, p0, p1, 16u);
        o2 = pv(o2, p0, p1, 32u);
        o3 = pv(o3, p0, p1, 48u);
        o4 = pv(o4, p0, p1, 64u);
        o5 = pv(o5, p0, p1, 80u);
        o6 = pv(o6, p0, p1, 96u);
        o7 = pv(o7, p0, p1, 112u);
    }
    // The two halves of a row meet (one reference): the row's sum, and the factor c <= 1 that
    // takes the sums from the reference to the true row max (the hybrid's linear term is
    // weighed against exp(s - max), as in the two-pass kernel).
    stat_l[tid] = l;
    stat_m[tid] = m_run;
    workgroupBarrier();
    let correction = exp2(m_ref - max(m_run, stat_m[tid ^ 1u]));
    if (lane % 2u == 0u) {
        alpha_row[sub * 16u + my_row] = correction;
        var d = (l + stat_l[tid ^ 1u]) * correction + p.eps;
#if HAS_LINEAR
        let row = row0 + my_row;
        if (owned(row)) {
            let prow = ((row - p.phi_lo) * p.heads + h) * p.df;
            for (var f = 0u; f < p.df; f++) {
                d = fma(phi[prow + f], state[(h * p.df + f) * (D + 1u) + D], d);
            }
        }
#endif
        den[sub * 16u + my_row] = d;
    }
#else
    // Pass 1: each lane's running max and sum over its half of every key tile.
    let ntiles = (p.k_count + BK - 1u) / BK;
    var m = NEG_BIG;
    var l = 0.0;
    for (var kt = 0u; kt < ntiles; kt++) {
        let t0 = kt * BK;
        stage_keys(t0, h, tid, false);
        workgroupBarrier();
        coopStoreT(scores(0u, a0, a1, a2, a3, a4, a5, a6, a7), &ss[base], BK);
        coopStoreT(scores(16u, a0, a1, a2, a3, a4, a5, a6, a7), &ss[base + 16u], BK);
        workgroupBarrier();
        var mt = m;
        for (var c = 0u; c < 16u; c++) {
            if (t0 + my_col + c < p.k_count) {
                mt = max(mt, ss[base + my_row * BK + my_col + c] * p.scale_log2);
            }
        }
        var sum = 0.0;
        for (var c = 0u; c < 16u; c++) {
            if (t0 + my_col + c < p.k_count) {
                sum += exp2(ss[base + my_row * BK + my_col + c] * p.scale_log2 - mt);
            }
        }
        l = l * exp2(m - mt) + sum;
        m = mt;
    }
    // The two halves of a row meet: the row's max and sum.
    stat_m[tid] = m;
    stat_l[tid] = l;
    workgroupBarrier();
    let mo = stat_m[tid ^ 1u];
    let lo = stat_l[tid ^ 1u];
    let row_m = max(m, mo);
    let row_l = l * exp2(m - row_m) + lo * exp2(mo - row_m);
    if (lane % 2u == 0u) {
        var d = row_l + p.eps;
#if HAS_LINEAR
        let row = row0 + my_row;
        if (owned(row)) {
            let prow = ((row - p.phi_lo) * p.heads + h) * p.df;
            for (var f = 0u; f < p.df; f++) {
                d = fma(phi[prow + f], state[(h * p.df + f) * (D + 1u) + D], d);
            }
        }
#endif
        den[sub * 16u + my_row] = d;
    }

    // Pass 2: O = sum exp(s - m) V, in accumulators that live through the whole pass.
    var o0 = FragC();
    var o1 = FragC();
    var o2 = FragC();
    var o3 = FragC();
    var o4 = FragC();
    var o5 = FragC();
    var o6 = FragC();
    var o7 = FragC();
    for (var kt = 0u; kt < ntiles; kt++) {
        let t0 = kt * BK;
        workgroupBarrier(); // the previous tile's readers are done with ks and vs
        stage_keys(t0, h, tid, true);
        workgroupBarrier();
        coopStoreT(scores(0u, a0, a1, a2, a3, a4, a5, a6, a7), &ss[base], BK);
        coopStoreT(scores(16u, a0, a1, a2, a3, a4, a5, a6, a7), &ss[base + 16u], BK);
        workgroupBarrier();
        for (var c = 0u; c < 16u; c++) {
            let i = base + my_row * BK + my_col + c;
            var pr = 0.0;
            if (t0 + my_col + c < p.k_count) {
                pr = exp2(ss[i] * p.scale_log2 - row_m);
            }
            ps[i] = f16(pr);
        }
        workgroupBarrier();
        let p0 = coopLoadT<FragA>(&ps[base], BK);
        let p1 = coopLoadT<FragA>(&ps[base + 16u], BK);
        o0 = pv(o0, p0, p1, 0u);
        o1 = pv(o1, p0, p1, 16u);
        o2 = pv(o2, p0, p1, 32u);
        o3 = pv(o3, p0, p1, 48u);
        o4 = pv(o4, p0, p1, 64u);
        o5 = pv(o5, p0, p1, 80u);
        o6 = pv(o6, p0, p1, 96u);
        o7 = pv(o7, p0, p1, 112u);
    }
#endif
    workgroupBarrier();
    finish(o0, sub, lane, 0u, h, row0, first);
    finish(o1, sub, lane, 16u, h, row0, first);
    finish(o2, sub, lane, 32u, h, row0, first);
    finish(o3, sub, lane, 48u, h, row0, first);
    finish(o4, sub, lane, 64u, h, row0, first);
    finish(o5, sub, lane, 80u, h, row0, first);
    finish(o6, sub, lane, 96u, h, row0, first);
    finish(o7, sub, lane, 112u, h, row0, first);
}
