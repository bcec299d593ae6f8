//! The `Precompiled` normalizer of a tokenizer.json (SentencePiece's character map), checked
//! before the `tokenizers` crate takes it: that crate reserves memory from the map's length
//! field and walks its double-array trie and its normalized strings without bounds checks, so a
//! corrupt map would abort the process when read or panic at the first prompt.
//!
//! A map is a u32 little-endian trie size in bytes, that many bytes of u32 trie units, then the
//! normalized strings (UTF-8, each ended by a NUL). Each unit packs a label, a leaf flag, a value
//! (an offset into the strings) and the XOR offset of its children; a lookup goes from unit 0,
//! one input byte at a time. The check follows every path a UTF-8 input can take.

use serde_json::Value;

/// Checks every character map in a normalizer: each object of type `Precompiled` must hold a
/// valid one, and, since the `tokenizers` crate also reads a normalizer without a "type" by its
/// fields, so must every object holding a `precompiled_charsmap`, at any depth.
pub(crate) fn check_normalizer(normalizer: &Value) -> Result<(), String> {
    let mut todo = vec![normalizer];
    while let Some(v) = todo.pop() {
        match v {
            Value::Object(fields) => {
                let typed = fields.get("type").and_then(Value::as_str) == Some("Precompiled");
                let map = fields.get("precompiled_charsmap");
                if typed && map.is_none() {
                    return Err("a Precompiled normalizer has no precompiled_charsmap".into());
                }
                if let Some(map) = map {
                    let text = map.as_str().ok_or("precompiled_charsmap is not a string")?;
                    let map = base64::decode(text)
                        .map_err(|e| format!("precompiled_charsmap is not base64: {e}"))?;
                    check_charsmap(&map).map_err(|e| format!("precompiled_charsmap: {e}"))?;
                }
                todo.extend(fields.values());
            }
            Value::Array(items) => todo.extend(items),
            _ => {}
        }
    }
    Ok(())
}

fn has_leaf(unit: usize) -> bool {
    (unit >> 8) & 1 == 1
}
fn value(unit: usize) -> usize {
    unit & ((1 << 31) - 1)
}
fn label(unit: usize) -> usize {
    unit & ((1 << 31) | 0xff)
}
fn offset(unit: usize) -> usize {
    (unit >> 10) << ((unit & (1 << 9)) >> 6)
}

/// Bytes that can occur in UTF-8 text (NUL ends a lookup).
fn utf8_bytes() -> impl Iterator<Item = usize> {
    (1..=0xf4).filter(|b| !matches!(b, 0xc0 | 0xc1))
}

/// Checks a decoded map: its trie size fits, and every lookup stays inside the trie and lands
/// on the start of a normalized string.
pub(crate) fn check_charsmap(map: &[u8]) -> Result<(), String> {
    let Some((size, rest)) = map.split_first_chunk::<4>() else {
        return Err(format!(
            "{} bytes, fewer than its 4-byte trie size",
            map.len()
        ));
    };
    let size = u32::from_le_bytes(*size) as usize;
    if size > rest.len() {
        return Err(format!(
            "the trie size says {size} bytes but only {} follow",
            rest.len()
        ));
    }
    let units: Vec<usize> = rest[..size / 4 * 4]
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .collect();
    let normalized = std::str::from_utf8(&rest[size / 4 * 4..])
        .map_err(|e| format!("the normalized strings are not UTF-8: {e}"))?;
    let Some(&root) = units.first() else {
        return Err("the trie is empty".into());
    };
    // Each state is a position after its unit's offset was applied, before the next byte. A
    // state may lie past the trie's end (only its children's positions must fall inside), so
    // the states seen are a set, not flags per unit.
    let mut seen = std::collections::HashSet::new();
    let mut todo = vec![offset(root)];
    while let Some(state) = todo.pop() {
        for byte in utf8_bytes() {
            let at = state ^ byte;
            let Some(&unit) = units.get(at) else {
                return Err(format!("a lookup reaches unit {at} of {}", units.len()));
            };
            if label(unit) != byte {
                continue;
            }
            let next = state ^ byte ^ offset(unit);
            if has_leaf(unit) {
                let Some(&leaf) = units.get(next) else {
                    return Err(format!("a leaf lies at unit {next} of {}", units.len()));
                };
                let start = value(leaf);
                if !normalized.is_char_boundary(start) {
                    return Err(format!(
                        "a leaf points at byte {start} of {} bytes of normalized strings, not \
                         the start of one",
                        normalized.len()
                    ));
                }
            }
            if seen.insert(next) {
                todo.push(next);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A trie of 512 units mapping the byte 'a' to "x". The root (unit 0) has offset 0, so
    /// 'a' lands on unit 0x61: label 'a', the leaf flag, offset 0. Its leaf is then read at
    /// 0x61 ^ 0 = unit 0x61 itself, whose value (its low 31 bits, 0x161) is where "x" starts.
    fn one_entry_map() -> Vec<u8> {
        let mut units = vec![0u32; 512];
        units[0x61] = 0x61 | 1 << 8;
        let mut map = ((units.len() * 4) as u32).to_le_bytes().to_vec();
        map.extend(units.iter().flat_map(|u| u.to_le_bytes()));
        map.extend(vec![b'x'; 0x161 + 1]);
        map.push(0);
        map
    }

    #[test]
    fn a_well_formed_map_passes_and_corrupt_ones_are_named() {
        let map = one_entry_map();
        check_charsmap(&map).unwrap();
        let empty_strings = [1024u32.to_le_bytes().to_vec(), vec![0; 1024]].concat();
        check_charsmap(&empty_strings).unwrap();

        let cases: [(&str, Vec<u8>); 6] = [
            ("fewer than its 4-byte", vec![1, 2]),
            (
                "trie size says",
                [u32::MAX.to_le_bytes().to_vec(), vec![0; 8]].concat(),
            ),
            ("the trie is empty", 0u32.to_le_bytes().to_vec()),
            // A root whose children lie far outside the trie.
            ("a lookup reaches unit", {
                let mut m = map.clone();
                m[4..8].copy_from_slice(&(1u32 << 20).to_le_bytes());
                m
            }),
            // 'a' leads to a state past the trie's end, whose children lie outside it.
            ("a lookup reaches unit", {
                let mut m = map.clone();
                let a = 4 + 0x61 * 4;
                m[a..a + 4].copy_from_slice(&(0x61u32 | 600 << 10).to_le_bytes());
                m
            }),
            // The leaf's string offset beyond the strings.
            ("a leaf points at byte", {
                let mut m = map.clone();
                m.truncate(m.len() - 10);
                m
            }),
        ];
        for (want, bad) in cases {
            let err = check_charsmap(&bad).unwrap_err();
            assert!(err.contains(want), "{want}: {err}");
        }
    }
}
