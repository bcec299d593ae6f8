// The output stage shared by the convolutions (conv.wgsl, conv_coop.wgsl, conv_direct.wgsl): the
// GEMM's row r = (t, oy, ox) and column c = (s, ch) land at frame f0 + t * groups + s, pixel
// oy * out_w + ox, channel ch of y, with bias, in-place residual and clamp applied.
// Reads the module's `p`, `bias` and `y`.

fn store_output(r: u32, c: u32, acc: f32) {
    if (r >= p.m || c >= p.n) {
        return;
    }
    let out_hw = p.out_h * p.out_w;
    let t = r / out_hw;
    store_at(t, r - t * out_hw, c, acc);
}

// The same for output frame t, pixel rpix (in range), column c (in range).
fn store_at(t: u32, rpix: u32, c: u32, acc: f32) {
    let s = c / p.n_group;
    let ch = c - s * p.n_group;
    let frame = p.f0 + t * p.groups + s;
    let idx = frame * p.frame_stride + rpix * p.pix_stride + ch * p.chan_stride;
    var v = acc;
#if HAS_BIAS
    v += f32(bias[c]);
#endif
#if HAS_RESIDUAL
    v += f32(y[idx]);
#endif
#if CLAMP_UNIT
    v = clamp(v, -1.0, 1.0);
#endif
    y[idx] = Y_T(v);
}
