// The output stage shared by the implicit-GEMM convolutions (conv.wgsl, conv_coop.wgsl): the
// GEMM's row r = (t, oy, ox) and column c = (s, ch) land at frame f0 + t * groups + s, pixel
// oy * out_w + ox, channel ch of y, with bias, in-place residual and clamp applied.
// Reads the module's `p`, `bias` and `y`.

fn store_output(r: u32, c: u32, acc: f32) {
    if (r >= p.m || c >= p.n) {
        return;
    }
    let out_hw = p.out_h * p.out_w;
    let rt = r / out_hw;
    let rpix = r - rt * out_hw;
    let s = c / p.n_group;
    let ch = c - s * p.n_group;
    let frame = p.f0 + rt * p.groups + s;
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
