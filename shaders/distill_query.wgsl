// The query side of one distillation step (DISTILL.md, Forward and Backward), for the compact
// rows r in [r_lo, r_hi) of a step's query subset, all of one segment (one linear state):
//   i = idx[idx_lo + r];  f = fq[r];  n = A_i + S^T f;  D = alpha_i + z.f;  y_hat = n / D
//   G = sign(y_hat - y_i) * inv_count (L1) or 2 (y_hat - y_i) * inv_count (MSE)
//   u = G / D;  delta = -(G.y_hat) / D;  df = S u + delta z
//   soft: [Nq, H, D + 2] f32 (A | alpha | m); y: [Nq, H, D] (IO_T) the teacher;
//   fq: [rows, H, DF] f32 phi_q of the gathered queries; state: [H, DF, D + 1] f32 (S | z);
//   ud: [rows, H, D + 1] f32 (u | delta); dfq: [rows, H, DF] f32;
//   parts: [rows * H, 2] f32 per (row, head): (sum |y_hat - y| or sum (y_hat - y)^2, sum |y|);
//   yhat: [rows, H, D] f32, written when write_yhat != 0.
// One workgroup of 64 threads per (row, head); f, y_hat and u stay in workgroup memory.

struct Params {
    heads: u32,
    d: u32,
    df: u32,
    r_lo: u32,
    r_count: u32,
    idx_lo: u32,
    mse: u32,
    write_yhat: u32,
    grid_x: u32,
    _pad0: u32,
    inv_count: f32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> idx: array<u32>;
@group(0) @binding(2) var<storage, read> soft: array<f32>;
@group(0) @binding(3) var<storage, read> y: array<IO_T>;
@group(0) @binding(4) var<storage, read> fq: array<f32>;
@group(0) @binding(5) var<storage, read> state: array<f32>;
@group(0) @binding(6) var<storage, read_write> ud: array<f32>;
@group(0) @binding(7) var<storage, read_write> dfq: array<f32>;
@group(0) @binding(8) var<storage, read_write> parts: array<f32>;
@group(0) @binding(9) var<storage, read_write> yhat: array<f32>;

const NT: u32 = 64u;
const MAX_D: u32 = 512u;
const MAX_DF: u32 = 1024u;

var<workgroup> fs: array<f32, MAX_DF>;
var<workgroup> ys: array<f32, MAX_D>; // n, then y_hat
var<workgroup> us: array<f32, MAX_D>;
var<workgroup> red: array<f32, NT>;

// The sum of every thread's `x`; called by all threads of the workgroup.
fn workgroup_sum(tid: u32, x: f32) -> f32 {
    red[tid] = x;
    workgroupBarrier();
    for (var s = NT / 2u; s > 0u; s >>= 1u) {
        if (tid < s) {
            red[tid] += red[tid + s];
        }
        workgroupBarrier();
    }
    let total = red[0];
    workgroupBarrier();
    return total;
}

@compute @workgroup_size(64, 1, 1)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) tid: u32,
) {
    let wid = wg.y * p.grid_x + wg.x;
    if (wid >= p.r_count * p.heads) {
        return;
    }
    let r = p.r_lo + wid / p.heads;
    let h = wid % p.heads;
    let i = idx[p.idx_lo + r];
    let sw = p.d + 1u;
    let srow = h * p.df * sw;
    let soft_row = (i * p.heads + h) * (p.d + 2u);
    let yrow = (i * p.heads + h) * p.d;
    let frow = (r * p.heads + h) * p.df;

    for (var f = tid; f < p.df; f += NT) {
        fs[f] = fq[frow + f];
    }
    workgroupBarrier();

    // Denominator: alpha + z.f.
    var zf = 0.0;
    for (var f = tid; f < p.df; f += NT) {
        zf = fma(state[srow + f * sw + p.d], fs[f], zf);
    }
    let den = soft[soft_row + p.d] + workgroup_sum(tid, zf);
    let inv_den = 1.0 / den;

    var loss = 0.0;
    var ynorm = 0.0;
    var gy = 0.0;
    for (var e = tid; e < p.d; e += NT) {
        var n = soft[soft_row + e];
        for (var f = 0u; f < p.df; f++) {
            n = fma(state[srow + f * sw + e], fs[f], n);
        }
        let yh = n * inv_den;
        let yt = f32(y[yrow + e]);
        let diff = yh - yt;
        var g = 0.0;
        if (p.mse != 0u) {
            g = 2.0 * diff * p.inv_count;
            loss = fma(diff, diff, loss);
        } else {
            g = sign(diff) * p.inv_count;
            loss += abs(diff);
        }
        ynorm += abs(yt);
        gy = fma(g, yh, gy);
        us[e] = g * inv_den;
        ud[(r * p.heads + h) * sw + e] = g * inv_den;
        if (p.write_yhat != 0u) {
            yhat[(r * p.heads + h) * p.d + e] = yh;
        }
    }
    let loss_sum = workgroup_sum(tid, loss);
    let ynorm_sum = workgroup_sum(tid, ynorm);
    let delta = -workgroup_sum(tid, gy) * inv_den;
    if (tid == 0u) {
        ud[(r * p.heads + h) * sw + p.d] = delta;
        parts[(r * p.heads + h) * 2u] = loss_sum;
        parts[(r * p.heads + h) * 2u + 1u] = ynorm_sum;
    }
    // us is complete: workgroup_sum ended with a barrier.
    for (var f = tid; f < p.df; f += NT) {
        let row = srow + f * sw;
        var g = delta * state[row + p.d];
        for (var e = 0u; e < p.d; e++) {
            g = fma(state[row + e], us[e], g);
        }
        dfq[frow + f] = g;
    }
}
