// The implicit-GEMM convolution of conv.wgsl (same parameters, geometry and output stage) on
// cooperative matrices, for f16 input and weights with Cin a multiple of 4.
//
// The tiling is matmul_coop.wgsl's (K steps of 64, vector tiles): a workgroup of 8 subgroups of
// 32 computes 128 output rows (pixels) x 128 output channels; subgroup s owns a 64 x 32 block
// as 4 x 2 fragments. The A tile is gathered from the input frames (im2col on the fly): each
// invocation fetches 4 consecutive input channels of one tap for 8 output rows, so the tap is
// decoded once per K step and each row's position once per call. The launcher only picks this
// kernel where subgroups are exactly 32 wide.
enable wgpu_cooperative_matrix;

#include conv_params

@group(1) @binding(0) var<uniform> p: Params;
// Vectors of 4 channels: Cin, and so every pixel's offset, is a multiple of 4.
@group(0) @binding(1) var<storage, read> x: array<vec4<f16>>;
#if HAS_CACHE
@group(0) @binding(2) var<storage, read> cache: array<vec4<f16>>;
#endif
@group(0) @binding(3) var<storage, read> w: array<vec4<f16>>;
#if HAS_BIAS
@group(0) @binding(4) var<storage, read> bias: array<f16>;
#endif
@group(0) @binding(5) var<storage, read_write> y: array<Y_T>;

const BM: u32 = 128u;
const BN: u32 = 128u;
const BK: u32 = 64u;
const LDS: u32 = BK + 8u; // row stride of the tiles in halves (padding against bank conflicts)
const KV: u32 = BK / 4u; // vectors of 4 per tile row
const RS: u32 = 256u / KV; // rows between the 8 rows an invocation fetches

var<workgroup> tile_x: array<vec4<f16>, BM * LDS / 4u>;
var<workgroup> tile_w: array<vec4<f16>, BN * LDS / 4u>;

#include conv_output
#include coop_output

// The position of GEMM row r: (output frame, oy, ox), or frame 0xffffffff past the last row.
fn row_position(r: u32) -> vec3<u32> {
    if (r >= p.m) {
        return vec3<u32>(0xffffffffu, 0u, 0u);
    }
    let out_hw = p.out_h * p.out_w;
    let t = r / out_hw;
    let pix = r - t * out_hw;
    let oy = pix / p.out_w;
    return vec3<u32>(t, oy, pix - oy * p.out_w);
}

// A reduction index decoded: (dt, dy, dx, ci) of k = ((dt * kh + dy) * kw + dx) * cin + ci.
fn tap_of(k: u32) -> vec4<u32> {
    let tap = k / p.cin;
    let ci = k - tap * p.cin;
    let khw = p.kh * p.kw;
    let dt = tap / khw;
    let rem = tap - dt * khw;
    let dy = rem / p.kw;
    return vec4<u32>(dt, dy, rem - dy * p.kw, ci);
}

// Input channels ci .. ci + 3 of tap `tap` for the output row at `pos`; zeros in the padding,
// the causal zero frames and past the end of K (tap.x = 0xffffffff).
fn fetch_x(pos: vec3<u32>, tap: vec4<u32>) -> vec4<f16> {
    if (pos.x == 0xffffffffu || tap.x == 0xffffffffu) {
        return vec4<f16>(0.0);
    }
    let iy = i32(pos.y + tap.y) - i32(p.pad_h);
    let ix = i32(pos.z + tap.z) - i32(p.pad_w);
    if (iy < 0 || ix < 0 || iy >= i32(p.in_h << p.up_shift) || ix >= i32(p.in_w << p.up_shift)) {
        return vec4<f16>(0.0);
    }
    let pix = (u32(iy) >> p.up_shift) * p.in_w + (u32(ix) >> p.up_shift);
    let frame_elems = p.in_h * p.in_w * p.cin;
    let v = pos.x + tap.x;
    if (v < p.past) {
#if HAS_CACHE
        if (v + p.valid < p.past) {
            return vec4<f16>(0.0);
        }
        return cache[(v * frame_elems + pix * p.cin + tap.w) / 4u];
#else
        return vec4<f16>(0.0);
#endif
    }
    return x[((v - p.past) * frame_elems + pix * p.cin + tap.w) / 4u];
}

// Weights k = 4 kv .. 4 kv + 3 of output channel c, zero outside.
fn fetch_w(c: u32, kv: u32) -> vec4<f16> {
    let kvs = p.k / 4u;
    if (c < p.n && kv < kvs) {
        return w[c * kvs + kv];
    }
    return vec4<f16>(0.0);
}

fn tap_at(k: u32) -> vec4<u32> {
    if (k >= p.k) {
        return vec4<u32>(0xffffffffu);
    }
    return tap_of(k);
}

fn frag_x(o: u32) -> coop_mat16x16<f16, A> {
    return coopLoadT<coop_mat16x16<f16, A>>(&tile_x[o / 4u], LDS / 4u);
}

fn frag_w(o: u32) -> coop_mat16x16<f16, B> {
    return coopLoad<coop_mat16x16<f16, B>>(&tile_w[o / 4u], LDS / 4u);
}

@compute @workgroup_size(256, 1, 1)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) tid: u32,
) {
    let sub = tid / 32u;
    let lane = tid % 32u;
    let row0 = wg.y * BM;
    let col0 = wg.x * BN;
    let sub_row = (sub / 4u) * 64u;
    let sub_col = (sub % 4u) * 32u;

    var c00 = coop_mat16x16<f32, C>();
    var c01 = coop_mat16x16<f32, C>();
    var c10 = coop_mat16x16<f32, C>();
    var c11 = coop_mat16x16<f32, C>();
    var c20 = coop_mat16x16<f32, C>();
    var c21 = coop_mat16x16<f32, C>();
    var c30 = coop_mat16x16<f32, C>();
    var c31 = coop_mat16x16<f32, C>();

    // This invocation's 8 rows (lr + RS e) and its 4 reduction indices (4 lq ..) of each step.
    let lr = tid / KV;
    let lq = tid % KV;
    let r0 = row_position(row0 + lr);
    let r1 = row_position(row0 + lr + RS);
    let r2 = row_position(row0 + lr + 2u * RS);
    let r3 = row_position(row0 + lr + 3u * RS);
    let r4 = row_position(row0 + lr + 4u * RS);
    let r5 = row_position(row0 + lr + 5u * RS);
    let r6 = row_position(row0 + lr + 6u * RS);
    let r7 = row_position(row0 + lr + 7u * RS);
    let wc = col0 + lr;

    var tap = tap_at(lq * 4u);
    var fx0 = fetch_x(r0, tap);
    var fx1 = fetch_x(r1, tap);
    var fx2 = fetch_x(r2, tap);
    var fx3 = fetch_x(r3, tap);
    var fx4 = fetch_x(r4, tap);
    var fx5 = fetch_x(r5, tap);
    var fx6 = fetch_x(r6, tap);
    var fx7 = fetch_x(r7, tap);
    var fw0 = fetch_w(wc, lq);
    var fw1 = fetch_w(wc + RS, lq);
    var fw2 = fetch_w(wc + 2u * RS, lq);
    var fw3 = fetch_w(wc + 3u * RS, lq);
    var fw4 = fetch_w(wc + 4u * RS, lq);
    var fw5 = fetch_w(wc + 5u * RS, lq);
    var fw6 = fetch_w(wc + 6u * RS, lq);
    var fw7 = fetch_w(wc + 7u * RS, lq);
    let so = (lr * LDS + lq * 4u) / 4u;
    let step = RS * LDS / 4u;

    for (var k0 = 0u; k0 < p.k; k0 += BK) {
        tile_x[so] = fx0;
        tile_x[so + step] = fx1;
        tile_x[so + 2u * step] = fx2;
        tile_x[so + 3u * step] = fx3;
        tile_x[so + 4u * step] = fx4;
        tile_x[so + 5u * step] = fx5;
        tile_x[so + 6u * step] = fx6;
        tile_x[so + 7u * step] = fx7;
        tile_w[so] = fw0;
        tile_w[so + step] = fw1;
        tile_w[so + 2u * step] = fw2;
        tile_w[so + 3u * step] = fw3;
        tile_w[so + 4u * step] = fw4;
        tile_w[so + 5u * step] = fw5;
        tile_w[so + 6u * step] = fw6;
        tile_w[so + 7u * step] = fw7;
        workgroupBarrier();

        // The next step's operands, fetched while this one is multiplied.
        let kn = k0 + BK;
        tap = tap_at(kn + lq * 4u);
        fx0 = fetch_x(r0, tap);
        fx1 = fetch_x(r1, tap);
        fx2 = fetch_x(r2, tap);
        fx3 = fetch_x(r3, tap);
        fx4 = fetch_x(r4, tap);
        fx5 = fetch_x(r5, tap);
        fx6 = fetch_x(r6, tap);
        fx7 = fetch_x(r7, tap);
        let kv = kn / 4u + lq;
        fw0 = fetch_w(wc, kv);
        fw1 = fetch_w(wc + RS, kv);
        fw2 = fetch_w(wc + 2u * RS, kv);
        fw3 = fetch_w(wc + 3u * RS, kv);
        fw4 = fetch_w(wc + 4u * RS, kv);
        fw5 = fetch_w(wc + 5u * RS, kv);
        fw6 = fetch_w(wc + 6u * RS, kv);
        fw7 = fetch_w(wc + 7u * RS, kv);

        for (var kk = 0u; kk < BK; kk += 16u) {
            let a0 = frag_x(sub_row * LDS + kk);
            let a1 = frag_x((sub_row + 16u) * LDS + kk);
            let a2 = frag_x((sub_row + 32u) * LDS + kk);
            let a3 = frag_x((sub_row + 48u) * LDS + kk);
            let b0 = frag_w(sub_col * LDS + kk);
            let b1 = frag_w((sub_col + 16u) * LDS + kk);
            c00 = coopMultiplyAdd(a0, b0, c00);
            c01 = coopMultiplyAdd(a0, b1, c01);
            c10 = coopMultiplyAdd(a1, b0, c10);
            c11 = coopMultiplyAdd(a1, b1, c11);
            c20 = coopMultiplyAdd(a2, b0, c20);
            c21 = coopMultiplyAdd(a2, b1, c21);
            c30 = coopMultiplyAdd(a3, b0, c30);
            c31 = coopMultiplyAdd(a3, b1, c31);
        }
        workgroupBarrier();
    }

    finish_block(c00, c01, c10, c11, c20, c21, c30, c31, sub, lane, row0 + sub_row, col0 + sub_col);
}
