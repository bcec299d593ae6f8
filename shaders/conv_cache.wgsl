// The input history a causal convolution keeps between calls, updated in place: afterwards it
// holds the last `past` frames of the virtual sequence [history (past frames), x (T frames)].
//   history: [past, H, W, C] (X_T), read and written; x: [T, H, W, C] (X_T).
// One thread per element of a frame walks the history's frames in order: frame j takes virtual
// frame T + j, which is either a later history frame (T >= 1, so not yet overwritten) or a frame
// of x. Frames that were padding are moved as they are: the next convolution still treats them
// as zeros.

struct Params {
    frame_elems: u32,
    past: u32,
    t: u32,
    _pad: u32,
}

@group(1) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> history: array<X_T>;
@group(0) @binding(2) var<storage, read> x: array<X_T>;

@compute @workgroup_size(256, 1, 1)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let e = (wg.y * nwg.x + wg.x) * 256u + lid;
    if (e >= p.frame_elems) {
        return;
    }
    for (var j = 0u; j < p.past; j++) {
        let v = p.t + j;
        if (v < p.past) {
            history[j * p.frame_elems + e] = history[v * p.frame_elems + e];
        } else {
            history[j * p.frame_elems + e] = x[(v - p.past) * p.frame_elems + e];
        }
    }
}
