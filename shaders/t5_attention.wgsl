// T5-style self-attention with a learned relative position bias, for short sequences (rows <= 512).
//   s[h, i, j] = scale * q[i, h] . k[j, h] + table[bucket(j - i), h]    (keys j >= valid masked)
//   o[i, h]    = sum_j softmax_j(s[h, i, j]) v[j, h]
// q, k, v, o are [rows, heads * head_dim] (Q_T, K_T, V_T, O_T storage); the bias table is
// [buckets, heads] (B_T); `buckets` is an f32 table of bucket indices of the relative position
// j - i, stored at index j - i + center. All arithmetic in f32.
// One workgroup per (query row, head): the query in workgroup memory, one score per key in
// workgroup memory, max and sum by tree reduction, then each thread accumulates output channels.
// Workgroups fold into a 2D grid past max_compute_workgroups_per_dimension.
//
// PAD_ROWS: y [out_rows, cols] = x [in_rows, cols] followed by zero rows (one thread per element).

#if PAD_ROWS

struct Params {
    in_rows: u32,
    out_rows: u32,
    cols: u32,
    _pad: u32,
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
    if (i >= p.out_rows * p.cols) {
        return;
    }
    if (i < p.in_rows * p.cols) {
        y[i] = Y_T(f32(x[i]));
    } else {
        y[i] = Y_T(0.0);
    }
}

#else

struct Params {
    rows: u32,
    heads: u32,
    head_dim: u32,
    valid: u32,
    center: u32,
    scale: f32,
    _pad0: u32,
    _pad1: u32,
}

@group(1) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<Q_T>;
@group(0) @binding(2) var<storage, read> k: array<K_T>;
@group(0) @binding(3) var<storage, read> v: array<V_T>;
@group(0) @binding(4) var<storage, read> table: array<B_T>;
@group(0) @binding(5) var<storage, read> buckets: array<f32>;
@group(0) @binding(6) var<storage, read_write> o: array<O_T>;

const WG: u32 = 64u;
const MAX_ROWS: u32 = 512u;
const MAX_HEAD_DIM: u32 = 256u;

var<workgroup> scores: array<f32, MAX_ROWS>;
var<workgroup> query: array<f32, MAX_HEAD_DIM>;
var<workgroup> partial: array<f32, 64>;

fn reduce_max(v: f32, lid: u32) -> f32 {
    partial[lid] = v;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
        if (lid < stride) {
            partial[lid] = max(partial[lid], partial[lid + stride]);
        }
        workgroupBarrier();
    }
    let r = partial[0];
    workgroupBarrier();
    return r;
}

fn reduce_sum(v: f32, lid: u32) -> f32 {
    partial[lid] = v;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
        if (lid < stride) {
            partial[lid] += partial[lid + stride];
        }
        workgroupBarrier();
    }
    let r = partial[0];
    workgroupBarrier();
    return r;
}

@compute @workgroup_size(64, 1, 1)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let index = wg.y * nwg.x + wg.x;
    if (index >= p.rows * p.heads) {
        return;
    }
    let i = index / p.heads;
    let h = index % p.heads;
    let width = p.heads * p.head_dim;
    let head_base = h * p.head_dim;
    for (var d = lid; d < p.head_dim; d += WG) {
        query[d] = f32(q[i * width + head_base + d]) * p.scale;
    }
    workgroupBarrier();

    var local_max = -3.0e38;
    for (var j = lid; j < p.valid; j += WG) {
        let key_base = j * width + head_base;
        var acc = 0.0;
        for (var d = 0u; d < p.head_dim; d++) {
            acc += query[d] * f32(k[key_base + d]);
        }
        let bucket = u32(buckets[j + p.center - i]);
        let s = acc + f32(table[bucket * p.heads + h]);
        scores[j] = s;
        local_max = max(local_max, s);
    }
    let m = reduce_max(local_max, lid);

    var local_sum = 0.0;
    for (var j = lid; j < p.valid; j += WG) {
        let e = exp(scores[j] - m);
        scores[j] = e;
        local_sum += e;
    }
    let total = reduce_sum(local_sum, lid);
    let inv = 1.0 / total;

    for (var d = lid; d < p.head_dim; d += WG) {
        var acc = 0.0;
        for (var j = 0u; j < p.valid; j++) {
            acc += scores[j] * f32(v[j * width + head_base + d]);
        }
        o[i * width + head_base + d] = O_T(acc * inv);
    }
}

#endif
