//! Every WGSL file of `shaders/`, in every variant its launchers use, must parse, validate and
//! translate to SPIR-V (Vulkan), MSL (Metal) and HLSL (DX12). This is how portability to Metal
//! and DX12 is checked on a machine that has neither.

use std::collections::BTreeSet;

use naga::back::{hlsl, msl, spv};
use vdit_wgpu::catalog::all_shaders;
use vdit_wgpu::shader::{parse_and_validate, preprocess};

fn translate_everywhere(label: &str, wgsl: &str) -> Result<(), String> {
    let (module, info) = parse_and_validate(label, wgsl).map_err(|e| e.to_string())?;
    let (module, info) = naga::back::pipeline_constants::process_overrides(
        &module,
        &info,
        None,
        &Default::default(),
    )
    .map_err(|e| format!("{label}: overrides: {e}"))?;
    spv::write_vec(&module, &info, &spv::Options::default(), None)
        .map_err(|e| format!("{label}: SPIR-V: {e}"))?;
    // Cooperative-matrix kernels are chosen only on adapters that report 16x16 f16 cooperative
    // matrices, which wgpu exposes through Vulkan; each has a portable twin for Metal and DX12.
    if wgsl.contains("enable wgpu_cooperative_matrix;") {
        return Ok(());
    }
    let msl_options = msl::Options {
        lang_version: (2, 4),
        ..Default::default()
    };
    msl::write_string(
        &module,
        &info,
        &msl_options,
        &msl::PipelineOptions::default(),
    )
    .map_err(|e| format!("{label}: MSL: {e}"))?;
    let hlsl_options = hlsl::Options {
        shader_model: hlsl::ShaderModel::V6_2, // 16-bit types need SM 6.2
        ..Default::default()
    };
    let mut hlsl_out = String::new();
    hlsl::Writer::new(
        &mut hlsl_out,
        &hlsl_options,
        &hlsl::PipelineOptions::default(),
    )
    .write(&module, &info, None)
    .map_err(|e| format!("{label}: HLSL: {e}"))?;
    Ok(())
}

#[test]
fn every_shader_variant_reaches_vulkan_metal_and_dx12() {
    let mut failures = Vec::new();
    let mut count = 0;
    for shader in all_shaders() {
        let variants = (shader.variants)();
        assert!(!variants.is_empty(), "{} lists no variants", shader.name);
        for defs in variants {
            count += 1;
            let label = format!("{} {:?}", shader.name, defs);
            match preprocess(shader.name, shader.source, &defs) {
                Ok(wgsl) => {
                    if let Err(e) = translate_everywhere(&label, &wgsl) {
                        failures.push(e);
                    }
                }
                Err(e) => failures.push(format!("{label}: {e}")),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {count} variants failed:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    eprintln!("{count} shader variants translated to SPIR-V, MSL and HLSL");
}

#[test]
fn every_wgsl_file_is_registered() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/shaders");
    let on_disk: BTreeSet<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".wgsl").map(str::to_string)
        })
        .collect();
    let registered: BTreeSet<String> = all_shaders().iter().map(|s| s.name.to_string()).collect();
    assert_eq!(
        on_disk, registered,
        "shaders/ and the shader registry disagree"
    );
}
