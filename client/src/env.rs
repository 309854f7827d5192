//! Connecting from the environment: how a child process finds the manager that
//! started it (and how any program finds a server its operator configured).
//!
//! A parent that embeds a server (`agora::EmbeddedManager::command`) starts its
//! children with [`ADDRESS_ENV`] and [`AUTHKEY_ENV`] set; [`Manager::from_env`] reads
//! them. The authkey travels in the environment, never on a command line, where `ps`
//! would show it to every user of the machine.

use std::path::Path;

use agora_proto::Address;

use crate::error::{Error, Result};
use crate::Manager;

/// The variable holding the server's address (`unix:/…/agora.sock`, `host:port`).
pub const ADDRESS_ENV: &str = "AGORA_ADDRESS";
/// The variable holding the authkey itself.
pub const AUTHKEY_ENV: &str = "AGORA_AUTHKEY";
/// The variable naming a file that holds the authkey (read when [`AUTHKEY_ENV`] is
/// not set; one trailing newline is ignored).
pub const AUTHKEY_FILE_ENV: &str = "AGORA_AUTHKEY_FILE";

/// The address and authkey the environment names, or why it does not.
pub(crate) fn from_env() -> Result<(Address, Vec<u8>)> {
    let missing = |what: &str| {
        Error::Environment(format!(
            "{what}: this process was not started by an agora manager (in the parent, spawn it with \
             EmbeddedManager::command), and no server was configured (set {ADDRESS_ENV} and \
             {AUTHKEY_ENV} or {AUTHKEY_FILE_ENV})"
        ))
    };
    let address = std::env::var_os(ADDRESS_ENV).ok_or_else(|| missing(&format!("{ADDRESS_ENV} is not set")))?;
    let address = address
        .to_str()
        .ok_or_else(|| Error::Environment(format!("{ADDRESS_ENV} is not valid UTF-8")))?
        .parse::<Address>()
        .map_err(|e| Error::Environment(format!("{ADDRESS_ENV}: {e}")))?;
    let authkey = match std::env::var_os(AUTHKEY_ENV) {
        Some(key) if key.is_empty() => return Err(Error::Environment(format!("{AUTHKEY_ENV} is empty"))),
        Some(key) => std::os::unix::ffi::OsStringExt::into_vec(key),
        None => match std::env::var_os(AUTHKEY_FILE_ENV) {
            Some(path) => read_key_file(Path::new(&path))?,
            None => return Err(missing(&format!("neither {AUTHKEY_ENV} nor {AUTHKEY_FILE_ENV} is set"))),
        },
    };
    Ok((address, authkey))
}

/// An authkey file's bytes less one trailing newline (as the server reads it).
fn read_key_file(path: &Path) -> Result<Vec<u8>> {
    let mut key = std::fs::read(path).map_err(|e| {
        Error::Environment(format!("{AUTHKEY_FILE_ENV}: cannot read authkey file {}: {e}", path.display()))
    })?;
    if key.ends_with(b"\n") {
        key.pop();
        if key.ends_with(b"\r") {
            key.pop();
        }
    }
    if key.is_empty() {
        return Err(Error::Environment(format!("{AUTHKEY_FILE_ENV}: authkey file {} is empty", path.display())));
    }
    Ok(key)
}

impl Manager {
    /// Connects to the server named by the environment: the address in
    /// `AGORA_ADDRESS`, the authkey in `AGORA_AUTHKEY` (else in the file
    /// `AGORA_AUTHKEY_FILE` names). This is how a child process reaches the manager of
    /// the parent that spawned it with `agora::EmbeddedManager::command`.
    ///
    /// Fails with [`Error::Environment`] (saying which variable and what to do) when
    /// the variables are missing or malformed, and as [`Manager::connect`] does
    /// otherwise.
    ///
    /// ```no_run
    /// # async fn child() -> agora_client::Result<()> {
    /// let manager = agora_client::Manager::from_env().await?;
    /// manager.value::<i64>("hits", &0).await?.add(&1).await?;
    /// # Ok(()) }
    /// ```
    pub async fn from_env() -> Result<Manager> {
        let (address, authkey) = from_env()?;
        Manager::connect_to(&address, authkey).await
    }
}

impl crate::blocking::Manager {
    /// Connects to the server named by the environment (`AGORA_ADDRESS`,
    /// `AGORA_AUTHKEY` or `AGORA_AUTHKEY_FILE`). The blocking form of
    /// [`crate::Manager::from_env`].
    pub fn from_env() -> Result<crate::blocking::Manager> {
        let (address, authkey) = from_env()?;
        crate::blocking::Manager::connect_to(&address, authkey)
    }
}
