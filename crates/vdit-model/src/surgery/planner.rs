//! The block-rate planner: from `errors.json` and a budget to the attention plan of least
//! summed error (Attention Surgery's cost-aware choice of rates), written in the plan format
//! that `vdit generate --attention-plan` reads.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use super::errors::ErrorTable;
use super::knapsack::{self, Item};
use crate::error::{input_err, Result};
use crate::plan::{feature_tensor_name, LayerAttention};
use crate::tensor_file::write_atomically;
use crate::weights::WeightFile;

/// The feature-weights file `vdit distill` writes beside its `errors.json`.
pub const FEATURES_FILE: &str = "features.safetensors";

/// One layer's chosen option.
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedLayer {
    pub mode: LayerAttention,
    pub error: f64,
    pub cost: f64,
    pub softmax_cost: f64,
}

/// The knapsack's answer for one budget.
#[derive(Clone, Debug, PartialEq)]
pub struct Planned {
    pub layers: Vec<PlannedLayer>,
    /// The budget in FLOPs: the fraction times `softmax_cost`.
    pub budget: f64,
    pub fraction: f64,
    pub softmax_cost: f64,
    pub cost: f64,
    pub error: f64,
    /// Which error `error` sums.
    pub objective: Objective,
    /// False when costs had to be rounded up to the dynamic program's units (see `knapsack`).
    pub exact: bool,
}

/// Which error of `errors.json` the planner sums.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Objective {
    /// Each option's attention-output error (`error`).
    Attention,
    /// Each option's effect on the held-out denoised latents when its layer alone runs it
    /// (`output_error`).
    Output,
}

impl Objective {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "attention" => Some(Self::Attention),
            "output" => Some(Self::Output),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Attention => "attention",
            Self::Output => "output",
        }
    }

    fn error_of(self, o: &super::errors::ModeOption) -> f64 {
        match self {
            Self::Attention => o.error,
            Self::Output if o.mode == "softmax" => 0.0,
            Self::Output => o.output_error.unwrap_or(f64::INFINITY),
        }
    }
}

/// Picks one option per layer: least summed error (the `objective`'s) with summed cost <=
/// `fraction` x the summed softmax cost. `fraction` must lie in (0, 1].
pub fn plan(table: &ErrorTable, fraction: f64, objective: Objective) -> Result<Planned> {
    if objective == Objective::Output && !table.has_output_errors() {
        return Err(input_err(
            "--objective",
            "output: the errors file has no output_error for every option (vdit distill \
             measures them unless --no-output-errors)",
        ));
    }
    if !(fraction.is_finite() && fraction > 0.0 && fraction <= 1.0) {
        return Err(input_err(
            "--budget",
            format!("{fraction} must be a fraction in (0, 1] of the all-softmax attention cost"),
        ));
    }
    let softmax_cost = table.softmax_cost();
    let budget = fraction * softmax_cost;
    let items: Vec<Vec<Item>> = table
        .layers
        .iter()
        .map(|l| {
            l.options
                .iter()
                .map(|o| Item {
                    cost: o.cost,
                    error: objective.error_of(o),
                })
                .collect()
        })
        .collect();
    let solution = knapsack::solve(&items, budget).map_err(|e| {
        input_err(
            "--budget",
            format!(
                "{fraction} x the softmax cost {softmax_cost:.4e} = {budget:.4e} FLOPs is below \
                 the cheapest plan's {:.4e} FLOPs: the budget must be at least {:.4}",
                e.min_cost,
                e.min_cost / softmax_cost
            ),
        )
    })?;
    let modes = table.modes();
    let layers = solution
        .picks
        .iter()
        .enumerate()
        .map(|(l, &o)| {
            let opts = &table.layers[l].options;
            PlannedLayer {
                mode: modes[l][o],
                error: objective.error_of(&opts[o]),
                cost: opts[o].cost,
                softmax_cost: opts
                    .iter()
                    .find(|o| o.mode == "softmax")
                    .map_or(0.0, |o| o.cost),
            }
        })
        .collect();
    Ok(Planned {
        layers,
        budget,
        fraction,
        softmax_cost,
        cost: solution.cost,
        error: solution.error,
        objective,
        exact: solution.exact,
    })
}

impl Planned {
    /// The chosen option of every layer, and the totals, as a text table.
    pub fn table(&self) -> String {
        let mut s = format!(
            "{:>5}  {:<12} {:>10} {:>12} {:>9}   ({} error)\n",
            "layer",
            "mode",
            "error",
            "GFLOP",
            "/softmax",
            self.objective.name()
        );
        for (i, l) in self.layers.iter().enumerate() {
            s += &format!(
                "{i:>5}  {:<12} {:>10.4e} {:>12.4} {:>9.3}\n",
                l.mode.to_string(),
                l.error,
                l.cost / 1e9,
                l.cost / l.softmax_cost
            );
        }
        s += &format!(
            "total  {:<12} {:>10.4e} {:>12.4} {:>9.3}  (budget {:.3}{})\n",
            "",
            self.error,
            self.cost / 1e9,
            self.cost / self.softmax_cost,
            self.fraction,
            if self.exact {
                ""
            } else {
                ", costs rounded up to the planner's units"
            }
        );
        s
    }

    pub fn needs_features(&self) -> bool {
        self.layers.iter().any(|l| l.mode.needs_features())
    }

    /// The plan file (the format of `crate::plan`): consecutive layers of one mode as ranges,
    /// softmax as the default.
    pub fn plan_json(&self, features: &PlanFeatures) -> serde_json::Value {
        let mut layers = BTreeMap::new();
        let mut start = 0;
        for i in 1..=self.layers.len() {
            if i < self.layers.len() && self.layers[i].mode == self.layers[start].mode {
                continue;
            }
            let mode = self.layers[start].mode;
            if mode != LayerAttention::Softmax {
                let range = if i - 1 == start {
                    start.to_string()
                } else {
                    format!("{start}-{}", i - 1)
                };
                layers.insert(range, serde_json::Value::String(mode.to_string()));
            }
            start = i;
        }
        let mut plan = serde_json::json!({ "default": "softmax", "layers": layers });
        if self.needs_features() {
            plan["feature_map"] = features.kind.clone().into();
            if let Some(w) = &features.weights_in_plan {
                plan["feature_weights"] = w.clone().into();
            }
            if let Some(p) = features.powers {
                plan["powers"] = p.into();
            }
        }
        plan
    }
}

/// The feature maps a written plan names.
#[derive(Clone, Debug, PartialEq)]
pub struct PlanFeatures {
    /// `hedgehog`, `poly` or `elu1`.
    pub kind: String,
    pub powers: Option<usize>,
    /// The weights file as the plan names it (relative to the plan's folder where possible).
    pub weights_in_plan: Option<String>,
    /// The weights file on disk.
    pub weights: Option<PathBuf>,
    /// Said to the user when the plan cannot use the maps the errors were measured with.
    pub warning: Option<String>,
}

/// Which feature maps a plan from the errors file at `errors_path`, written to `plan_path`,
/// uses: `explicit` (a `--feature-weights` file), else `features.safetensors` beside the errors
/// file, else the weightless elu1 maps. Elu1 in place of trained maps comes with a warning:
/// the table's errors then describe other maps than the ones the plan runs.
pub fn plan_features(
    errors_path: &Path,
    table: &ErrorTable,
    explicit: Option<&Path>,
    plan_path: &Path,
) -> Result<PlanFeatures> {
    let beside = errors_path
        .parent()
        .unwrap_or(Path::new("."))
        .join(FEATURES_FILE);
    let weights = match explicit {
        Some(p) if !p.is_file() => {
            return Err(input_err(
                "--feature-weights",
                format!("{} does not exist", p.display()),
            ))
        }
        Some(p) => Some(p.to_path_buf()),
        None => beside.is_file().then_some(beside.clone()),
    };
    let Some(weights) = weights else {
        let warning = match table.feature_map.as_deref() {
            Some("elu1") => None,
            measured => Some(format!(
                "no {} beside {}: the plan's linear parts use the weightless elu1 feature map{}",
                FEATURES_FILE,
                errors_path.display(),
                match measured {
                    Some(k) => format!(", not the trained {k} maps its errors were measured with"),
                    None => String::new(),
                }
            )),
        };
        return Ok(PlanFeatures {
            kind: "elu1".into(),
            powers: None,
            weights_in_plan: None,
            weights: None,
            warning,
        });
    };
    let file = WeightFile::open(&weights)?;
    let kind = match table.feature_map.as_deref() {
        Some("elu1") | None => {
            if file.names().any(|n| n.ends_with(".l1.weight")) {
                "poly"
            } else {
                "hedgehog"
            }
        }
        Some(k) => k,
    }
    .to_string();
    let powers = (kind == "poly").then(|| table.powers.unwrap_or(2));
    let plan_dir = plan_path.parent().unwrap_or(Path::new("."));
    Ok(PlanFeatures {
        weights_in_plan: Some(relative_path(&weights, plan_dir).display().to_string()),
        kind,
        powers,
        weights: Some(weights),
        warning: None,
    })
}

/// Checks that the weights hold a set for every layer the plan gives a feature map, so that a
/// plan never names a file it cannot run with.
pub fn check_weights(planned: &Planned, features: &PlanFeatures) -> Result<()> {
    let Some(path) = &features.weights else {
        return Ok(());
    };
    let file = WeightFile::open(path)?;
    let first = if features.kind == "poly" {
        "l1.weight"
    } else {
        "weight"
    };
    for (i, l) in planned.layers.iter().enumerate() {
        if !l.mode.needs_features() {
            continue;
        }
        for which in ["phi_q", "phi_k"] {
            let per_mode = feature_tensor_name(i, Some(l.mode), which, first);
            let plain = feature_tensor_name(i, None, which, first);
            if !file.contains(&per_mode) && !file.contains(&plain) {
                return Err(input_err(
                    path.display().to_string(),
                    format!(
                        "layer {i} is planned {} but there is no '{per_mode}'",
                        l.mode
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Writes the plan file atomically.
pub fn write_plan(planned: &Planned, features: &PlanFeatures, path: &Path) -> Result<()> {
    let text = serde_json::to_string_pretty(&planned.plan_json(features))
        .map_err(|e| input_err(path.display().to_string(), e.to_string()))?;
    write_atomically(path, format!("{text}\n").as_bytes())
}

/// `target` relative to the folder `from`, or `target` made absolute when they share no root.
fn relative_path(target: &Path, from: &Path) -> PathBuf {
    let abs = |p: &Path| {
        let p = if p.as_os_str().is_empty() {
            Path::new(".")
        } else {
            p
        };
        std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
    };
    let (t, f) = (abs(target), abs(from));
    let (tc, fc): (Vec<Component>, Vec<Component>) =
        (t.components().collect(), f.components().collect());
    let common = tc.iter().zip(&fc).take_while(|(a, b)| a == b).count();
    if common == 0 {
        return t;
    }
    let mut rel = PathBuf::new();
    for _ in common..fc.len() {
        rel.push("..");
    }
    for c in &tc[common..] {
        rel.push(c.as_os_str());
    }
    rel
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::surgery::errors::{LayerOptions, ModeOption};

    fn table(layers: &[&[(&str, f64, f64)]]) -> ErrorTable {
        ErrorTable {
            layers: layers
                .iter()
                .enumerate()
                .map(|(i, opts)| LayerOptions {
                    layer: i,
                    options: opts
                        .iter()
                        .map(|&(m, e, c)| ModeOption::new(LayerAttention::parse(m).unwrap(), e, c))
                        .collect(),
                })
                .collect(),
            feature_map: Some("hedgehog".into()),
            powers: None,
        }
    }

    #[test]
    fn plans_the_least_error_within_budget_and_writes_ranges() {
        let opts: &[(&str, f64, f64)] = &[
            ("softmax", 0.0, 100.0),
            ("hybrid:2", 0.1, 55.0),
            ("linear", 0.4, 10.0),
        ];
        let worse: &[(&str, f64, f64)] = &[
            ("softmax", 0.0, 100.0),
            ("hybrid:2", 0.3, 55.0),
            ("linear", 0.9, 10.0),
        ];
        let t = table(&[opts, opts, worse, opts]);
        // 0.7 x 400 = 280: three hybrids (265) beat two linears; the worst layer keeps softmax.
        let p = plan(&t, 0.7, Objective::Attention).unwrap();
        let modes: Vec<String> = p.layers.iter().map(|l| l.mode.to_string()).collect();
        assert_eq!(modes, ["hybrid:2", "hybrid:2", "softmax", "hybrid:2"]);
        assert!((p.error - 0.3).abs() < 1e-12 && p.cost == 265.0 && p.exact);
        let f = PlanFeatures {
            kind: "hedgehog".into(),
            powers: None,
            weights_in_plan: Some("run/features.safetensors".into()),
            weights: None,
            warning: None,
        };
        assert_eq!(
            p.plan_json(&f),
            serde_json::json!({"default": "softmax", "layers": {"0-1": "hybrid:2", "3": "hybrid:2"},
                "feature_map": "hedgehog", "feature_weights": "run/features.safetensors"})
        );
        assert!(p.table().contains("total"));
        // All softmax fits a budget of 1: no feature map named.
        let p = plan(&t, 1.0, Objective::Attention).unwrap();
        assert!(!p.needs_features());
        assert_eq!(
            p.plan_json(&f),
            serde_json::json!({"default": "softmax", "layers": {}})
        );
    }

    #[test]
    fn the_output_objective_sums_output_errors() {
        let first: &[(&str, f64, f64)] = &[
            ("softmax", 0.0, 100.0),
            ("hybrid:2", 0.1, 55.0),
            ("linear", 0.4, 10.0),
        ];
        let second: &[(&str, f64, f64)] = &[
            ("softmax", 0.0, 100.0),
            ("hybrid:2", 0.1, 55.0),
            ("linear", 0.2, 10.0),
        ];
        let mut t = table(&[first, second]);
        let e = plan(&t, 0.5, Objective::Output).unwrap_err().to_string();
        assert!(
            e.contains("--objective") && e.contains("output_error"),
            "{e}"
        );
        // By attention error, layer 1 is the one to make linear; by what each layer does to
        // the output, layer 0's linear part hurts the video little and layer 1's much.
        for (l, out) in [(0, [0.02, 0.01]), (1, [0.05, 0.9])] {
            for (o, e) in t.layers[l].options[1..].iter_mut().zip(out) {
                o.output_error = Some(e);
            }
        }
        let modes =
            |p: &Planned| -> Vec<String> { p.layers.iter().map(|l| l.mode.to_string()).collect() };
        // 0.5 x 200 = 100: one hybrid and one linear layer.
        let by_attention = plan(&t, 0.5, Objective::Attention).unwrap();
        let by_output = plan(&t, 0.5, Objective::Output).unwrap();
        assert_eq!(modes(&by_attention), ["hybrid:2", "linear"]);
        assert_eq!(modes(&by_output), ["linear", "hybrid:2"]);
        assert!((by_attention.error - 0.3).abs() < 1e-12);
        assert!((by_output.error - 0.06).abs() < 1e-12);
        assert!(by_output.table().contains("(output error)"));
    }

    #[test]
    fn bad_and_infeasible_budgets_name_the_flag() {
        let t = table(&[&[("softmax", 0.0, 100.0), ("linear", 0.4, 10.0)]]);
        for bad in [0.0, -0.5, 1.5, f64::NAN] {
            let e = plan(&t, bad, Objective::Attention).unwrap_err().to_string();
            assert!(e.contains("--budget") && e.contains("(0, 1]"), "{e}");
        }
        let e = plan(&t, 0.05, Objective::Attention)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--budget") && e.contains("at least 0.1000"),
            "{e}"
        );
    }

    #[test]
    fn relative_paths_climb_out_of_the_plan_folder() {
        let root = std::env::temp_dir().join(format!("vdit-rel-{}", std::process::id()));
        std::fs::create_dir_all(root.join("a/run")).unwrap();
        std::fs::create_dir_all(root.join("b")).unwrap();
        std::fs::write(root.join("a/run/f.safetensors"), b"x").unwrap();
        assert_eq!(
            relative_path(&root.join("a/run/f.safetensors"), &root.join("b")),
            Path::new("../a/run/f.safetensors")
        );
        assert_eq!(
            relative_path(&root.join("a/run/f.safetensors"), &root.join("a/run")),
            Path::new("f.safetensors")
        );
        std::fs::remove_dir_all(&root).unwrap();
    }
}
