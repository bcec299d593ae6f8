// Causal 3D convolution (a 2D one when kt = 1) as an implicit GEMM over channels-last frames.
//   x: [T, in_h, in_w, cin] (X_T), the new input frames.
//   cache (HAS_CACHE): [past, in_h, in_w, cin] (X_T), the previous input frames; only the last
//     `valid` of them exist, the frames before those are the causal zero padding.
//   w: [n, kt * kh * kw * cin] (W_T), taps-major: k = ((dt * kh + dy) * kw + dx) * cin + ci.
//   bias (HAS_BIAS): [n] (W_T).
//   y (Y_T): output row r = (t, oy, ox), column c; c splits into (s, ch) = (c / n_group,
//     c % n_group) and lands at frame f0 + t * groups + s, pixel oy * out_w + ox, channel ch of a
//     tensor with the given strides. This writes channels-last frames (groups 1), the two time
//     halves of a time_conv interleaved as frames 2t, 2t + 1 (groups 2), or channel-first
//     [n, F, H, W] video (chan_stride F * H * W).
// Output frame t reads the virtual frames t .. t + kt - 1 of [cache, x] (past = kt - 1 frames of
// cache first). The input is seen through a nearest upsampling by 2^up_shift, then zero-padded by
// pad_h / pad_w on both sides. HAS_RESIDUAL adds the convolution to y in place; CLAMP_UNIT clamps
// the result to [-1, 1]. Tiling as matmul.wgsl: 64 x 64 outputs per workgroup of 16 x 16
// threads, 4 x 4 per thread, K in steps of 16 through workgroup memory; f32 accumulation.
// Convolutions with few output channels go to conv_direct.wgsl instead.

#include conv_params

@group(1) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<X_T>;
#if HAS_CACHE
@group(0) @binding(2) var<storage, read> cache: array<X_T>;
#endif
@group(0) @binding(3) var<storage, read> w: array<W_T>;
#if HAS_BIAS
@group(0) @binding(4) var<storage, read> bias: array<W_T>;
#endif
@group(0) @binding(5) var<storage, read_write> y: array<Y_T>;

const BM: u32 = 64u;
const BN: u32 = 64u;
const BK: u32 = 16u;

var<workgroup> tile_x: array<f32, 1024>; // [BK][BM]
var<workgroup> tile_w: array<f32, 1024>; // [BK][BN]

#include conv_output

// One element of the implicit im2col matrix: output frame t at (oy, ox), reduction index kk.
fn load_input(t: u32, oy: u32, ox: u32, kk: u32) -> f32 {
    let tap = kk / p.cin;
    let ci = kk - tap * p.cin;
    let khw = p.kh * p.kw;
    let dt = tap / khw;
    let rem = tap - dt * khw;
    let dy = rem / p.kw;
    let dx = rem - dy * p.kw;
    let iy = i32(oy + dy) - i32(p.pad_h);
    let ix = i32(ox + dx) - i32(p.pad_w);
    let vh = i32(p.in_h << p.up_shift);
    let vw = i32(p.in_w << p.up_shift);
    if (iy < 0 || ix < 0 || iy >= vh || ix >= vw) {
        return 0.0;
    }
    let pix = (u32(iy) >> p.up_shift) * p.in_w + (u32(ix) >> p.up_shift);
    let frame_elems = p.in_h * p.in_w * p.cin;
    let v = t + dt;
    if (v < p.past) {
#if HAS_CACHE
        if (v + p.valid < p.past) {
            return 0.0;
        }
        return f32(cache[v * frame_elems + pix * p.cin + ci]);
#else
        return 0.0;
#endif
    }
    return f32(x[(v - p.past) * frame_elems + pix * p.cin + ci]);
}

@compute @workgroup_size(16, 16, 1)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) tid: u32,
) {
    let row0 = wg.y * BM;
    let col0 = wg.x * BN;
    let out_hw = p.out_h * p.out_w;
    // Accumulators as named vectors, not arrays: some drivers put loop-indexed private arrays
    // in slow local memory. Row i of this thread's 4 x 4 block is acc_i; column j is lane j.
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    // Each thread stages 4 consecutive k of one output row and one weight row per K step; the
    // row's position is decoded once.
    let load_r = tid / 4u;
    let load_k = (tid % 4u) * 4u;
    let xr = row0 + load_r;
    let t = xr / out_hw;
    let opix = xr - t * out_hw;
    let oy = opix / p.out_w;
    let ox = opix - oy * p.out_w;
    for (var k0 = 0u; k0 < p.k; k0 += BK) {
        for (var e = 0u; e < 4u; e++) {
            let kk = k0 + load_k + e;
            var xv = 0.0;
            if (xr < p.m && kk < p.k) {
                xv = load_input(t, oy, ox, kk);
            }
            tile_x[(load_k + e) * BM + load_r] = xv;
            let wr = col0 + load_r;
            var wv = 0.0;
            if (wr < p.n && kk < p.k) {
                wv = f32(w[wr * p.k + kk]);
            }
            tile_w[(load_k + e) * BN + load_r] = wv;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk++) {
            let xo = kk * BM + lid.y;
            let wo = kk * BN + lid.x;
            let a = vec4<f32>(tile_x[xo], tile_x[xo + 16u], tile_x[xo + 32u], tile_x[xo + 48u]);
            let b = vec4<f32>(tile_w[wo], tile_w[wo + 16u], tile_w[wo + 32u], tile_w[wo + 48u]);
            acc0 = fma(vec4<f32>(a.x), b, acc0);
            acc1 = fma(vec4<f32>(a.y), b, acc1);
            acc2 = fma(vec4<f32>(a.z), b, acc2);
            acc3 = fma(vec4<f32>(a.w), b, acc3);
        }
        workgroupBarrier();
    }
    store_row(row0 + lid.y, col0 + lid.x, acc0);
    store_row(row0 + lid.y + 16u, col0 + lid.x, acc1);
    store_row(row0 + lid.y + 32u, col0 + lid.x, acc2);
    store_row(row0 + lid.y + 48u, col0 + lid.x, acc3);
}

// Finishes the 4 outputs of output row r owned by a thread (columns c0, c0+16, c0+32, c0+48).
fn store_row(r: u32, c0: u32, acc: vec4<f32>) {
    store_output(r, c0, acc.x);
    store_output(r, c0 + 16u, acc.y);
    store_output(r, c0 + 32u, acc.z);
    store_output(r, c0 + 48u, acc.w);
}
