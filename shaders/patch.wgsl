// Moves a latent [C, F, H, W] to and from tokens of (pt, ph, pw) patches: token
// (f', h', w') of the [F/pt, H/ph, W/pw] grid (row-major, w' fastest) gathers
// latent[c, f'*pt + it, h'*ph + ih, w'*pw + iw] for all c, it, ih, iw, at feature
//   PATCHIFY:   ((c*pt + it)*ph + ih)*pw + iw      (a Conv3d weight [out, C, pt, ph, pw] flattened,
//                                                   so patch embedding is a matmul)
//   UNPATCHIFY: ((it*ph + ih)*pw + iw)*C + c       (the order of Wan's output head)
// One thread per latent element, so the latent side is read or written contiguously. X_T is the
// source storage, Y_T the destination's; values are copied, converted if the types differ.

struct Params {
    channels: u32,
    frames: u32,
    height: u32,
    width: u32,
    pt: u32,
    ph: u32,
    pw: u32,
    total: u32,
}

@group(1) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<X_T>;
@group(0) @binding(2) var<storage, read_write> dst: array<Y_T>;

const WG: u32 = 256u;

@compute @workgroup_size(256, 1, 1)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = (wg.y * nwg.x + wg.x) * WG + lid;
    if (i >= p.total) {
        return;
    }
    let w = i % p.width;
    let h = (i / p.width) % p.height;
    let f = (i / (p.width * p.height)) % p.frames;
    let c = i / (p.width * p.height * p.frames);
    let token = ((f / p.pt) * (p.height / p.ph) + h / p.ph) * (p.width / p.pw) + w / p.pw;
    let within = ((f % p.pt) * p.ph + h % p.ph) * p.pw + w % p.pw;
    let patch_size = p.pt * p.ph * p.pw;
#if PATCHIFY
    let feature = c * patch_size + within;
    dst[token * patch_size * p.channels + feature] = Y_T(src[i]);
#else
    let feature = within * p.channels + c;
    dst[i] = Y_T(src[token * patch_size * p.channels + feature]);
#endif
}
