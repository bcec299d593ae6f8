//! WGSL sources, a small preprocessor, and binding reflection through naga.
//!
//! Every kernel lives in a real `.wgsl` file under the top-level `shaders/` folder. One file may
//! serve several storage types or variants: the preprocessor replaces UPPERCASE words that are
//! defined (`X_T` -> `f16`) and keeps or drops the lines between `#if NAME` (or `#if A || B`) /
//! `#ifdef NAME` /
//! `#ifndef NAME` / `#else` / `#endif` (`#if NAME` is true when NAME is defined and not `0` or
//! `false`), and `#include NAME` pastes `shaders/include/NAME.wgsl` (code shared between kernels,
//! preprocessed with the same definitions). `enable f16;` is added when the result mentions `f16`.

use std::collections::BTreeMap;

use crate::error::{GpuError, Result};

/// Preprocessor definitions, ordered so that they can be part of a cache key.
pub type Defines = BTreeMap<String, String>;

/// Builds a `Defines` from pairs.
pub fn defines<K: ToString, V: ToString>(pairs: &[(K, V)]) -> Defines {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A shader file of `shaders/`, with the define sets its launchers use (the naga portability
/// test compiles each of them).
pub struct ShaderFile {
    pub name: &'static str,
    pub source: &'static str,
    pub variants: fn() -> Vec<Defines>,
}

/// A `ShaderFile` of `shaders/NAME.wgsl` (embedded at build time).
#[macro_export]
macro_rules! shader_file {
    ($name:literal, $variants:path) => {
        $crate::shader::ShaderFile {
            name: $name,
            source: include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../shaders/",
                $name,
                ".wgsl"
            )),
            variants: $variants,
        }
    };
}

/// The files `#include` can paste, from `shaders/include/`.
const INCLUDES: &[(&str, &str)] = &[
    (
        "matmul_bindings",
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shaders/include/matmul_bindings.wgsl"
        )),
    ),
    (
        "matmul_epilogue",
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shaders/include/matmul_epilogue.wgsl"
        )),
    ),
    (
        "coop_output",
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shaders/include/coop_output.wgsl"
        )),
    ),
    (
        "conv_params",
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shaders/include/conv_params.wgsl"
        )),
    ),
    (
        "conv_output",
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shaders/include/conv_output.wgsl"
        )),
    ),
    (
        "flash_params",
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shaders/include/flash_params.wgsl"
        )),
    ),
];

/// The first define whose name appears nowhere in `source` or the files it includes.
fn unread_define<'d>(source: &str, defs: &'d Defines) -> Option<&'d str> {
    let mut words = std::collections::HashSet::new();
    let mut texts = vec![source];
    while let Some(text) = texts.pop() {
        for line in text.lines() {
            if let Some(arg) = line.trim_start().strip_prefix("#include") {
                if let Some((_, inc)) = INCLUDES.iter().find(|(n, _)| *n == arg.trim()) {
                    texts.push(inc);
                }
            }
            words.extend(line.split(|c: char| !is_word_char(c)));
        }
    }
    defs.keys().map(String::as_str).find(|k| !words.contains(k))
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

fn truthy(defs: &Defines, name: &str) -> bool {
    matches!(defs.get(name), Some(v) if v != "0" && v != "false")
}

/// Applies the directives and word substitution, and enables f16 where it is used. A define
/// the file (with its includes) never names is an error: a launcher passing it has a typo or
/// a stale option.
pub fn preprocess(name: &str, source: &str, defs: &Defines) -> Result<String> {
    if let Some(unread) = unread_define(source, defs) {
        return Err(GpuError::Shader {
            shader: name.to_string(),
            message: format!("the define {unread} is never read by the shader"),
        });
    }
    let mut out = preprocess_lines(name, source, defs)?;
    let needs_f16 = out
        .split(|c: char| !is_word_char(c))
        .any(|w| w == "f16" || w.starts_with("vec") && w.ends_with('h'));
    if needs_f16 {
        out.insert_str(0, "enable f16;");
    }
    Ok(out)
}

fn preprocess_lines(name: &str, source: &str, defs: &Defines) -> Result<String> {
    let err = |line: usize, msg: &str| GpuError::Shader {
        shader: name.to_string(),
        message: format!("line {}: {msg}", line + 1),
    };
    // Each entry: (this branch active, an earlier branch of this #if was taken, parent active).
    let mut stack: Vec<(bool, bool)> = Vec::new();
    let mut out = String::with_capacity(source.len() + 64);
    for (i, line) in source.lines().enumerate() {
        let trimmed = line.trim_start();
        let active = stack.last().map(|s| s.0).unwrap_or(true);
        if let Some(rest) = trimmed.strip_prefix('#') {
            let mut parts = rest.split_whitespace();
            let directive = parts.next().unwrap_or("");
            let arg = parts.next();
            // `#if A || B`: true when any of the names is.
            let alternatives: Vec<&str> = arg.into_iter().chain(parts.clone()).collect();
            match directive {
                "if" | "ifdef" | "ifndef" => {
                    let arg = arg.ok_or_else(|| err(i, "#if without a name"))?;
                    let cond = match directive {
                        "if" => alternatives
                            .split(|w| *w == "||")
                            .all(|names| names.len() == 1)
                            .then(|| {
                                alternatives
                                    .iter()
                                    .filter(|w| **w != "||")
                                    .any(|name| truthy(defs, name))
                            })
                            .ok_or_else(|| err(i, "#if takes NAME or NAME || NAME .."))?,
                        "ifdef" => defs.contains_key(arg),
                        _ => !defs.contains_key(arg),
                    };
                    stack.push((active && cond, active));
                }
                "else" => {
                    let top = stack
                        .last_mut()
                        .ok_or_else(|| err(i, "#else without #if"))?;
                    let parent_active = top.1;
                    top.0 = parent_active && !top.0;
                }
                "endif" => {
                    stack.pop().ok_or_else(|| err(i, "#endif without #if"))?;
                }
                "include" => {
                    if active {
                        let arg = arg.ok_or_else(|| err(i, "#include without a name"))?;
                        let (_, text) = INCLUDES
                            .iter()
                            .find(|(n, _)| *n == arg)
                            .ok_or_else(|| err(i, &format!("no include file '{arg}'")))?;
                        // Included code is preprocessed on its own; naga's line numbers
                        // after this point count the included lines too.
                        let pasted = preprocess_lines(&format!("{name}/{arg}"), text, defs)?;
                        out.push_str(&pasted);
                    }
                    continue;
                }
                other => return Err(err(i, &format!("unknown directive #{other}"))),
            }
            out.push('\n'); // keep line numbers of naga's messages true
            continue;
        }
        if active {
            substitute_words(line, defs, &mut out);
        }
        out.push('\n');
    }
    if !stack.is_empty() {
        return Err(err(source.lines().count(), "#if without #endif"));
    }
    Ok(out)
}

fn substitute_words(line: &str, defs: &Defines, out: &mut String) {
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if !word.is_empty() {
            let is_macro = word
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
                && word.chars().next().is_some_and(|c| c.is_ascii_uppercase());
            match defs.get(word.as_str()) {
                Some(v) if is_macro => out.push_str(v),
                _ => out.push_str(word),
            }
            word.clear();
        }
    };
    for c in line.chars() {
        if is_word_char(c) {
            word.push(c);
        } else {
            flush(&mut word, out);
            out.push(c);
        }
    }
    flush(&mut word, out);
}

/// One resource binding of a compute shader, as reflected from the WGSL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BindingKind {
    /// The parameter struct (group 1, binding 0), bound with a dynamic offset: `size` bytes,
    /// its members' (name, byte offset).
    Params {
        size: u64,
        members: Vec<(String, usize)>,
    },
    Storage {
        read_only: bool,
    },
}

/// Parses and validates WGSL with naga; returns the module and a readable error naming the shader.
pub fn parse_and_validate(
    name: &str,
    wgsl: &str,
) -> Result<(naga::Module, naga::valid::ModuleInfo)> {
    let module = naga::front::wgsl::parse_str(wgsl).map_err(|e| GpuError::Shader {
        shader: name.to_string(),
        message: e.emit_to_string(wgsl),
    })?;
    let info = naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::all(),
    )
    .validate(&module)
    .map_err(|e| GpuError::Shader {
        shader: name.to_string(),
        message: e.emit_to_string(wgsl),
    })?;
    Ok((module, info))
}

/// Where kernels keep their bindings: storage buffers in group 0 (a bind group per set of
/// buffers), the parameter block alone in group 1 binding 0 (one bind group per uniform
/// buffer, whatever the storage buffers).
pub const STORAGE_GROUP: u32 = 0;
pub const PARAMS_GROUP: u32 = 1;

/// The bindings of a kernel: (group, binding, kind), sorted.
pub fn reflect_bindings(name: &str, module: &naga::Module) -> Result<Vec<(u32, u32, BindingKind)>> {
    let err = |message: String| GpuError::Shader {
        shader: name.to_string(),
        message,
    };
    let mut out = Vec::new();
    for (_, var) in module.global_variables.iter() {
        let Some(binding) = &var.binding else {
            continue;
        };
        let kind = match var.space {
            naga::AddressSpace::Uniform => {
                if (binding.group, binding.binding) != (PARAMS_GROUP, 0) {
                    return Err(err(format!(
                        "the parameter block must be @group({PARAMS_GROUP}) @binding(0), not \
                         @group({}) @binding({})",
                        binding.group, binding.binding
                    )));
                }
                let ty = &module.types[var.ty];
                let members = match &ty.inner {
                    naga::TypeInner::Struct { members, .. } => members
                        .iter()
                        .map(|m| (m.name.clone().unwrap_or_default(), m.offset as usize))
                        .collect(),
                    _ => Vec::new(),
                };
                BindingKind::Params {
                    size: ty.inner.size(module.to_ctx()) as u64,
                    members,
                }
            }
            naga::AddressSpace::Storage { access } => {
                if binding.group != STORAGE_GROUP {
                    return Err(err(format!(
                        "storage binding {} in group {}: storage buffers use group \
                         {STORAGE_GROUP}",
                        binding.binding, binding.group
                    )));
                }
                BindingKind::Storage {
                    read_only: !access.contains(naga::StorageAccess::STORE),
                }
            }
            other => return Err(err(format!("unsupported binding space {other:?}"))),
        };
        out.push((binding.group, binding.binding, kind));
    }
    out.sort_by_key(|b| (b.0, b.1));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(src: &str, defs: &[(&str, &str)]) -> Result<String> {
        preprocess("test", src, &defines(defs))
    }

    #[test]
    fn directives_keep_the_branches_of_their_defines() {
        let src = "#if A\na\n#else\nnot_a\n#endif\n#if B || C\nb_or_c\n#endif\n#ifndef D\nno_d\n#endif\nX_T\n";
        let kept = |defs: &[(&str, &str)]| -> Vec<String> {
            run(src, defs)
                .unwrap()
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(String::from)
                .collect()
        };
        assert_eq!(kept(&[("A", "1"), ("X_T", "f32")]), ["a", "no_d", "f32"]);
        assert_eq!(
            kept(&[("A", "0"), ("C", "1"), ("X_T", "u32")]),
            ["not_a", "b_or_c", "no_d", "u32"]
        );
        assert_eq!(
            kept(&[("B", "1"), ("D", "1"), ("X_T", "f32")]),
            ["not_a", "b_or_c", "f32"]
        );
        // Line numbers stay those of the source (naga's messages point at the right line).
        assert_eq!(
            run(src, &[("X_T", "f32")]).unwrap().lines().count(),
            src.lines().count()
        );
    }

    #[test]
    fn bad_directives_and_unread_defines_are_errors() {
        let e = |src: &str, defs: &[(&str, &str)]| run(src, defs).unwrap_err().to_string();
        assert!(e("#if A\n", &[]).contains("#if without #endif"));
        assert!(e("#endif\n", &[]).contains("#endif without #if"));
        assert!(e("#if A B\n#endif\n", &[]).contains("#if takes NAME"));
        assert!(e("#pragma x\n", &[]).contains("unknown directive"));
        assert!(e("X_T\n", &[("X_T", "f32"), ("Y_T", "f16")]).contains("define Y_T is never read"));
        // A define read only by an included file counts as read.
        assert!(run("#include conv_output\nX\n", &[("Y_T", "f16")]).is_ok());
    }
}
