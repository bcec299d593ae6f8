// The parameter block shared by the fused attention kernels (attention_flash*.wgsl).
//   q: [Nq, H, D], k, v: [Nk, H, D], o: [Nq, H, D], storage IO_T; arithmetic in f32.
//   Queries: rows q_lo .. q_lo + q_count. Softmax keys: j = k_lo + t * k_stride, t < k_count.
//   HAS_LINEAR: phi: [rows, H, DF] f32 (row of query i is i - phi_lo),
//     state: [H, DF, D + 1] f32, columns 0..D hold S, column D holds z.

struct Params {
    heads: u32,
    d: u32,
    df: u32,
    tiles: u32,
    q_lo: u32,
    q_count: u32,
    k_lo: u32,
    k_count: u32,
    k_stride: u32,
    grid_x: u32,
    phi_lo: u32,
    _pad0: u32,
    // scale * log2(e): scores live in the exp2 domain
    scale_log2: f32,
    eps: f32,
    // Nq: the rows of q (and o)
    q_rows: u32,
    _pad2: u32,
}
