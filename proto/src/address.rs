//! The one address syntax every agora tool accepts.
//!
//! | written as | means |
//! |---|---|
//! | `host:port`, `tcp://host:port` | TCP (a name, IPv4, or IPv6 in brackets: `[::1]:50000`) |
//! | `tls://host:port` | TLS over TCP; the authkey handshake then runs inside it |
//! | `unix:/path/to.sock`, `/path/to.sock`, `./rel.sock` | a Unix-domain socket path |
//! | `unix:@name` | a Linux abstract socket |

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// Where `agora serve` listens, and where clients and admin commands connect, when
/// nothing says otherwise.
pub const DEFAULT_ADDRESS: &str = "127.0.0.1:50000";

/// Where a server listens or a client connects.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Address {
    /// TCP to `host:port` (host is a name or an IP; IPv6 without brackets).
    Tcp {
        /// Host name or IP literal.
        host: String,
        /// Port (0 asks the OS for a free one when listening).
        port: u16,
    },
    /// TLS over TCP to `host:port`: the server presents a certificate (for `host`, unless
    /// the client says which name to check), and the authkey handshake and everything
    /// after it run inside the TLS session.
    Tls {
        /// Host name or IP literal; also the name the server's certificate must carry.
        host: String,
        /// Port (0 asks the OS for a free one when listening).
        port: u16,
    },
    /// A Unix-domain socket at a filesystem path.
    Unix(PathBuf),
    /// A Linux abstract Unix socket name (without the leading NUL).
    Abstract(String),
}

/// Why an address did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid address '{input}': {reason} (expected host:port, [v6]:port, tcp://host:port, tls://host:port, unix:/path or unix:@name)"
)]
pub struct AddressError {
    input: String,
    reason: &'static str,
}

impl FromStr for Address {
    type Err = AddressError;

    fn from_str(input: &str) -> Result<Address, AddressError> {
        let err = |reason| AddressError { input: input.to_owned(), reason };
        if let Some(rest) = input.strip_prefix("unix:") {
            return match rest.strip_prefix('@') {
                Some("") => Err(err("empty abstract socket name")),
                Some(name) => Ok(Address::Abstract(name.to_owned())),
                None if rest.is_empty() => Err(err("empty socket path")),
                None => Ok(Address::Unix(PathBuf::from(rest))),
            };
        }
        if input.starts_with('/') || input.starts_with("./") || input.starts_with("../") {
            return Ok(Address::Unix(PathBuf::from(input)));
        }
        let (tls, hostport) = match input.strip_prefix("tls://") {
            Some(rest) => (true, rest),
            None => (false, input.strip_prefix("tcp://").unwrap_or(input)),
        };
        let (host, port) = hostport.rsplit_once(':').ok_or_else(|| err("missing port"))?;
        let host = match host.strip_prefix('[') {
            Some(v6) => v6.strip_suffix(']').ok_or_else(|| err("unclosed '['"))?,
            None if host.contains(':') => return Err(err("IPv6 addresses need brackets")),
            None => host,
        };
        if host.is_empty() {
            return Err(err("missing host"));
        }
        let port = port.parse().map_err(|_| err("port is not a number from 0 to 65535"))?;
        let host = host.to_owned();
        Ok(if tls { Address::Tls { host, port } } else { Address::Tcp { host, port } })
    }
}

impl Address {
    /// True for a `tls://` address.
    pub fn is_tls(&self) -> bool {
        matches!(self, Address::Tls { .. })
    }

    /// The host and port of a TCP or TLS address.
    pub fn host_port(&self) -> Option<(&str, u16)> {
        match self {
            Address::Tcp { host, port } | Address::Tls { host, port } => Some((host, *port)),
            Address::Unix(_) | Address::Abstract(_) => None,
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Tcp { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            Address::Tcp { host, port } => write!(f, "{host}:{port}"),
            Address::Tls { host, port } if host.contains(':') => write!(f, "tls://[{host}]:{port}"),
            Address::Tls { host, port } => write!(f, "tls://{host}:{port}"),
            Address::Unix(path) => write!(f, "unix:{}", path.display()),
            Address::Abstract(name) => write!(f, "unix:@{name}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(host: &str, port: u16) -> Address {
        Address::Tcp { host: host.into(), port }
    }

    #[test]
    fn every_documented_form_parses_and_displays_back() {
        for (text, addr, shown) in [
            ("127.0.0.1:50000", tcp("127.0.0.1", 50000), "127.0.0.1:50000"),
            ("tcp://localhost:1", tcp("localhost", 1), "localhost:1"),
            ("[::1]:7", tcp("::1", 7), "[::1]:7"),
            ("unix:/tmp/a.sock", Address::Unix("/tmp/a.sock".into()), "unix:/tmp/a.sock"),
            ("/tmp/b.sock", Address::Unix("/tmp/b.sock".into()), "unix:/tmp/b.sock"),
            ("unix:@agora", Address::Abstract("agora".into()), "unix:@agora"),
            ("tls://localhost:1", Address::Tls { host: "localhost".into(), port: 1 }, "tls://localhost:1"),
            ("tls://[::1]:7", Address::Tls { host: "::1".into(), port: 7 }, "tls://[::1]:7"),
        ] {
            let parsed: Address = text.parse().unwrap();
            assert_eq!(parsed, addr);
            assert_eq!(parsed.to_string(), shown);
            assert_eq!(shown.parse::<Address>().unwrap(), addr);
        }
    }

    #[test]
    fn bad_addresses_say_why() {
        for (text, reason) in [
            ("localhost", "missing port"),
            ("::1:80", "IPv6 addresses need brackets"),
            ("[::1:80", "unclosed '['"),
            (":80", "missing host"),
            ("host:99999", "port is not a number from 0 to 65535"),
            ("unix:", "empty socket path"),
            ("unix:@", "empty abstract socket name"),
            ("tls://localhost", "missing port"),
            ("tls://::1:80", "IPv6 addresses need brackets"),
            ("tls://:80", "missing host"),
        ] {
            let err = text.parse::<Address>().unwrap_err();
            assert_eq!(err.reason, reason, "{text}");
            assert!(err.to_string().contains(text));
        }
    }
}
