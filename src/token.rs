//! Random tokens: model epochs, the id prefixes of replicas and layouts, page nonces.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

/// `chars` random hex digits (at most 64). The standard library seeds the keys of its hasher
/// from the operating system, and every call hashes a fresh counter value, so two tokens of one
/// process never repeat and tokens of two processes are independent. Not for cryptography.
pub fn random_hex(chars: usize) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut out = String::with_capacity(chars + 16);
    while out.len() < chars.min(64) {
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        out.push_str(&format!("{:016x}", hasher.finish()));
    }
    out.truncate(chars.min(64));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_have_the_length_asked_and_do_not_repeat() {
        let a = random_hex(32);
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(a, random_hex(32));
        assert_eq!(random_hex(5).len(), 5);
    }
}
