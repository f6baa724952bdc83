//! Client keys (PROTOCOL.md section 9): the name a client instance gives itself, so that the
//! server can tell a resend from a new update across reconnects.

use std::fmt;
use std::sync::Arc;

use crate::error::InvalidClientKey;

/// The shortest client key accepted, in characters.
pub const MIN_CLIENT_KEY_LEN: usize = 8;
/// The longest client key accepted, in characters.
pub const MAX_CLIENT_KEY_LEN: usize = 64;

/// A validated client key: 8 to 64 characters of `A-Z a-z 0-9 _ -` (`?client=KEY`).
///
/// Cheap to clone (the text is shared).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientKey(Arc<str>);

impl ClientKey {
    /// Checks `key` against the rules of PROTOCOL.md section 9.
    pub fn new(key: &str) -> Result<Self, InvalidClientKey> {
        if key.len() < MIN_CLIENT_KEY_LEN || key.len() > MAX_CLIENT_KEY_LEN {
            return Err(InvalidClientKey {
                reason: "a client key is 8 to 64 characters",
            });
        }
        let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-');
        if !key.bytes().all(allowed) {
            return Err(InvalidClientKey {
                reason: "a client key holds only `A-Z a-z 0-9 _ -`",
            });
        }
        Ok(ClientKey(key.into()))
    }

    /// A new random key (32 hexadecimal digits), as client libraries choose one per instance.
    pub fn random() -> Self {
        ClientKey(crate::token::random_hex(32).into())
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The shared text.
    pub(crate) fn shared(&self) -> &Arc<str> {
        &self.0
    }
}

impl fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_only_the_allowed_shape() {
        assert!(ClientKey::new("abcd-_09").is_ok());
        assert!(ClientKey::new(&"a".repeat(64)).is_ok());
        for bad in [
            "",
            "short",
            &"a".repeat(65),
            "abcdefg!",
            "abcd efgh",
            "abcdéfgh",
        ] {
            assert!(ClientKey::new(bad).is_err(), "{bad:?}");
        }
        let key = ClientKey::random();
        assert_eq!(ClientKey::new(key.as_str()), Ok(key));
    }
}
