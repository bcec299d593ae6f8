// 3D rotary position embedding, in place on x [N, H, D] (X_T storage, arithmetic in f32).
// Tokens are the cells of a (frames, rows, cols) grid in row-major order, cols fastest. Each head
// vector holds D/2 interleaved pairs (x[2j], x[2j+1]) -> (a cos - b sin, a sin + b cos): pairs
// [0, t_pairs) rotate with the frame index, the next h_pairs with the row, the rest with the col.
// The angles come from a table the launcher computes in f64 once per grid, one (cos, sin) per
// (axis position, pair): frames * t_pairs rows, then rows * h_pairs, then cols * w_pairs. A table
// keeps GPU sin/cos (absolute error 2^-11 allowed by WGSL) out of the result.
// One thread per pair; the grid may be folded in 2D past max_compute_workgroups_per_dimension.

struct Params {
    pairs_total: u32,
    head_pairs: u32,
    heads: u32,
    t_pairs: u32,
    h_pairs: u32,
    grid_rows: u32,
    grid_cols: u32,
    h_table_start: u32,
    w_table_start: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(1) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> table: array<vec2<f32>>;
@group(0) @binding(2) var<storage, read_write> x: array<X_T>;

const WG: u32 = 256u;

@compute @workgroup_size(256, 1, 1)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = (wg.y * nwg.x + wg.x) * WG + lid;
    if (i >= p.pairs_total) {
        return;
    }
    let j = i % p.head_pairs;
    let token = i / (p.head_pairs * p.heads);
    let col = token % p.grid_cols;
    let row = (token / p.grid_cols) % p.grid_rows;
    let frame = token / (p.grid_cols * p.grid_rows);
    var entry: u32;
    if (j < p.t_pairs) {
        entry = frame * p.t_pairs + j;
    } else if (j < p.t_pairs + p.h_pairs) {
        entry = p.h_table_start + row * p.h_pairs + (j - p.t_pairs);
    } else {
        let w_pairs = p.head_pairs - p.t_pairs - p.h_pairs;
        entry = p.w_table_start + col * w_pairs + (j - p.t_pairs - p.h_pairs);
    }
    let cs = table[entry];
    let a = f32(x[2u * i]);
    let b = f32(x[2u * i + 1u]);
    x[2u * i] = X_T(a * cs.x - b * cs.y);
    x[2u * i + 1u] = X_T(a * cs.y + b * cs.x);
}
