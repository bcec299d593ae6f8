// The output stage shared by the matmul kernels: bias, activation, gate and residual applied to
// one accumulated value, then stored. Reads the module's `p`, `bias`, `gate` and `y`.

fn gelu_tanh(v: f32) -> f32 {
    let u = 0.7978845608028654 * (v + 0.044715 * v * v * v);
    // 0.5 v (1 + tanh u) written as v * sigmoid(2u): no cancellation for negative v.
    return v / (1.0 + exp(min(-2.0 * u, 80.0)));
}

fn silu(v: f32) -> f32 {
    return v / (1.0 + exp(-v));
}

// Finishes output (r, c) from its accumulated dot product; out-of-range positions are skipped.
fn store_output(r: u32, c: u32, acc: f32) {
    if (r >= p.m || c >= p.n) {
        return;
    }
    var v = acc;
#if HAS_BIAS
    v += f32(bias[c]);
#endif
#if EPI_GELU
    v = gelu_tanh(v);
#endif
#if EPI_SILU
    v = silu(v);
#endif
#if HAS_GATE
    v = gate[p.gate_offset + c] * v;
#endif
#if HAS_RESIDUAL
    v += f32(y[r * p.n + c]);
#endif
    y[r * p.n + c] = Y_T(v);
}
