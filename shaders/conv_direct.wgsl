// Causal 3D convolution for few output channels: the same operation, bindings and parameter
// block as conv.wgsl, computed directly instead of through a 64 x 64 GEMM tile. Each thread
// produces 4 consecutive output pixels of one row for a group of 4 (8 with CO_8, 16 with CO_8
// and CO_16) output channels; wg.y picks the channel group. Per thread the pixel position is decoded once;
// the taps are nested loops (dt, dy, dx) with the bounds tested per tap, and the innermost loop
// runs over input channels with consecutive reads. No workgroup memory and no barriers: the
// weights are read straight from storage at addresses uniform over the workgroup.
// Accumulators: one vec4 (the 4 pixels) per output channel, in f32.

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

const WG: u32 = 64u;

// Output channel c0 + j accumulates in aj (its 4 pixels); its weight row starts at rj.
var<private> a0: vec4<f32>;
var<private> a1: vec4<f32>;
var<private> a2: vec4<f32>;
var<private> a3: vec4<f32>;
var<private> r0: u32;
var<private> r1: u32;
var<private> r2: u32;
var<private> r3: u32;
#if CO_8
var<private> a4: vec4<f32>;
var<private> a5: vec4<f32>;
var<private> a6: vec4<f32>;
var<private> a7: vec4<f32>;
var<private> r4: u32;
var<private> r5: u32;
var<private> r6: u32;
var<private> r7: u32;
#endif
#if CO_16
var<private> a8: vec4<f32>;
var<private> a9: vec4<f32>;
var<private> a10: vec4<f32>;
var<private> a11: vec4<f32>;
var<private> a12: vec4<f32>;
var<private> a13: vec4<f32>;
var<private> a14: vec4<f32>;
var<private> a15: vec4<f32>;
var<private> r8: u32;
var<private> r9: u32;
var<private> r10: u32;
var<private> r11: u32;
var<private> r12: u32;
var<private> r13: u32;
var<private> r14: u32;
var<private> r15: u32;
#endif

// The start of channel c's weight row; channels past n repeat the last row (never stored).
fn weight_row(c: u32) -> u32 {
    return min(c, p.n - 1u) * p.k;
}

// Adds the 4 pixels' input values v (at reduction index kk) times each channel's weight.
fn accumulate(v: vec4<f32>, kk: u32) {
    a0 = fma(vec4<f32>(f32(w[r0 + kk])), v, a0);
    a1 = fma(vec4<f32>(f32(w[r1 + kk])), v, a1);
    a2 = fma(vec4<f32>(f32(w[r2 + kk])), v, a2);
    a3 = fma(vec4<f32>(f32(w[r3 + kk])), v, a3);
#if CO_8
    a4 = fma(vec4<f32>(f32(w[r4 + kk])), v, a4);
    a5 = fma(vec4<f32>(f32(w[r5 + kk])), v, a5);
    a6 = fma(vec4<f32>(f32(w[r6 + kk])), v, a6);
    a7 = fma(vec4<f32>(f32(w[r7 + kk])), v, a7);
#endif
#if CO_16
    a8 = fma(vec4<f32>(f32(w[r8 + kk])), v, a8);
    a9 = fma(vec4<f32>(f32(w[r9 + kk])), v, a9);
    a10 = fma(vec4<f32>(f32(w[r10 + kk])), v, a10);
    a11 = fma(vec4<f32>(f32(w[r11 + kk])), v, a11);
    a12 = fma(vec4<f32>(f32(w[r12 + kk])), v, a12);
    a13 = fma(vec4<f32>(f32(w[r13 + kk])), v, a13);
    a14 = fma(vec4<f32>(f32(w[r14 + kk])), v, a14);
    a15 = fma(vec4<f32>(f32(w[r15 + kk])), v, a15);
#endif
}

// One tap over the input channels, the 4 pixels starting at elements `at` of x; pixels outside
// `m` read as zeros.
fn tap_x(at: vec4<u32>, m: vec4<bool>, kk0: u32) {
    for (var ci = 0u; ci < p.cin; ci++) {
        let v = vec4<f32>(
            f32(x[at.x + ci]),
            f32(x[at.y + ci]),
            f32(x[at.z + ci]),
            f32(x[at.w + ci]),
        );
        accumulate(select(vec4<f32>(0.0), v, m), kk0 + ci);
    }
}

#if HAS_CACHE
// As tap_x, from the history frames.
fn tap_cache(at: vec4<u32>, m: vec4<bool>, kk0: u32) {
    for (var ci = 0u; ci < p.cin; ci++) {
        let v = vec4<f32>(
            f32(cache[at.x + ci]),
            f32(cache[at.y + ci]),
            f32(cache[at.z + ci]),
            f32(cache[at.w + ci]),
        );
        accumulate(select(vec4<f32>(0.0), v, m), kk0 + ci);
    }
}
#endif

#include conv_output

// Stores channel c of the 4 pixels from (t, oy, ox0); `count` of them are inside the row.
fn store4(t: u32, pix0: u32, count: u32, c: u32, v: vec4<f32>) {
    if (c >= p.n) {
        return;
    }
    store_at(t, pix0, c, v.x);
    if (count > 1u) {
        store_at(t, pix0 + 1u, c, v.y);
    }
    if (count > 2u) {
        store_at(t, pix0 + 2u, c, v.z);
    }
    if (count > 3u) {
        store_at(t, pix0 + 3u, c, v.w);
    }
}

@compute @workgroup_size(64, 1, 1)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    // Position: quad q of the output rows, 4 pixels from (t, oy, ox0).
    let quads_w = (p.out_w + 3u) / 4u;
    let quads_frame = quads_w * p.out_h;
    let frames = p.m / (p.out_h * p.out_w);
    let q = wg.x * WG + lid;
    if (q >= quads_frame * frames) {
        return;
    }
    let t = q / quads_frame;
    let qf = q - t * quads_frame;
    let oy = qf / quads_w;
    let ox0 = (qf - oy * quads_w) * 4u;
    let count = min(4u, p.out_w - ox0);
#if CO_16
    let c0 = wg.y * 16u;
#else
#if CO_8
    let c0 = wg.y * 8u;
#else
    let c0 = wg.y * 4u;
#endif
#endif
    a0 = vec4<f32>(0.0);
    a1 = vec4<f32>(0.0);
    a2 = vec4<f32>(0.0);
    a3 = vec4<f32>(0.0);
    r0 = weight_row(c0);
    r1 = weight_row(c0 + 1u);
    r2 = weight_row(c0 + 2u);
    r3 = weight_row(c0 + 3u);
#if CO_8
    a4 = vec4<f32>(0.0);
    a5 = vec4<f32>(0.0);
    a6 = vec4<f32>(0.0);
    a7 = vec4<f32>(0.0);
    r4 = weight_row(c0 + 4u);
    r5 = weight_row(c0 + 5u);
    r6 = weight_row(c0 + 6u);
    r7 = weight_row(c0 + 7u);
#endif
#if CO_16
    a8 = vec4<f32>(0.0);
    a9 = vec4<f32>(0.0);
    a10 = vec4<f32>(0.0);
    a11 = vec4<f32>(0.0);
    a12 = vec4<f32>(0.0);
    a13 = vec4<f32>(0.0);
    a14 = vec4<f32>(0.0);
    a15 = vec4<f32>(0.0);
    r8 = weight_row(c0 + 8u);
    r9 = weight_row(c0 + 9u);
    r10 = weight_row(c0 + 10u);
    r11 = weight_row(c0 + 11u);
    r12 = weight_row(c0 + 12u);
    r13 = weight_row(c0 + 13u);
    r14 = weight_row(c0 + 14u);
    r15 = weight_row(c0 + 15u);
#endif
    let vh = i32(p.in_h << p.up_shift);
    let vw = i32(p.in_w << p.up_shift);
    let frame_elems = p.in_h * p.in_w * p.cin;
    let kt = p.k / (p.kh * p.kw * p.cin);
    // Pixels past the row's end read a clamped position and are masked out.
    let lanes = vec4<u32>(0u, 1u, 2u, 3u);
    let in_row = lanes < vec4<u32>(count);
    let ox = vec4<i32>(vec4<u32>(ox0) + lanes) - vec4<i32>(i32(p.pad_w));
    let up = vec4<u32>(p.up_shift);
    for (var dt = 0u; dt < kt; dt++) {
        let v = t + dt;
        var fbase = 0u;
        var from_cache = false;
        if (v < p.past) {
#if HAS_CACHE
            if (v + p.valid < p.past) {
                continue;
            }
            from_cache = true;
            fbase = v * frame_elems;
#else
            continue;
#endif
        } else {
            fbase = (v - p.past) * frame_elems;
        }
        for (var dy = 0u; dy < p.kh; dy++) {
            let iy = i32(oy + dy) - i32(p.pad_h);
            if (iy < 0 || iy >= vh) {
                continue;
            }
            let row = fbase + (u32(iy) >> p.up_shift) * p.in_w * p.cin;
            for (var dx = 0u; dx < p.kw; dx++) {
                let ix = ox + vec4<i32>(i32(dx));
                let inside = (ix >= vec4<i32>(0)) & (ix < vec4<i32>(vw));
                let m = inside & in_row;
                let ixc = vec4<u32>(clamp(ix, vec4<i32>(0), vec4<i32>(vw - 1))) >> up;
                let at = vec4<u32>(row) + ixc * p.cin;
                let kk0 = ((dt * p.kh + dy) * p.kw + dx) * p.cin;
#if HAS_CACHE
                if (from_cache) {
                    tap_cache(at, m, kk0);
                    continue;
                }
#endif
                tap_x(at, m, kk0);
            }
        }
    }
    let pix0 = oy * p.out_w + ox0;
    store4(t, pix0, count, c0, a0);
    store4(t, pix0, count, c0 + 1u, a1);
    store4(t, pix0, count, c0 + 2u, a2);
    store4(t, pix0, count, c0 + 3u, a3);
#if CO_8
    store4(t, pix0, count, c0 + 4u, a4);
    store4(t, pix0, count, c0 + 5u, a5);
    store4(t, pix0, count, c0 + 6u, a6);
    store4(t, pix0, count, c0 + 7u, a7);
#endif
#if CO_16
    store4(t, pix0, count, c0 + 8u, a8);
    store4(t, pix0, count, c0 + 9u, a9);
    store4(t, pix0, count, c0 + 10u, a10);
    store4(t, pix0, count, c0 + 11u, a11);
    store4(t, pix0, count, c0 + 12u, a12);
    store4(t, pix0, count, c0 + 13u, a13);
    store4(t, pix0, count, c0 + 14u, a14);
    store4(t, pix0, count, c0 + 15u, a15);
#endif
}
