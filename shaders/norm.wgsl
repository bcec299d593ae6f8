// Normalisation of each row of x [rows, cols] over its last dimension; arithmetic in f32.
//   LAYER_NORM  y = (x - mean) / sqrt(var + eps), var the biased variance, then
//                 HAS_WEIGHT + HAS_BIAS: * weight[c] + bias[c] (W_T storage)
//                 MODULATE: * (1 + scale[c]) + shift[c] (f32 vectors read at element offsets)
//   RMS_NORM    y = x / sqrt(mean(x^2) + eps), then HAS_WEIGHT: * weight[c]
// IN_PLACE: x is not bound and y holds x on entry (each element is written by the thread that
// read it, after the reductions, so updating in place is safe).
// `main`: one workgroup per row with a tree reduction in workgroup memory. `lanes`: 32 threads
// per row and 8 rows per workgroup, for rows of up to about a thousand channels (the VAE's 96
// to 384), where a workgroup per row would leave most threads idle and a thread per row would
// read each row's elements far apart. `narrow`: one thread per row, for rows of a few channels.
// The mean is reduced before the centred variance (two passes over the row) for accuracy with
// large means. Rows fold into a 2D grid past max_compute_workgroups_per_dimension.

struct Params {
    rows: u32,
    cols: u32,
    eps: f32,
    scale_offset: u32,
    shift_offset: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(1) @binding(0) var<uniform> p: Params;
#ifndef IN_PLACE
@group(0) @binding(1) var<storage, read> x: array<X_T>;
#endif
#if HAS_WEIGHT
@group(0) @binding(2) var<storage, read> weight: array<W_T>;
#endif
#if HAS_BIAS
@group(0) @binding(3) var<storage, read> bias: array<W_T>;
#endif
#if MODULATE
@group(0) @binding(4) var<storage, read> scale: array<f32>;
@group(0) @binding(5) var<storage, read> shift: array<f32>;
#endif
@group(0) @binding(6) var<storage, read_write> y: array<Y_T>;

const WG: u32 = 256u;

var<workgroup> partial: array<f32, 256>;

// The sum of `v` over the workgroup; every thread gets it. Call from uniform control flow.
fn workgroup_sum(v: f32, lid: u32) -> f32 {
    partial[lid] = v;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
        if (lid < stride) {
            partial[lid] += partial[lid + stride];
        }
        workgroupBarrier();
    }
    let total = partial[0];
    workgroupBarrier(); // the next call overwrites partial
    return total;
}

fn load_x(i: u32) -> f32 {
#ifdef IN_PLACE
    return f32(y[i]);
#else
    return f32(x[i]);
#endif
}

// Scales/shifts the normalised value of column c as the variant asks, and stores it.
fn finish(i: u32, c: u32, normalised: f32) {
    var v = normalised;
#if HAS_WEIGHT
    v *= f32(weight[c]);
#endif
#if HAS_BIAS
    v += f32(bias[c]);
#endif
#if MODULATE
    v = v * (1.0 + scale[p.scale_offset + c]) + shift[p.shift_offset + c];
#endif
    y[i] = Y_T(v);
}

const LANES: u32 = 32u;

// The sum of `v` over the 32 threads of `lid`'s row in `lanes`; each of them gets it. Call from
// uniform control flow.
fn lanes_sum(v: f32, lid: u32) -> f32 {
    partial[lid] = v;
    workgroupBarrier();
    let lane = lid % LANES;
    for (var stride = LANES / 2u; stride > 0u; stride >>= 1u) {
        if (lane < stride) {
            partial[lid] += partial[lid + stride];
        }
        workgroupBarrier();
    }
    let total = partial[lid - lane];
    workgroupBarrier(); // the next call overwrites partial
    return total;
}

@compute @workgroup_size(256, 1, 1)
fn lanes(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = (wg.y * nwg.x + wg.x) * (WG / LANES) + lid / LANES;
    let lane = lid % LANES;
    // No early return: every thread takes part in the reductions. A row past the end has no
    // columns to read or write.
    let cols = select(0u, p.cols, row < p.rows);
    let base = row * p.cols;
    let n = f32(p.cols);
#if LAYER_NORM
    var sum = 0.0;
    for (var c = lane; c < cols; c += LANES) {
        sum += load_x(base + c);
    }
    let mean = lanes_sum(sum, lid) / n;
    var sum_sq = 0.0;
    for (var c = lane; c < cols; c += LANES) {
        let d = load_x(base + c) - mean;
        sum_sq += d * d;
    }
    let inv_std = inverseSqrt(lanes_sum(sum_sq, lid) / n + p.eps);
    for (var c = lane; c < cols; c += LANES) {
        finish(base + c, c, (load_x(base + c) - mean) * inv_std);
    }
#endif
#if RMS_NORM
    var sum_sq = 0.0;
    for (var c = lane; c < cols; c += LANES) {
        let v = load_x(base + c);
        sum_sq += v * v;
    }
    let inv_rms = inverseSqrt(lanes_sum(sum_sq, lid) / n + p.eps);
    for (var c = lane; c < cols; c += LANES) {
        finish(base + c, c, load_x(base + c) * inv_rms);
    }
#endif
}

const NARROW_WG: u32 = 64u;

@compute @workgroup_size(64, 1, 1)
fn narrow(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = (wg.y * nwg.x + wg.x) * NARROW_WG + lid;
    if (row >= p.rows) {
        return;
    }
    let base = row * p.cols;
    let n = f32(p.cols);
#if LAYER_NORM
    var sum = 0.0;
    for (var c = 0u; c < p.cols; c++) {
        sum += load_x(base + c);
    }
    let mean = sum / n;
    var sum_sq = 0.0;
    for (var c = 0u; c < p.cols; c++) {
        let d = load_x(base + c) - mean;
        sum_sq += d * d;
    }
    let inv_std = inverseSqrt(sum_sq / n + p.eps);
    for (var c = 0u; c < p.cols; c++) {
        finish(base + c, c, (load_x(base + c) - mean) * inv_std);
    }
#endif
#if RMS_NORM
    var sum_sq = 0.0;
    for (var c = 0u; c < p.cols; c++) {
        let v = load_x(base + c);
        sum_sq += v * v;
    }
    let inv_rms = inverseSqrt(sum_sq / n + p.eps);
    for (var c = 0u; c < p.cols; c++) {
        finish(base + c, c, load_x(base + c) * inv_rms);
    }
#endif
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
    let n = f32(p.cols);
#if LAYER_NORM
    var sum = 0.0;
    for (var c = lid; c < p.cols; c += WG) {
        sum += load_x(base + c);
    }
    let mean = workgroup_sum(sum, lid) / n;
    var sum_sq = 0.0;
    for (var c = lid; c < p.cols; c += WG) {
        let d = load_x(base + c) - mean;
        sum_sq += d * d;
    }
    let inv_std = inverseSqrt(workgroup_sum(sum_sq, lid) / n + p.eps);
    for (var c = lid; c < p.cols; c += WG) {
        finish(base + c, c, (load_x(base + c) - mean) * inv_std);
    }
#endif
#if RMS_NORM
    var sum_sq = 0.0;
    for (var c = lid; c < p.cols; c += WG) {
        let v = load_x(base + c);
        sum_sq += v * v;
    }
    let inv_rms = inverseSqrt(workgroup_sum(sum_sq, lid) / n + p.eps);
    for (var c = lid; c < p.cols; c += WG) {
        finish(base + c, c, load_x(base + c) * inv_rms);
    }
#endif
}
