//! `errors.json`: every layer's attention options with their error and cost, written by
//! `vdit distill` and read by `vdit plan`.
//!
//! ```json
//! {"layers": [{"layer": 0, "options": [{"mode": "softmax", "error": 0.0, "cost": 1.2e9},
//!                                      {"mode": "hybrid:2", "error": 0.031, "cost": 6.9e8}]}],
//!  "feature_map": "hedgehog"}
//! ```
//! - `error`: the held-out relative L1 error of the option's attention output against softmax
//!   (0 for softmax); `cost`: its self-attention FLOPs in the cost model.
//! - Optional: `feature_map` (`hedgehog`, `poly`, `elu1`: the maps the errors were measured
//!   with), `powers` (poly's P), and per option `initial_error` and `elu1_error` (the same
//!   measure before distillation and with the weightless elu1 map), and `output_error`: the
//!   relative L2 error of the held-out denoised latents when this layer alone runs the option
//!   and every other layer softmax (0 for softmax), what the planner sums by default because it
//!   sees what a block's error does to the video, not only to its own output.
//!
//! Every layer 0..L-1 appears once, each with exactly one `softmax` option (the reference whose
//! summed cost sets the budget) and no mode twice.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{input_err, Result};
use crate::plan::LayerAttention;
use crate::tensor_file::write_atomically;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorTable {
    pub layers: Vec<LayerOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature_map: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub powers: Option<usize>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerOptions {
    pub layer: usize,
    pub options: Vec<ModeOption>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModeOption {
    pub mode: String,
    pub error: f64,
    pub cost: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_error: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elu1_error: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_error: Option<f64>,
}

impl ModeOption {
    pub fn new(mode: LayerAttention, error: f64, cost: f64) -> Self {
        Self {
            mode: mode.to_string(),
            error,
            cost,
            initial_error: None,
            elu1_error: None,
            output_error: None,
        }
    }
}

impl ErrorTable {
    /// Reads and validates an errors file; every message names the file.
    pub fn read(path: &Path) -> Result<Self> {
        let err = |m: String| input_err(path.display().to_string(), m);
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let table: Self = serde_json::from_str(&text).map_err(|e| err(e.to_string()))?;
        let table = table.sorted();
        table.validate().map_err(err)?;
        Ok(table)
    }

    /// Writes the table as pretty JSON, atomically.
    pub fn write(&self, path: &Path) -> Result<()> {
        self.validate()
            .map_err(|m| input_err(path.display().to_string(), m))?;
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| input_err(path.display().to_string(), e.to_string()))?;
        write_atomically(path, format!("{text}\n").as_bytes())
    }

    /// The layers in index order.
    fn sorted(mut self) -> Self {
        self.layers.sort_by_key(|l| l.layer);
        self
    }

    /// Each layer's options as parsed modes, in file order.
    pub fn modes(&self) -> Vec<Vec<LayerAttention>> {
        self.layers
            .iter()
            .map(|l| {
                l.options
                    .iter()
                    .map(|o| LayerAttention::parse(&o.mode).expect("validated"))
                    .collect()
            })
            .collect()
    }

    /// True when every option carries an `output_error` (softmax may leave it out: it is 0).
    pub fn has_output_errors(&self) -> bool {
        self.layers
            .iter()
            .flat_map(|l| &l.options)
            .all(|o| o.mode == "softmax" || o.output_error.is_some())
    }

    /// The softmax cost of every layer, summed: what a budget fraction multiplies.
    pub fn softmax_cost(&self) -> f64 {
        self.layers
            .iter()
            .flat_map(|l| l.options.iter().filter(|o| o.mode == "softmax"))
            .map(|o| o.cost)
            .sum()
    }

    /// Checks the rules of the module docs (layers sorted).
    fn validate(&self) -> std::result::Result<(), String> {
        if self.layers.is_empty() {
            return Err("\"layers\" is empty".into());
        }
        for (i, l) in self.layers.iter().enumerate() {
            if l.layer != i {
                return Err(if l.layer < i {
                    format!("layer {} appears twice", l.layer)
                } else {
                    format!(
                        "layer {i} is missing (layers must be 0..{})",
                        self.layers.len() - 1
                    )
                });
            }
            let at = |o: &ModeOption| format!("layer {i}, mode '{}'", o.mode);
            if l.options.is_empty() {
                return Err(format!("layer {i} has no options"));
            }
            if l.options.len() > u16::MAX as usize {
                return Err(format!("layer {i} has {} options", l.options.len()));
            }
            let mut seen = Vec::new();
            for o in &l.options {
                let mode = LayerAttention::parse(&o.mode).ok_or_else(|| {
                    format!(
                        "layer {i}: unknown mode '{}' (softmax, linear, hybrid:R, rehyat:TC:TO)",
                        o.mode
                    )
                })?;
                if seen.contains(&mode) {
                    return Err(format!("{} appears twice", at(o)));
                }
                seen.push(mode);
                if !(o.error.is_finite() && o.error >= 0.0) {
                    return Err(format!("{}: error {} must be >= 0", at(o), o.error));
                }
                if let Some(e) = o.output_error {
                    if !(e.is_finite() && e >= 0.0) {
                        return Err(format!("{}: output_error {e} must be >= 0", at(o)));
                    }
                }
                if !(o.cost.is_finite() && o.cost > 0.0) {
                    return Err(format!("{}: cost {} must be > 0", at(o), o.cost));
                }
            }
            if !l.options.iter().any(|o| o.mode == "softmax") {
                return Err(format!(
                    "layer {i} has no \"softmax\" option (its cost sets the budget)"
                ));
            }
        }
        if let Some(f) = &self.feature_map {
            if !matches!(f.as_str(), "hedgehog" | "poly" | "elu1") {
                return Err(format!(
                    "unknown feature_map '{f}' (hedgehog, poly or elu1)"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("vdit-errors-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn reads_the_documented_format_and_rejects_bad_tables() {
        let d = dir("format");
        let p = d.join("errors.json");
        std::fs::write(
            &p,
            r#"{"layers": [
                {"layer": 1, "options": [{"mode": "softmax", "error": 0.0, "cost": 10},
                                         {"mode": "linear", "error": 0.5, "cost": 2}]},
                {"layer": 0, "options": [{"mode": "softmax", "error": 0.0, "cost": 10},
                                         {"mode": "hybrid:2", "error": 0.1, "cost": 6}]}]}"#,
        )
        .unwrap();
        let t = ErrorTable::read(&p).unwrap();
        assert_eq!(t.layers[0].layer, 0);
        assert_eq!(t.softmax_cost(), 20.0);
        assert_eq!(t.modes()[0][1], LayerAttention::Hybrid { rate: 2 });
        // A written table reads back the same.
        let q = d.join("copy.json");
        t.write(&q).unwrap();
        assert_eq!(ErrorTable::read(&q).unwrap(), t);

        let soft = r#"{"mode": "softmax", "error": 0.0, "cost": 10}"#;
        for (bad, says) in [
            (r#"{"layers": []}"#.to_string(), "empty"),
            (format!(r#"{{"layers": [{{"layer": 1, "options": [{soft}]}}]}}"#), "layer 0 is missing"),
            (
                format!(r#"{{"layers": [{{"layer": 0, "options": [{soft}]}}, {{"layer": 0, "options": [{soft}]}}]}}"#),
                "appears twice",
            ),
            (
                r#"{"layers": [{"layer": 0, "options": [{"mode": "linear", "error": 0.1, "cost": 1}]}]}"#.into(),
                "no \"softmax\" option",
            ),
            (
                format!(r#"{{"layers": [{{"layer": 0, "options": [{soft}, {{"mode": "hybird:2", "error": 0.1, "cost": 1}}]}}]}}"#),
                "unknown mode 'hybird:2'",
            ),
            (
                format!(r#"{{"layers": [{{"layer": 0, "options": [{soft}, {{"mode": "linear", "error": -1, "cost": 1}}]}}]}}"#),
                "must be >= 0",
            ),
            (
                format!(r#"{{"layers": [{{"layer": 0, "options": [{soft}, {{"mode": "linear", "error": 0, "cost": 0}}]}}]}}"#),
                "must be > 0",
            ),
            (
                format!(r#"{{"layers": [{{"layer": 0, "options": [{soft}, {soft}]}}]}}"#),
                "appears twice",
            ),
            (
                r#"{"layers": [{"layer": 0, "options": [{"mode": "softmax", "eror": 0.0, "cost": 10}]}]}"#.into(),
                "eror",
            ),
        ] {
            std::fs::write(&p, &bad).unwrap();
            let e = ErrorTable::read(&p).unwrap_err().to_string();
            assert!(e.contains(says) && e.contains("errors.json"), "{bad}\n-> {e}");
        }
        let e = ErrorTable::read(&d.join("none.json"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("none.json"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
