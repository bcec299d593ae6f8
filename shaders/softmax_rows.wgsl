// Row-wise softmax of a score matrix: y[r, :] = softmax(scale * x[r, :]).
//   x: [rows, cols] f32, y: [rows, cols] (Y_T).
// One workgroup of 256 invocations per row (the grid may be folded in 2D): the row's max, then
// the sum of exp(scale * (x - max)), then the normalised values, each reduced through workgroup
// memory.

struct Params {
    rows: u32,
    cols: u32,
    scale: f32,
    _pad: u32,
}

@group(1) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<Y_T>;

const WG: u32 = 256u;

var<workgroup> red: array<f32, WG>;

// The reduction of every invocation's `v` by max (is_max) or sum; uniform control flow.
fn reduce(v: f32, lid: u32, is_max: bool) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s /= 2u) {
        if (lid < s) {
            if (is_max) {
                red[lid] = max(red[lid], red[lid + s]);
            } else {
                red[lid] = red[lid] + red[lid + s];
            }
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

@compute @workgroup_size(256, 1, 1)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = wg.y * nwg.x + wg.x;
    if (row >= p.rows) {
        return;
    }
    let base = row * p.cols;
    var m = -3.0e38;
    for (var c = lid; c < p.cols; c += WG) {
        m = max(m, p.scale * x[base + c]);
    }
    m = reduce(m, lid, true);
    var s = 0.0;
    for (var c = lid; c < p.cols; c += WG) {
        s += exp(p.scale * x[base + c] - m);
    }
    let inv = 1.0 / reduce(s, lid, false);
    for (var c = lid; c < p.cols; c += WG) {
        y[base + c] = Y_T(exp(p.scale * x[base + c] - m) * inv);
    }
}
