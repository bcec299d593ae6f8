// Y = X W^T + b with a fused epilogue, on cooperative matrices (tensor cores): the same contract
// as matmul.wgsl for f16 X and W (K a multiple of 4; or W in Q8_0 / Q4_K, dequantised to f16),
// f32 accumulation, any bias / Y storage.
//
// A workgroup of 8 subgroups of 32 computes a 128 x 128 tile of Y; subgroup s owns a 64 x 32
// block (rows 64 * (s / 4), columns 32 * (s % 4)) as 4 x 2 fragments of 16 x 16. With
// WIDE_TILE the tile is 256 x 128 and subgroup s owns a 64 x 64 block (rows 64 * (s / 2),
// columns 64 * (s % 2)) as 4 x 4 fragments: 16 products per 8 fragment loads instead of 8 per 6,
// K steps of 32. K advances in
// steps of BK through workgroup memory; each thread fetches the next step's X and W into
// registers while the current one is multiplied, so global loads overlap the tensor-core work.
// The launcher only picks this kernel where subgroups are exactly 32 invocations wide, so that
// invocations 32s..32s+31 form subgroup s.
enable wgpu_cooperative_matrix;

struct Params {
    m: u32,
    n: u32,
    k: u32,
    gate_offset: u32,
}

@group(1) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<vec4<f16>>;
#if W_Q8
// W in Q8_0 (kernels/q8.rs): int8 values four to a word, one f32 scale per 32 values of a row;
// dequantised to f16 as each K step is fetched.
@group(0) @binding(2) var<storage, read> w: array<u32>;
@group(0) @binding(6) var<storage, read> w_scale: array<f32>;
#else
#if W_Q4K
// W in Q4_K (kernels/q4k.rs): 4-bit values eight to a word; six words per 256 values: d and dmin
// (f32 bits), then the 6-bit scale and minimum of each 32 values, two sub-blocks to a word;
// dequantised in f32, then to f16, as each K step is fetched.
@group(0) @binding(2) var<storage, read> w: array<u32>;
@group(0) @binding(6) var<storage, read> w_scale: array<u32>;
#else
@group(0) @binding(2) var<storage, read> w: array<vec4<f16>>;
#endif
#endif
#if HAS_BIAS
@group(0) @binding(3) var<storage, read> bias: array<B_T>;
#endif
#if HAS_GATE
@group(0) @binding(4) var<storage, read> gate: array<f32>;
#endif
@group(0) @binding(5) var<storage, read_write> y: array<Y_T>;

#if WIDE_TILE
const BM: u32 = 256u;
#else
const BM: u32 = 128u;
#endif
const BN: u32 = 128u;
// K step: 32, or 64 with WIDE_K (fewer barriers per product, more workgroup memory).
#if WIDE_K
const BK: u32 = 64u;
#else
const BK: u32 = 32u;
#endif
// Row stride of the staged tiles in f16: BK + 8 of padding spreads the rows over the banks
// and keeps every fragment row 16-byte aligned.
const LDS: u32 = BK + 8u;
// Vectors of 4 staged per row and K step.
const KV: u32 = BK / 4u;

#if VEC_TILES
// Tiles held as vectors of 4 halves: one store per fetched vector; fragment loads count
// offsets and strides in vectors.
var<workgroup> tile_x: array<vec4<f16>, BM * LDS / 4u>;
var<workgroup> tile_w: array<vec4<f16>, BN * LDS / 4u>;
#else
var<workgroup> tile_x: array<f16, BM * LDS>; // [BM][LDS]
var<workgroup> tile_w: array<f16, BN * LDS>; // [BN][LDS]
#endif

#include matmul_epilogue
#include coop_output

// 4 consecutive k of row `r` of X starting at vector `kv` (k = 4 kv), zero outside the matrix.
fn load_x(r: u32, kv: u32) -> vec4<f16> {
    let kvs = p.k / 4u;
    if (r < p.m && kv < kvs) {
        return x[r * kvs + kv];
    }
    return vec4<f16>(0.0);
}

fn load_w(r: u32, kv: u32) -> vec4<f16> {
    let kvs = p.k / 4u;
    if (r < p.n && kv < kvs) {
#if W_Q8
        // K is a multiple of 32: the 8 words of a block share its scale.
        let q = w[r * kvs + kv];
        let v = vec4<i32>(
            bitcast<i32>(q << 24u) >> 24u,
            bitcast<i32>(q << 16u) >> 24u,
            bitcast<i32>(q << 8u) >> 24u,
            bitcast<i32>(q) >> 24u,
        );
        return vec4<f16>(vec4<f32>(v) * w_scale[(r * kvs + kv) / 8u]);
#else
#if W_Q4K
        // K is a multiple of 256: vector vi holds elements 4 vi .. 4 vi + 3 of W, which share
        // super-block vi / 64, sub-block (vi / 8) % 8 and half vi % 2 of word vi / 2.
        let vi = r * kvs + kv;
        let s = (vi / 64u) * 6u;
        let j = (vi / 8u) % 8u;
        let pair = w_scale[s + 2u + j / 2u] >> (16u * (j % 2u));
        let scale = bitcast<f32>(w_scale[s]) * f32(pair & 63u);
        let offset = bitcast<f32>(w_scale[s + 1u]) * f32((pair >> 8u) & 63u);
        let q = w[vi / 2u] >> (16u * (vi % 2u));
        let v = vec4<u32>(q, q >> 4u, q >> 8u, q >> 12u) & vec4<u32>(15u);
        return vec4<f16>(scale * vec4<f32>(v) - offset);
#else
        return w[r * kvs + kv];
#endif
#endif
    }
    return vec4<f16>(0.0);
}

#if VEC_TILES
fn put_x(o: u32, v: vec4<f16>) {
    tile_x[o / 4u] = v;
}

fn put_w(o: u32, v: vec4<f16>) {
    tile_w[o / 4u] = v;
}

fn frag_x(o: u32) -> coop_mat16x16<f16, A> {
    return coopLoadT<coop_mat16x16<f16, A>>(&tile_x[o / 4u], LDS / 4u);
}

fn frag_w(o: u32) -> coop_mat16x16<f16, B> {
    return coopLoad<coop_mat16x16<f16, B>>(&tile_w[o / 4u], LDS / 4u);
}
#else
fn put_x(o: u32, v: vec4<f16>) {
    tile_x[o] = v.x;
    tile_x[o + 1u] = v.y;
    tile_x[o + 2u] = v.z;
    tile_x[o + 3u] = v.w;
}

fn put_w(o: u32, v: vec4<f16>) {
    tile_w[o] = v.x;
    tile_w[o + 1u] = v.y;
    tile_w[o + 2u] = v.z;
    tile_w[o + 3u] = v.w;
}

// A = X rows (row-major in the tile); B = W^T, i.e. W rows read column-major.
fn frag_x(o: u32) -> coop_mat16x16<f16, A> {
    return coopLoadT<coop_mat16x16<f16, A>>(&tile_x[o], LDS);
}

fn frag_w(o: u32) -> coop_mat16x16<f16, B> {
    return coopLoad<coop_mat16x16<f16, B>>(&tile_w[o], LDS);
}
#endif

@compute @workgroup_size(256, 1, 1)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) tid: u32,
) {
    let sub = tid / 32u;
    let lane = tid % 32u;
    let row0 = wg.y * BM;
    let col0 = wg.x * BN;
#if WIDE_TILE
    let sub_row = (sub / 2u) * 64u;
    let sub_col = (sub % 2u) * 64u;
#else
    let sub_row = (sub / 4u) * 64u;
    let sub_col = (sub % 4u) * 32u;
#endif

    // Accumulators as named values (row fragment i, column fragment j), not an array.
    var c00 = coop_mat16x16<f32, C>();
    var c01 = coop_mat16x16<f32, C>();
    var c10 = coop_mat16x16<f32, C>();
    var c11 = coop_mat16x16<f32, C>();
    var c20 = coop_mat16x16<f32, C>();
    var c21 = coop_mat16x16<f32, C>();
    var c30 = coop_mat16x16<f32, C>();
    var c31 = coop_mat16x16<f32, C>();
#if WIDE_TILE
    var c02 = coop_mat16x16<f32, C>();
    var c03 = coop_mat16x16<f32, C>();
    var c12 = coop_mat16x16<f32, C>();
    var c13 = coop_mat16x16<f32, C>();
    var c22 = coop_mat16x16<f32, C>();
    var c23 = coop_mat16x16<f32, C>();
    var c32 = coop_mat16x16<f32, C>();
    var c33 = coop_mat16x16<f32, C>();
#endif

    // Each invocation moves BM * KV / 256 vectors of X and BN * KV / 256 of W per K step: rows
    // lr + RS e, k = 4 lq .. 4 lq + 3 of the step.
    let lr = tid / KV;
    let lq = tid % KV;
    const RS: u32 = 256u / KV;
    var fx0 = load_x(row0 + lr, lq);
    var fx1 = load_x(row0 + lr + RS, lq);
    var fx2 = load_x(row0 + lr + 2u * RS, lq);
    var fx3 = load_x(row0 + lr + 3u * RS, lq);
    var fw0 = load_w(col0 + lr, lq);
    var fw1 = load_w(col0 + lr + RS, lq);
    var fw2 = load_w(col0 + lr + 2u * RS, lq);
    var fw3 = load_w(col0 + lr + 3u * RS, lq);
#if WIDE_K || WIDE_TILE
    var fx4 = load_x(row0 + lr + 4u * RS, lq);
    var fx5 = load_x(row0 + lr + 5u * RS, lq);
    var fx6 = load_x(row0 + lr + 6u * RS, lq);
    var fx7 = load_x(row0 + lr + 7u * RS, lq);
#endif
#if WIDE_K
    var fw4 = load_w(col0 + lr + 4u * RS, lq);
    var fw5 = load_w(col0 + lr + 5u * RS, lq);
    var fw6 = load_w(col0 + lr + 6u * RS, lq);
    var fw7 = load_w(col0 + lr + 7u * RS, lq);
#endif
    let so = lr * LDS + lq * 4u;

    for (var k0 = 0u; k0 < p.k; k0 += BK) {
        put_x(so, fx0);
        put_x(so + RS * LDS, fx1);
        put_x(so + 2u * RS * LDS, fx2);
        put_x(so + 3u * RS * LDS, fx3);
        put_w(so, fw0);
        put_w(so + RS * LDS, fw1);
        put_w(so + 2u * RS * LDS, fw2);
        put_w(so + 3u * RS * LDS, fw3);
#if WIDE_K || WIDE_TILE
        put_x(so + 4u * RS * LDS, fx4);
        put_x(so + 5u * RS * LDS, fx5);
        put_x(so + 6u * RS * LDS, fx6);
        put_x(so + 7u * RS * LDS, fx7);
#endif
#if WIDE_K
        put_w(so + 4u * RS * LDS, fw4);
        put_w(so + 5u * RS * LDS, fw5);
        put_w(so + 6u * RS * LDS, fw6);
        put_w(so + 7u * RS * LDS, fw7);
#endif
        workgroupBarrier();

        // The next step's operands (zeros past the end of K).
        let kv = (k0 + BK) / 4u + lq;
        fx0 = load_x(row0 + lr, kv);
        fx1 = load_x(row0 + lr + RS, kv);
        fx2 = load_x(row0 + lr + 2u * RS, kv);
        fx3 = load_x(row0 + lr + 3u * RS, kv);
        fw0 = load_w(col0 + lr, kv);
        fw1 = load_w(col0 + lr + RS, kv);
        fw2 = load_w(col0 + lr + 2u * RS, kv);
        fw3 = load_w(col0 + lr + 3u * RS, kv);
#if WIDE_K || WIDE_TILE
        fx4 = load_x(row0 + lr + 4u * RS, kv);
        fx5 = load_x(row0 + lr + 5u * RS, kv);
        fx6 = load_x(row0 + lr + 6u * RS, kv);
        fx7 = load_x(row0 + lr + 7u * RS, kv);
#endif
#if WIDE_K
        fw4 = load_w(col0 + lr + 4u * RS, kv);
        fw5 = load_w(col0 + lr + 5u * RS, kv);
        fw6 = load_w(col0 + lr + 6u * RS, kv);
        fw7 = load_w(col0 + lr + 7u * RS, kv);
#endif

        for (var kk = 0u; kk < BK; kk += 16u) {
            let a0 = frag_x(sub_row * LDS + kk);
            let a1 = frag_x((sub_row + 16u) * LDS + kk);
            let a2 = frag_x((sub_row + 32u) * LDS + kk);
            let a3 = frag_x((sub_row + 48u) * LDS + kk);
            let b0 = frag_w(sub_col * LDS + kk);
            let b1 = frag_w((sub_col + 16u) * LDS + kk);
            c00 = coopMultiplyAdd(a0, b0, c00);
            c01 = coopMultiplyAdd(a0, b1, c01);
            c10 = coopMultiplyAdd(a1, b0, c10);
            c11 = coopMultiplyAdd(a1, b1, c11);
            c20 = coopMultiplyAdd(a2, b0, c20);
            c21 = coopMultiplyAdd(a2, b1, c21);
            c30 = coopMultiplyAdd(a3, b0, c30);
            c31 = coopMultiplyAdd(a3, b1, c31);
#if WIDE_TILE
            let b2 = frag_w((sub_col + 32u) * LDS + kk);
            let b3 = frag_w((sub_col + 48u) * LDS + kk);
            c02 = coopMultiplyAdd(a0, b2, c02);
            c03 = coopMultiplyAdd(a0, b3, c03);
            c12 = coopMultiplyAdd(a1, b2, c12);
            c13 = coopMultiplyAdd(a1, b3, c13);
            c22 = coopMultiplyAdd(a2, b2, c22);
            c23 = coopMultiplyAdd(a2, b3, c23);
            c32 = coopMultiplyAdd(a3, b2, c32);
            c33 = coopMultiplyAdd(a3, b3, c33);
#endif
        }
        workgroupBarrier();
    }

#if WIDE_TILE
    finish_block(c02, c03, c12, c13, c22, c23, c32, c33, sub, lane, row0 + sub_row, col0 + sub_col + 32u);
#endif
    finish_block(c00, c01, c10, c11, c20, c21, c30, c31, sub, lane, row0 + sub_row, col0 + sub_col);
}
