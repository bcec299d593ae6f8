// Feature maps phi: R^D -> R^DF of linear attention, one per head (ARCHITECTURE.md, Attention modes):
//   HEDGEHOG: u = W x + b, W: [H, DF/2, D], b: [H, DF/2]; phi = [softmax(u), softmax(-u)].
//   POLY:     a = gelu_tanh(W1 x + b1), W1: [H, HID, D]; psi = W2 a + b2, W2: [H, P*D1, HID];
//             phi = [psi_1, psi_2^2, ..., psi_P^P] with parts of D1 values.
//   ELU1:     phi = elu(x) + 1, DF = D.
//   x: [rows, H, D] (IO_T), tokens tok_lo .. tok_lo + tok_count; weights W_T;
//   out: [tok_count, H, DF] f32 (the token tok_lo + t lands in row t).
// A workgroup owns TT tokens of one head; x and the hidden layer sit in workgroup memory.

struct Params {
    heads: u32,
    d: u32,
    df: u32,
    hid: u32,
    tok_lo: u32,
    tok_count: u32,
    d1: u32,
    tiles: u32,
    grid_x: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(1) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<IO_T>;
#if HEDGEHOG
@group(0) @binding(2) var<storage, read> w1: array<W_T>;
@group(0) @binding(3) var<storage, read> b1: array<W_T>;
#endif
#if POLY
@group(0) @binding(2) var<storage, read> w1: array<W_T>;
@group(0) @binding(3) var<storage, read> b1: array<W_T>;
@group(0) @binding(4) var<storage, read> w2: array<W_T>;
@group(0) @binding(5) var<storage, read> b2: array<W_T>;
#endif
@group(0) @binding(6) var<storage, read_write> out: array<f32>;

const NT: u32 = 128u;

#ifndef ELU1
var<workgroup> xs: array<f32, XS_SIZE>; // [TT][D + 1]
var<workgroup> hs: array<f32, HS_SIZE>; // [TT][HID + 1] (poly) or [TT][DF/2] (hedgehog u)
#endif
#if HEDGEHOG
var<workgroup> stats: array<f32, 64>; // per token: max u, min u, sum exp(u - max), sum exp(min - u)
#endif

fn gelu_tanh(v: f32) -> f32 {
    let u = 0.7978845608028654 * (v + 0.044715 * v * v * v);
    return 0.5 * v * (1.0 + tanh(clamp(u, -15.0, 15.0)));
}

@compute @workgroup_size(128, 1, 1)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) tid: u32,
) {
    let wid = wg.y * p.grid_x + wg.x;
    if (wid >= p.tiles * p.heads) {
        return;
    }
    let h = wid / p.tiles;
    let t0 = (wid % p.tiles) * TT;
    let hd = p.heads * p.d;
    let ntok = min(TT, p.tok_count - t0);
    // Rows padded by one so that threads of different tokens hit different banks.
    let xw = p.d + 1u;
    let hw = p.hid + 1u;

#if ELU1
    for (var e = tid; e < ntok * p.d; e += NT) {
        let t = e / p.d;
        let dd = e % p.d;
        let xv = f32(x[(p.tok_lo + t0 + t) * hd + h * p.d + dd]);
        var y = xv + 1.0;
        if (xv <= 0.0) {
            y = exp(xv);
        }
        out[((t0 + t) * p.heads + h) * p.df + dd] = y;
    }
#else
    for (var e = tid; e < ntok * p.d; e += NT) {
        let t = e / p.d;
        let dd = e % p.d;
        xs[t * xw + dd] = f32(x[(p.tok_lo + t0 + t) * hd + h * p.d + dd]);
    }
    workgroupBarrier();
#endif

#if HEDGEHOG
    let half_df = p.df / 2u;
    // Neighbouring threads take neighbouring tokens of one output: the weight row is shared.
    for (var e = tid; e < ntok * half_df; e += NT) {
        let t = e % ntok;
        let f = e / ntok;
        let wrow = (h * half_df + f) * p.d;
        var u = f32(b1[h * half_df + f]);
        for (var dd = 0u; dd < p.d; dd++) {
            u = fma(f32(w1[wrow + dd]), xs[t * xw + dd], u);
        }
        hs[t * half_df + f] = u;
    }
    workgroupBarrier();
    if (tid < ntok) {
        var mx = hs[tid * half_df];
        var mn = mx;
        for (var f = 1u; f < half_df; f++) {
            let u = hs[tid * half_df + f];
            mx = max(mx, u);
            mn = min(mn, u);
        }
        var s_pos = 0.0;
        var s_neg = 0.0;
        for (var f = 0u; f < half_df; f++) {
            let u = hs[tid * half_df + f];
            s_pos += exp(u - mx);
            s_neg += exp(mn - u);
        }
        stats[tid * 4u] = mx;
        stats[tid * 4u + 1u] = mn;
        stats[tid * 4u + 2u] = 1.0 / s_pos;
        stats[tid * 4u + 3u] = 1.0 / s_neg;
    }
    workgroupBarrier();
    for (var e = tid; e < ntok * p.df; e += NT) {
        let t = e / p.df;
        let f = e % p.df;
        var y = 0.0;
        if (f < half_df) {
            y = exp(hs[t * half_df + f] - stats[t * 4u]) * stats[t * 4u + 2u];
        } else {
            y = exp(stats[t * 4u + 1u] - hs[t * half_df + f - half_df]) * stats[t * 4u + 3u];
        }
        out[((t0 + t) * p.heads + h) * p.df + f] = y;
    }
#endif

#if POLY
    for (var e = tid; e < ntok * p.hid; e += NT) {
        let t = e % ntok;
        let c = e / ntok;
        let wrow = (h * p.hid + c) * p.d;
        var a = f32(b1[h * p.hid + c]);
        for (var dd = 0u; dd < p.d; dd++) {
            a = fma(f32(w1[wrow + dd]), xs[t * xw + dd], a);
        }
        hs[t * hw + c] = gelu_tanh(a);
    }
    workgroupBarrier();
    for (var e = tid; e < ntok * p.df; e += NT) {
        let t = e % ntok;
        let f = e / ntok;
        let wrow = (h * p.df + f) * p.hid;
        var psi = f32(b2[h * p.df + f]);
        for (var c = 0u; c < p.hid; c++) {
            psi = fma(f32(w2[wrow + c]), hs[t * hw + c], psi);
        }
        // part n (0-based) is raised to the power n + 1
        var y = psi;
        let power = f / p.d1;
        for (var n = 0u; n < power; n++) {
            y *= psi;
        }
        out[((t0 + t) * p.heads + h) * p.df + f] = y;
    }
#endif
}
