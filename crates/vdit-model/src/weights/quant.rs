//! GGML's block-quantised element types, as GGUF files store them, and their expansion to f32.
//!
//! A quantised tensor is a run of fixed-size blocks along its innermost dimension; each block
//! holds `elements()` values in `bytes()` bytes: f16 scales (and minimums) followed by packed
//! integers. The expansions here follow ggml's reference dequantisation operation by operation in
//! f32, so that they agree bit for bit with gguf-py (the goldens in `assets/goldens/gguf/`).

use std::fmt;

use half::f16;

/// A block-quantised GGML type. Those with [`QuantType::is_readable`] are expanded by
/// [`dequantize_blocks`]; the others are named in errors.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QuantType {
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
    Q8_K,
    IQ2_XXS,
    IQ2_XS,
    IQ3_XXS,
    IQ1_S,
    IQ4_NL,
    IQ3_S,
    IQ2_S,
    IQ4_XS,
    IQ1_M,
    TQ1_0,
    TQ2_0,
    MXFP4,
    NVFP4,
    Q1_0,
}

/// Elements per block of the k-quants ("super-blocks").
const QK_K: usize = 256;

impl QuantType {
    /// (type, GGML type id, name, elements per block, bytes per block): the single table.
    const TABLE: [(QuantType, u32, &'static str, usize, usize); 26] = [
        (QuantType::Q4_0, 2, "Q4_0", 32, 18),
        (QuantType::Q4_1, 3, "Q4_1", 32, 20),
        (QuantType::Q5_0, 6, "Q5_0", 32, 22),
        (QuantType::Q5_1, 7, "Q5_1", 32, 24),
        (QuantType::Q8_0, 8, "Q8_0", 32, 34),
        (QuantType::Q8_1, 9, "Q8_1", 32, 40),
        (QuantType::Q2_K, 10, "Q2_K", QK_K, 84),
        (QuantType::Q3_K, 11, "Q3_K", QK_K, 110),
        (QuantType::Q4_K, 12, "Q4_K", QK_K, 144),
        (QuantType::Q5_K, 13, "Q5_K", QK_K, 176),
        (QuantType::Q6_K, 14, "Q6_K", QK_K, 210),
        (QuantType::Q8_K, 15, "Q8_K", QK_K, 292),
        (QuantType::IQ2_XXS, 16, "IQ2_XXS", QK_K, 66),
        (QuantType::IQ2_XS, 17, "IQ2_XS", QK_K, 74),
        (QuantType::IQ3_XXS, 18, "IQ3_XXS", QK_K, 98),
        (QuantType::IQ1_S, 19, "IQ1_S", QK_K, 50),
        (QuantType::IQ4_NL, 20, "IQ4_NL", 32, 18),
        (QuantType::IQ3_S, 21, "IQ3_S", QK_K, 110),
        (QuantType::IQ2_S, 22, "IQ2_S", QK_K, 82),
        (QuantType::IQ4_XS, 23, "IQ4_XS", QK_K, 136),
        (QuantType::IQ1_M, 29, "IQ1_M", QK_K, 56),
        (QuantType::TQ1_0, 34, "TQ1_0", QK_K, 54),
        (QuantType::TQ2_0, 35, "TQ2_0", QK_K, 66),
        (QuantType::MXFP4, 39, "MXFP4", 32, 17),
        (QuantType::NVFP4, 40, "NVFP4", 64, 36),
        (QuantType::Q1_0, 41, "Q1_0", 128, 18),
    ];

    fn row(self) -> &'static (QuantType, u32, &'static str, usize, usize) {
        Self::TABLE
            .iter()
            .find(|r| r.0 == self)
            .expect("every type has a table row")
    }

    /// The type with this GGML type id, if it is a block type.
    pub fn from_ggml_id(id: u32) -> Option<Self> {
        Self::TABLE.iter().find(|r| r.1 == id).map(|r| r.0)
    }

    pub fn name(self) -> &'static str {
        self.row().2
    }

    /// Values per block.
    pub fn elements(self) -> usize {
        self.row().3
    }

    /// Bytes per block.
    pub fn bytes(self) -> usize {
        self.row().4
    }

    /// Whether [`dequantize_blocks`] expands this type.
    pub fn is_readable(self) -> bool {
        matches!(
            self,
            QuantType::Q4_0
                | QuantType::Q4_1
                | QuantType::Q5_0
                | QuantType::Q5_1
                | QuantType::Q8_0
                | QuantType::Q2_K
                | QuantType::Q3_K
                | QuantType::Q4_K
                | QuantType::Q5_K
                | QuantType::Q6_K
        )
    }

    /// The names of the readable types, for messages.
    pub fn readable_names() -> String {
        Self::TABLE
            .iter()
            .filter(|r| r.0.is_readable())
            .map(|r| r.2)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl fmt::Display for QuantType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

fn half_at(b: &[u8], at: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[at], b[at + 1]])).to_f32()
}

/// Expands whole blocks: `src` holds `out.len() / ty.elements()` blocks of `ty`. Returns false,
/// leaving `out` untouched, for a type that is not readable or sizes that do not fit.
pub fn dequantize_blocks(ty: QuantType, src: &[u8], out: &mut [f32]) -> bool {
    let (n, size) = (ty.elements(), ty.bytes());
    if !ty.is_readable() || out.len() % n != 0 || src.len() != out.len() / n * size {
        return false;
    }
    let block: fn(&[u8], &mut [f32]) = match ty {
        QuantType::Q4_0 => q4_0,
        QuantType::Q4_1 => q4_1,
        QuantType::Q5_0 => q5_0,
        QuantType::Q5_1 => q5_1,
        QuantType::Q8_0 => q8_0,
        QuantType::Q2_K => q2_k,
        QuantType::Q3_K => q3_k,
        QuantType::Q4_K => q4_k,
        QuantType::Q5_K => q5_k,
        QuantType::Q6_K => q6_k,
        _ => return false,
    };
    for (b, y) in src.chunks_exact(size).zip(out.chunks_exact_mut(n)) {
        block(b, y);
    }
    true
}

// The 32-value blocks: an f16 scale d (and minimum m), then 16 bytes of 4-bit values whose low
// nibbles are values 0-15 and high nibbles values 16-31; Q5 adds a u32 of fifth bits.

fn q4_0(b: &[u8], y: &mut [f32]) {
    let d = half_at(b, 0);
    for (j, &q) in b[2..18].iter().enumerate() {
        y[j] = d * ((q & 0xF) as i32 - 8) as f32;
        y[j + 16] = d * ((q >> 4) as i32 - 8) as f32;
    }
}

fn q4_1(b: &[u8], y: &mut [f32]) {
    let (d, m) = (half_at(b, 0), half_at(b, 2));
    for (j, &q) in b[4..20].iter().enumerate() {
        y[j] = d * (q & 0xF) as f32 + m;
        y[j + 16] = d * (q >> 4) as f32 + m;
    }
}

/// The 5-bit values of a Q5 block from its fifth bits `qh` and nibbles `qs`, with `offset`
/// subtracted.
fn five_bits(qh: u32, qs: &[u8], offset: i32) -> [i32; 32] {
    let mut v = [0; 32];
    for (j, &q) in qs.iter().enumerate() {
        let high = |i: usize| (((qh >> i) & 1) << 4) as i32;
        v[j] = (q & 0xF) as i32 | high(j);
        v[j + 16] = (q >> 4) as i32 | high(j + 16);
    }
    v.map(|x| x - offset)
}

fn q5_0(b: &[u8], y: &mut [f32]) {
    let d = half_at(b, 0);
    let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    for (y, q) in y.iter_mut().zip(five_bits(qh, &b[6..22], 16)) {
        *y = d * q as f32;
    }
}

fn q5_1(b: &[u8], y: &mut [f32]) {
    let (d, m) = (half_at(b, 0), half_at(b, 2));
    let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    for (y, q) in y.iter_mut().zip(five_bits(qh, &b[8..24], 0)) {
        *y = d * q as f32 + m;
    }
}

fn q8_0(b: &[u8], y: &mut [f32]) {
    let d = half_at(b, 0);
    for (y, &q) in y.iter_mut().zip(&b[2..34]) {
        *y = q as i8 as f32 * d;
    }
}

// The k-quants: 256 values in sub-blocks of 16 or 32 with integer scales, under f16 super-block
// scales d (and dmin).

fn q2_k(b: &[u8], y: &mut [f32]) {
    let (scales, qs) = (&b[0..16], &b[16..80]);
    let (d, dmin) = (half_at(b, 80), half_at(b, 82));
    for half in 0..2 {
        for shift in 0..4 {
            for l in 0..32 {
                let e = half * 128 + shift * 32 + l;
                let s = scales[e / 16];
                let dl = d * (s & 0xF) as f32;
                let ml = dmin * (s >> 4) as f32;
                let q = (qs[half * 32 + l] >> (2 * shift)) & 3;
                y[e] = dl * q as f32 - ml;
            }
        }
    }
}

fn q3_k(b: &[u8], y: &mut [f32]) {
    let (hmask, qs, s) = (&b[0..32], &b[32..96], &b[96..108]);
    let d = half_at(b, 108);
    // Sixteen 6-bit scales: low nibbles in bytes 0-7 (low then high halves), two high bits each
    // in bytes 8-11.
    let scale = |j: usize| {
        let low = if j < 8 { s[j] & 0xF } else { s[j - 8] >> 4 };
        let high = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
        (low | (high << 4)) as i32 - 32
    };
    for half in 0..2 {
        for shift in 0..4 {
            for l in 0..32 {
                let e = half * 128 + shift * 32 + l;
                let low = ((qs[half * 32 + l] >> (2 * shift)) & 3) as i32;
                // A set mask bit means no offset; a clear one subtracts 4.
                let bit = (hmask[l] >> (e / 32)) & 1;
                let q = low - if bit == 1 { 0 } else { 4 };
                let dl = d * scale(e / 16) as f32;
                y[e] = dl * q as f32;
            }
        }
    }
}

/// The eight 6-bit scales and minimums of a Q4_K / Q5_K block, packed in 12 bytes.
fn k_scales(s: &[u8]) -> ([u8; 8], [u8; 8]) {
    let (mut sc, mut mn) = ([0u8; 8], [0u8; 8]);
    for j in 0..4 {
        sc[j] = s[j] & 0x3F;
        mn[j] = s[j + 4] & 0x3F;
        sc[j + 4] = (s[j + 8] & 0xF) | ((s[j] >> 2) & 0x30);
        mn[j + 4] = (s[j + 8] >> 4) | ((s[j + 4] >> 2) & 0x30);
    }
    (sc, mn)
}

/// Q4_K and Q5_K: `high(e)` gives value e's fifth bit (0 for Q4_K).
fn q45_k(b: &[u8], qs: &[u8], y: &mut [f32], high: impl Fn(usize) -> u8) {
    let (d, dmin) = (half_at(b, 0), half_at(b, 2));
    let (sc, mn) = k_scales(&b[4..16]);
    for chunk in 0..4 {
        for nibble in 0..2 {
            let j = chunk * 2 + nibble;
            let dj = d * sc[j] as f32;
            let mj = dmin * mn[j] as f32;
            for l in 0..32 {
                let e = j * 32 + l;
                let q = ((qs[chunk * 32 + l] >> (4 * nibble)) & 0xF) | (high(e) << 4);
                y[e] = dj * q as f32 - mj;
            }
        }
    }
}

fn q4_k(b: &[u8], y: &mut [f32]) {
    q45_k(b, &b[16..144], y, |_| 0);
}

fn q5_k(b: &[u8], y: &mut [f32]) {
    let qh = &b[16..48];
    q45_k(b, &b[48..176], y, |e| (qh[e % 32] >> (e / 32)) & 1);
}

fn q6_k(b: &[u8], y: &mut [f32]) {
    let (ql, qh, scales) = (&b[0..128], &b[128..192], &b[192..208]);
    let d = half_at(b, 208);
    for half in 0..2 {
        for l in 0..128 {
            let e = half * 128 + l;
            // Low nibbles: 64 bytes per half, low then high nibbles; high two bits: 32 bytes
            // per half, four pairs per byte.
            let low = (ql[half * 64 + l % 64] >> (4 * (l / 64))) & 0xF;
            let high = (qh[half * 32 + l % 32] >> (2 * (l / 32))) & 3;
            let q = (low | (high << 4)) as i32 - 32;
            let dl = d * scales[e / 16] as i8 as f32;
            y[e] = dl * q as f32;
        }
    }
}
