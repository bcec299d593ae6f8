// The input history a causal convolution keeps between calls: the last `past` frames of the
// virtual sequence [old (past frames, the last `valid` of them real), x (T frames)].
//   old, updated: [past, H, W, C] (X_T); x: [T, H, W, C] (X_T).
// updated frame j is virtual frame T + j; frames past the old ones come from x. Frames of `old` that
// were padding are copied as they are: the next convolution still treats them as zeros.
// `updated` must not be `old` (the frames shift), so the caller keeps two and swaps them.

struct Params {
    frame_elems: u32,
    past: u32,
    t: u32,
    n: u32,
}

@group(1) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> old: array<X_T>;
@group(0) @binding(2) var<storage, read> x: array<X_T>;
@group(0) @binding(3) var<storage, read_write> updated: array<X_T>;

@compute @workgroup_size(256, 1, 1)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = (wg.y * nwg.x + wg.x) * 256u + lid;
    if (i >= p.n) {
        return;
    }
    let j = i / p.frame_elems;
    let e = i - j * p.frame_elems;
    let v = p.t + j;
    if (v < p.past) {
        updated[i] = old[v * p.frame_elems + e];
    } else {
        updated[i] = x[(v - p.past) * p.frame_elems + e];
    }
}
