// One frame of a channel-first video x [3, F, H, W] (values in [-1, 1]) as packed RGBA8 pixels,
// row by row with a stride of `row_stride` pixels, so that the buffer can be copied straight
// into an Rgba8Unorm texture (copies want rows of a multiple of 256 bytes).
// One thread per pixel; the grid may be folded in 2D. Padding pixels are left as they are.

struct Params {
    frames: u32,
    frame: u32,
    width: u32,
    hw: u32,
    row_stride: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(1) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<X_T>;
@group(0) @binding(2) var<storage, read_write> y: array<u32>;

// round((v + 1) / 2 * 255) with halves away from zero, clamped; NaN gives 0 (as the video
// writers do on the CPU).
fn to_byte(v: f32) -> u32 {
    let s = (v + 1.0) * 127.5;
    if (!(s >= 0.0)) {
        return 0u;
    }
    // floor(s + 0.5) would round 0.49999997 up; s - floor(s) is exact.
    let c = min(s, 255.0);
    let f = floor(c);
    return u32(f) + select(0u, 1u, c - f >= 0.5);
}

@compute @workgroup_size(256, 1, 1)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = (wg.y * nwg.x + wg.x) * 256u + lid;
    if (i >= p.hw) {
        return;
    }
    let plane = p.frames * p.hw;
    let base = p.frame * p.hw + i;
    let r = to_byte(f32(x[base]));
    let g = to_byte(f32(x[plane + base]));
    let b = to_byte(f32(x[2u * plane + base]));
    let row = i / p.width;
    let col = i - row * p.width;
    // Little-endian: bytes R, G, B, A in memory, the order of Rgba8Unorm.
    y[row * p.row_stride + col] = r | (g << 8u) | (b << 16u) | (255u << 24u);
}
