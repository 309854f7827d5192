//! Checking that received bytes are UTF-8: every string a request or reply carries
//! (method names, keys, values) goes through here, in both dialects' decoders.
//!
//! Most of those strings are short and ASCII. `std::str::from_utf8` handles them byte
//! by byte with a branch per byte (it goes word-at-a-time only on aligned blocks of
//! 16 bytes and more): ~220 of the ~3,770 instructions the server spent on a `-P 16`
//! dict get (callgrind). Asking "is it all ASCII?" first is a few word-sized loads;
//! only text that is not falls through to the full check, with the same result.

use std::str::Utf8Error;

/// `bytes` as a `&str` if they are valid UTF-8: exactly what `std::str::from_utf8`
/// returns (its error included), faster for ASCII.
#[inline]
pub fn str_from_utf8(bytes: &[u8]) -> Result<&str, Utf8Error> {
    if bytes.is_ascii() {
        // SAFETY: ASCII is valid UTF-8.
        Ok(unsafe { std::str::from_utf8_unchecked(bytes) })
    } else {
        std::str::from_utf8(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn agrees_with_std_on_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            prop_assert_eq!(str_from_utf8(&bytes), std::str::from_utf8(&bytes));
        }

        #[test]
        fn agrees_with_std_on_any_text(text in ".{0,40}") {
            prop_assert_eq!(str_from_utf8(text.as_bytes()), Ok(text.as_str()));
        }
    }

    #[test]
    fn rejects_what_std_rejects() {
        for bad in [&b"\xff"[..], b"key\xc3", b"\xed\xa0\x80", b"ok\x80ok"] {
            assert_eq!(str_from_utf8(bad), std::str::from_utf8(bad), "{bad:?}");
            assert!(str_from_utf8(bad).is_err());
        }
    }
}
