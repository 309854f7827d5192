//! Server settings: limits, authentication, listen addresses, and where the authkey
//! comes from.
//!
//! [`Config`] is what a running server needs; the CLI (`cli.rs`) and embedding programs
//! build one. Loading the authkey lives here too, so the rule "never from a plain
//! command-line argument" is enforced in one place.

use std::path::{Path, PathBuf};
use std::time::Duration;

use agora_proto::frame::DEFAULT_MAX_FRAME;
use agora_proto::native::Kind;
use agora_proto::Address;

/// The address `agora serve` listens on when given none.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:50000";
/// The environment variable holding the authkey itself.
pub const AUTHKEY_ENV: &str = "AGORA_AUTHKEY";

/// Limits that protect the server from any one client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest frame body accepted after the handshake.
    pub max_frame: u64,
    /// Most connections served at once; more are refused with a clear error.
    pub max_connections: usize,
    /// Most requests one connection may have parked (blocked) at once.
    pub max_in_flight: u32,
    /// How long a new connection has to finish the handshake and say hello.
    pub handshake_timeout: Duration,
    /// A native session that sends nothing (not even a heartbeat) for this long is
    /// ended and everything it held is released: this is how a half-open connection
    /// (a frozen or unplugged peer) loses its locks.
    pub heartbeat_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame: DEFAULT_MAX_FRAME,
            max_connections: 10_000,
            max_in_flight: 1024,
            handshake_timeout: Duration::from_secs(5),
            heartbeat_timeout: Duration::from_secs(10),
        }
    }
}

/// A CPython typeid served by one named object: `--expose get_tasks=queue:tasks`
/// makes a client that did `BaseManager.register("get_tasks")` get the queue named
/// `tasks` (created on first use), the same one a Rust client reaches with
/// `manager.queue("tasks")`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exposure {
    /// The typeid Python clients register and call.
    pub typeid: String,
    /// The kind of the named object.
    pub kind: Kind,
    /// The object's name.
    pub name: String,
}

impl std::str::FromStr for Exposure {
    type Err = String;

    /// Parses `TYPEID=KIND:NAME` (kind as a typeid, any case: `queue`, `dict`, `Lock`).
    fn from_str(text: &str) -> Result<Exposure, String> {
        let usage = || format!("'{text}' is not TYPEID=KIND:NAME (e.g. get_tasks=queue:tasks)");
        let (typeid, target) = text.split_once('=').ok_or_else(usage)?;
        let (kind, name) = target.split_once(':').ok_or_else(usage)?;
        if typeid.is_empty() || name.is_empty() {
            return Err(usage());
        }
        let kind = Kind::parse(kind);
        if let Kind::Other(other) = &kind {
            return Err(format!("unknown kind '{other}' in '{text}'"));
        }
        Ok(Exposure { typeid: typeid.to_owned(), kind, name: name.to_owned() })
    }
}

/// Everything a server needs to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen (at least one).
    pub listen: Vec<Address>,
    /// The shared secret every connection must prove it knows.
    pub authkey: Vec<u8>,
    /// Refuse the legacy HMAC-MD5 handshake answer (drops CPython ≤ 3.11 clients).
    pub strict_auth: bool,
    /// Resource limits.
    pub limits: Limits,
    /// CPython typeids served by named objects.
    pub expose: Vec<Exposure>,
}

impl Config {
    /// A config listening on `listen` with `authkey` and default limits.
    pub fn new(listen: Vec<Address>, authkey: impl Into<Vec<u8>>) -> Config {
        Config { listen, authkey: authkey.into(), strict_auth: false, limits: Limits::default(), expose: Vec::new() }
    }

    /// The named object serving CPython typeid `typeid`, if one is exposed.
    pub fn exposed(&self, typeid: &str) -> Option<&Exposure> {
        self.expose.iter().find(|e| e.typeid == typeid)
    }
}

/// Why the authkey could not be loaded or written.
#[derive(Debug, thiserror::Error)]
pub enum AuthkeyError {
    /// The authkey file could not be read.
    #[error("cannot read authkey file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The authkey is empty.
    #[error("the authkey from {0} is empty")]
    Empty(String),
    /// A generated authkey could not be saved.
    #[error("cannot write generated authkey to {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// Reads an authkey file: its bytes, less one trailing newline (`\n` or `\r\n`), so a
/// key written with `echo` works.
pub fn read_authkey_file(path: &Path) -> Result<Vec<u8>, AuthkeyError> {
    let mut key = std::fs::read(path).map_err(|source| AuthkeyError::Read { path: path.to_owned(), source })?;
    if key.ends_with(b"\n") {
        key.pop();
        if key.ends_with(b"\r") {
            key.pop();
        }
    }
    if key.is_empty() {
        return Err(AuthkeyError::Empty(path.display().to_string()));
    }
    Ok(key)
}

/// The authkey from the environment variable [`AUTHKEY_ENV`], if set.
pub fn authkey_from_env() -> Result<Option<Vec<u8>>, AuthkeyError> {
    match std::env::var_os(AUTHKEY_ENV) {
        None => Ok(None),
        Some(v) if v.is_empty() => Err(AuthkeyError::Empty(format!("${AUTHKEY_ENV}"))),
        Some(v) => Ok(Some(std::os::unix::ffi::OsStrExt::as_bytes(v.as_os_str()).to_vec())),
    }
}

/// Where a generated authkey is written: `$XDG_RUNTIME_DIR/agora/authkey`, else
/// `$TMPDIR/agora-$UID/authkey`.
pub fn default_authkey_path() -> PathBuf {
    let dir = match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(runtime) if !runtime.is_empty() => PathBuf::from(runtime).join("agora"),
        // SAFETY: getuid has no preconditions and cannot fail.
        _ => std::env::temp_dir().join(format!("agora-{}", unsafe { libc::getuid() })),
    };
    dir.join("authkey")
}

/// Generates a random authkey (64 hex characters, so it can be typed and pasted) and
/// writes it to `path` with mode 0600, in a directory with mode 0700.
pub fn generate_authkey(path: &Path) -> Result<Vec<u8>, AuthkeyError> {
    use std::fmt::Write as _;
    use std::io::Write as _;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};

    let write_err = |source| AuthkeyError::Write { path: path.to_owned(), source };
    let key = rand::random::<[u8; 32]>().iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    });
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(write_err)?;
    }
    // Replace, never reuse, an existing file: a fresh inode gets our mode for sure.
    let _ = std::fs::remove_file(path);
    let mut file =
        std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(write_err)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600)).map_err(write_err)?;
    writeln!(file, "{key}").map_err(write_err)?;
    Ok(key.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn exposures_parse_or_say_why() {
        let e: Exposure = "get_tasks=queue:tasks".parse().unwrap();
        assert_eq!(e, Exposure { typeid: "get_tasks".into(), kind: Kind::Queue, name: "tasks".into() });
        assert!("nonsense".parse::<Exposure>().unwrap_err().contains("TYPEID=KIND:NAME"));
        assert!("a=teapot:x".parse::<Exposure>().unwrap_err().contains("unknown kind 'teapot'"));
        assert!("a=queue:".parse::<Exposure>().is_err());
    }

    #[test]
    fn authkey_file_loses_one_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        std::fs::write(&path, "secret\r\n").unwrap();
        assert_eq!(read_authkey_file(&path).unwrap(), b"secret");
        std::fs::write(&path, "a\n\n").unwrap();
        assert_eq!(read_authkey_file(&path).unwrap(), b"a\n");
        std::fs::write(&path, "\n").unwrap();
        assert!(matches!(read_authkey_file(&path), Err(AuthkeyError::Empty(_))));
        assert!(matches!(read_authkey_file(&dir.path().join("missing")), Err(AuthkeyError::Read { .. })));
    }

    #[test]
    fn generated_authkey_is_private_and_readable_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/authkey");
        let key = generate_authkey(&path).unwrap();
        assert_eq!(key.len(), 64);
        assert_eq!(read_authkey_file(&path).unwrap(), key);
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::metadata(path.parent().unwrap()).unwrap().permissions().mode() & 0o777, 0o700);
        assert_ne!(generate_authkey(&path).unwrap(), key, "a new key each time");
    }
}
