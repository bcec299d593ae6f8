//! The prompt clean-up the Wan reference applies before tokenizing (its "whitespace" mode):
//! a text repair pass, HTML unescaping twice, then every run of whitespace collapsed to one
//! space and the ends trimmed.
//!
//! The repair pass implements this subset of what the reference's text fixer does by default:
//! - HTML entities ending in ';' are decoded, unless the text holds a literal '<';
//! - terminal escape sequences (`ESC [ ... letter`) are removed;
//! - Latin ligatures (ﬀ ﬁ ﬂ ﬃ ﬄ ﬆ, Ĳ ĳ) are spelled out;
//! - fullwidth ASCII forms (U+FF01..U+FF5E) and the ideographic space become ASCII;
//! - curly single and double quotes become ' and ";
//! - CR, CRLF, NEL and the Unicode line and paragraph separators become '\n';
//! - control characters other than tab, line feed, form feed and CR are removed, as are
//!   U+206A..U+206F, the byte-order mark and U+FFF9..U+FFFC.
//!
//! Not implemented: repairing mojibake (text decoded with the wrong legacy encoding) and NFC
//! normalisation. The umT5 tokenizer applies NFKC itself, which subsumes NFC.

/// Cleans a prompt as the reference does before tokenizing.
pub fn clean_prompt(text: &str) -> String {
    let fixed = fix_text(text);
    let unescaped = unescape_html(&unescape_html(&fixed));
    collapse_whitespace(&unescaped)
}

/// Runs of whitespace become one space; leading and trailing whitespace goes.
pub fn collapse_whitespace(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for word in text.split(char::is_whitespace).filter(|w| !w.is_empty()) {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

/// The text repair subset described in the module documentation.
pub fn fix_text(text: &str) -> String {
    let text = if text.contains('<') {
        text.to_string()
    } else {
        unescape_entities(text, false)
    };
    let text = remove_terminal_escapes(&text);
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{fb00}' => out.push_str("ff"),
            '\u{fb01}' => out.push_str("fi"),
            '\u{fb02}' => out.push_str("fl"),
            '\u{fb03}' => out.push_str("ffi"),
            '\u{fb04}' => out.push_str("ffl"),
            '\u{fb05}' => out.push_str("\u{17f}t"),
            '\u{fb06}' => out.push_str("st"),
            '\u{132}' => out.push_str("IJ"),
            '\u{133}' => out.push_str("ij"),
            '\u{ff01}'..='\u{ff5e}' => {
                out.push(char::from_u32(c as u32 - 0xff01 + 0x21).unwrap_or(c));
            }
            '\u{3000}' => out.push(' '),
            '\u{2bc}' | '\u{2018}'..='\u{201b}' => out.push('\''),
            '\u{201c}'..='\u{201f}' => out.push('"'),
            '\r' => {
                if chars.peek() == Some(&'\n') {
                    chars.next();
                }
                out.push('\n');
            }
            '\u{85}' | '\u{2028}' | '\u{2029}' => out.push('\n'),
            '\u{0}'..='\u{8}'
            | '\u{b}'
            | '\u{e}'..='\u{1f}'
            | '\u{7f}'
            | '\u{206a}'..='\u{206f}'
            | '\u{feff}'
            | '\u{fff9}'..='\u{fffc}' => {}
            _ => out.push(c),
        }
    }
    out
}

fn remove_terminal_escapes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("\u{1b}[") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        let params = after
            .find(|c: char| !(c.is_ascii_digit() || c == ';'))
            .unwrap_or(after.len());
        match after[params..].chars().next() {
            Some(c) if c.is_ascii_alphabetic() => rest = &after[params + 1..],
            _ => {
                out.push_str("\u{1b}[");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// HTML unescaping as the reference's standard library does it: named references (those of
/// this table; the Latin-1 ones and `amp lt gt quot` also without ';', longest prefix first)
/// and numeric ones, decimal or hex, ';' optional.
pub fn unescape_html(text: &str) -> String {
    unescape_entities(text, true)
}

/// Named entities: (name, text).
const NAMED: &[(&str, &str)] = &[
    ("amp", "&"),
    ("lt", "<"),
    ("gt", ">"),
    ("quot", "\""),
    ("apos", "'"),
    ("hellip", "\u{2026}"),
    ("mdash", "\u{2014}"),
    ("ndash", "\u{2013}"),
    ("lsquo", "\u{2018}"),
    ("rsquo", "\u{2019}"),
    ("sbquo", "\u{201a}"),
    ("ldquo", "\u{201c}"),
    ("rdquo", "\u{201d}"),
    ("bdquo", "\u{201e}"),
    ("bull", "\u{2022}"),
    ("euro", "\u{20ac}"),
    ("trade", "\u{2122}"),
    ("larr", "\u{2190}"),
    ("rarr", "\u{2192}"),
    ("uarr", "\u{2191}"),
    ("darr", "\u{2193}"),
    ("hearts", "\u{2665}"),
    ("thinsp", "\u{2009}"),
    ("ensp", "\u{2002}"),
    ("emsp", "\u{2003}"),
    ("zwj", "\u{200d}"),
    ("zwnj", "\u{200c}"),
    ("OElig", "\u{152}"),
    ("oelig", "\u{153}"),
    ("Scaron", "\u{160}"),
    ("scaron", "\u{161}"),
    ("Yuml", "\u{178}"),
    ("fnof", "\u{192}"),
    ("circ", "\u{2c6}"),
    ("tilde", "\u{2dc}"),
    ("dagger", "\u{2020}"),
    ("Dagger", "\u{2021}"),
    ("permil", "\u{2030}"),
    ("lsaquo", "\u{2039}"),
    ("rsaquo", "\u{203a}"),
];

/// The Latin-1 entity names for U+00A0..U+00FF, in code point order (usable without ';').
const LATIN1: [&str; 96] = [
    "nbsp", "iexcl", "cent", "pound", "curren", "yen", "brvbar", "sect", "uml", "copy", "ordf",
    "laquo", "not", "shy", "reg", "macr", "deg", "plusmn", "sup2", "sup3", "acute", "micro",
    "para", "middot", "cedil", "sup1", "ordm", "raquo", "frac14", "frac12", "frac34", "iquest",
    "Agrave", "Aacute", "Acirc", "Atilde", "Auml", "Aring", "AElig", "Ccedil", "Egrave", "Eacute",
    "Ecirc", "Euml", "Igrave", "Iacute", "Icirc", "Iuml", "ETH", "Ntilde", "Ograve", "Oacute",
    "Ocirc", "Otilde", "Ouml", "times", "Oslash", "Ugrave", "Uacute", "Ucirc", "Uuml", "Yacute",
    "THORN", "szlig", "agrave", "aacute", "acirc", "atilde", "auml", "aring", "aelig", "ccedil",
    "egrave", "eacute", "ecirc", "euml", "igrave", "iacute", "icirc", "iuml", "eth", "ntilde",
    "ograve", "oacute", "ocirc", "otilde", "ouml", "divide", "oslash", "ugrave", "uacute", "ucirc",
    "uuml", "yacute", "thorn", "yuml",
];

/// Windows-1252 characters for the numeric references 0x80..0x9F, as browsers read them.
const CP1252: [u32; 32] = [
    0x20ac, 0x81, 0x201a, 0x192, 0x201e, 0x2026, 0x2020, 0x2021, 0x2c6, 0x2030, 0x160, 0x2039,
    0x152, 0x8d, 0x17d, 0x8f, 0x90, 0x2018, 0x2019, 0x201c, 0x201d, 0x2022, 0x2013, 0x2014, 0x2dc,
    0x2122, 0x161, 0x203a, 0x153, 0x9d, 0x17e, 0x178,
];

fn named_entity(name: &str) -> Option<String> {
    let name = match name {
        "AMP" => "amp",
        "LT" => "lt",
        "GT" => "gt",
        "QUOT" => "quot",
        other => other,
    };
    if let Some(&(_, text)) = NAMED.iter().find(|(n, _)| *n == name) {
        return Some(text.to_string());
    }
    LATIN1
        .iter()
        .position(|n| *n == name)
        .and_then(|i| char::from_u32(0xa0 + i as u32))
        .map(String::from)
}

/// Names decoded even without a ';' (the legacy HTML set).
fn legacy_entity(name: &str) -> bool {
    matches!(
        name,
        "amp" | "lt" | "gt" | "quot" | "AMP" | "LT" | "GT" | "QUOT"
    ) || LATIN1.contains(&name)
}

fn numeric_entity(value: u32) -> String {
    match value {
        0 => "\u{fffd}".into(),
        0x80..=0x9f => char::from_u32(CP1252[(value - 0x80) as usize])
            .map(String::from)
            .unwrap_or_default(),
        0xd800..=0xdfff | 0x11_0000.. => "\u{fffd}".into(),
        0x1..=0x8 | 0xb | 0xe..=0x1f | 0x7f => String::new(),
        v => char::from_u32(v).map(String::from).unwrap_or_default(),
    }
}

/// Decodes `&...` references; `lenient` accepts numeric references without ';' and legacy
/// names without ';' (the standard library's behaviour); otherwise only `&name;` and `&#..;`.
fn unescape_entities(text: &str, lenient: bool) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        match decode_reference(after, lenient) {
            Some((decoded, used)) => {
                out.push_str(&decoded);
                rest = &after[used..];
            }
            None => {
                out.push('&');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The text of the reference at the start of `s` (after '&') and the bytes it used.
fn decode_reference(s: &str, lenient: bool) -> Option<(String, usize)> {
    if let Some(num) = s.strip_prefix('#') {
        let (digits, radix, skip) = match num.strip_prefix(['x', 'X']) {
            Some(hex) => (hex, 16, 2),
            None => (num, 10, 1),
        };
        let n = digits
            .find(|c: char| !c.is_digit(radix))
            .unwrap_or(digits.len());
        if n == 0 {
            return None;
        }
        let semicolon = digits[n..].starts_with(';');
        if !semicolon && !lenient {
            return None;
        }
        let value = u32::from_str_radix(&digits[..n], radix).unwrap_or(u32::MAX);
        return Some((numeric_entity(value), skip + n + semicolon as usize));
    }
    let n = s
        .find(|c: char| !c.is_ascii_alphanumeric())
        .unwrap_or(s.len());
    let name = &s[..n];
    if s[n..].starts_with(';') {
        if let Some(text) = named_entity(name) {
            return Some((text, n + 1));
        }
    }
    if lenient {
        for len in (1..=n).rev() {
            let prefix = &name[..len];
            if legacy_entity(prefix) {
                let text = named_entity(prefix)?;
                return Some((text, len));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whitespace_collapses_and_trims() {
        assert_eq!(collapse_whitespace("  a \t\n b\u{a0}\u{3000}c  "), "a b c");
        assert_eq!(collapse_whitespace(" \n\t "), "");
    }

    #[test]
    fn html_references_decode_like_the_standard_library() {
        assert_eq!(unescape_html("Tom &amp; Jerry"), "Tom & Jerry");
        assert_eq!(unescape_html("&amp;lt;b&amp;gt;"), "&lt;b&gt;");
        assert_eq!(unescape_html("&ampx &lt3"), "&x <3");
        assert_eq!(
            unescape_html("caf&eacute; caf&#233; caf&#xE9;"),
            "café café café"
        );
        assert_eq!(
            unescape_html("&#150; &#0; &#x110000;"),
            "\u{2013} \u{fffd} \u{fffd}"
        );
        assert_eq!(unescape_html("&nosuch; & &;"), "&nosuch; & &;");
        assert_eq!(
            unescape_html("&hellip;&mdash;&nbsp;"),
            "\u{2026}\u{2014}\u{a0}"
        );
        assert_eq!(unescape_html("&AMP; &Agrave &notit;"), "& \u{c0} \u{ac}it;");
    }

    #[test]
    fn the_text_repair_subset() {
        assert_eq!(fix_text("\u{fb01}ne \u{fb03}x"), "fine ffix");
        assert_eq!(fix_text("\u{ff21}\u{ff42}\u{ff11}\u{3000}!"), "Ab1 !");
        assert_eq!(
            fix_text("\u{201c}hi\u{201d} \u{2018}yo\u{2019}"),
            "\"hi\" 'yo'"
        );
        assert_eq!(fix_text("a\r\nb\rc\u{2028}d"), "a\nb\nc\nd");
        assert_eq!(fix_text("x\u{1b}[31mred\u{1b}[0m\u{7}\u{feff}"), "xred");
        assert_eq!(fix_text("&eacute;&amp"), "é&amp");
        // A literal '<' turns entity decoding off in the repair pass.
        assert_eq!(fix_text("<b>&eacute;"), "<b>&eacute;");
    }

    #[test]
    fn full_clean_up() {
        assert_eq!(
            clean_prompt(
                "  Two  dogs &amp; a \u{201c}red\u{201d} ball\t\n run on the \u{fb01}eld \
                 &amp;lt;fast&amp;gt; \u{ff21}   caf\u{e9}\u{a0} "
            ),
            "Two dogs & a \"red\" ball run on the field <fast> A café"
        );
        assert_eq!(clean_prompt(""), "");
    }
}
