// Draws one texture over the viewport with a single triangle that covers it (no vertex buffer).

struct VertexOut {
    @builtin(position) position: vec4<f32>,
    @location(0) uv: vec2<f32>,
}

@vertex
fn vs_main(@builtin(vertex_index) i: u32) -> VertexOut {
    // (-1, -1), (3, -1), (-1, 3): the viewport is the triangle's lower-left quarter.
    let xy = vec2<f32>(f32((i << 1u) & 2u), f32(i & 2u));
    var out: VertexOut;
    out.position = vec4<f32>(xy * 2.0 - 1.0, 0.0, 1.0);
    // Texture rows run top to bottom, clip space bottom to top.
    out.uv = vec2<f32>(xy.x, 1.0 - xy.y);
    return out;
}

@group(0) @binding(0) var frame: texture_2d<f32>;
@group(0) @binding(1) var frame_sampler: sampler;

// For a surface that stores bytes as they are: the frame's bytes are already sRGB-encoded.
@fragment
fn fs_main(in: VertexOut) -> @location(0) vec4<f32> {
    return textureSample(frame, frame_sampler, in.uv);
}

// For an sRGB surface, which encodes what it is given: decode first so that it is not done twice.
@fragment
fn fs_srgb(in: VertexOut) -> @location(0) vec4<f32> {
    let c = textureSample(frame, frame_sampler, in.uv);
    let low = c.rgb / 12.92;
    let high = pow((c.rgb + 0.055) / 1.055, vec3<f32>(2.4));
    return vec4<f32>(select(high, low, c.rgb <= vec3<f32>(0.04045)), c.a);
}
