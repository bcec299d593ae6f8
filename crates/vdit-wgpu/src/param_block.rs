//! A kernel's parameter block: the Rust struct whose bytes fill the shader's `Params` uniform.
//! [`param_block!`](crate::param_block) defines it with its member offsets, and the pipeline
//! cache compares them with the members naga reflects from the WGSL when it builds the kernel:
//! a member missing, renamed or moved on either side is an error naming the shader, so the two
//! definitions cannot drift apart.

/// A `#[repr(C)]` plain-old-data struct and the names and byte offsets of its members.
pub trait ParamBlock: bytemuck::Pod {
    /// (name, byte offset) of each member, in declaration order. Members whose name starts
    /// with `_` are padding, which the WGSL side may leave implicit.
    const MEMBERS: &'static [(&'static str, usize)];
}

/// The bytes of a parameter block with its member layout, as a dispatch carries them.
#[derive(Clone, Copy, Debug)]
pub struct ParamBytes<'a> {
    pub(crate) bytes: &'a [u8],
    pub(crate) members: &'static [(&'static str, usize)],
}

impl<'a> ParamBytes<'a> {
    pub fn of<T: ParamBlock>(block: &'a T) -> Self {
        Self {
            bytes: bytemuck::bytes_of(block),
            members: T::MEMBERS,
        }
    }

    /// No parameter block (a kernel without a uniform binding).
    pub fn none() -> Self {
        Self {
            bytes: &[],
            members: &[],
        }
    }
}

/// Defines a parameter block: `#[repr(C)]`, `Pod`, `Default`, and its [`ParamBlock`] layout.
#[macro_export]
macro_rules! param_block {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $($(#[$fmeta:meta])* $fvis:vis $field:ident : $ty:ty),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
        $vis struct $name {
            $($(#[$fmeta])* $fvis $field: $ty),*
        }
        impl $crate::param_block::ParamBlock for $name {
            const MEMBERS: &'static [(&'static str, usize)] =
                &[$((stringify!($field), std::mem::offset_of!($name, $field))),*];
        }
    };
}

/// Compares a block's members with the WGSL struct's `(name, offset)` members.
pub(crate) fn check_members(
    rust: &[(&str, usize)],
    wgsl: &[(String, usize)],
) -> std::result::Result<(), String> {
    // Padding (a name starting with `_`) need not match: the sizes are compared apart.
    for (name, offset) in wgsl.iter().filter(|(n, _)| !n.starts_with('_')) {
        match rust.iter().find(|(n, _)| n == name) {
            None => return Err(format!("WGSL member '{name}' has no Rust twin")),
            Some((_, o)) if o != offset => {
                return Err(format!(
                    "member '{name}' is at byte {offset} in WGSL but {o} in Rust"
                ))
            }
            _ => {}
        }
    }
    if let Some((name, _)) = rust
        .iter()
        .find(|(n, _)| !n.starts_with('_') && !wgsl.iter().any(|(w, _)| w == n))
    {
        return Err(format!("Rust member '{name}' is not in the WGSL struct"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::param_block! {
        struct Sample {
            a: u32,
            /// documented
            b: f32,
            _pad: [u32; 2],
        }
    }

    #[test]
    fn members_are_named_with_their_offsets() {
        assert_eq!(Sample::MEMBERS, &[("a", 0), ("b", 4), ("_pad", 8)]);
        let wgsl = |m: &[(&str, usize)]| -> Vec<(String, usize)> {
            m.iter().map(|(n, o)| (n.to_string(), *o)).collect()
        };
        assert!(check_members(Sample::MEMBERS, &wgsl(&[("a", 0), ("b", 4)])).is_ok());
        assert!(check_members(Sample::MEMBERS, &wgsl(&[("a", 0), ("b", 4), ("_p", 8)])).is_ok());
        let moved = check_members(Sample::MEMBERS, &wgsl(&[("b", 0), ("a", 4)])).unwrap_err();
        assert!(moved.contains("'b' is at byte 0 in WGSL but 4"), "{moved}");
        let extra = check_members(Sample::MEMBERS, &wgsl(&[("a", 0), ("b", 4), ("c", 8)]));
        assert!(extra.unwrap_err().contains("'c' has no Rust twin"));
        let missing = check_members(Sample::MEMBERS, &wgsl(&[("a", 0)])).unwrap_err();
        assert!(missing.contains("Rust member 'b'"), "{missing}");
    }
}
