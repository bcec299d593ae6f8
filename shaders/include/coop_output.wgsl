// The output stage of the cooperative-matrix GEMMs (matmul_coop.wgsl, conv_coop.wgsl): each
// subgroup's 64 x 32 block of accumulators, 4 x 2 fragments of 16 x 16, goes through workgroup
// memory (one fragment per subgroup at a time) to the kernel's `store_output(r, c, acc)`.
// Workgroups of 8 subgroups of 32.

var<workgroup> stage: array<f32, 2048>; // one 16 x 16 fragment per subgroup

// Finishes the 256 outputs of one fragment (rows r0.., columns c0..), 8 per invocation of the
// subgroup. Called in uniform control flow by every subgroup.
fn finish_fragment(acc: coop_mat16x16<f32, C>, sub: u32, lane: u32, r0: u32, c0: u32) {
    let base = sub * 256u;
    coopStoreT(acc, &stage[base], 16u);
    workgroupBarrier();
    for (var e = lane; e < 256u; e += 32u) {
        store_output(r0 + e / 16u, c0 + e % 16u, stage[base + e]);
    }
    workgroupBarrier();
}

// Finishes a subgroup's block whose top-left output is (r, c): fragment cij holds rows
// r + 16 i.., columns c + 16 j.. .
fn finish_block(
    c00: coop_mat16x16<f32, C>, c01: coop_mat16x16<f32, C>,
    c10: coop_mat16x16<f32, C>, c11: coop_mat16x16<f32, C>,
    c20: coop_mat16x16<f32, C>, c21: coop_mat16x16<f32, C>,
    c30: coop_mat16x16<f32, C>, c31: coop_mat16x16<f32, C>,
    sub: u32, lane: u32, r: u32, c: u32,
) {
    finish_fragment(c00, sub, lane, r, c);
    finish_fragment(c01, sub, lane, r, c + 16u);
    finish_fragment(c10, sub, lane, r + 16u, c);
    finish_fragment(c11, sub, lane, r + 16u, c + 16u);
    finish_fragment(c20, sub, lane, r + 32u, c);
    finish_fragment(c21, sub, lane, r + 32u, c + 16u);
    finish_fragment(c30, sub, lane, r + 48u, c);
    finish_fragment(c31, sub, lane, r + 48u, c + 16u);
}
