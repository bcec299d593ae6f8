//! `vdit plan`: the per-layer attention modes of least summed distillation error within a
//! budget of the softmax attention cost, written as an attention plan.

use std::path::PathBuf;

use clap::Args;
use vdit_model::surgery::errors::ErrorTable;
use vdit_model::surgery::planner::{check_weights, plan, plan_features, write_plan, Objective};

#[derive(Args, Debug, Clone)]
pub struct PlanArgs {
    /// errors.json as `vdit distill` writes it; its features.safetensors is looked for beside it.
    #[arg(long)]
    pub errors: PathBuf,
    /// The self-attention cost allowed, as a fraction in (0, 1] of softmax in every block.
    #[arg(long)]
    pub budget: f64,
    /// Feature-map weights for the plan to name, instead of the features.safetensors beside
    /// --errors. Without either, linear parts use the weightless elu1 map (with a warning).
    #[arg(long)]
    pub feature_weights: Option<PathBuf>,
    /// The error the plan minimises: attention (each option's attention-output error) or
    /// output (each option's measured effect on the held-out denoised latents, when errors.json
    /// has it) [default: attention].
    #[arg(long)]
    pub objective: Option<String>,
    /// The plan file to write.
    #[arg(long, default_value = "plan.json")]
    pub output: PathBuf,
}

pub fn run(a: &PlanArgs) -> Result<(), Box<dyn std::error::Error>> {
    let table = ErrorTable::read(&a.errors)?;
    let objective = match a.objective.as_deref() {
        None => Objective::Attention,
        Some(s) => Objective::parse(s).ok_or_else(|| {
            format!("--objective {s}: output (measured effect on the latents) or attention")
        })?,
    };
    let planned = plan(&table, a.budget, objective)?;
    let features = plan_features(&a.errors, &table, a.feature_weights.as_deref(), &a.output)?;
    if planned.needs_features() {
        check_weights(&planned, &features)?;
        if let Some(w) = &features.warning {
            eprintln!("warning: {w}");
        }
    }
    print!("{}", planned.table());
    write_plan(&planned, &features, &a.output)?;
    println!("wrote {}", a.output.display());
    Ok(())
}
