//! Mutations of a seed file: bit flips, byte changes, inserts, deletes, truncation, splices of
//! another seed, integers set to boundary values (binary little-endian fields and decimal
//! numbers in text), and a reader's own length lie. Most land in the seed's "hot" ranges,
//! the bytes a reader interprets (a header, a directory, a pickle), not the bulk data.

use std::ops::Range;

use vdit_wgpu::rng::Rng;

/// A seed and the byte ranges of it worth mutating most.
pub struct Seed {
    pub name: String,
    pub bytes: Vec<u8>,
    pub hot: Vec<Range<usize>>,
}

impl Seed {
    /// A seed whose every byte is interesting (small text files).
    pub fn whole(name: impl Into<String>, bytes: Vec<u8>) -> Self {
        let hot = std::iter::once(0..bytes.len()).collect();
        Self {
            name: name.into(),
            bytes,
            hot,
        }
    }
}

/// A reader-specific mutation, for example a length field that lies.
pub type Lie = fn(&mut [u8], &mut Rng);

/// Integers at the edges of every width, and around them.
const BOUNDARIES: &[u64] = &[
    0,
    1,
    2,
    3,
    7,
    8,
    15,
    16,
    31,
    64,
    127,
    128,
    255,
    256,
    4096,
    0x7fff,
    0x8000,
    0xffff,
    0x1_0000,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    0x1_0000_0000,
    1 << 53,
    0x7fff_ffff_ffff_ffff,
    0x8000_0000_0000_0000,
    u64::MAX,
];

/// Decimal spellings a JSON or text reader may choke on.
const TEXT_NUMBERS: &[&str] = &[
    "-1",
    "-0",
    "1e308",
    "1e400",
    "0.5",
    "18446744073709551616",
    "99999999999999999999999999",
    "-9223372036854775809",
];

pub fn below(rng: &mut Rng, n: usize) -> usize {
    if n == 0 {
        0
    } else {
        (rng.next_u64() % n as u64) as usize
    }
}

fn boundary(rng: &mut Rng, len: usize) -> u64 {
    if below(rng, 4) == 0 {
        // Around the input's own size: off-by-one lengths.
        (len as u64)
            .wrapping_add(below(rng, 5) as u64)
            .wrapping_sub(2)
    } else {
        BOUNDARIES[below(rng, BOUNDARIES.len())]
    }
}

/// A position to mutate: mostly inside a hot range (as it stands after earlier mutations).
fn position(rng: &mut Rng, len: usize, hot: &[Range<usize>]) -> usize {
    if !hot.is_empty() && below(rng, 5) != 0 {
        let r = &hot[below(rng, hot.len())];
        let (start, end) = (r.start.min(len), r.end.min(len));
        if end > start {
            return start + below(rng, end - start);
        }
    }
    below(rng, len.max(1))
}

/// One mutated copy of `seed`: one to four mutations stacked.
pub fn mutate(rng: &mut Rng, seed: &Seed, others: &[Seed], lie: Option<Lie>) -> Vec<u8> {
    let mut data = seed.bytes.clone();
    for _ in 0..1 + below(rng, 4) {
        mutate_once(rng, &mut data, &seed.hot, others, lie);
    }
    data
}

fn mutate_once(
    rng: &mut Rng,
    data: &mut Vec<u8>,
    hot: &[Range<usize>],
    others: &[Seed],
    lie: Option<Lie>,
) {
    let len = data.len();
    let at = position(rng, len, hot);
    match below(rng, 11) {
        0 | 1 if len > 0 => data[at.min(len - 1)] ^= 1 << below(rng, 8),
        2 if len > 0 => {
            const BYTES: &[u8] = &[0, 1, 0x7f, 0x80, 0xff, b'"', b'{', b'[', b'\\', b'-', b'9'];
            data[at.min(len - 1)] = if below(rng, 2) == 0 {
                BYTES[below(rng, BYTES.len())]
            } else {
                rng.next_u64() as u8
            };
        }
        3 => {
            let n = 1 + below(rng, 16);
            let fill: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
            data.splice(at.min(len)..at.min(len), fill);
        }
        4 if len > 0 => {
            let start = at.min(len - 1);
            let end = (start + 1 + below(rng, 64)).min(len);
            data.drain(start..end);
        }
        5 => data.truncate(below(rng, len + 1)),
        6 if !others.is_empty() => {
            // Splice: our head, another seed's tail (or a chunk of it) from the same offset on.
            let other = &others[below(rng, others.len())].bytes;
            if other.len() > at {
                let end = at + 1 + below(rng, other.len() - at);
                data.truncate(at);
                data.extend_from_slice(&other[at..end]);
            }
        }
        7 if len > 0 => {
            // Duplicate a chunk in place (repeated keys, repeated opcodes).
            let start = at.min(len - 1);
            let end = (start + 1 + below(rng, 32)).min(len);
            let chunk = data[start..end].to_vec();
            data.splice(start..start, chunk);
        }
        8 => {
            let width = [1, 2, 4, 8][below(rng, 4)];
            if len >= width {
                let start = at.min(len - width);
                let v = boundary(rng, len).to_le_bytes();
                data[start..start + width].copy_from_slice(&v[..width]);
            }
        }
        9 => replace_text_number(rng, data, at),
        _ => match lie {
            Some(lie) => lie(data, rng),
            None => replace_text_number(rng, data, at),
        },
    }
}

/// Replaces the decimal number nearest after `at` with a boundary value.
fn replace_text_number(rng: &mut Rng, data: &mut Vec<u8>, at: usize) {
    let Some(start) = (at..data.len()).find(|&i| data[i].is_ascii_digit()) else {
        return;
    };
    let end = (start..data.len())
        .find(|&i| !data[i].is_ascii_digit())
        .unwrap_or(data.len());
    let text = if below(rng, 3) == 0 {
        TEXT_NUMBERS[below(rng, TEXT_NUMBERS.len())].to_string()
    } else {
        boundary(rng, data.len()).to_string()
    };
    data.splice(start..end, text.into_bytes());
}
