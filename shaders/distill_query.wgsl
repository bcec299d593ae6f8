// The query side of one distillation step (DISTILL.md, Forward and Backward), for the compact
// rows r in [r_lo, r_lo + r_count) of a step's query subset, all of one segment (one state):
//   i = idx[idx_lo + r];  f = fq[r];  n = A_i + S^T f;  D = alpha_i + z.f;  y_hat = n / D
//   G = sign(y_hat - y_i) * inv_count (L1) or 2 (y_hat - y_i) * inv_count (MSE)
//   u = G / D;  delta = -(G.y_hat) / D;  df = S u + delta z
//   soft: [Nq, H, D + 2] f32 (A | alpha | m); y: [Nq, H, D] (IO_T) the teacher;
//   fq: [rows, H, DF] f32 phi_q of the gathered queries; state: [H, DF, D + 1] f32 (S | z);
//   ud: [rows, H, D + 1] f32 (u | delta); dfq: [rows, H, DF] f32;
//   parts: [rows * H, 2] f32 per (row, head): (sum |y_hat - y| or sum (y_hat - y)^2, sum |y|);
//   yhat: [rows, H, D] f32, written when write_yhat != 0.
// One workgroup of 64 threads per (QR rows, head): every value of the state read serves QR
// rows. f and u of the rows stay in workgroup memory (FS_SIZE = QR * DF, US_SIZE = QR * D).

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
    tiles: u32,
    inv_count: f32,
    _pad1: u32,
}

@group(1) @binding(0) var<uniform> p: Params;
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

var<workgroup> fs: array<f32, FS_SIZE>; // [QR][DF]
var<workgroup> us: array<f32, US_SIZE>; // [QR][D]
var<workgroup> red: array<f32, RED_SIZE>; // [4 QR][NT]: per-thread partial sums
var<workgroup> row_den: array<f32, QR>;
var<workgroup> row_delta: array<f32, QR>;

// Sums the first `count` rows of `red` over the threads, into red[row * NT]; all threads call.
fn reduce_rows(tid: u32, count: u32) {
    workgroupBarrier();
    for (var s = NT / 2u; s > 0u; s >>= 1u) {
        if (tid < s) {
            for (var k = 0u; k < count; k++) {
                red[k * NT + tid] += red[k * NT + tid + s];
            }
        }
        workgroupBarrier();
    }
}

@compute @workgroup_size(64, 1, 1)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) tid: u32,
) {
    let wid = wg.y * p.grid_x + wg.x;
    if (wid >= p.tiles * p.heads) {
        return;
    }
    let h = wid % p.heads;
    let r0 = p.r_lo + (wid / p.heads) * QR;
    let rows = min(QR, p.r_lo + p.r_count - r0);
    let sw = p.d + 1u;
    let srow = h * p.df * sw;

    for (var e = tid; e < QR * p.df; e += NT) {
        let k = e / p.df;
        var val = 0.0;
        if (k < rows) {
            val = fq[((r0 + k) * p.heads + h) * p.df + e % p.df];
        }
        fs[e] = val;
    }
    workgroupBarrier();

    // Denominators: alpha + z.f per row.
    var zf: array<f32, QR>;
    for (var f = tid; f < p.df; f += NT) {
        let z = state[srow + f * sw + p.d];
        for (var k = 0u; k < QR; k++) {
            zf[k] = fma(z, fs[k * p.df + f], zf[k]);
        }
    }
    for (var k = 0u; k < QR; k++) {
        red[k * NT + tid] = zf[k];
    }
    reduce_rows(tid, QR);
    if (tid < rows) {
        let i = idx[p.idx_lo + r0 + tid];
        row_den[tid] = soft[(i * p.heads + h) * (p.d + 2u) + p.d] + red[tid * NT];
    }
    workgroupBarrier();

    var loss: array<f32, QR>;
    var ynorm: array<f32, QR>;
    var gy: array<f32, QR>;
    for (var e = tid; e < p.d; e += NT) {
        var n: array<f32, QR>;
        for (var f = 0u; f < p.df; f++) {
            let s = state[srow + f * sw + e];
            for (var k = 0u; k < QR; k++) {
                n[k] = fma(s, fs[k * p.df + f], n[k]);
            }
        }
        for (var k = 0u; k < rows; k++) {
            let r = r0 + k;
            let i = idx[p.idx_lo + r];
            let inv_den = 1.0 / row_den[k];
            let yh = (soft[(i * p.heads + h) * (p.d + 2u) + e] + n[k]) * inv_den;
            let yt = f32(y[(i * p.heads + h) * p.d + e]);
            let diff = yh - yt;
            var g = 0.0;
            if (p.mse != 0u) {
                g = 2.0 * diff * p.inv_count;
                loss[k] = fma(diff, diff, loss[k]);
            } else {
                g = sign(diff) * p.inv_count;
                loss[k] += abs(diff);
            }
            ynorm[k] += abs(yt);
            gy[k] = fma(g, yh, gy[k]);
            us[k * p.d + e] = g * inv_den;
            ud[(r * p.heads + h) * sw + e] = g * inv_den;
            if (p.write_yhat != 0u) {
                yhat[(r * p.heads + h) * p.d + e] = yh;
            }
        }
    }
    // Rows past `rows` hold zeros (their u is never read: the df loop stops at `rows`).
    for (var k = 0u; k < QR; k++) {
        red[k * NT + tid] = loss[k];
        red[(QR + k) * NT + tid] = ynorm[k];
        red[(2u * QR + k) * NT + tid] = gy[k];
    }
    reduce_rows(tid, 3u * QR);
    if (tid < rows) {
        let r = r0 + tid;
        let delta = -red[(2u * QR + tid) * NT] / row_den[tid];
        row_delta[tid] = delta;
        ud[(r * p.heads + h) * sw + p.d] = delta;
        parts[(r * p.heads + h) * 2u] = red[tid * NT];
        parts[(r * p.heads + h) * 2u + 1u] = red[(QR + tid) * NT];
    }
    workgroupBarrier();

    for (var f = tid; f < p.df; f += NT) {
        let row = srow + f * sw;
        var g: array<f32, QR>;
        for (var e = 0u; e < p.d; e++) {
            let s = state[row + e];
            for (var k = 0u; k < QR; k++) {
                g[k] = fma(s, us[k * p.d + e], g[k]);
            }
        }
        let z = state[row + p.d];
        for (var k = 0u; k < rows; k++) {
            dfq[((r0 + k) * p.heads + h) * p.df + f] = fma(row_delta[k], z, g[k]);
        }
    }
}
