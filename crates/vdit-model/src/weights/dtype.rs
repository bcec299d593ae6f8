//! The element types a weight file may store (safetensors' names, and GGUF's block-quantised
//! types), and which of them can be read as floats.

use std::fmt;

use super::quant::QuantType;

/// The element type of a tensor as stored on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StoredDType {
    Bool,
    F4,
    F6E2M3,
    F6E3M2,
    U8,
    I8,
    F8E5M2,
    F8E4M3,
    F8E8M0,
    I16,
    U16,
    F16,
    BF16,
    I32,
    U32,
    F32,
    F64,
    I64,
    U64,
    /// A GGML block type, found only in GGUF files.
    Quant(QuantType),
}

impl StoredDType {
    /// Every dtype with its header spelling, the single source for parsing and printing.
    const NAMES: [(StoredDType, &'static str); 19] = [
        (StoredDType::Bool, "BOOL"),
        (StoredDType::F4, "F4"),
        (StoredDType::F6E2M3, "F6_E2M3"),
        (StoredDType::F6E3M2, "F6_E3M2"),
        (StoredDType::U8, "U8"),
        (StoredDType::I8, "I8"),
        (StoredDType::F8E5M2, "F8_E5M2"),
        (StoredDType::F8E4M3, "F8_E4M3"),
        (StoredDType::F8E8M0, "F8_E8M0"),
        (StoredDType::I16, "I16"),
        (StoredDType::U16, "U16"),
        (StoredDType::F16, "F16"),
        (StoredDType::BF16, "BF16"),
        (StoredDType::I32, "I32"),
        (StoredDType::U32, "U32"),
        (StoredDType::F32, "F32"),
        (StoredDType::F64, "F64"),
        (StoredDType::I64, "I64"),
        (StoredDType::U64, "U64"),
    ];

    /// The dtype a header spells `name`, or None for a spelling the format does not define.
    pub fn parse(name: &str) -> Option<Self> {
        Self::NAMES
            .iter()
            .find(|(_, n)| *n == name)
            .map(|(d, _)| *d)
    }

    /// The header spelling (GGML's name for a block type).
    pub fn name(self) -> &'static str {
        if let StoredDType::Quant(q) = self {
            return q.name();
        }
        Self::NAMES
            .iter()
            .find(|(d, _)| *d == self)
            .map(|(_, n)| *n)
            .unwrap_or("?")
    }

    /// Bits per element (some fp4/fp6 types pack several elements into one byte); 0 for the
    /// block types, whose sizes are per block ([`QuantType::bytes`]).
    pub fn bits(self) -> usize {
        match self {
            StoredDType::Quant(_) => 0,
            StoredDType::F4 => 4,
            StoredDType::F6E2M3 | StoredDType::F6E3M2 => 6,
            StoredDType::Bool
            | StoredDType::U8
            | StoredDType::I8
            | StoredDType::F8E5M2
            | StoredDType::F8E4M3
            | StoredDType::F8E8M0 => 8,
            StoredDType::I16 | StoredDType::U16 | StoredDType::F16 | StoredDType::BF16 => 16,
            StoredDType::I32 | StoredDType::U32 | StoredDType::F32 => 32,
            StoredDType::F64 | StoredDType::I64 | StoredDType::U64 => 64,
        }
    }

    /// Whether this loader converts it to f32 and f16.
    pub fn is_readable_float(self) -> bool {
        match self {
            StoredDType::Quant(q) => q.is_readable(),
            d => matches!(
                d,
                StoredDType::F8E4M3
                    | StoredDType::F8E5M2
                    | StoredDType::F16
                    | StoredDType::BF16
                    | StoredDType::F32
                    | StoredDType::F64
            ),
        }
    }
}

impl fmt::Display for StoredDType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
