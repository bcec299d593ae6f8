//! Which attention a layer runs, and the linear attention's default epsilon.

/// Which attention a layer runs (ARCHITECTURE.md, Attention modes).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum AttentionMode {
    Softmax,
    /// o = phi_q(q) S / (phi_q(q) z + eps).
    Linear {
        eps: f32,
    },
    /// Softmax over keys j % rate == 0, linear over the others, one shared normalizer.
    Hybrid {
        rate: u32,
    },
    /// Chunk-recurrent hybrid over latent frames of `frame_tokens` tokens: queries of chunk t
    /// (frames [t*tc, (t+1)*tc)) see softmax keys of frames [max(t*tc - to, 0), (t+1)*tc) and the
    /// linear state of all earlier frames. Self-attention only (Nq == Nk).
    Rehyat {
        chunk_frames: u32,
        overlap_frames: u32,
        frame_tokens: u32,
    },
}

impl AttentionMode {
    /// Whether this mode is plain softmax attention: softmax itself, and hybrid with rate 1 (or
    /// 0), whose softmax keys are all the keys. The one place that decides it.
    pub fn runs_as_softmax(&self) -> bool {
        matches!(
            self,
            AttentionMode::Softmax | AttentionMode::Hybrid { rate: 0 | 1 }
        )
    }

    /// The mode as the kernels run it: hybrid at rate 0 or 1 becomes softmax, so a match on the
    /// result sees every hybrid with rate >= 2.
    pub fn normalized(&self) -> Self {
        if self.runs_as_softmax() {
            AttentionMode::Softmax
        } else {
            *self
        }
    }

    pub fn needs_features(&self) -> bool {
        !self.runs_as_softmax()
    }

    pub fn name(&self) -> String {
        match self {
            AttentionMode::Softmax => "softmax".into(),
            AttentionMode::Linear { .. } => "linear".into(),
            AttentionMode::Hybrid { rate } => format!("hybrid R={rate}"),
            AttentionMode::Rehyat {
                chunk_frames,
                overlap_frames,
                ..
            } => format!("rehyat tc={chunk_frames} to={overlap_frames}"),
        }
    }
}

/// The epsilon of linear attention's denominator unless a caller picks another.
pub const LINEAR_EPS: f32 = 1e-6;
