// Gathers the rows of one step's query subset into a compact f32 buffer:
//   out[r, h, e] = x[idx[idx_lo + r], h, e],  r < rows;  x: [N, H, D] (IO_T), out: [rows, H, D].
// idx holds u32 query indices (uploaded as raw bytes).

struct Params {
    rows: u32,
    hd: u32,
    idx_lo: u32,
    grid_x: u32,
}

@group(1) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> idx: array<u32>;
@group(0) @binding(2) var<storage, read> x: array<IO_T>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(256, 1, 1)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) tid: u32,
) {
    let e = (wg.y * p.grid_x + wg.x) * 256u + tid;
    if (e >= p.rows * p.hd) {
        return;
    }
    let r = e / p.hd;
    out[e] = f32(x[idx[p.idx_lo + r] * p.hd + e % p.hd]);
}
