//! Layout changes between channel-first video [C, F, H, W] (how latents and frames are stored
//! and exchanged) and the channels-last frames [T, H, W, C] convolutions work on.

use super::{folded_grid, require_distinct, require_f16_support, to_u32};
use crate::error::{shape_err, Result};
use crate::param_block::ParamBytes;
use crate::profiler::Cost;
use crate::recorder::{Dispatch, Recorder};
use crate::shader::{defines, Defines};
use crate::tensor::Tensor;

crate::param_block! {
    struct Params {
        channels: u32,
        frames: u32,
        f0: u32,
        hw: u32,
        n: u32,
        _pad: [u32; 3],
    }
}

/// The define sets of `channels_last.wgsl`.
pub fn variants() -> Vec<Defines> {
    super::dtype_combinations(2)
        .into_iter()
        .map(|t| defines(&[("X_T", t[0].wgsl()), ("Y_T", t[1].wgsl())]))
        .collect()
}

/// Records `y` [T, H, W, C] = frames `first_frame .. first_frame + T` of `x` [C, F, H, W].
pub fn channels_last(rec: &mut Recorder, x: &Tensor, first_frame: usize, y: &Tensor) -> Result<()> {
    let op = "channels_last";
    let (&[c, f, h, w], &[t, yh, yw, yc]) = (x.shape(), y.shape()) else {
        return Err(shape_err(
            op,
            format!("x must be [C, F, H, W] and y [T, H, W, C], got {x:?} and {y:?}"),
        ));
    };
    if (yh, yw, yc) != (h, w, c) || first_frame + t > f {
        return Err(shape_err(
            op,
            format!("y must be [T, {h}, {w}, {c}] with {first_frame} + T <= {f}, got {y:?}"),
        ));
    }
    require_distinct(op, x, y)?;
    require_f16_support(rec.gpu(), "an f16 layout change", &[x, y])?;
    let n = y.numel();
    to_u32(op, x.numel())?;
    let params = Params {
        channels: to_u32(op, c)?,
        frames: to_u32(op, f)?,
        f0: to_u32(op, first_frame)?,
        hw: to_u32(op, h * w)?,
        n: to_u32(op, n)?,
        _pad: [0; 3],
    };
    rec.dispatch(Dispatch {
        shader: &CHANNELS_LAST,
        entry: "main",
        defines: defines(&[("X_T", x.dtype().wgsl()), ("Y_T", y.dtype().wgsl())]),
        constants: vec![],
        params: ParamBytes::of(&params),
        tensors: &[x, y],
        workgroups: folded_grid(rec.gpu(), n.div_ceil(256)),
        label: format!("channels_last {t}x{h}x{w}x{c} {}", y.dtype()).into(),
        cost: Cost::new(0.0, n as f64 * (x.dtype().size() + y.dtype().size()) as f64),
    })
}

/// CPU reference of [`channels_last`] (exact).
pub fn channels_last_reference(
    x: &[f32],
    [c, f, h, w]: [usize; 4],
    first_frame: usize,
    t: usize,
) -> Vec<f64> {
    let hw = h * w;
    let mut out = Vec::with_capacity(t * hw * c);
    for tt in 0..t {
        for pos in 0..hw {
            for ch in 0..c {
                out.push(x[(ch * f + first_frame + tt) * hw + pos] as f64);
            }
        }
    }
    out
}

/// `shaders/channels_last.wgsl`.
pub static CHANNELS_LAST: crate::shader::ShaderFile =
    crate::shader_file!("channels_last", variants);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::DType;
    use crate::testing::*;

    fn check(shape: [usize; 4], first_frame: usize, t: usize, types: [DType; 2]) {
        let gpu = test_gpu();
        if types.contains(&DType::F16) && !gpu.caps.shader_f16 {
            return;
        }
        let seed = seed();
        let mut rng = Rng::new(seed);
        let n: usize = shape.iter().product();
        let mut xv = rng.vec_normal(n, 1.0);
        if types.contains(&DType::F16) {
            xv = round_f16(&xv);
        }
        let x = Tensor::from_f32(gpu, &shape, &xv, types[0]).unwrap();
        let y = Tensor::empty(gpu, &[t, shape[2], shape[3], shape[0]], types[1]).unwrap();
        y.poison(gpu);
        let mut rec = Recorder::new(gpu);
        channels_last(&mut rec, &x, first_frame, &y).unwrap();
        rec.run().unwrap();
        let want = channels_last_reference(&xv, shape, first_frame, t);
        let case = format!("channels_last {shape:?} from {first_frame} x {t} {types:?}");
        assert_close(&case, seed, &y.to_vec_f32(gpu).unwrap(), &want, 0.0);
    }

    #[test]
    fn channels_last_takes_a_frame_window() {
        check([16, 3, 5, 7], 0, 1, [DType::F32; 2]);
        check([16, 3, 5, 7], 1, 2, [DType::F32; 2]);
        check([5, 4, 3, 9], 3, 1, [DType::F32, DType::F16]);
    }

    #[test]
    fn channels_last_rejects_a_window_past_the_end() {
        let gpu = test_gpu();
        let x = Tensor::empty(gpu, &[4, 2, 3, 3], DType::F32).unwrap();
        let y = Tensor::empty(gpu, &[2, 3, 3, 4], DType::F32).unwrap();
        let mut rec = Recorder::new(gpu);
        let err = channels_last(&mut rec, &x, 1, &y).unwrap_err();
        assert!(err.to_string().contains("1 + T <= 2"), "{err}");
    }
}
