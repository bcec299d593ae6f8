// The parameter block shared by the implicit-GEMM convolutions (conv*.wgsl); the geometry is
// described at the top of conv.wgsl.

struct Params {
    m: u32,
    n: u32,
    k: u32,
    cin: u32,
    in_h: u32,
    in_w: u32,
    out_h: u32,
    out_w: u32,
    kh: u32,
    kw: u32,
    pad_h: u32,
    pad_w: u32,
    up_shift: u32,
    past: u32,
    valid: u32,
    n_group: u32,
    groups: u32,
    f0: u32,
    frame_stride: u32,
    pix_stride: u32,
    chan_stride: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}
