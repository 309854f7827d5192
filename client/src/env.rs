//! Connecting from the environment: how a child process finds the manager that
//! started it (and how any program finds a server its operator configured).
//!
//! [`Manager::from_env`] finds a server the way the `agora` admin commands do: the
//! address in [`ADDRESS_ENV`] (else `127.0.0.1:50000`; several addresses of one
//! cluster, comma separated, are tried in turn), the authkey in [`AUTHKEY_ENV`],
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

/// The variable holding the server's address (`unix:/…/agora.sock`, `host:port`),
/// or, for a cluster, several addresses separated by commas
/// (`127.0.0.1:7001,127.0.0.1:7002`; spaces around each are ignored), which
/// [`Manager::from_env`] tries in turn as [`Manager::connect_any`] does. A Unix socket
/// path that itself contains a comma is read as one address when the parts around
/// its commas are not all addresses.
pub const ADDRESS_ENV: &str = "AGORA_ADDRESS";
/// The variable holding the authkey itself.
pub const AUTHKEY_ENV: &str = "AGORA_AUTHKEY";
/// The variable naming a file that holds the authkey (read when [`AUTHKEY_ENV`] is
/// not set; one trailing newline is ignored).
pub const AUTHKEY_FILE_ENV: &str = "AGORA_AUTHKEY_FILE";

/// The addresses in the value of [`ADDRESS_ENV`]: one address, or several separated
/// by commas (each trimmed). A value with no comma is parsed as one address, exactly;
/// one with commas whose parts are not all addresses is taken whole if it is a Unix
/// socket path (which may contain commas), and is an error naming the bad part
/// otherwise.
pub(crate) fn parse_addresses(value: &str) -> Result<Vec<Address>> {
    let one = |value: &str| value.parse::<Address>().map_err(|e| Error::Environment(format!("{ADDRESS_ENV}: {e}")));
    if !value.contains(',') {
        return Ok(vec![one(value)?]);
    }
    let mut addresses = Vec::new();
    let mut bad = None;
    for (n, part) in value.split(',').map(str::trim).enumerate() {
        let parsed = if part.is_empty() {
            Err(format!("address {} of {value:?} is empty", n + 1))
        } else {
            part.parse::<Address>().map_err(|e| format!("address {} of {value:?}: {e}", n + 1))
        };
        match parsed {
            Ok(address) => addresses.push(address),
            Err(why) => {
                bad = Some(why);
                break;
            }
        }
    }
    match bad {
        None => Ok(addresses),
        Some(why) => match value.parse::<Address>() {
            Ok(path @ (Address::Unix(_) | Address::Abstract(_))) => Ok(vec![path]),
            _ => Err(Error::Environment(format!(
                "{ADDRESS_ENV}: {why} (give one address, or several separated by commas)"
            ))),
        },
    }
}

/// The addresses and authkey the environment names (else the defaults a zero-config
/// `agora serve` on this machine uses), or why there are none.
pub(crate) fn from_env() -> Result<(Vec<Address>, Vec<u8>)> {
    let addresses = match std::env::var_os(ADDRESS_ENV) {
        None => vec![DEFAULT_ADDRESS.parse().expect("the default address parses")],
        Some(address) => parse_addresses(
            address.to_str().ok_or_else(|| Error::Environment(format!("{ADDRESS_ENV} is not valid UTF-8")))?,
        )?,
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
    Ok((addresses, authkey))
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

/// How to connect to `addresses` as the environment says: over TLS if one is a
/// `tls://` address, with the CA bundle (and client certificate) its variables name —
/// the same variables the `agora` admin commands and the Python package read.
pub(crate) fn options_from_env(addresses: &[Address]) -> Result<ManagerOptions> {
    let options = ManagerOptions::new();
    let Some(address) = addresses.iter().find(|a| a.is_tls()) else {
        return Ok(options);
    };
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
    /// (else `127.0.0.1:50000`, where `agora serve` listens by default; several
    /// addresses of one cluster separated by commas, `127.0.0.1:7001,127.0.0.1:7002`,
    /// are tried in turn and reconnected to as with [`Manager::connect_any`]), the authkey in
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
        let (addresses, authkey) = from_env()?;
        let options = options_from_env(&addresses)?;
        Manager::connect_any(addresses, authkey, options).await
    }
}

impl crate::blocking::Manager {
    /// Connects to the server named by the environment (`AGORA_ADDRESS`, one address
    /// or several separated by commas; `AGORA_AUTHKEY` or `AGORA_AUTHKEY_FILE`). The
    /// blocking form of [`crate::Manager::from_env`].
    pub fn from_env() -> Result<crate::blocking::Manager> {
        let (addresses, authkey) = from_env()?;
        let options = options_from_env(&addresses)?;
        crate::blocking::Manager::connect_any(addresses, authkey, options)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(value: &str) -> Vec<String> {
        parse_addresses(value).unwrap().iter().map(ToString::to_string).collect()
    }

    fn error(value: &str) -> String {
        match parse_addresses(value) {
            Err(Error::Environment(message)) => message,
            other => panic!("expected an environment error for {value:?}, got {other:?}"),
        }
    }

    #[test]
    fn one_address_parses_as_before() {
        assert_eq!(parsed("127.0.0.1:7001"), ["127.0.0.1:7001"]);
        assert_eq!(parsed("unix:/run/agora.sock"), ["unix:/run/agora.sock"]);
        let expected = format!("{ADDRESS_ENV}: {}", "nope".parse::<Address>().unwrap_err());
        assert_eq!(error("nope"), expected, "the single-address message is unchanged");
    }

    #[test]
    fn several_addresses_are_separated_by_commas() {
        assert_eq!(parsed("127.0.0.1:7001,127.0.0.1:7002"), ["127.0.0.1:7001", "127.0.0.1:7002"]);
        assert_eq!(
            parsed(" 127.0.0.1:7001 , tcp://[::1]:7002,unix:/tmp/a.sock "),
            ["127.0.0.1:7001", "[::1]:7002", "unix:/tmp/a.sock"]
        );
    }

    #[test]
    fn a_bad_or_empty_part_is_named() {
        let message = error("127.0.0.1:7001,nope");
        assert!(message.starts_with(&format!("{ADDRESS_ENV}: address 2 of ")), "{message}");
        assert!(message.contains("missing port"), "{message}");
        let message = error("127.0.0.1:7001,,127.0.0.1:7002");
        assert!(message.contains("address 2 of") && message.contains("is empty"), "{message}");
        assert!(error("127.0.0.1:7001,").contains("address 2 of"));
    }

    #[test]
    fn a_socket_path_with_a_comma_is_one_address() {
        assert_eq!(parsed("unix:/tmp/a,b.sock"), ["unix:/tmp/a,b.sock"]);
        assert_eq!(parsed("/tmp/x,y/agora.sock"), ["unix:/tmp/x,y/agora.sock"]);
    }
}
