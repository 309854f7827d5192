//! SipHash over one byte string in one pass: what [`super::key`] hashes strs and
//! bytes with.
//!
//! std's `Hasher` is a stream: every `write` goes through its partial-word buffer, so
//! a short key paid for a tag byte, a terminator and a copy into a scratch buffer
//! before the rounds (243 instructions for a 16-byte key, 7.5 % of what the server
//! spends on a pipelined dict get; BENCHMARKS.md, round 22). Here the words are read
//! straight from the bytes. The algorithm is the reference one (Aumasson and
//! Bernstein), checked against std's SipHash-2-4 below; the rounds are generic so that
//! one function serves both the check and the 1-3 variant std's `HashMap` uses.

/// One SipRound.
#[inline(always)]
fn round(v: &mut [u64; 4]) {
    v[0] = v[0].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(13) ^ v[0];
    v[0] = v[0].rotate_left(32);
    v[2] = v[2].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(16) ^ v[2];
    v[0] = v[0].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(21) ^ v[0];
    v[2] = v[2].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(17) ^ v[2];
    v[2] = v[2].rotate_left(32);
}

/// SipHash-`C`-`D` of `bytes` under the key `(k0, k1)`.
#[inline]
pub(super) fn siphash<const C: usize, const D: usize>(k0: u64, k1: u64, bytes: &[u8]) -> u64 {
    let mut v = [
        k0 ^ 0x736f_6d65_7073_6575,
        k1 ^ 0x646f_7261_6e64_6f6d,
        k0 ^ 0x6c79_6765_6e65_7261,
        k1 ^ 0x7465_6462_7974_6573,
    ];
    let compress = |v: &mut [u64; 4], m: u64| {
        v[3] ^= m;
        for _ in 0..C {
            round(v);
        }
        v[0] ^= m;
    };
    let words = bytes.chunks_exact(8);
    let tail = words.remainder();
    for word in words {
        compress(&mut v, u64::from_le_bytes(word.try_into().expect("8 bytes")));
    }
    // The last word: the leftover bytes, little-endian, under the length's low byte.
    let last = tail.iter().rev().fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
    compress(&mut v, last | ((bytes.len() as u64) << 56));
    v[2] ^= 0xff;
    for _ in 0..D {
        round(&mut v);
    }
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use std::hash::Hasher;

    /// std's SipHash-2-4, deprecated as a public hasher but still the reference.
    #[allow(deprecated)]
    fn std_sip24(k0: u64, k1: u64, bytes: &[u8]) -> u64 {
        let mut h = std::hash::SipHasher::new_with_keys(k0, k1);
        h.write(bytes);
        h.finish()
    }

    #[test]
    fn matches_the_reference_vector() {
        // The paper's test vector: key 00..0f, message 00..0e, SipHash-2-4.
        let k0 = u64::from_le_bytes([0, 1, 2, 3, 4, 5, 6, 7]);
        let k1 = u64::from_le_bytes([8, 9, 10, 11, 12, 13, 14, 15]);
        let message: Vec<u8> = (0..15).collect();
        assert_eq!(super::siphash::<2, 4>(k0, k1, &message), 0xa129_ca61_49be_45e5);
    }

    proptest! {
        #[test]
        fn agrees_with_std_at_every_length(k0: u64, k1: u64, bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            prop_assert_eq!(super::siphash::<2, 4>(k0, k1, &bytes), std_sip24(k0, k1, &bytes));
        }
    }
}
