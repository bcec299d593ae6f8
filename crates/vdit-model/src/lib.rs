//! vdit-model: Wan2.1 text-to-video on vdit-wgpu.
