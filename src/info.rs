//! `vdit info`: the adapters wgpu sees, the one vdit picks, and what it can do.

use vdit_wgpu::gpu::list_adapters;

use crate::gpu_args::GpuArgs;

pub fn run(gpu_args: &GpuArgs) -> Result<(), Box<dyn std::error::Error>> {
    println!("adapters:");
    for a in list_adapters(gpu_args.backend.as_deref())? {
        println!(
            "  {:<48} {:?} {:?} (driver: {} {})",
            a.name, a.backend, a.device_type, a.driver, a.driver_info
        );
    }
    let gpu = gpu_args.open()?;
    let c = &gpu.caps;
    let l = &gpu.limits;
    println!("chosen: {}", gpu.describe());
    println!("features:");
    println!("  shader f16:            {}", c.shader_f16);
    println!(
        "  subgroups:             {} (size {}..{})",
        c.subgroups, c.subgroup_min_size, c.subgroup_max_size
    );
    println!(
        "  timestamp queries:     {} (inside passes: {})",
        c.timestamps, c.timestamps_inside_passes
    );
    if c.cooperative_matrix.is_empty() {
        println!("  cooperative matrices:  none");
    } else {
        println!("  cooperative matrices:");
        for s in &c.cooperative_matrix {
            println!(
                "    {}x{}x{} {} x {} -> {}",
                s.m, s.n, s.k, s.ab_type, s.ab_type, s.cr_type
            );
        }
    }
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    println!("limits:");
    println!(
        "  max buffer size:                 {:.2} GiB",
        gib(l.max_buffer_size)
    );
    println!(
        "  max storage binding size:        {:.2} GiB",
        gib(l.max_storage_buffer_binding_size)
    );
    println!(
        "  workgroup storage:               {} KiB",
        l.max_compute_workgroup_storage_size / 1024
    );
    println!(
        "  invocations per workgroup:       {}",
        l.max_compute_invocations_per_workgroup
    );
    println!(
        "  workgroup size x/y/z:            {}/{}/{}",
        l.max_compute_workgroup_size_x,
        l.max_compute_workgroup_size_y,
        l.max_compute_workgroup_size_z
    );
    println!(
        "  workgroups per dimension:        {}",
        l.max_compute_workgroups_per_dimension
    );
    println!(
        "  storage buffers per stage:       {}",
        l.max_storage_buffers_per_shader_stage
    );
    Ok(())
}
