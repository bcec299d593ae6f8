// Frames f0 .. f0 + T of a channel-first video x [C, F, H, W] as channels-last y [T, H, W, C].
// One thread per output element; the grid may be folded in 2D.

struct Params {
    channels: u32,
    frames: u32,
    f0: u32,
    hw: u32,
    n: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(1) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<X_T>;
@group(0) @binding(2) var<storage, read_write> y: array<Y_T>;

@compute @workgroup_size(256, 1, 1)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = (wg.y * nwg.x + wg.x) * 256u + lid;
    if (i >= p.n) {
        return;
    }
    let c = i % p.channels;
    let pix = i / p.channels; // t * hw + position
    let t = pix / p.hw;
    let pos = pix - t * p.hw;
    y[i] = Y_T(f32(x[(c * p.frames + p.f0 + t) * p.hw + pos]));
}
