//! 3D rotary position embedding for video tokens on a (frames, rows, cols) grid: each head's
//! channel pairs are split between the three axes in an order and proportion the model chooses
//! (frames first, then rows, then cols; Wan2.1's split lives with its model), and pair `j` of an
//! axis owning `n` pairs turns by `position * theta^(-2j / 2n)`. Pairs are interleaved
//! (x[2j], x[2j+1]). The angles' cos and sin are computed once per grid on the CPU in f64 and
//! uploaded as a small table ([`RopeTable`]); the kernel rotates `x` in place.

use super::{folded_grid, require_f16_support, to_u32};
use crate::error::{shape_err, Result};
use crate::gpu::Gpu;
use crate::param_block::ParamBytes;
use crate::profiler::Cost;
use crate::recorder::{Dispatch, Recorder};
use crate::shader::{defines, Defines};
use crate::tensor::{DType, Tensor};

/// The cos and sin of every (axis position, pair) angle of one token grid, on the GPU.
pub struct RopeTable {
    table: Tensor,
    grid: [usize; 3],
    head_dim: usize,
    pairs: [usize; 3],
}

impl RopeTable {
    /// The table for tokens on a `grid` of [frames, rows, cols] and heads of `head_dim`
    /// channels (even), whose `head_dim / 2` pairs are split as `pairs` between frames, rows and
    /// cols; Wan uses `theta` = 10000.
    pub fn new(
        gpu: &Gpu,
        grid: [usize; 3],
        head_dim: usize,
        pairs: [usize; 3],
        theta: f64,
    ) -> Result<Self> {
        if head_dim == 0 || head_dim % 2 == 1 {
            return Err(shape_err(
                "rope",
                format!("head dimension {head_dim} must be even and positive"),
            ));
        }
        if pairs.iter().sum::<usize>() != head_dim / 2 {
            return Err(shape_err(
                "rope",
                format!(
                    "the axes' pairs {pairs:?} must add up to head_dim / 2 = {}",
                    head_dim / 2
                ),
            ));
        }
        let mut values = Vec::new();
        for axis in 0..3 {
            for position in 0..grid[axis] {
                for j in 0..pairs[axis] {
                    let freq = theta.powf(-2.0 * j as f64 / (2 * pairs[axis]) as f64);
                    let (sin, cos) = (position as f64 * freq).sin_cos();
                    values.extend([cos as f32, sin as f32]);
                }
            }
        }
        let rows = values.len() / 2;
        let table = Tensor::from_f32(gpu, &[rows, 2], &values, DType::F32)?;
        Ok(Self {
            table,
            grid,
            head_dim,
            pairs,
        })
    }

    /// [frames, rows, cols] of the token grid.
    pub fn grid(&self) -> [usize; 3] {
        self.grid
    }
    pub fn head_dim(&self) -> usize {
        self.head_dim
    }
    /// The table: [entries, 2] f32 (cos, sin), frames' entries first, then rows', then cols'.
    pub fn tensor(&self) -> &Tensor {
        &self.table
    }
}

crate::param_block! {
    struct Params {
        pairs_total: u32,
        head_pairs: u32,
        heads: u32,
        t_pairs: u32,
        h_pairs: u32,
        grid_rows: u32,
        grid_cols: u32,
        h_table_start: u32,
        w_table_start: u32,
        _pad: [u32; 3],
    }
}

/// Pairs one workgroup rotates, one per thread (rope.wgsl).
const PAIRS_PER_WORKGROUP: usize = 256;

fn rope_defines(x: DType) -> Defines {
    defines(&[("X_T", x.wgsl())])
}

/// The define sets the portability test compiles.
pub fn variants() -> Vec<Defines> {
    vec![rope_defines(DType::F32), rope_defines(DType::F16)]
}

/// Records the rotation of `x` [N, H, D] in place, N the tokens of `table`'s grid in
/// (frame, row, col) order with cols fastest, D its head dimension.
pub fn rope_in_place(rec: &mut Recorder, x: &Tensor, table: &RopeTable) -> Result<()> {
    let op = "rope";
    let [frames, rows, cols] = table.grid;
    let tokens = frames * rows * cols;
    let &[n, heads, d] = x.shape() else {
        return Err(shape_err(
            op,
            format!("x must be [tokens, heads, head_dim], got {x:?}"),
        ));
    };
    if n != tokens || d != table.head_dim {
        return Err(shape_err(
            op,
            format!(
                "the table is for a {frames}x{rows}x{cols} grid ({tokens} tokens) of head \
                 dimension {}; x is {x:?}",
                table.head_dim
            ),
        ));
    }
    require_f16_support(rec.gpu(), "an f16 rope", &[x])?;
    let [t_pairs, h_pairs, _] = table.pairs;
    let pairs_total = n * heads * d / 2;
    let params = Params {
        pairs_total: to_u32(op, pairs_total)?,
        head_pairs: to_u32(op, d / 2)?,
        heads: to_u32(op, heads)?,
        t_pairs: to_u32(op, t_pairs)?,
        h_pairs: to_u32(op, h_pairs)?,
        grid_rows: to_u32(op, rows)?,
        grid_cols: to_u32(op, cols)?,
        h_table_start: to_u32(op, frames * t_pairs)?,
        w_table_start: to_u32(op, frames * t_pairs + rows * h_pairs)?,
        _pad: [0; 3],
    };
    rec.dispatch(Dispatch {
        shader: &ROPE,
        entry: "main",
        defines: rope_defines(x.dtype()),
        constants: vec![],
        params: ParamBytes::of(&params),
        tensors: &[&table.table, x],
        workgroups: folded_grid(rec.gpu(), pairs_total.div_ceil(PAIRS_PER_WORKGROUP)),
        label: format!("rope {n}x{heads}x{d} {}", x.dtype()).into(),
        cost: Cost::new(pairs_total as f64 * 6.0, 2.0 * x.bytes() as f64),
    })
}

/// CPU float64 reference of [`rope_in_place`], from the definition: the head's D/2 complex
/// channels split as `split` between frames, rows and cols, channel `k` of an axis with `n` of
/// them multiplied by `exp(i * position * theta^(-k / n))`.
pub fn rope_reference(
    x: &[f32],
    grid: [usize; 3],
    heads: usize,
    head_dim: usize,
    split: [usize; 3],
    theta: f64,
) -> Vec<f64> {
    let c = head_dim / 2;
    let mut out = vec![0.0; x.len()];
    let [_, rows, cols] = grid;
    for (pair, chunk) in x.chunks(2).enumerate() {
        let k = pair % c;
        let token = pair / (c * heads);
        let position = [token / (rows * cols), token / cols % rows, token % cols];
        let (axis, local) = if k < split[0] {
            (0, k)
        } else if k < split[0] + split[1] {
            (1, k - split[0])
        } else {
            (2, k - split[0] - split[1])
        };
        let angle = position[axis] as f64 * theta.powf(-(local as f64) / split[axis] as f64);
        let (re, im) = (chunk[0] as f64, chunk[1] as f64);
        out[2 * pair] = re * angle.cos() - im * angle.sin();
        out[2 * pair + 1] = re * angle.sin() + im * angle.cos();
    }
    out
}

/// `shaders/rope.wgsl`.
pub static ROPE: crate::shader::ShaderFile = crate::shader_file!("rope", variants);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::with_fold_limit;
    use crate::testing::*;
    use DType::{F16, F32};

    /// A split of the head's pairs between the axes (frames get the remainder), as the models
    /// using this kernel choose it.
    fn split(head_dim: usize) -> [usize; 3] {
        let hw = head_dim / 6;
        [head_dim / 2 - 2 * hw, hw, hw]
    }

    fn check(grid: [usize; 3], heads: usize, head_dim: usize, xt: DType) {
        check_split(grid, heads, head_dim, split(head_dim), xt)
    }

    fn check_split(grid: [usize; 3], heads: usize, head_dim: usize, pairs: [usize; 3], xt: DType) {
        let gpu = test_gpu();
        if xt == F16 && !gpu.caps.shader_f16 {
            eprintln!("skipping f16 case: adapter lacks SHADER_F16");
            return;
        }
        let seed = seed();
        let mut rng = Rng::new(seed);
        let n: usize = grid.iter().product();
        let mut xv = rng.vec_normal(n * heads * head_dim, 1.0);
        if xt == F16 {
            xv = round_f16(&xv);
        }
        let x = Tensor::from_f32(gpu, &[n, heads, head_dim], &xv, xt).unwrap();
        let table = RopeTable::new(gpu, grid, head_dim, pairs, 10000.0).unwrap();
        let mut rec = Recorder::new(gpu);
        rope_in_place(&mut rec, &x, &table).unwrap();
        rec.run().unwrap();
        let got = x.to_vec_f32(gpu).unwrap();
        let want = rope_reference(&xv, grid, heads, head_dim, pairs, 10000.0);
        let tol = if xt == F16 { 2e-3 } else { 1e-5 };
        let case = format!("rope grid {grid:?} heads {heads} head_dim {head_dim} {pairs:?} {xt}");
        assert_close(&case, seed, &got, &want, tol);
    }

    #[test]
    fn rope_matches_reference() {
        check([3, 5, 7], 2, 128, F32);
        check([2, 3, 4], 3, 12, F32);
        check([4, 3, 5], 1, 24, F32);
        check([2, 9, 11], 2, 20, F32);
        check([3, 5, 7], 2, 128, F16);
        check([5, 4, 3], 3, 24, F16);
        // Any split the model asks for, an empty axis included.
        check_split([3, 4, 5], 2, 24, [2, 6, 4], F32);
        check_split([3, 4, 5], 1, 16, [0, 3, 5], F32);
    }

    #[test]
    fn rope_grid_folds() {
        with_fold_limit(2, || check([2, 3, 5], 3, 24, F32));
    }

    #[test]
    fn rope_rejects_a_table_of_another_grid() {
        let gpu = test_gpu();
        let table = RopeTable::new(gpu, [2, 3, 4], 12, [2, 2, 2], 10000.0).unwrap();
        let x = Tensor::empty(gpu, &[25, 2, 12], F32).unwrap();
        let mut rec = Recorder::new(gpu);
        let err = rope_in_place(&mut rec, &x, &table).unwrap_err();
        assert!(err.to_string().contains("2x3x4 grid (24 tokens)"), "{err}");
        assert!(RopeTable::new(gpu, [1, 1, 1], 13, [3, 2, 1], 10000.0).is_err());
        let e = RopeTable::new(gpu, [1, 1, 1], 12, [3, 2, 2], 10000.0)
            .err()
            .unwrap();
        assert!(e.to_string().contains("add up to head_dim / 2 = 6"), "{e}");
    }
}
