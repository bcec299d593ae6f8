//! Patchify and unpatchify: a latent [C, F, H, W] to and from tokens [N, C*pt*ph*pw] of
//! (pt, ph, pw) patches, N = (F/pt)(H/ph)(W/pw) in (f, h, w) row-major order, w fastest.
//! Patchify orders a token's features as a Conv3d weight [out, C, pt, ph, pw] flattens, so a
//! patch embedding is `matmul(tokens, weight.reshape([out, C*pt*ph*pw]))`; unpatchify reads the
//! order of Wan's output head, patch position major and channel minor.

use super::{folded_grid, require_distinct, require_f16_support, to_u32};
use crate::error::{shape_err, Result};
use crate::param_block::ParamBytes;
use crate::profiler::Cost;
use crate::recorder::{Dispatch, Recorder};
use crate::shader::{defines, Defines};
use crate::tensor::{DType, Tensor};

crate::param_block! {
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
}

/// Latent elements one workgroup moves, one per thread (patch.wgsl).
const ELEMENTS_PER_WORKGROUP: usize = 256;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Direction {
    Patchify,
    Unpatchify,
}

fn patch_defines(direction: Direction, src: DType, dst: DType) -> Defines {
    let mut d = defines(&[("X_T", src.wgsl()), ("Y_T", dst.wgsl())]);
    if direction == Direction::Patchify {
        d.insert("PATCHIFY".into(), "1".into());
    }
    d
}

/// The define sets the portability test compiles.
pub fn variants() -> Vec<Defines> {
    let mut v = Vec::new();
    for direction in [Direction::Patchify, Direction::Unpatchify] {
        for types in super::dtype_combinations(2) {
            v.push(patch_defines(direction, types[0], types[1]));
        }
    }
    v
}

/// The token shape [N, C*pt*ph*pw] of a latent [C, F, H, W], once checked to divide in patches.
fn token_shape(op: &'static str, latent: &Tensor, patch: [usize; 3]) -> Result<[usize; 2]> {
    let &[c, f, h, w] = latent.shape() else {
        return Err(shape_err(
            op,
            format!("the latent must be [C, F, H, W], got {latent:?}"),
        ));
    };
    let [pt, ph, pw] = patch;
    if patch.contains(&0) || f % pt != 0 || h % ph != 0 || w % pw != 0 {
        return Err(shape_err(
            op,
            format!("latent {latent:?} does not divide into patches of {patch:?}"),
        ));
    }
    Ok([(f / pt) * (h / ph) * (w / pw), c * pt * ph * pw])
}

fn launch(
    rec: &mut Recorder,
    direction: Direction,
    src: &Tensor,
    dst: &Tensor,
    patch: [usize; 3],
) -> Result<()> {
    let (op, latent, tokens) = match direction {
        Direction::Patchify => ("patchify", src, dst),
        Direction::Unpatchify => ("unpatchify", dst, src),
    };
    let [n, k] = token_shape(op, latent, patch)?;
    if tokens.shape().last() != Some(&k) || tokens.numel() != n * k {
        return Err(shape_err(
            op,
            format!(
                "latent {latent:?} in patches of {patch:?} makes tokens [{n}, {k}], got {tokens:?}"
            ),
        ));
    }
    require_distinct(op, src, dst)?;
    require_f16_support(rec.gpu(), &format!("an f16 {op}"), &[src, dst])?;
    let s = latent.shape();
    let total = latent.numel();
    let params = Params {
        channels: to_u32(op, s[0])?,
        frames: to_u32(op, s[1])?,
        height: to_u32(op, s[2])?,
        width: to_u32(op, s[3])?,
        pt: to_u32(op, patch[0])?,
        ph: to_u32(op, patch[1])?,
        pw: to_u32(op, patch[2])?,
        total: to_u32(op, total)?,
    };
    rec.dispatch(Dispatch {
        shader: &PATCH,
        entry: "main",
        defines: patch_defines(direction, src.dtype(), dst.dtype()),
        constants: vec![],
        params: ParamBytes::of(&params),
        tensors: &[src, dst],
        workgroups: folded_grid(rec.gpu(), total.div_ceil(ELEMENTS_PER_WORKGROUP)),
        label: format!("{op} {:?} {}->{}", s, src.dtype(), dst.dtype()).into(),
        cost: Cost::new(0.0, (src.bytes() + dst.bytes()) as f64),
    })
}

/// Records `tokens = patchify(latent)`: `latent` [C, F, H, W] with F, H, W multiples of
/// `patch` = [pt, ph, pw]; `tokens` [N, C*pt*ph*pw], feature `((c*pt + it)*ph + ih)*pw + iw`.
pub fn patchify(
    rec: &mut Recorder,
    latent: &Tensor,
    tokens: &Tensor,
    patch: [usize; 3],
) -> Result<()> {
    launch(rec, Direction::Patchify, latent, tokens, patch)
}

/// Records `latent = unpatchify(tokens)`: `tokens` [N, pt*ph*pw*C] with feature
/// `((it*ph + ih)*pw + iw)*C + c`, `latent` [C, F, H, W] as in [`patchify`].
pub fn unpatchify(
    rec: &mut Recorder,
    tokens: &Tensor,
    latent: &Tensor,
    patch: [usize; 3],
) -> Result<()> {
    launch(rec, Direction::Unpatchify, tokens, latent, patch)
}

/// CPU reference of [`patchify`], written as a gather over tokens.
pub fn patchify_reference(latent: &[f32], shape: [usize; 4], patch: [usize; 3]) -> Vec<f64> {
    let [c_n, f_n, h_n, w_n] = shape;
    let [pt, ph, pw] = patch;
    let (gf, gh, gw) = (f_n / pt, h_n / ph, w_n / pw);
    let mut out = Vec::with_capacity(latent.len());
    for f in 0..gf {
        for h in 0..gh {
            for w in 0..gw {
                for c in 0..c_n {
                    for it in 0..pt {
                        for ih in 0..ph {
                            for iw in 0..pw {
                                let (ff, hh, ww) = (f * pt + it, h * ph + ih, w * pw + iw);
                                out.push(latent[((c * f_n + ff) * h_n + hh) * w_n + ww] as f64);
                            }
                        }
                    }
                }
            }
        }
    }
    out
}

/// CPU reference of [`unpatchify`], written as a scatter from tokens.
pub fn unpatchify_reference(tokens: &[f32], shape: [usize; 4], patch: [usize; 3]) -> Vec<f64> {
    let [c_n, f_n, h_n, w_n] = shape;
    let [pt, ph, pw] = patch;
    let (gf, gh, gw) = (f_n / pt, h_n / ph, w_n / pw);
    let mut out = vec![f64::NAN; tokens.len()];
    let mut next = tokens.iter();
    for f in 0..gf {
        for h in 0..gh {
            for w in 0..gw {
                for it in 0..pt {
                    for ih in 0..ph {
                        for iw in 0..pw {
                            for c in 0..c_n {
                                let (ff, hh, ww) = (f * pt + it, h * ph + ih, w * pw + iw);
                                out[((c * f_n + ff) * h_n + hh) * w_n + ww] =
                                    *next.next().unwrap() as f64;
                            }
                        }
                    }
                }
            }
        }
    }
    out
}

/// `shaders/patch.wgsl`.
pub static PATCH: crate::shader::ShaderFile = crate::shader_file!("patch", variants);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::matmul::{matmul, Epilogue};
    use crate::kernels::with_fold_limit;

    /// The patch of the video DiTs this kernel serves: one frame, 2 x 2 latent pixels.
    const PATCH_122: [usize; 3] = [1, 2, 2];
    use crate::testing::*;
    use DType::{F16, F32};

    fn check(
        shape: [usize; 4],
        patch: [usize; 3],
        direction: Direction,
        src_t: DType,
        dst_t: DType,
    ) {
        let gpu = test_gpu();
        if [src_t, dst_t].contains(&F16) && !gpu.caps.shader_f16 {
            eprintln!("skipping f16 case: adapter lacks SHADER_F16");
            return;
        }
        let seed = seed();
        let mut rng = Rng::new(seed);
        let numel: usize = shape.iter().product();
        let mut v = rng.vec_normal(numel, 1.0);
        if [src_t, dst_t].contains(&F16) {
            v = round_f16(&v);
        }
        let [pt, ph, pw] = patch;
        let tokens_shape = [numel / (shape[0] * pt * ph * pw), shape[0] * pt * ph * pw];
        let (src_shape, dst_shape) = match direction {
            Direction::Patchify => (&shape[..], &tokens_shape[..]),
            Direction::Unpatchify => (&tokens_shape[..], &shape[..]),
        };
        let src = Tensor::from_f32(gpu, src_shape, &v, src_t).unwrap();
        let dst = Tensor::empty(gpu, dst_shape, dst_t).unwrap();
        dst.poison(gpu);
        let mut rec = Recorder::new(gpu);
        match direction {
            Direction::Patchify => patchify(&mut rec, &src, &dst, patch),
            Direction::Unpatchify => unpatchify(&mut rec, &src, &dst, patch),
        }
        .unwrap();
        rec.run().unwrap();
        let want = match direction {
            Direction::Patchify => patchify_reference(&v, shape, patch),
            Direction::Unpatchify => unpatchify_reference(&v, shape, patch),
        };
        let case = format!("{direction:?} {shape:?} patch {patch:?} {src_t}->{dst_t}");
        // A permutation of values exactly representable in both storages.
        assert_close(&case, seed, &dst.to_vec_f32(gpu).unwrap(), &want, 0.0);
    }

    #[test]
    fn patchify_and_unpatchify_match_references() {
        for direction in [Direction::Patchify, Direction::Unpatchify] {
            check([16, 3, 6, 10], PATCH_122, direction, F32, F32);
            check([3, 4, 6, 4], [2, 3, 2], direction, F32, F32);
            check([5, 1, 2, 2], PATCH_122, direction, F32, F32);
            check([16, 2, 4, 6], PATCH_122, direction, F32, F16);
            check([16, 2, 4, 6], PATCH_122, direction, F16, F32);
        }
    }

    #[test]
    fn patch_grid_folds() {
        with_fold_limit(2, || {
            check([4, 3, 10, 6], PATCH_122, Direction::Patchify, F32, F32);
            check([4, 3, 10, 6], PATCH_122, Direction::Unpatchify, F32, F32);
        });
    }

    /// A Conv3d with kernel = stride = patch, computed from its definition, equals patchify
    /// followed by a matmul with the conv weight [out, C, pt, ph, pw] seen as [out, C*pt*ph*pw].
    #[test]
    fn patch_embedding_is_patchify_then_matmul() {
        let gpu = test_gpu();
        let seed = seed();
        let mut rng = Rng::new(seed);
        let ([c_n, f_n, h_n, w_n], [pt, ph, pw], out_ch) = ([3, 4, 6, 4], [2, 3, 2], 5);
        let k = c_n * pt * ph * pw;
        let (gf, gh, gw) = (f_n / pt, h_n / ph, w_n / pw);
        let latent_v = rng.vec_normal(c_n * f_n * h_n * w_n, 1.0);
        let weight_v = rng.vec_normal(out_ch * k, 0.3);
        let mut want = Vec::new();
        for f in 0..gf {
            for h in 0..gh {
                for w in 0..gw {
                    for o in 0..out_ch {
                        let mut acc = 0.0f64;
                        for c in 0..c_n {
                            for it in 0..pt {
                                for ih in 0..ph {
                                    for iw in 0..pw {
                                        let wi = (((o * c_n + c) * pt + it) * ph + ih) * pw + iw;
                                        let (ff, hh, ww) = (f * pt + it, h * ph + ih, w * pw + iw);
                                        let li = ((c * f_n + ff) * h_n + hh) * w_n + ww;
                                        acc += weight_v[wi] as f64 * latent_v[li] as f64;
                                    }
                                }
                            }
                        }
                        want.push(acc);
                    }
                }
            }
        }
        let n = gf * gh * gw;
        let latent = Tensor::from_f32(gpu, &[c_n, f_n, h_n, w_n], &latent_v, F32).unwrap();
        let weight = Tensor::from_f32(gpu, &[out_ch, k], &weight_v, F32).unwrap();
        let tokens = Tensor::empty(gpu, &[n, k], F32).unwrap();
        let embedded = Tensor::empty(gpu, &[n, out_ch], F32).unwrap();
        embedded.poison(gpu);
        let mut rec = Recorder::new(gpu);
        patchify(&mut rec, &latent, &tokens, [pt, ph, pw]).unwrap();
        matmul(&mut rec, &tokens, &weight, None, &embedded, Epilogue::None).unwrap();
        rec.run().unwrap();
        let got = embedded.to_vec_f32(gpu).unwrap();
        assert_close("conv3d as patchify + matmul", seed, &got, &want, 1e-5);
    }

    /// Wan's head: token features [F', H', W', pt, ph, pw, C] permuted to [C, F'pt, H'ph, W'pw],
    /// written here as index arithmetic on the 7-D view.
    #[test]
    fn unpatchify_is_the_head_permutation() {
        let (grid, patch, c_n) = ([2, 3, 2], [1, 2, 2], 16);
        let dims = [grid[0], grid[1], grid[2], patch[0], patch[1], patch[2], c_n];
        let tokens: Vec<f32> = (0..dims.iter().product::<usize>())
            .map(|i| i as f32)
            .collect();
        let shape = [
            c_n,
            grid[0] * patch[0],
            grid[1] * patch[1],
            grid[2] * patch[2],
        ];
        let out = unpatchify_reference(&tokens, shape, patch);
        let [_, f_n, h_n, w_n] = shape;
        for (i, &v) in tokens.iter().enumerate() {
            let mut rest = i;
            let mut idx = [0; 7];
            for d in (0..7).rev() {
                idx[d] = rest % dims[d];
                rest /= dims[d];
            }
            let [f, h, w, p, q, r, c] = idx;
            let at =
                ((c * f_n + f * patch[0] + p) * h_n + h * patch[1] + q) * w_n + w * patch[2] + r;
            assert_eq!(out[at], v as f64, "token feature {i}");
        }
        let gpu = test_gpu();
        let mut rec = Recorder::new(gpu);
        let latent = Tensor::empty(gpu, &shape, F32).unwrap();
        let wrong = Tensor::empty(gpu, &[12, 63], F32).unwrap();
        let err = unpatchify(&mut rec, &wrong, &latent, patch).unwrap_err();
        assert!(err.to_string().contains("makes tokens [12, 64]"), "{err}");
    }
}
