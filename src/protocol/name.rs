//! Model names (PROTOCOL.md section 1).

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

use crate::error::InvalidModelName;

/// The longest model name accepted, in characters.
pub const MAX_MODEL_NAME_LEN: usize = 128;

/// A validated model name: 1 to 128 characters of `A-Z a-z 0-9 . _ ~ -`, neither `.` nor `..`.
///
/// Cheap to clone (the text is shared).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModelName(Arc<str>);

impl ModelName {
    /// Checks `name` against the rules of PROTOCOL.md section 1.
    pub fn new(name: &str) -> Result<Self, InvalidModelName> {
        if name.is_empty() {
            return Err(InvalidModelName {
                reason: "a model name is at least one character",
            });
        }
        if name.len() > MAX_MODEL_NAME_LEN {
            return Err(InvalidModelName {
                reason: "a model name is at most 128 characters",
            });
        }
        if name == "." || name == ".." {
            return Err(InvalidModelName {
                reason: "a model name is neither `.` nor `..`",
            });
        }
        let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-');
        if !name.bytes().all(allowed) {
            return Err(InvalidModelName {
                reason: "a model name holds only `A-Z a-z 0-9 . _ ~ -`",
            });
        }
        Ok(ModelName(name.into()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ModelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for ModelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Borrow<str> for ModelName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for ModelName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl TryFrom<&str> for ModelName {
    type Error = InvalidModelName;

    fn try_from(name: &str) -> Result<Self, Self::Error> {
        ModelName::new(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_allowed_alphabet() {
        for name in ["model", "a", "A-Z_a.z~0-9", &"x".repeat(128), "..."] {
            assert!(ModelName::new(name).is_ok(), "{name:?}");
        }
    }

    #[test]
    fn refuses_everything_else() {
        for name in [
            "",
            ".",
            "..",
            "a/b",
            "a b",
            "é",
            "a%20",
            &"x".repeat(129),
            "a?b",
        ] {
            assert!(ModelName::new(name).is_err(), "{name:?}");
        }
    }
}
