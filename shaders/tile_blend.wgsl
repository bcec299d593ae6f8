// Adds one weighted tile of a channel-first video into the whole video: for every element of the
// tile x [C, T, th, tw], with one weight per pixel w [th, tw],
//   y[c, f0 + t, y0 + r, x0 + q] = (fresh ? 0 : y[...]) + w[r, q] * x[c, t, r, q]
// `fresh` (r >= fresh_r and q >= fresh_q): no earlier tile wrote the pixel, so y is not read and
// need not be initialised. `done` (r < done_r and q < done_q): no later tile writes the pixel, so
// the sum is final and is clamped to [-1, 1].
// One thread per element of x; the grid may be folded in 2D.

struct Params {
    n: u32,
    tile_frames: u32,
    tile_h: u32,
    tile_w: u32,
    frames: u32,
    height: u32,
    width: u32,
    f0: u32,
    y0: u32,
    x0: u32,
    fresh_r: u32,
    fresh_q: u32,
    done_r: u32,
    done_q: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(1) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

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
    let q = i % p.tile_w;
    let rows = i / p.tile_w; // (c * T + t) * th + r
    let r = rows % p.tile_h;
    let frame = rows / p.tile_h; // c * T + t
    let t = frame % p.tile_frames;
    let c = frame / p.tile_frames;
    let o = ((c * p.frames + p.f0 + t) * p.height + p.y0 + r) * p.width + p.x0 + q;
    var v = w[r * p.tile_w + q] * x[i];
    if (r < p.fresh_r || q < p.fresh_q) {
        v += y[o];
    }
    if (r < p.done_r && q < p.done_q) {
        v = clamp(v, -1.0, 1.0);
    }
    y[o] = v;
}
