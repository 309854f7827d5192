//! Maps keyed by the ids agora hands out itself (object ids, session ids, request ids).
//!
//! Such keys come from a counter, never from a peer, so no peer can choose colliding
//! keys (a peer may *look up* any id, which costs nothing more), and SipHash — the
//! standard library's default, one of the hottest functions per call when it hashed
//! these — is not needed: a multiply spreads consecutive ids over both the low bits
//! (the bucket) and the high bits (the tag byte).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Hashes a `u64` id with one multiply by an odd constant.
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, id: u64) {
        self.0 = id.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// A map keyed by an id agora assigned.
pub type IdMap<V> = HashMap<u64, V, BuildHasherDefault<IdHasher>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_ids_spread_over_buckets_and_tags() {
        let hash = |id: u64| {
            let mut h = IdHasher::default();
            h.write_u64(id);
            h.finish()
        };
        let low: std::collections::HashSet<u64> = (0..64).map(|id| hash(id) & 63).collect();
        let tags: std::collections::HashSet<u64> = (0..64).map(|id| hash(id) >> 57).collect();
        assert!(low.len() > 32 && tags.len() > 32, "{} buckets, {} tags", low.len(), tags.len());
        let mut map: IdMap<&str> = IdMap::default();
        map.insert(7, "seven");
        assert_eq!(map.get(&7), Some(&"seven"));
    }
}
