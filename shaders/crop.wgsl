// A window of every plane: y [P, TH, TW] = x [P, H, W] rows r0 .. r0 + TH, columns c0 .. c0 + TW
// (a spatial tile of a latent [C, F, H, W], P = C F). One thread per output element; the grid
// may be folded in 2D.

struct Params {
    height: u32,
    width: u32,
    tile_height: u32,
    tile_width: u32,
    r0: u32,
    c0: u32,
    n: u32,
    _pad0: u32,
}

@group(1) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<X_T>;
@group(0) @binding(2) var<storage, read_write> y: array<X_T>;

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
    let col = i % p.tile_width;
    let row = (i / p.tile_width) % p.tile_height;
    let plane = i / (p.tile_width * p.tile_height);
    y[i] = x[(plane * p.height + p.r0 + row) * p.width + p.c0 + col];
}
