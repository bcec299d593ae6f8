//! Byte sizes as people write them: `512M`, `2G`, `1.5GiB`, `800000` (bytes).

/// Parses a size with an optional binary unit (K, M, G, T; `B`, `iB` or `B` suffixes
/// allowed, case-insensitive). Plain numbers are bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let lower = t.to_ascii_lowercase();
    let digits_end = lower
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(lower.len());
    let (number, unit) = lower.split_at(digits_end);
    let shift = match unit.trim() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(format!("'{t}' is not a size (examples: 512M, 2G, 1.5GiB)")),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("'{t}' is not a size (examples: 512M, 2G, 1.5GiB)"))?;
    let bytes = value * (1u64 << shift) as f64;
    if !(bytes.is_finite() && bytes >= 1.0 && bytes < u64::MAX as f64) {
        return Err(format!("'{t}' is not a usable size"));
    }
    Ok(bytes as u64)
}

/// A size for messages: `1.50 GiB`, `12.0 MiB`, `512 B`.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [(&str, u32); 3] = [("GiB", 30), ("MiB", 20), ("KiB", 10)];
    for (name, shift) in UNITS {
        if bytes >= 1u64 << shift {
            return format!("{:.2} {name}", bytes as f64 / (1u64 << shift) as f64);
        }
    }
    format!("{bytes} B")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse_size("64kb"), Ok(64 << 10));
        assert_eq!(parse_size(" 4096 "), Ok(4096));
        for bad in ["", "G", "-1G", "0", "2X", "1e3M", "1.2.3M", "99999999T"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert_eq!(format_size(3 << 29), "1.50 GiB");
        assert_eq!(format_size(100), "100 B");
    }
}
