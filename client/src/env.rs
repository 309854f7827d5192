//! Connecting from the environment: how a child process finds the manager that
//! started it (and how any program finds a server its operator configured).
//!
//! [`Manager::from_env`] finds a server the way the `agora` admin commands do: the
//! address in [`ADDRESS_ENV`] (else `127.0.0.1:50000`), the authkey in [`AUTHKEY_ENV`],
//! else in the file [`AUTHKEY_FILE_ENV`] names, else in the file a zero-config
//! `agora serve` on this machine generated ([`agora_proto::keyfile::default_path`]). A
//! parent that embeds a server (`agora::EmbeddedManager::command`) starts its children
//! with both variables set. The authkey travels in the environment or a file, never on
//! a command line, where `ps` would show it to every user of the machine.

use std::path::Path;

use agora_proto::address::DEFAULT_ADDRESS;
use agora_proto::{keyfile, Address};

use crate::error::{Error, Result};
use crate::Manager;
use crate::{ClientTls, ManagerOptions};

/// The variable holding the server's address (`unix:/…/agora.sock`, `host:port`).
pub const ADDRESS_ENV: &str = "AGORA_ADDRESS";
/// The variable holding the authkey itself.
pub const AUTHKEY_ENV: &str = "AGORA_AUTHKEY";
/// The variable naming a file that holds the authkey (read when [`AUTHKEY_ENV`] is
/// not set; one trailing newline is ignored).
pub const AUTHKEY_FILE_ENV: &str = "AGORA_AUTHKEY_FILE";

/// The address and authkey the environment names (else the defaults a zero-config
/// `agora serve` on this machine uses), or why there are none.
pub(crate) fn from_env() -> Result<(Address, Vec<u8>)> {
    let address = match std::env::var_os(ADDRESS_ENV) {
        None => DEFAULT_ADDRESS.parse().expect("the default address parses"),
        Some(address) => address
            .to_str()
            .ok_or_else(|| Error::Environment(format!("{ADDRESS_ENV} is not valid UTF-8")))?
            .parse::<Address>()
            .map_err(|e| Error::Environment(format!("{ADDRESS_ENV}: {e}")))?,
    };
    let read = |variable: &str, path: &Path| {
        keyfile::read(path)
            .map_err(|e| Error::Environment(format!("{variable}: cannot read authkey file {}: {e}", path.display())))
    };
    let authkey = match std::env::var_os(AUTHKEY_ENV) {
        Some(key) if key.is_empty() => return Err(Error::Environment(format!("{AUTHKEY_ENV} is empty"))),
        Some(key) => std::os::unix::ffi::OsStringExt::into_vec(key),
        None => match std::env::var_os(AUTHKEY_FILE_ENV) {
            Some(path) => read(AUTHKEY_FILE_ENV, Path::new(&path))?,
            None => {
                let generated = keyfile::default_path();
                if !generated.exists() {
                    return Err(Error::Environment(format!(
                        "no authkey: set {AUTHKEY_ENV} (the key) or {AUTHKEY_FILE_ENV} (a file holding it); a \
                         zero-config `agora serve` on this machine would have written its key to {}, which does \
                         not exist",
                        generated.display()
                    )));
                }
                read("the generated authkey", &generated)?
            }
        },
    };
    Ok((address, authkey))
}

/// The variable naming the CA bundle (PEM) that verifies a `tls://` server.
pub const TLS_CA_ENV: &str = "AGORA_TLS_CA";
/// The variables naming this client's certificate chain and key (PEM), for a server
/// that verifies clients (mutual TLS).
pub const TLS_CLIENT_CERT_ENV: &str = "AGORA_TLS_CLIENT_CERT";
/// See [`TLS_CLIENT_CERT_ENV`].
pub const TLS_CLIENT_KEY_ENV: &str = "AGORA_TLS_CLIENT_KEY";
/// The variable naming the server name to check the certificate for, instead of the
/// address's host.
pub const TLS_SERVER_NAME_ENV: &str = "AGORA_TLS_SERVER_NAME";

/// How to connect to `address` as the environment says: over TLS for a `tls://`
/// address, with the CA bundle (and client certificate) its variables name — the same
/// variables the `agora` admin commands and the Python package read.
pub(crate) fn options_from_env(address: &Address) -> Result<ManagerOptions> {
    let options = ManagerOptions::new();
    if !address.is_tls() {
        return Ok(options);
    }
    let Some(ca) = std::env::var_os(TLS_CA_ENV) else {
        return Err(Error::Environment(format!(
            "{address} is a tls:// address: set {TLS_CA_ENV} to the CA bundle (PEM) that verifies the server"
        )));
    };
    let mut tls = ClientTls::from_ca_file(ca)?;
    match (std::env::var_os(TLS_CLIENT_CERT_ENV), std::env::var_os(TLS_CLIENT_KEY_ENV)) {
        (Some(cert), Some(key)) => tls = tls.with_client_cert_files(cert, key)?,
        (None, None) => {}
        _ => {
            return Err(Error::Environment(format!(
                "{TLS_CLIENT_CERT_ENV} and {TLS_CLIENT_KEY_ENV} go together (a client certificate and its key)"
            )))
        }
    }
    if let Some(name) = std::env::var(TLS_SERVER_NAME_ENV).ok().filter(|n| !n.is_empty()) {
        tls = tls.server_name(name);
    }
    Ok(options.tls(tls))
}

impl Manager {
    /// Connects to the server the environment names: the address in `AGORA_ADDRESS`
    /// (else `127.0.0.1:50000`, where `agora serve` listens by default), the authkey in
    /// `AGORA_AUTHKEY`, else in the file `AGORA_AUTHKEY_FILE` names, else in the file a
    /// zero-config `agora serve` on this machine generated — so next to a server
    /// started with no configuration, this needs none either. It is also how a child
    /// process reaches the manager of the parent that spawned it with
    /// `agora::EmbeddedManager::command`. A `tls://` address is dialled with the CA
    /// bundle in `AGORA_TLS_CA` (and the client certificate in `AGORA_TLS_CLIENT_CERT`
    /// and `AGORA_TLS_CLIENT_KEY`, the name to check in `AGORA_TLS_SERVER_NAME`).
    ///
    /// Fails with [`Error::Environment`] (saying which variable and what to do) when
    /// no authkey is found or a variable is malformed, and as [`Manager::connect`]
    /// does otherwise.
    ///
    /// ```no_run
    /// # async fn child() -> agora_client::Result<()> {
    /// let manager = agora_client::Manager::from_env().await?;
    /// manager.value::<i64>("hits", &0).await?.add(&1).await?;
    /// # Ok(()) }
    /// ```
    pub async fn from_env() -> Result<Manager> {
        let (address, authkey) = from_env()?;
        let options = options_from_env(&address)?;
        Manager::connect_to_with(&address, authkey, options).await
    }
}

impl crate::blocking::Manager {
    /// Connects to the server named by the environment (`AGORA_ADDRESS`,
    /// `AGORA_AUTHKEY` or `AGORA_AUTHKEY_FILE`). The blocking form of
    /// [`crate::Manager::from_env`].
    pub fn from_env() -> Result<crate::blocking::Manager> {
        let (address, authkey) = from_env()?;
        let options = options_from_env(&address)?;
        crate::blocking::Manager::connect_to_with(&address, authkey, options)
    }
}
