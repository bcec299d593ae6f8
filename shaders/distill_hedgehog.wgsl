// Backward of the hedgehog feature map through its outputs (DISTILL.md, Backward): with
// phi = [p; r], p = softmax(u), r = softmax(-u), u = W x + b, and upstream dphi = [a; c],
//   du = p * (a - a.p) - r * (c - c.r).
// (dW | db) = sum over rows of du (x | 1)^T is then the linear-state kernel's product.
//   phi, dphi: [rows, H, 2F] f32 for rows [lo, lo + count) (row t of the buffers);
//   du: [rows, H, F] f32.
// One thread per (row, head).

struct Params {
    heads: u32,
    half: u32,
    count: u32,
    grid_x: u32,
}

@group(1) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> phi: array<f32>;
@group(0) @binding(2) var<storage, read> dphi: array<f32>;
@group(0) @binding(3) var<storage, read_write> du: array<f32>;

@compute @workgroup_size(64, 1, 1)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) tid: u32,
) {
    let e = (wg.y * p.grid_x + wg.x) * 64u + tid;
    if (e >= p.count * p.heads) {
        return;
    }
    let row = e * 2u * p.half;
    var ap = 0.0;
    var cr = 0.0;
    for (var f = 0u; f < p.half; f++) {
        ap = fma(dphi[row + f], phi[row + f], ap);
        cr = fma(dphi[row + p.half + f], phi[row + p.half + f], cr);
    }
    for (var f = 0u; f < p.half; f++) {
        let pp = phi[row + f];
        let rr = phi[row + p.half + f];
        du[e * p.half + f] = pp * (dphi[row + f] - ap) - rr * (dphi[row + p.half + f] - cr);
    }
}
