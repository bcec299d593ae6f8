//! `vdit selftest`: every kernel variant this adapter can run against the CPU float64 reference,
//! as a pass/fail table; the exit status is non-zero when any check fails.

use std::path::PathBuf;

use clap::Args;
use vdit_wgpu::Gpu;

#[derive(Args, Debug, Clone)]
pub struct SelftestArgs {
    /// Only the kernels whose name contains this (matmul, attention, conv, norm, rope).
    #[arg(long)]
    pub kernel: Option<String>,
    /// Also write the checks as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

pub fn run(gpu: &Gpu, a: &SelftestArgs) -> Result<(), Box<dyn std::error::Error>> {
    println!("device: {}", gpu.describe());
    let checks = vdit_wgpu::selftest::run(gpu, a.kernel.as_deref());
    if checks.is_empty() {
        return Err(format!(
            "--kernel {}: no kernel of that name (matmul, attention, conv, norm, rope)",
            a.kernel.as_deref().unwrap_or("")
        )
        .into());
    }
    print!("{}", vdit_wgpu::selftest::table(&checks));
    if let Some(path) = &a.json {
        let json = serde_json::json!({"device": gpu.describe(), "checks": checks});
        std::fs::write(path, serde_json::to_string_pretty(&json)?)
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    let failed = vdit_wgpu::selftest::failures(&checks);
    if failed > 0 {
        return Err(format!("{failed} of {} kernel checks failed", checks.len()).into());
    }
    Ok(())
}
