//! Authkey files: where a zero-config server keeps the key it generated (and clients on
//! the same machine look for it), and how any key file reads.
//!
//! The server, the `agora` admin commands, the Rust client's `Manager::from_env` and
//! the Python companion package all find a generated key at [`default_path`], so a
//! program on the server's machine needs no configuration at all.

use std::path::{Path, PathBuf};

/// Where a zero-config `agora serve` keeps its generated authkey:
/// `$XDG_RUNTIME_DIR/agora/authkey`, else `$TMPDIR/agora-$UID/authkey`. One file per
/// user: every zero-config server of that user shares the key, and a restart keeps it.
pub fn default_path() -> PathBuf {
    let dir = match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(runtime) if !runtime.is_empty() => PathBuf::from(runtime).join("agora"),
        _ => std::env::temp_dir().join(format!("agora-{}", current_uid())),
    };
    dir.join("authkey")
}

/// The real user id of this process (the owner of the files it creates).
pub fn current_uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

/// Reads a key file: its bytes, less one trailing newline (`\n` or `\r\n`), so a key
/// written with `echo` works. An empty key is an `InvalidData` error.
pub fn read(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut key = std::fs::read(path)?;
    if key.ends_with(b"\n") {
        key.pop();
        if key.ends_with(b"\r") {
            key.pop();
        }
    }
    if key.is_empty() {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "the file is empty"));
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_trailing_newline_is_not_part_of_the_key() {
        let dir = std::env::temp_dir().join(format!("agora-keyfile-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (written, key) in [("k\n", "k"), ("k\r\n", "k"), ("k\n\n", "k\n"), ("k", "k")] {
            std::fs::write(dir.join("key"), written).unwrap();
            assert_eq!(read(&dir.join("key")).unwrap(), key.as_bytes(), "{written:?}");
        }
        std::fs::write(dir.join("key"), "\n").unwrap();
        assert_eq!(read(&dir.join("key")).unwrap_err().kind(), std::io::ErrorKind::InvalidData);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
