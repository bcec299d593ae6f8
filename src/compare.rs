//! `vdit compare`: each prompt sampled with softmax and with an attention plan from the same
//! noise; PSNR and SSIM of the plan's video against softmax's, each block's attention-output
//! error, and the DiT time of both.

use std::path::PathBuf;

use clap::Args;
use vdit_model::dit::Precision;
use vdit_model::pipeline::{CancelToken, Pipeline, Silent};
use vdit_model::surgery::compare::{dit_forward_ms, BlockErrors};
use vdit_model::surgery::quality::{psnr, ssim};
use vdit_model::tensor_file::write_atomically;
use vdit_model::weights::Checkpoint;
use vdit_wgpu::Gpu;

use crate::sampling_args::{read_prompts, SamplingArgs};

#[derive(Args, Debug, Clone)]
pub struct CompareArgs {
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// The attention plan to compare with softmax.
    #[arg(long)]
    pub attention_plan: PathBuf,
    /// Prompts, one per line.
    #[arg(long)]
    pub prompts: PathBuf,
    /// Also write the figures as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Infinite PSNR (identical videos) as JSON null.
fn finite(v: f64) -> serde_json::Value {
    if v.is_finite() {
        v.into()
    } else {
        serde_json::Value::Null
    }
}

pub fn run(gpu: &Gpu, a: &CompareArgs) -> Result<(), Box<dyn std::error::Error>> {
    if !a.attention_plan.is_file() {
        return Err(format!(
            "--attention-plan {}: no such file",
            a.attention_plan.display()
        )
        .into());
    }
    let precision = Precision::parse(&a.sampling.precision).ok_or_else(|| {
        format!(
            "--precision must be f32 or f16, not '{}'",
            a.sampling.precision
        )
    })?;
    let prompts = read_prompts(&a.prompts, "--prompts")?;
    let paths = a.sampling.paths()?;
    let requests = a.sampling.requests(&paths, &prompts)?;
    let dit_path = paths.dit.clone().ok_or("the model has no DiT")?;
    let softmax = Pipeline::new(gpu, paths.clone(), precision);
    let planned =
        Pipeline::new(gpu, paths, precision).with_attention_plan(a.attention_plan.clone());
    let cancel = CancelToken::default();

    let mut videos = Vec::new();
    let mut blocks = BlockErrors::default();
    println!("{:>8} {:>6} {:>6}  prompt", "PSNR dB", "SSIM", "seed");
    for r in &requests {
        let reference = softmax.sample(r, &mut Silent, &cancel, None)?;
        let reference = softmax.decode(&reference, &mut Silent, &cancel)?.frames;
        let latent = planned.sample(r, &mut Silent, &cancel, Some(&mut blocks))?;
        let video = planned.decode(&latent, &mut Silent, &cancel)?.frames;
        let s = video.shape();
        let shape = [s[0], s[1], s[2], s[3]];
        let (v, w) = (video.to_vec_f32(gpu)?, reference.to_vec_f32(gpu)?);
        let (p, q) = (psnr(&v, &w, shape)?, ssim(&v, &w, shape)?);
        let prompt = match &r.prompt {
            vdit_model::pipeline::Prompt::Text(t) => t.clone(),
            _ => String::new(),
        };
        println!("{p:>8.2} {q:>6.4} {:>6}  {prompt}", r.seed);
        videos.push(
            serde_json::json!({"prompt": prompt, "seed": r.seed, "psnr": finite(p), "ssim": q}),
        );
    }
    let means = blocks.means();
    println!("block  attention error (relative L1 vs softmax, mean over forwards)");
    for (i, e) in means.iter().enumerate() {
        println!("{i:>5}  {e:.4e}");
    }
    let channels = Checkpoint::open(&dit_path)?.config()?.in_channels;
    let shape = requests[0].latent_shape(channels);
    let ms_soft = dit_forward_ms(gpu, &dit_path, None, precision, shape)?;
    let ms_plan = dit_forward_ms(gpu, &dit_path, Some(&a.attention_plan), precision, shape)?;
    println!(
        "DiT forward (GPU kernel time): softmax {ms_soft:.2} ms, plan {ms_plan:.2} ms ({:.2}x)",
        ms_soft / ms_plan
    );
    if let Some(path) = &a.json {
        let json = serde_json::json!({
            "device": gpu.describe(), "attention_plan": a.attention_plan.display().to_string(),
            "videos": videos, "block_errors": means,
            "dit_forward_ms": {"softmax": ms_soft, "plan": ms_plan},
        });
        write_atomically(path, serde_json::to_string_pretty(&json)?.as_bytes())?;
    }
    Ok(())
}
