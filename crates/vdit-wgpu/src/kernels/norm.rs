//! Row normalisations over the last dimension: LayerNorm (plain, affine, or fused with adaLN
//! modulation) and RMSNorm. Inputs and outputs may be f32 or f16, weights f32 or f16,
//! modulation vectors f32; statistics are computed in f32, one workgroup per row.

use super::{folded_grid, require_distinct, require_f16_support, to_u32, Modulation};
use crate::error::{shape_err, Result};
use crate::param_block::ParamBytes;
use crate::profiler::Cost;
use crate::recorder::{Dispatch, Recorder};
use crate::shader::{defines, Defines};
use crate::tensor::{DType, Tensor};

/// The learned per-channel affine transform of a LayerNorm, both [C] of one storage type.
#[derive(Clone, Copy, Debug)]
pub struct Affine<'a> {
    pub weight: &'a Tensor,
    pub bias: &'a Tensor,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Layer,
    Rms,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Layer => "layer_norm",
            Kind::Rms => "rms_norm",
        }
    }
}

crate::param_block! {
    struct Params {
        rows: u32,
        cols: u32,
        eps: f32,
        scale_offset: u32,
        shift_offset: u32,
        _pad: [u32; 3],
    }
}

/// The storage types of one variant; `x` is `None` in place.
#[derive(Clone, Copy)]
struct Variant {
    kind: Kind,
    x: Option<DType>,
    weight: Option<DType>,
    has_bias: bool,
    modulate: bool,
    y: DType,
}

fn norm_defines(v: Variant) -> Defines {
    let kind = match v.kind {
        Kind::Layer => "LAYER_NORM",
        Kind::Rms => "RMS_NORM",
    };
    let mut d = defines(&[(kind, "1"), ("Y_T", v.y.wgsl())]);
    match v.x {
        Some(x) => drop(d.insert("X_T".into(), x.wgsl().into())),
        None => drop(d.insert("IN_PLACE".into(), "1".into())),
    }
    if let Some(w) = v.weight {
        d.insert("HAS_WEIGHT".into(), "1".into());
        d.insert("W_T".into(), w.wgsl().into());
    }
    if v.has_bias {
        d.insert("HAS_BIAS".into(), "1".into());
    }
    if v.modulate {
        d.insert("MODULATE".into(), "1".into());
    }
    d
}

/// Rows of at most this many columns are normalised one thread per row (the `narrow` entry).
const NARROW_MAX_COLS: usize = 32;
const NARROW_ROWS_PER_WORKGROUP: usize = 64;
/// Rows of at most this many columns get 32 threads each (the `lanes` entry); longer ones a
/// workgroup each (`main`).
const LANES_MAX_COLS: usize = 1024;
const LANES_ROWS_PER_WORKGROUP: usize = 8;

/// How the threads of `norm.wgsl` share out the rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RowLayout {
    /// `narrow`: a thread per row.
    Thread,
    /// `lanes`: 32 threads per row.
    Lanes,
    /// `main`: a workgroup per row.
    Workgroup,
}

impl RowLayout {
    /// Rows of a few channels get a thread each; so do all rows on a CPU adapter, where the
    /// reductions' barriers cost more than the whole row (lavapipe: 9 ms for 300 x 256
    /// through `main`, 0.8 ms through `narrow`). Rows of up to a thousand channels get 32
    /// threads: on the H200 the VAE's 96-channel norms took 2.8 ms per 1.6M rows with a
    /// workgroup per row, 216 GB/s.
    fn of(cols: usize, on_cpu: bool) -> Self {
        #[cfg(test)]
        if let Some(forced) = tests::FORCED_LAYOUT.with(|f| f.get()) {
            return forced;
        }
        if cols <= NARROW_MAX_COLS || on_cpu {
            Self::Thread
        } else if cols <= LANES_MAX_COLS {
            Self::Lanes
        } else {
            Self::Workgroup
        }
    }

    fn entry(self) -> &'static str {
        match self {
            Self::Thread => "narrow",
            Self::Lanes => "lanes",
            Self::Workgroup => "main",
        }
    }

    fn workgroups(self, rows: usize) -> usize {
        match self {
            Self::Thread => rows.div_ceil(NARROW_ROWS_PER_WORKGROUP),
            Self::Lanes => rows.div_ceil(LANES_ROWS_PER_WORKGROUP),
            Self::Workgroup => rows,
        }
    }
}

/// The define sets the portability test compiles.
pub fn variants() -> Vec<Defines> {
    use DType::*;
    let mut v = Vec::new();
    for kind in [Kind::Layer, Kind::Rms] {
        for x in [Some(F32), Some(F16), None] {
            for y in [F32, F16] {
                for weight in [None, Some(F32), Some(F16)] {
                    let with_bias = kind == Kind::Layer && weight.is_some();
                    for modulate in [false, kind == Kind::Layer] {
                        v.push(norm_defines(Variant {
                            kind,
                            x,
                            weight,
                            has_bias: with_bias,
                            modulate,
                            y,
                        }));
                    }
                }
            }
        }
    }
    v.sort();
    v.dedup();
    v
}

/// One launch: `x` is `None` in place (then `y` holds x on entry).
struct Launch<'a> {
    kind: Kind,
    x: Option<&'a Tensor>,
    weight: Option<&'a Tensor>,
    bias: Option<&'a Tensor>,
    modulation: Option<Modulation<'a>>,
    eps: f32,
    y: &'a Tensor,
}

fn launch(rec: &mut Recorder, l: Launch<'_>) -> Result<()> {
    let op = l.kind.name();
    let y = l.y;
    let (&cols, leading) = y
        .shape()
        .split_last()
        .ok_or_else(|| shape_err(op, "y is a scalar"))?;
    let rows: usize = leading.iter().product();
    if let Some(x) = l.x {
        if x.shape() != y.shape() {
            return Err(shape_err(
                op,
                format!("x {x:?} and y {y:?} differ in shape"),
            ));
        }
    }
    for (what, t) in [("weight", l.weight), ("bias", l.bias)] {
        if let Some(t) = t {
            if t.numel() != cols || t.shape().last() != Some(&cols) {
                return Err(shape_err(
                    op,
                    format!("{what} must be [{cols}] for rows of {cols}, got {t:?}"),
                ));
            }
        }
    }
    if let (Some(w), Some(b)) = (l.weight, l.bias) {
        if w.dtype() != b.dtype() {
            return Err(shape_err(
                op,
                format!("weight {w:?} and bias {b:?} differ in storage type"),
            ));
        }
    }
    let (scale_offset, shift_offset) = match l.modulation {
        Some(m) => m.offsets(op, cols)?,
        None => (0, 0),
    };
    let mut tensors: Vec<&Tensor> = Vec::new();
    tensors.extend(l.x);
    tensors.extend(l.weight);
    tensors.extend(l.bias);
    if let Some(m) = l.modulation {
        tensors.extend([m.scale.tensor, m.shift.tensor]);
    }
    for input in &tensors {
        require_distinct(op, input, y)?;
    }
    tensors.push(y);
    require_f16_support(rec.gpu(), &format!("an f16 {op}"), &tensors)?;
    let params = Params {
        rows: to_u32(op, rows)?,
        cols: to_u32(op, cols)?,
        eps: l.eps,
        scale_offset,
        shift_offset,
        _pad: [0; 3],
    };
    let variant = Variant {
        kind: l.kind,
        x: l.x.map(Tensor::dtype),
        weight: l.weight.map(Tensor::dtype),
        has_bias: l.bias.is_some(),
        modulate: l.modulation.is_some(),
        y: y.dtype(),
    };
    let layout = RowLayout::of(cols, rec.gpu().info.device_type == wgpu::DeviceType::Cpu);
    let n = (rows * cols) as f64;
    let x_size = l.x.unwrap_or(y).dtype().size() as f64;
    // LayerNorm reads x three times, RMSNorm twice; the row is usually still in cache.
    let bytes = n * (x_size + y.dtype().size() as f64);
    rec.dispatch(Dispatch {
        shader: &NORM,
        entry: layout.entry(),
        defines: norm_defines(variant),
        constants: vec![],
        params: ParamBytes::of(&params),
        tensors: &tensors,
        workgroups: folded_grid(rec.gpu(), layout.workgroups(rows)),
        label: format!("{op} {rows}x{cols} {}", y.dtype()).into(),
        cost: Cost::new(n * 8.0, bytes),
    })
}

/// Records `y = LayerNorm(x)` over the last dimension C, without learned parameters unless
/// `affine` is given, then `* (1 + scale) + shift` when `modulation` is given (Wan's adaLN).
/// `y` has `x`'s shape.
pub fn layer_norm(
    rec: &mut Recorder,
    x: &Tensor,
    affine: Option<Affine<'_>>,
    modulation: Option<Modulation<'_>>,
    eps: f32,
    y: &Tensor,
) -> Result<()> {
    launch(
        rec,
        Launch {
            kind: Kind::Layer,
            x: Some(x),
            weight: affine.map(|a| a.weight),
            bias: affine.map(|a| a.bias),
            modulation,
            eps,
            y,
        },
    )
}

/// Records `x = LayerNorm(x)`, as [`layer_norm`].
pub fn layer_norm_in_place(
    rec: &mut Recorder,
    x: &Tensor,
    affine: Option<Affine<'_>>,
    modulation: Option<Modulation<'_>>,
    eps: f32,
) -> Result<()> {
    launch(
        rec,
        Launch {
            kind: Kind::Layer,
            x: None,
            weight: affine.map(|a| a.weight),
            bias: affine.map(|a| a.bias),
            modulation,
            eps,
            y: x,
        },
    )
}

/// Records `y = x * rsqrt(mean(x^2) + eps) * weight` over the last dimension C; `weight`: [C].
/// `y` has `x`'s shape.
pub fn rms_norm(
    rec: &mut Recorder,
    x: &Tensor,
    weight: Option<&Tensor>,
    eps: f32,
    y: &Tensor,
) -> Result<()> {
    launch(
        rec,
        Launch {
            kind: Kind::Rms,
            x: Some(x),
            weight,
            bias: None,
            modulation: None,
            eps,
            y,
        },
    )
}

/// Records `x = x * rsqrt(mean(x^2) + eps) * weight`, as [`rms_norm`].
pub fn rms_norm_in_place(
    rec: &mut Recorder,
    x: &Tensor,
    weight: Option<&Tensor>,
    eps: f32,
) -> Result<()> {
    launch(
        rec,
        Launch {
            kind: Kind::Rms,
            x: None,
            weight,
            bias: None,
            modulation: None,
            eps,
            y: x,
        },
    )
}

/// CPU float64 reference of [`layer_norm`] on rows of `cols`; `affine` is (weight, bias),
/// `modulation` is (scale, shift).
pub fn layer_norm_reference(
    x: &[f32],
    cols: usize,
    affine: Option<(&[f32], &[f32])>,
    modulation: Option<(&[f32], &[f32])>,
    eps: f32,
) -> Vec<f64> {
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks(cols) {
        let mean = row.iter().map(|&v| v as f64).sum::<f64>() / cols as f64;
        let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / cols as f64;
        let inv_std = 1.0 / (var + eps as f64).sqrt();
        for (c, &v) in row.iter().enumerate() {
            let mut o = (v as f64 - mean) * inv_std;
            if let Some((w, b)) = affine {
                o = o * w[c] as f64 + b[c] as f64;
            }
            if let Some((scale, shift)) = modulation {
                o = o * (1.0 + scale[c] as f64) + shift[c] as f64;
            }
            out.push(o);
        }
    }
    out
}

/// CPU float64 reference of [`rms_norm`] on rows of `cols`.
pub fn rms_norm_reference(x: &[f32], cols: usize, weight: Option<&[f32]>, eps: f32) -> Vec<f64> {
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks(cols) {
        let mean_sq = row.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / cols as f64;
        let inv_rms = 1.0 / (mean_sq + eps as f64).sqrt();
        for (c, &v) in row.iter().enumerate() {
            out.push(v as f64 * inv_rms * weight.map_or(1.0, |w| w[c] as f64));
        }
    }
    out
}

/// `shaders/norm.wgsl`.
pub static NORM: crate::shader::ShaderFile = crate::shader_file!("norm", variants);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::{with_fold_limit, Row};
    use crate::testing::*;
    use DType::{F16, F32};

    /// What a case applies after normalising.
    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Post {
        None,
        Weight(DType),
        /// LayerNorm's affine, or RMSNorm's weight, in this storage.
        Affine(DType),
        Modulate,
    }

    fn held(v: Vec<f32>, t: DType) -> Vec<f32> {
        if t == F16 {
            round_f16(&v)
        } else {
            v
        }
    }

    thread_local! {
        /// The row layout every launch of this test thread takes instead of its own choice.
        pub(super) static FORCED_LAYOUT: std::cell::Cell<Option<RowLayout>> =
            const { std::cell::Cell::new(None) };
    }

    /// Each case through every row layout (a CPU adapter would otherwise run only `narrow`).
    fn check(
        kind: Kind,
        rows: usize,
        cols: usize,
        xt: DType,
        yt: DType,
        post: Post,
        in_place: bool,
    ) {
        for layout in [RowLayout::Thread, RowLayout::Lanes, RowLayout::Workgroup] {
            FORCED_LAYOUT.with(|f| f.set(Some(layout)));
            check_layout(kind, rows, cols, xt, yt, post, in_place);
            FORCED_LAYOUT.with(|f| f.set(None));
        }
    }

    fn check_layout(
        kind: Kind,
        rows: usize,
        cols: usize,
        xt: DType,
        yt: DType,
        post: Post,
        in_place: bool,
    ) {
        let gpu = test_gpu();
        let wt = match post {
            Post::Weight(t) | Post::Affine(t) => t,
            _ => F32,
        };
        if [xt, yt, wt].contains(&F16) && !gpu.caps.shader_f16 {
            eprintln!("skipping f16 case: adapter lacks SHADER_F16");
            return;
        }
        let seed = seed();
        let mut rng = Rng::new(seed);
        // An offset mean checks that the variance is centred.
        let xv: Vec<f32> = held(
            rng.vec_normal(rows * cols, 2.0)
                .iter()
                .map(|v| v + 3.0)
                .collect(),
            xt,
        );
        let wv = held(rng.vec_normal(cols, 1.0), wt);
        let bv = held(rng.vec_normal(cols, 1.0), wt);
        let table_v = rng.vec_normal(6 * cols, 0.5);
        let eps = 1e-6;
        let x = Tensor::from_f32(gpu, &[rows, cols], &xv, xt).unwrap();
        let w = Tensor::from_f32(gpu, &[cols], &wv, wt).unwrap();
        let b = Tensor::from_f32(gpu, &[cols], &bv, wt).unwrap();
        let table = Tensor::from_f32(gpu, &[6, cols], &table_v, F32).unwrap();
        let y = if in_place {
            x.clone()
        } else {
            let y = Tensor::empty(gpu, &[rows, cols], yt).unwrap();
            y.poison(gpu);
            y
        };
        // Wan's order: shift, scale, gate, shift, scale, gate; this takes the second pair.
        let modulation = (post == Post::Modulate).then_some(Modulation {
            scale: Row::of(&table, 4),
            shift: Row::of(&table, 3),
        });
        let affine = matches!(post, Post::Affine(_)).then_some(Affine {
            weight: &w,
            bias: &b,
        });
        let weight = matches!(post, Post::Weight(_) | Post::Affine(_)).then_some(&w);
        let mut rec = Recorder::new(gpu);
        match (kind, in_place) {
            (Kind::Layer, false) => layer_norm(&mut rec, &x, affine, modulation, eps, &y),
            (Kind::Layer, true) => layer_norm_in_place(&mut rec, &x, affine, modulation, eps),
            (Kind::Rms, false) => rms_norm(&mut rec, &x, weight, eps, &y),
            (Kind::Rms, true) => rms_norm_in_place(&mut rec, &x, weight, eps),
        }
        .unwrap();
        rec.run().unwrap();
        let got = y.to_vec_f32(gpu).unwrap();
        let want = match kind {
            Kind::Layer => layer_norm_reference(
                &xv,
                cols,
                affine.is_some().then_some((&wv[..], &bv[..])),
                modulation
                    .is_some()
                    .then_some((&table_v[4 * cols..5 * cols], &table_v[3 * cols..4 * cols])),
                eps,
            ),
            Kind::Rms => rms_norm_reference(&xv, cols, weight.is_some().then_some(&wv[..]), eps),
        };
        let tol = if [xt, yt, wt].contains(&F16) {
            2e-3
        } else {
            2e-5
        };
        let layout = FORCED_LAYOUT.with(|f| f.get());
        let case =
            format!("{kind:?} [{rows}, {cols}] {xt}->{yt} {post:?} in_place:{in_place} {layout:?}");
        assert_close(&case, seed, &got, &want, tol);
    }

    #[test]
    fn layer_norm_plain_affine_and_modulated() {
        check(Kind::Layer, 5, 37, F32, F32, Post::None, false);
        check(Kind::Layer, 3, 1000, F32, F32, Post::Affine(F32), false);
        check(Kind::Layer, 7, 300, F32, F32, Post::Modulate, false);
        check(Kind::Layer, 7, 300, F32, F16, Post::Modulate, false);
        check(Kind::Layer, 4, 97, F32, F16, Post::Affine(F16), false);
        check(Kind::Layer, 4, 97, F16, F32, Post::None, false);
        check(Kind::Layer, 6, 129, F32, F32, Post::Modulate, true);
        check(Kind::Layer, 1, 1, F32, F32, Post::None, false);
        check(Kind::Layer, 129, 8, F32, F32, Post::Modulate, false);
        check(Kind::Layer, 65, 31, F32, F16, Post::Affine(F32), true);
    }

    #[test]
    fn rms_norm_with_and_without_weight() {
        check(Kind::Rms, 5, 37, F32, F32, Post::Weight(F32), false);
        check(Kind::Rms, 2, 5120, F32, F32, Post::Weight(F32), true);
        check(Kind::Rms, 9, 24, F32, F32, Post::None, false);
        check(Kind::Rms, 131, 4, F32, F16, Post::Weight(F32), false);
        check(Kind::Rms, 70, 32, F16, F16, Post::Weight(F16), true);
        check(Kind::Rms, 9, 300, F16, F16, Post::Weight(F16), true);
        check(Kind::Rms, 9, 300, F32, F16, Post::Weight(F32), false);
    }

    #[test]
    fn rows_fold_into_a_2d_grid() {
        with_fold_limit(4, || {
            check(Kind::Layer, 13, 40, F32, F32, Post::Modulate, false);
            check(Kind::Rms, 17, 12, F32, F32, Post::Weight(F32), true);
            check(Kind::Rms, 600, 4, F32, F32, Post::Weight(F32), false);
        });
    }

    #[test]
    fn norms_reject_mismatched_shapes() {
        let gpu = test_gpu();
        let x = Tensor::empty(gpu, &[4, 8], F32).unwrap();
        let y = Tensor::empty(gpu, &[4, 8], F32).unwrap();
        let w = Tensor::empty(gpu, &[7], F32).unwrap();
        let mut rec = Recorder::new(gpu);
        let err = rms_norm(&mut rec, &x, Some(&w), 1e-6, &y).unwrap_err();
        assert!(err.to_string().contains("weight must be [8]"), "{err}");
        let table = Tensor::empty(gpu, &[6, 7], F32).unwrap();
        let m = Modulation {
            scale: Row::of(&table, 1),
            shift: Row::of(&table, 0),
        };
        let err = layer_norm(&mut rec, &x, None, Some(m), 1e-6, &y).unwrap_err();
        assert!(err.to_string().contains("[.., 8]"), "{err}");
    }
}
