//! The mutual HMAC challenge, exactly as CPython 3.12+ (spec §2), sans I/O.
//!
//! The server challenges first ([`Challenge::new`] → [`Challenge::verify`]), then
//! answers the client's challenge ([`answer`]); a client does the opposite. Both ends
//! speak the modern `{sha256}` form and accept the legacy 16-byte HMAC-MD5 answer that
//! CPython ≤ 3.11 sends, unless [`Policy::strict`] is set. MACs are compared in
//! constant time. The frame driver lives in [`crate::io`].

use hmac::{Hmac, Mac};
use rand::RngCore;

/// `#CHALLENGE#`: the prefix of every challenge frame.
pub const CHALLENGE: &[u8] = b"#CHALLENGE#";
/// `#WELCOME#`: the verdict for a correct answer.
pub const WELCOME: &[u8] = b"#WELCOME#";
/// `#FAILURE#`: the verdict for a wrong answer.
pub const FAILURE: &[u8] = b"#FAILURE#";
/// Random bytes in a modern challenge (CPython 3.12+ `MESSAGE_LENGTH`).
pub const NONCE_LEN: usize = 40;

/// Why a handshake step failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The peer's answer to our challenge was wrong: it does not know the authkey.
    #[error("digest received was wrong")]
    WrongDigest,
    /// The peer rejected our answer: we do not share its authkey.
    #[error("digest sent was rejected")]
    Rejected,
    /// The peer's message is not a handshake message of the expected form.
    #[error("malformed handshake message: {0}")]
    Malformed(&'static str),
    /// The peer asked for the legacy MD5 form and this end runs in strict mode.
    #[error("legacy HMAC-MD5 authentication refused (strict mode)")]
    LegacyRefused,
}

/// What this end accepts from its peer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Policy {
    /// Refuse the legacy HMAC-MD5 form (drops CPython ≤ 3.11 clients).
    pub strict: bool,
}

/// The digests CPython 3.12+ may name in `{name}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Digest {
    Md5,
    Sha256,
    Sha384,
    Sha3_256,
    Sha3_384,
}

impl Digest {
    fn from_name(name: &[u8]) -> Option<Digest> {
        Some(match name {
            b"md5" => Digest::Md5,
            b"sha256" => Digest::Sha256,
            b"sha384" => Digest::Sha384,
            b"sha3_256" => Digest::Sha3_256,
            b"sha3_384" => Digest::Sha3_384,
            _ => return None,
        })
    }

    fn mac(self, key: &[u8], msg: &[u8]) -> Vec<u8> {
        fn run<M: Mac + hmac::digest::KeyInit>(key: &[u8], msg: &[u8]) -> Vec<u8> {
            let mut mac = <M as hmac::digest::KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
            mac.update(msg);
            mac.finalize().into_bytes().to_vec()
        }
        match self {
            Digest::Md5 => run::<Hmac<md5::Md5>>(key, msg),
            Digest::Sha256 => run::<Hmac<sha2::Sha256>>(key, msg),
            Digest::Sha384 => run::<Hmac<sha2::Sha384>>(key, msg),
            Digest::Sha3_256 => run::<Hmac<sha3::Sha3_256>>(key, msg),
            Digest::Sha3_384 => run::<Hmac<sha3::Sha3_384>>(key, msg),
        }
    }
}

/// Splits `{name}mac` into the digest and the MAC (CPython: `}` at index 1..10).
fn split_named(msg: &[u8]) -> Option<(Digest, &[u8])> {
    if msg.first() != Some(&b'{') {
        return None;
    }
    let end = msg.iter().take(10).skip(1).position(|&b| b == b'}')? + 1;
    Some((Digest::from_name(&msg[1..end])?, &msg[end + 1..]))
}

/// Constant-time equality (length is not secret).
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A challenge this end sent, kept to verify the peer's answer.
#[derive(Debug, Clone)]
pub struct Challenge {
    /// `{sha256}` + the nonce: what the peer must MAC.
    message: Vec<u8>,
}

impl Challenge {
    /// A fresh `{sha256}` + 40-random-byte challenge.
    pub fn new() -> Challenge {
        let mut message = b"{sha256}".to_vec();
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        message.extend_from_slice(&nonce);
        Challenge { message }
    }

    /// A challenge with a given message (for tests and test vectors).
    pub fn from_message(message: Vec<u8>) -> Challenge {
        Challenge { message }
    }

    /// The frame body to send: `#CHALLENGE#` + message.
    pub fn frame(&self) -> Vec<u8> {
        [CHALLENGE, &self.message].concat()
    }

    /// Checks the peer's answer: `{name}` + HMAC over the whole message, or (unless
    /// strict) a bare 16-byte HMAC-MD5 from a CPython ≤ 3.11 peer.
    pub fn verify(&self, authkey: &[u8], answer: &[u8], policy: Policy) -> Result<(), AuthError> {
        self.verify_any(&[authkey], answer, policy).map(drop)
    }
}

impl Challenge {
    /// Checks the peer's answer against each of `keys` and returns the index of the
    /// one it was made with (a server with per-user keys learns who connected from
    /// which key answers). Every key is tried, each in constant time, whatever
    /// matched, so the time taken does not tell which key it was; the answer's form
    /// is checked once.
    pub fn verify_any<K: AsRef<[u8]>>(&self, keys: &[K], answer: &[u8], policy: Policy) -> Result<usize, AuthError> {
        let (digest, mac) = if answer.len() == 16 || answer.len() == 20 {
            (Digest::Md5, answer)
        } else {
            split_named(answer).ok_or(AuthError::WrongDigest)?
        };
        if digest == Digest::Md5 && policy.strict {
            return Err(AuthError::LegacyRefused);
        }
        let mut found = None;
        for (at, key) in keys.iter().enumerate() {
            // No early exit: the loop's length must not depend on which key matches.
            if ct_eq(&digest.mac(key.as_ref(), &self.message), mac) && found.is_none() {
                found = Some(at);
            }
        }
        found.ok_or(AuthError::WrongDigest)
    }
}

impl Default for Challenge {
    fn default() -> Self {
        Challenge::new()
    }
}

/// Answers the peer's challenge frame: HMAC-MD5 of a 16- or 20-byte legacy nonce,
/// otherwise `{name}` + HMAC-name over the whole message after `#CHALLENGE#`.
pub fn answer(authkey: &[u8], challenge_frame: &[u8], policy: Policy) -> Result<Vec<u8>, AuthError> {
    let message = challenge_frame
        .strip_prefix(CHALLENGE)
        .ok_or(AuthError::Malformed("challenge does not start with #CHALLENGE#"))?;
    if message.len() < 20 {
        return Err(AuthError::Malformed("challenge too short"));
    }
    if message.len() == 20 {
        if policy.strict {
            return Err(AuthError::LegacyRefused);
        }
        return Ok(Digest::Md5.mac(authkey, message));
    }
    let (digest, _) = split_named(message).ok_or(AuthError::Malformed("unknown digest in challenge"))?;
    if digest == Digest::Md5 && policy.strict {
        return Err(AuthError::LegacyRefused);
    }
    let name_len = message.iter().position(|&b| b == b'}').expect("split_named found it") + 1;
    Ok([&message[..name_len], &digest.mac(authkey, message)].concat())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    // Spec Appendix A, legacy handshake captured from CPython 3.11 with authkey b'secret'.
    const LEGACY_NONCE: &str = "f8 0f 3e ba 66 67 fc 65 14 e3 38 db b3 6d 2f b0 21 7c d0 0c";
    const LEGACY_ANSWER: &str = "4c d0 2a 1e 13 f9 07 a1 a0 6a 4e 6f 33 b9 32 78";
    // Spec Appendix A, modern handshake captured from CPython 3.13.
    const MODERN_MESSAGE: &str = "7b 73 68 61 32 35 36 7d c3 d0 db f2 55 8e b6 e2 13 a4 2f e7 9d 78 de b2 e8 56 8f 54 50 eb 82 8d a2 82 54 54 68 93 f8 26 39 3c 9f 03 42 b2 55 24";
    const MODERN_ANSWER: &str = "7b 73 68 61 32 35 36 7d 1b 9e 1e 5a d0 9f b9 39 f8 72 31 56 7d 9c 3e ce c7 df 3e 72 84 6d bc 5b f5 b5 9e f6 dd b9 b1 a0";

    #[test]
    fn appendix_a_legacy_answer() {
        let frame = [CHALLENGE, &hex(LEGACY_NONCE)].concat();
        assert_eq!(answer(b"secret", &frame, Policy::default()).unwrap(), hex(LEGACY_ANSWER));
    }

    #[test]
    fn appendix_a_modern_answer() {
        let frame = [CHALLENGE, &hex(MODERN_MESSAGE)].concat();
        assert_eq!(answer(b"secret", &frame, Policy::default()).unwrap(), hex(MODERN_ANSWER));
    }

    #[test]
    fn appendix_a_modern_verify() {
        let ch = Challenge::from_message(hex(MODERN_MESSAGE));
        assert_eq!(ch.verify(b"secret", &hex(MODERN_ANSWER), Policy::default()), Ok(()));
        assert_eq!(ch.verify(b"other", &hex(MODERN_ANSWER), Policy::default()), Err(AuthError::WrongDigest));
    }

    #[test]
    fn legacy_md5_answer_to_modern_challenge() {
        // A CPython <= 3.11 client MD5s everything after #CHALLENGE#, prefix included.
        let ch = Challenge::new();
        let md5 = Digest::Md5.mac(b"k", &ch.message);
        assert_eq!(ch.verify(b"k", &md5, Policy::default()), Ok(()));
        assert_eq!(ch.verify(b"k", &md5, Policy { strict: true }), Err(AuthError::LegacyRefused));
    }

    #[test]
    fn answer_then_verify_round_trip_for_every_digest() {
        for name in ["md5", "sha256", "sha384", "sha3_256", "sha3_384"] {
            let mut msg = format!("{{{name}}}").into_bytes();
            msg.extend_from_slice(&[7u8; NONCE_LEN]);
            let ch = Challenge::from_message(msg);
            let ans = answer(b"key", &ch.frame(), Policy::default()).unwrap();
            assert!(ans.starts_with(format!("{{{name}}}").as_bytes()));
            assert_eq!(ch.verify(b"key", &ans, Policy::default()), Ok(()), "{name}");
        }
    }

    #[test]
    fn fresh_challenges_differ_and_have_cpython_shape() {
        let (a, b) = (Challenge::new().frame(), Challenge::new().frame());
        assert_ne!(a, b);
        assert_eq!(a.len(), 11 + 8 + NONCE_LEN);
        assert!(a.starts_with(b"#CHALLENGE#{sha256}"));
    }

    #[test]
    fn verify_any_names_the_key_that_answered() {
        let ch = Challenge::new();
        let keys: [&[u8]; 3] = [b"alice", b"bob", b"carol"];
        for (at, key) in keys.iter().enumerate() {
            let ans = answer(key, &ch.frame(), Policy::default()).unwrap();
            assert_eq!(ch.verify_any(&keys, &ans, Policy::default()), Ok(at));
        }
        let stranger = answer(b"mallory", &ch.frame(), Policy::default()).unwrap();
        assert_eq!(ch.verify_any(&keys, &stranger, Policy::default()), Err(AuthError::WrongDigest));
        let none: [&[u8]; 0] = [];
        assert_eq!(ch.verify_any(&none, &stranger, Policy::default()), Err(AuthError::WrongDigest));
        let md5 = Digest::Md5.mac(b"bob", &ch.message);
        assert_eq!(ch.verify_any(&keys, &md5, Policy::default()), Ok(1));
        assert_eq!(ch.verify_any(&keys, &md5, Policy { strict: true }), Err(AuthError::LegacyRefused));
    }

    #[test]
    fn malformed_messages() {
        let p = Policy::default();
        assert_eq!(
            answer(b"k", b"#WELCOME#", p),
            Err(AuthError::Malformed("challenge does not start with #CHALLENGE#"))
        );
        assert_eq!(answer(b"k", b"#CHALLENGE#short", p), Err(AuthError::Malformed("challenge too short")));
        let unknown = [CHALLENGE, b"{whirlpool}", &[0u8; 40]].concat();
        assert_eq!(answer(b"k", &unknown, p), Err(AuthError::Malformed("unknown digest in challenge")));
        let ch = Challenge::new();
        assert_eq!(ch.verify(b"k", b"{sha256}tooshort", p), Err(AuthError::WrongDigest));
        assert_eq!(ch.verify(b"k", b"", p), Err(AuthError::WrongDigest));
        assert_eq!(ch.verify(b"k", b"garbage garbage garbage", p), Err(AuthError::WrongDigest));
    }

    #[test]
    fn strict_refuses_legacy_challenge() {
        let legacy = [CHALLENGE, &[1u8; 20][..]].concat();
        assert_eq!(answer(b"k", &legacy, Policy { strict: true }), Err(AuthError::LegacyRefused));
    }
}
