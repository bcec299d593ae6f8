//! `vdit bench attention`: times one attention mode with GPU timestamps (median over
//! iterations), reports ms and TFLOP/s by the attention cost model (ARCHITECTURE.md), and with `--check` the
//! relative L2 error against the CPU float64 reference.

use std::path::PathBuf;

use vdit_wgpu::attention::reference::{
    attention_reference, feature_map_flops, random_feature_map, upload_feature_map, FeatureSpec,
    HostFeatureMap, RefMode,
};
use vdit_wgpu::attention::{
    attention, attention_flops, AttentionMode, AttentionWorkspace, FeatureMapWeights, LINEAR_EPS,
};
use vdit_wgpu::testing::{rel_l2, round_f16, Rng};
use vdit_wgpu::{DType, Gpu, Profiler, Recorder, Tensor};

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BenchMode {
    Softmax,
    Linear,
    Hybrid,
    Rehyat,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BenchFeatureMap {
    Hedgehog,
    Poly,
    Elu1,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BenchPrecision {
    F32,
    F16,
}

#[derive(clap::Args, Clone, Debug)]
pub struct AttentionBenchArgs {
    /// Attention mode.
    #[arg(long, value_enum, default_value = "softmax")]
    pub mode: BenchMode,
    /// Hybrid: softmax over every R-th key, linear over the others.
    #[arg(long, default_value_t = 2)]
    pub rate: u32,
    /// Rehyat: latent frames per chunk (Tc).
    #[arg(long, default_value_t = 3)]
    pub chunk: u32,
    /// Rehyat: frames of overlap (To).
    #[arg(long, default_value_t = 1)]
    pub overlap: u32,
    /// Rehyat: tokens per latent frame (30 x 52 at 480x832).
    #[arg(long, default_value_t = 1560)]
    pub frame_tokens: u32,
    /// Feature map of the linear part.
    #[arg(long, value_enum, default_value = "hedgehog")]
    pub feature_map: BenchFeatureMap,
    /// Feature dimension DF (hedgehog: 2 x its hidden half; poly: P x D1 with P = 2);
    /// 0 picks the head dim for hedgehog and 256 for poly. elu1 always has DF = D.
    #[arg(long, default_value_t = 0)]
    pub feature_dim: usize,
    /// Query (and key) tokens; a comma list runs each length in turn.
    #[arg(long, value_delimiter = ',', default_value = "32760")]
    pub tokens: Vec<usize>,
    /// Key tokens, when they differ from the queries (cross-attention; softmax only).
    #[arg(long)]
    pub kv_tokens: Option<usize>,
    #[arg(long, default_value_t = 12)]
    pub heads: usize,
    #[arg(long, default_value_t = 128)]
    pub head_dim: usize,
    /// Storage type of q, k, v and the output (arithmetic is f32).
    #[arg(long, value_enum, default_value = "f16")]
    pub precision: BenchPrecision,
    /// Compare with the CPU float64 reference (use a small N).
    #[arg(long)]
    pub check: bool,
    /// Timed iterations (after two warm-up runs); the median is reported.
    #[arg(long, default_value_t = 10)]
    pub iters: usize,
    /// Also write the results as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// The result of one length.
#[derive(Clone, Debug)]
pub struct AttentionBenchRow {
    pub tokens: usize,
    pub median_ms: f64,
    pub min_ms: f64,
    pub tflops: f64,
    pub gflop: f64,
    pub rel_err: Option<f64>,
    /// Per-kernel medians of one call: (label, ms).
    pub kernels: Vec<(String, f64)>,
}

fn mode_of(args: &AttentionBenchArgs) -> AttentionMode {
    match args.mode {
        BenchMode::Softmax => AttentionMode::Softmax,
        BenchMode::Linear => AttentionMode::Linear { eps: LINEAR_EPS },
        BenchMode::Hybrid => AttentionMode::Hybrid { rate: args.rate },
        BenchMode::Rehyat => AttentionMode::Rehyat {
            chunk_frames: args.chunk,
            overlap_frames: args.overlap,
            frame_tokens: args.frame_tokens,
        },
    }
}

fn spec_of(args: &AttentionBenchArgs) -> FeatureSpec {
    let d = args.head_dim;
    match args.feature_map {
        BenchFeatureMap::Hedgehog => FeatureSpec::Hedgehog {
            half: if args.feature_dim > 0 {
                args.feature_dim / 2
            } else {
                d / 2
            }
            .max(1),
        },
        BenchFeatureMap::Poly => {
            let df = if args.feature_dim > 0 {
                args.feature_dim
            } else {
                256
            };
            FeatureSpec::Poly {
                hid: d,
                d1: (df / 2).max(1),
                powers: 2,
            }
        }
        BenchFeatureMap::Elu1 => FeatureSpec::Elu1,
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

fn bench_one(
    gpu: &Gpu,
    args: &AttentionBenchArgs,
    nq: usize,
) -> Result<AttentionBenchRow, Box<dyn std::error::Error>> {
    let mode = mode_of(args);
    let (h, d) = (args.heads, args.head_dim);
    let nk = args.kv_tokens.unwrap_or(nq);
    let dtype = match args.precision {
        BenchPrecision::F32 => DType::F32,
        BenchPrecision::F16 => DType::F16,
    };
    let mut rng = Rng::new(0x5eed ^ nq as u64);
    let f16 = dtype == DType::F16;
    let spec = spec_of(args);
    let hq = random_feature_map(&mut rng, spec, h, d, f16);
    let hk = random_feature_map(&mut rng, spec, h, d, f16);
    let df = hq.out_dim(d);
    let weights = FeatureMapWeights {
        phi_q: upload_feature_map(gpu, &hq, h, d, dtype)?,
        phi_k: upload_feature_map(gpu, &hk, h, d, dtype)?,
    };
    let r = |v: Vec<f32>| if f16 { round_f16(&v) } else { v };
    let qv = r(rng.vec_normal(nq * h * d, 1.0));
    let kv = r(rng.vec_normal(nk * h * d, 1.0));
    let vv = r(rng.vec_normal(nk * h * d, 1.0));
    let q = Tensor::from_f32(gpu, &[nq, h, d], &qv, dtype)?;
    let k = Tensor::from_f32(gpu, &[nk, h, d], &kv, dtype)?;
    let v = Tensor::from_f32(gpu, &[nk, h, d], &vv, dtype)?;
    let out = Tensor::empty(gpu, &[nq, h, d], dtype)?;
    let ws = AttentionWorkspace::new(gpu, &mode, nq, nk, h, d, df)?;
    let scale = 1.0 / (d as f32).sqrt();
    let feats = mode.needs_features().then_some(&weights);

    let mut profiler = Profiler::new(gpu);
    let mut totals = Vec::new();
    let mut per_kernel: Vec<(String, Vec<f64>)> = Vec::new();
    for it in 0..args.iters.max(1) + 2 {
        profiler.clear();
        let mut rec = Recorder::new(gpu);
        attention(&mut rec, &mode, &q, &k, &v, scale, feats, &out, &ws)?;
        rec.submit(Some(&mut profiler))?;
        gpu.wait()?;
        if it < 2 {
            continue;
        }
        totals.push(profiler.total_ms());
        for s in profiler.stats() {
            match per_kernel.iter_mut().find(|(l, _)| *l == s.label) {
                Some((_, v)) => v.push(s.total_ms),
                None => per_kernel.push((s.label.clone(), vec![s.total_ms])),
            }
        }
    }
    let min_ms = totals.iter().cloned().fold(f64::INFINITY, f64::min);
    let median_ms = median(&mut totals);
    let fm_flops = if mode.needs_features() {
        feature_map_flops(&hq, d)
    } else {
        0.0
    };
    let flops = attention_flops(&mode, nq, nk, h, d, df, fm_flops);
    let rel_err = if args.check {
        let work = nq as f64 * nk as f64 * h as f64 * d as f64;
        if work > 4e9 {
            return Err(format!(
                "--check at N = {nq} would take the CPU reference too long; use N <= 8192 \
                 with fewer heads"
            )
            .into());
        }
        let got = out.to_vec_f32(gpu)?;
        let want = attention_reference(
            RefMode::from(&mode),
            &qv,
            &kv,
            &vv,
            nq,
            nk,
            h,
            d,
            scale as f64,
            Some((&hq as &HostFeatureMap, &hk as &HostFeatureMap)),
        );
        Some(rel_l2(&got, &want))
    } else {
        None
    };
    Ok(AttentionBenchRow {
        tokens: nq,
        median_ms,
        min_ms,
        tflops: flops / (median_ms * 1e-3) / 1e12,
        gflop: flops / 1e9,
        rel_err,
        kernels: per_kernel
            .into_iter()
            .map(|(l, mut v)| (l, median(&mut v)))
            .collect(),
    })
}

/// Runs the benchmark for every `--tokens` length; returns the report (a table).
pub fn run(gpu: &Gpu, args: &AttentionBenchArgs) -> Result<String, Box<dyn std::error::Error>> {
    if args.kv_tokens.is_some() && args.mode != BenchMode::Softmax {
        return Err("--kv-tokens is for softmax (cross-attention) only".into());
    }
    let mode = mode_of(args);
    let mut report = format!(
        "attention {} | {} heads x {} | {:?} storage | feature map {:?} | {}\n",
        mode.name(),
        args.heads,
        args.head_dim,
        args.precision,
        args.feature_map,
        gpu.describe()
    );
    if !gpu.caps.timestamps {
        report += "(no timestamp queries: host wall clock per kernel)\n";
    }
    report += &format!(
        "{:>8} {:>10} {:>10} {:>9} {:>9} {:>10}\n",
        "tokens", "median ms", "min ms", "GFLOP", "TFLOP/s", "rel err"
    );
    let mut rows = Vec::new();
    for &n in &args.tokens {
        let row = bench_one(gpu, args, n)?;
        report += &format!(
            "{:>8} {:>10.3} {:>10.3} {:>9.1} {:>9.2} {:>10}\n",
            row.tokens,
            row.median_ms,
            row.min_ms,
            row.gflop,
            row.tflops,
            row.rel_err
                .map(|e| format!("{e:.2e}"))
                .unwrap_or_else(|| "-".into())
        );
        for (label, ms) in &row.kernels {
            report += &format!("           {ms:>10.3} ms  {label}\n");
        }
        rows.push(row);
    }
    if let Some(path) = &args.json {
        let json = serde_json::json!({
            "mode": mode.name(),
            "heads": args.heads,
            "head_dim": args.head_dim,
            "precision": format!("{:?}", args.precision).to_lowercase(),
            "feature_map": format!("{:?}", args.feature_map).to_lowercase(),
            "device": gpu.describe(),
            "results": rows.iter().map(|r| serde_json::json!({
                "tokens": r.tokens,
                "median_ms": r.median_ms,
                "min_ms": r.min_ms,
                "gflop": r.gflop,
                "tflops": r.tflops,
                "rel_err": r.rel_err,
                "kernels": r.kernels.iter().map(|(l, ms)| serde_json::json!({"label": l, "ms": ms})).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        });
        std::fs::write(path, serde_json::to_string_pretty(&json)?)?;
    }
    if let Some(e) = rows.iter().filter_map(|r| r.rel_err).reduce(f64::max) {
        let tol = match args.precision {
            BenchPrecision::F32 => 1e-4,
            BenchPrecision::F16 => 2e-3,
        };
        if e.is_nan() || e > tol {
            return Err(
                format!("{report}check failed: relative L2 error {e:.3e} > {tol:.0e}").into(),
            );
        }
    }
    Ok(report)
}
