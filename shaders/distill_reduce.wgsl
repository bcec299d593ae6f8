// Column sums of a small f32 table, in one workgroup: out[slot + c] = sum_r x[r * width + c]
// (SQUARE: of x^2), c < width. The loss of a step from its per-(row, head) parts, and the
// squared norms of the gradients for global-norm clipping.

struct Params {
    rows: u32,
    width: u32,
    slot: u32,
    _pad0: u32,
}

@group(1) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

const NT: u32 = 256u;

var<workgroup> red: array<f32, NT>;

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(local_invocation_index) tid: u32) {
    for (var c = 0u; c < p.width; c++) {
        var s = 0.0;
        for (var r = tid; r < p.rows; r += NT) {
            let val = x[r * p.width + c];
#if SQUARE
            s = fma(val, val, s);
#else
            s += val;
#endif
        }
        red[tid] = s;
        workgroupBarrier();
        for (var n = NT / 2u; n > 0u; n >>= 1u) {
            if (tid < n) {
                red[tid] += red[tid + n];
            }
            workgroupBarrier();
        }
        if (tid == 0u) {
            out[p.slot + c] = red[0];
        }
        workgroupBarrier();
    }
}
