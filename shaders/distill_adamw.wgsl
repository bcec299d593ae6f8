// AdamW with global-norm clipping (DISTILL.md, Cost): for each element of one parameter tensor,
//   g = grad * min(1, clip / (||grad|| + 1e-6))   (no clipping when clip <= 0)
//   m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
//   theta -= lr (m / bc1 / (sqrt(v / bc2) + eps) + wd theta),  bc1 = 1 - b1^t, bc2 = 1 - b2^t.
// ||grad||^2 is the sum of the `slots` squared norms in `norms` (every gradient of the model).
// Element e of the parameter reads grad[(e / cols) * gstride + goff + e % cols], so that a
// weight and its bias can take their gradients from one (dW | db) table.

struct Params {
    count: u32,
    cols: u32,
    gstride: u32,
    goff: u32,
    slots: u32,
    grid_x: u32,
    _pad0: u32,
    _pad1: u32,
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    wd: f32,
    clip: f32,
    bc1: f32,
    bc2: f32,
}

@group(1) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> grad: array<f32>;
@group(0) @binding(2) var<storage, read> norms: array<f32>;
@group(0) @binding(3) var<storage, read_write> theta: array<f32>;
@group(0) @binding(4) var<storage, read_write> m: array<f32>;
@group(0) @binding(5) var<storage, read_write> v: array<f32>;

@compute @workgroup_size(256, 1, 1)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) tid: u32,
) {
    let e = (wg.y * p.grid_x + wg.x) * 256u + tid;
    if (e >= p.count) {
        return;
    }
    var scale = 1.0;
    if (p.clip > 0.0) {
        var sq = 0.0;
        for (var s = 0u; s < p.slots; s++) {
            sq += norms[s];
        }
        scale = min(1.0, p.clip / (sqrt(sq) + 1.0e-6));
    }
    let g = grad[(e / p.cols) * p.gstride + p.goff + e % p.cols] * scale;
    let mn = p.beta1 * m[e] + (1.0 - p.beta1) * g;
    let vn = p.beta2 * v[e] + (1.0 - p.beta2) * g * g;
    m[e] = mn;
    v[e] = vn;
    let th = theta[e];
    theta[e] = th - p.lr * ((mn / p.bc1) / (sqrt(vn / p.bc2) + p.eps) + p.wd * th);
}
