//! Feature maps phi (hedgehog, poly, elu1): their weights and the launcher of
//! `feature_map.wgsl`.

use crate::error::{shape_err, GpuError, Result};
use crate::param_block::ParamBytes;
use crate::profiler::Cost;
use crate::recorder::{Dispatch, Recorder};
use crate::shader::{defines, Defines};
use crate::tensor::{DType, Tensor};

use super::*;

/// One feature map phi with its weights (shapes in the module docs).
#[derive(Clone, Debug)]
pub enum FeatureMap {
    Hedgehog {
        w: Tensor,
        b: Tensor,
    },
    Poly {
        w1: Tensor,
        b1: Tensor,
        w2: Tensor,
        b2: Tensor,
        /// P, the number of powers; DF = P * D1.
        powers: usize,
    },
    Elu1,
}

/// The kind of a feature map, without weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FeatureMapKind {
    Hedgehog,
    Poly,
    Elu1,
}

impl FeatureMap {
    pub fn kind(&self) -> FeatureMapKind {
        match self {
            FeatureMap::Hedgehog { .. } => FeatureMapKind::Hedgehog,
            FeatureMap::Poly { .. } => FeatureMapKind::Poly,
            FeatureMap::Elu1 => FeatureMapKind::Elu1,
        }
    }

    /// DF, the output size for inputs of size `d`.
    pub fn out_dim(&self, d: usize) -> usize {
        match self {
            FeatureMap::Hedgehog { w, .. } => 2 * w.shape().get(1).copied().unwrap_or(0),
            FeatureMap::Poly { w2, .. } => w2.shape().get(1).copied().unwrap_or(0),
            FeatureMap::Elu1 => d,
        }
    }

    /// Checks the weight shapes against `heads` and `d`; returns DF.
    pub fn validate(&self, heads: usize, d: usize) -> Result<usize> {
        let op = "feature_map";
        let want = |t: &Tensor, shape: &[usize], name: &str| -> Result<()> {
            if t.shape() != shape {
                return Err(shape_err(
                    op,
                    format!("{name} must be {shape:?}, got {:?}", t.shape()),
                ));
            }
            Ok(())
        };
        match self {
            FeatureMap::Hedgehog { w, b } => {
                let half = match w.shape() {
                    [hh, f, dd] if *hh == heads && *dd == d && *f > 0 => *f,
                    s => {
                        return Err(shape_err(
                            op,
                            format!("hedgehog w must be [{heads}, DF/2, {d}], got {s:?}"),
                        ))
                    }
                };
                want(b, &[heads, half], "hedgehog b")?;
                same_dtype(op, &[w, b])?;
                if half > 512 {
                    return Err(shape_err(op, "hedgehog DF/2 above 512 is not supported"));
                }
                Ok(2 * half)
            }
            FeatureMap::Poly {
                w1,
                b1,
                w2,
                b2,
                powers,
            } => {
                let hid = match w1.shape() {
                    [hh, c, dd] if *hh == heads && *dd == d && *c > 0 => *c,
                    s => {
                        return Err(shape_err(
                            op,
                            format!("poly w1 must be [{heads}, HID, {d}], got {s:?}"),
                        ))
                    }
                };
                want(b1, &[heads, hid], "poly b1")?;
                let df = match w2.shape() {
                    [hh, f, c] if *hh == heads && *c == hid && *f > 0 => *f,
                    s => {
                        return Err(shape_err(
                            op,
                            format!("poly w2 must be [{heads}, P*D1, {hid}], got {s:?}"),
                        ))
                    }
                };
                want(b2, &[heads, df], "poly b2")?;
                same_dtype(op, &[w1, b1, w2, b2])?;
                if *powers == 0 || df % powers != 0 {
                    return Err(shape_err(
                        op,
                        format!("poly output {df} is not a multiple of P = {powers}"),
                    ));
                }
                if hid > 1024 {
                    return Err(shape_err(
                        op,
                        "poly hidden size above 1024 is not supported",
                    ));
                }
                Ok(df)
            }
            FeatureMap::Elu1 => Ok(d),
        }
    }

    fn weights(&self) -> Vec<&Tensor> {
        match self {
            FeatureMap::Hedgehog { w, b } => vec![w, b],
            FeatureMap::Poly { w1, b1, w2, b2, .. } => vec![w1, b1, w2, b2],
            FeatureMap::Elu1 => vec![],
        }
    }
}

/// phi_q and phi_k of one layer; both must have the same DF.
#[derive(Clone, Debug)]
pub struct FeatureMapWeights {
    pub phi_q: FeatureMap,
    pub phi_k: FeatureMap,
}

impl FeatureMapWeights {
    /// Validates both maps; returns DF.
    pub fn validate(&self, heads: usize, d: usize) -> Result<usize> {
        let dq = self.phi_q.validate(heads, d)?;
        let dk = self.phi_k.validate(heads, d)?;
        if dq != dk {
            return Err(shape_err(
                "attention",
                format!("phi_q gives {dq} features but phi_k gives {dk}"),
            ));
        }
        Ok(dq)
    }
}

crate::param_block! {
    struct FeatureParams {
        heads: u32,
        d: u32,
        df: u32,
        hid: u32,
        tok_lo: u32,
        tok_count: u32,
        d1: u32,
        tiles: u32,
        grid_x: u32,
        _pad0: u32,
        _pad1: u32,
        _pad2: u32,
    }
}

fn feature_defines(
    kind: FeatureMapKind,
    x: DType,
    w: DType,
    tt: usize,
    xs: usize,
    hs: usize,
) -> Defines {
    let mut d = defines(&[
        ("IO_T", x.wgsl().to_string()),
        ("W_T", w.wgsl().to_string()),
        ("TT", format!("{tt}u")),
        ("XS_SIZE", xs.max(1).to_string()),
        ("HS_SIZE", hs.max(1).to_string()),
    ]);
    let flag = match kind {
        FeatureMapKind::Hedgehog => "HEDGEHOG",
        FeatureMapKind::Poly => "POLY",
        FeatureMapKind::Elu1 => "ELU1",
    };
    d.insert(flag.into(), "1".into());
    d
}

pub fn feature_map_variants() -> Vec<Defines> {
    let mut v = Vec::new();
    for x in [DType::F32, DType::F16] {
        for w in [DType::F32, DType::F16] {
            v.push(feature_defines(
                FeatureMapKind::Hedgehog,
                x,
                w,
                8,
                8 * 128,
                8 * 64,
            ));
            v.push(feature_defines(
                FeatureMapKind::Poly,
                x,
                w,
                8,
                8 * 128,
                8 * 256,
            ));
        }
        v.push(feature_defines(FeatureMapKind::Elu1, x, x, 8, 0, 0));
    }
    v
}

/// Records phi of tokens `tok_lo .. tok_lo + tok_count` of `x` `[rows, H, D]` into `out`
/// `[>= tok_count, H, DF]` f32 (token `tok_lo + t` lands in row `t`).
pub fn feature_map(
    rec: &mut Recorder,
    fm: &FeatureMap,
    x: &Tensor,
    tok_lo: usize,
    tok_count: usize,
    out: &Tensor,
) -> Result<()> {
    let op = "feature_map";
    let [rows, h, d] = match x.shape() {
        [a, b, c] => [*a, *b, *c],
        s => return Err(shape_err(op, format!("x must be [N, H, D], got {s:?}"))),
    };
    let df = fm.validate(h, d)?;
    if tok_lo + tok_count > rows {
        return Err(shape_err(
            op,
            format!("tokens {tok_lo}..{} past {rows} rows", tok_lo + tok_count),
        ));
    }
    match out.shape() {
        [r, hh, f] if *r >= tok_count && *hh == h && *f == df && out.dtype() == DType::F32 => {}
        s => {
            return Err(shape_err(
                op,
                format!(
                    "out must be f32 [>= {tok_count}, {h}, {df}], got {s:?} {}",
                    out.dtype()
                ),
            ))
        }
    }
    let weights = fm.weights();
    let gpu = rec.gpu();
    let mut all = weights.clone();
    all.push(x);
    need_f16(gpu, "an f16 feature map", &all)?;
    let wdt = weights.first().map(|w| w.dtype()).unwrap_or(x.dtype());
    let hid = match fm {
        FeatureMap::Poly { w1, .. } => w1.shape()[1],
        FeatureMap::Hedgehog { .. } => df / 2,
        FeatureMap::Elu1 => 0,
    };
    let d1 = match fm {
        FeatureMap::Poly { powers, .. } => df / powers,
        _ => df,
    };
    let mem = gpu.limits.max_compute_workgroup_storage_size as usize;
    let kind = fm.kind();
    let tt = [16usize, 8, 4, 2, 1]
        .into_iter()
        .find(|&tt| kind == FeatureMapKind::Elu1 || tt * (d + hid + 2) * 4 + 256 <= mem)
        .ok_or_else(|| GpuError::OverLimit {
            what: format!("a feature map of {d} -> {hid} values"),
            needed: ((d + hid) * 4 + 256) as u64,
            limit: mem as u64,
            limit_name: "max_compute_workgroup_storage_size",
        })?;
    let (xs, hs) = match kind {
        FeatureMapKind::Elu1 => (0, 0),
        _ => (tt * (d + 1), tt * (hid + 1)),
    };
    let ntiles = tok_count.div_ceil(tt);
    let (workgroups, grid_x) = fold_grid(gpu, ntiles * h)?;
    let params = FeatureParams {
        heads: h as u32,
        d: d as u32,
        df: df as u32,
        hid: hid as u32,
        tok_lo: tok_lo as u32,
        tok_count: tok_count as u32,
        d1: d1 as u32,
        tiles: ntiles as u32,
        grid_x,
        _pad0: 0,
        _pad1: 0,
        _pad2: 0,
    };
    let mut tensors = vec![x];
    tensors.extend(weights);
    tensors.push(out);
    let n = tok_count as f64 * h as f64;
    let flops = n * match kind {
        FeatureMapKind::Hedgehog => 2.0 * d as f64 * hid as f64 + 4.0 * df as f64,
        FeatureMapKind::Poly => 2.0 * (d * hid + hid * df) as f64,
        FeatureMapKind::Elu1 => d as f64,
    };
    rec.dispatch(Dispatch {
        shader: &FEATURE_MAP,
        entry: "main",
        defines: feature_defines(kind, x.dtype(), wdt, tt, xs, hs),
        constants: vec![],
        params: ParamBytes::of(&params),
        tensors: &tensors,
        workgroups,
        label: format!("feature map {kind:?} {tok_count} x {h}h x {d}->{df}").into(),
        cost: Cost::new(
            flops,
            n * (d as f64 * x.dtype().size() as f64 + df as f64 * 4.0),
        ),
    })
}

/// `shaders/feature_map.wgsl`.
pub static FEATURE_MAP: crate::shader::ShaderFile =
    crate::shader_file!("feature_map", feature_map_variants);
