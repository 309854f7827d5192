//! TLS on `tls://` listeners: the certificate and key, client-certificate
//! verification (mutual TLS), reloading them, and the encrypted connection.
//!
//! Owns everything TLS on the server side, so no other module knows it exists beyond
//! one [`Transport`]: [`ServerTls`] holds the current rustls configuration, built from
//! PEM files ([`TlsConfig`]) with the ring crypto provider chosen explicitly — never
//! a process-wide default, which stays the embedding program's to choose.
//! [`ServerTls::reload`] reads the files again and swaps the configuration in one
//! step: connections already open keep the session they negotiated, new ones get the
//! new certificate (the binary calls it on SIGHUP); a reload that fails changes
//! nothing.
//!
//! [`ServerTls::accept`] wraps an accepted TCP socket in a [`TlsTransport`] at once,
//! and the TLS handshake runs when the connection first reads or writes: that is,
//! inside the authkey handshake, under the same handshake timeout and the same bound
//! on handshakes in progress (`connection.rs`), so a peer that opens sockets and
//! never finishes TLS is treated exactly like one that never answers the challenge.
//! The authkey handshake then runs inside TLS, unchanged.
//!
//! [`PeerTls`] is TLS on a cluster's peer link (`--peer-tls-ca`): the peer listener
//! presents the node's certificate, and a node that connects checks it against the
//! peers' CA bundle and the host name it dialled; the cluster key's challenge then
//! runs inside.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{ready, Context, Poll};

use agora_proto::flushing::WriteThrough;
use agora_proto::Address;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::listener::Transport;

/// Where a TLS listener's certificate, key and (for mutual TLS) client CA are: PEM
/// files, read when the server starts and again on each [`ServerTls::reload`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// The certificate chain, leaf first (`--tls-cert`).
    pub cert: PathBuf,
    /// The private key of the leaf certificate: PKCS#8, PKCS#1 (RSA) or SEC1 (EC)
    /// (`--tls-key`).
    pub key: PathBuf,
    /// If set, clients must present a certificate signed by one of these CAs
    /// (`--tls-client-ca`); otherwise clients present none.
    pub client_ca: Option<PathBuf>,
}

/// Why the TLS configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {what} {path}: {source}")]
    Read {
        /// Which file it is (`TLS certificate`, `TLS key`, `TLS client CA`).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// A file is not the PEM it should be, or holds nothing usable.
    #[error("{what} {path}: {reason}")]
    Pem {
        /// Which file it is.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The files are readable but rustls refuses them together (e.g. the key does not
    /// belong to the certificate).
    #[error("TLS certificate {cert} and key {key}: {reason}")]
    Rejected {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls's reason.
        reason: String,
    },
}

/// A TLS listener's current configuration, swapped whole by [`ServerTls::reload`].
#[derive(Debug)]
pub struct ServerTls {
    files: TlsConfig,
    current: RwLock<Arc<ServerConfig>>,
}

impl ServerTls {
    /// Reads the certificate, key and client CA named by `files`.
    pub fn load(files: TlsConfig) -> Result<ServerTls, TlsError> {
        let config = build(&files)?;
        Ok(ServerTls { files, current: RwLock::new(Arc::new(config)) })
    }

    /// The files this configuration is read from.
    pub fn files(&self) -> &TlsConfig {
        &self.files
    }

    /// Reads the files again and, if they make a valid configuration, uses it for every
    /// connection accepted from now on. Open connections are not touched. On error the
    /// old configuration stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = Arc::new(build(&self.files)?);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = config;
        Ok(())
    }

    /// Wraps an accepted socket; the TLS handshake runs on its first read or write.
    pub fn accept(&self, tcp: TcpStream) -> TlsTransport {
        let config = self.current.read().unwrap_or_else(|e| e.into_inner()).clone();
        let local = tcp.peer_is_local();
        let local_address = tcp.local_address().and_then(|a| {
            let (host, port) = a.host_port()?;
            Some(Address::Tls { host: host.to_owned(), port })
        });
        let accepting = tokio_rustls::TlsAcceptor::from(config).accept(tcp);
        TlsTransport { state: State::Handshaking(Box::new(accepting)), local, local_address }
    }
}

/// TLS on a cluster's peer link: what a node presents to the peers that connect to it
/// (its `--tls-cert`, no client certificate asked: the cluster key authenticates
/// them), and the CAs it checks the peers it connects to against (`--peer-tls-ca`).
pub struct PeerTls {
    server: Option<ServerTls>,
    connector: RwLock<tokio_rustls::TlsConnector>,
    ca: PathBuf,
}

impl std::fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerTls").field("ca", &self.ca).field("serves", &self.server.is_some()).finish()
    }
}

impl PeerTls {
    /// A node's: it serves with `cert` and `key` and checks its peers against `ca`.
    pub fn node(cert: &Path, key: &Path, ca: &Path) -> Result<PeerTls, TlsError> {
        let server = ServerTls::load(TlsConfig { cert: cert.to_owned(), key: key.to_owned(), client_ca: None })?;
        Ok(PeerTls { server: Some(server), ..PeerTls::client(ca)? })
    }

    /// `agora cluster`'s: it only connects, checking the node against `ca`.
    pub fn client(ca: &Path) -> Result<PeerTls, TlsError> {
        Ok(PeerTls { server: None, connector: RwLock::new(connector(ca)?), ca: ca.to_owned() })
    }

    /// Reads the certificate, key and CA bundle again (SIGHUP), for connections made
    /// from now on; on error nothing changes.
    pub fn reload(&self) -> Result<(), TlsError> {
        let connector = connector(&self.ca)?;
        if let Some(server) = &self.server {
            server.reload()?;
        }
        *self.connector.write().unwrap_or_else(|e| e.into_inner()) = connector;
        Ok(())
    }

    /// Wraps a socket a peer connected with; the TLS handshake runs on its first read
    /// or write. Fails for `agora cluster`'s, which has no certificate to serve with.
    pub fn accept(&self, tcp: TcpStream) -> io::Result<TlsTransport> {
        match &self.server {
            Some(server) => Ok(server.accept(tcp)),
            None => Err(io::Error::new(io::ErrorKind::Unsupported, "no certificate to serve the peer link with")),
        }
    }

    /// Runs the TLS handshake on a socket connected to the peer at `host`, checking
    /// that its certificate names `host` and comes from the peers' CA.
    pub async fn connect(
        &self,
        host: &str,
        tcp: TcpStream,
    ) -> io::Result<WriteThrough<tokio_rustls::client::TlsStream<TcpStream>>> {
        let name = rustls::pki_types::ServerName::try_from(host.to_owned())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("peer TLS: {host:?}: {e}")))?;
        let connector = self.connector.read().unwrap_or_else(|e| e.into_inner()).clone();
        let stream = connector.connect(name, tcp).await.map_err(|e| {
            io::Error::new(e.kind(), format!("peer TLS to {host} (checked against {}): {e}", self.ca.display()))
        })?;
        Ok(WriteThrough::new(stream))
    }
}

/// A TLS connector that trusts the CAs in `ca` (PEM), with the ring provider.
fn connector(ca: &Path) -> Result<tokio_rustls::TlsConnector, TlsError> {
    let what = "peer TLS CA";
    let mut roots = RootCertStore::empty();
    for cert in read_certificates(what, ca)? {
        roots.add(cert).map_err(|e| pem_error(what, ca, e.to_string()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| pem_error(what, ca, e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// Builds a rustls server configuration from the PEM files, with the ring provider.
fn build(files: &TlsConfig) -> Result<ServerConfig, TlsError> {
    let chain = read_certificates("TLS certificate", &files.cert)?;
    let key = read_key(&files.key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let rejected = |e: rustls::Error| TlsError::Rejected {
        cert: files.cert.clone(),
        key: files.key.clone(),
        reason: e.to_string(),
    };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(rejected)?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let what = "TLS client CA";
            let mut roots = RootCertStore::empty();
            for cert in read_certificates(what, path)? {
                roots.add(cert).map_err(|e| pem_error(what, path, e.to_string()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| pem_error(what, path, e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    builder.with_single_cert(chain, key).map_err(rejected)
}

fn pem_error(what: &'static str, path: &Path, reason: String) -> TlsError {
    TlsError::Pem { what, path: path.to_owned(), reason }
}

fn read_pem(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { what, path: path.to_owned(), source })
}

fn read_certificates(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read_pem(what, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(what, path, format!("not valid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(pem_error(what, path, "no certificate in it (expected PEM 'BEGIN CERTIFICATE' blocks)".into()));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let what = "TLS key";
    let pem = read_pem(what, path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => pem_error(
            what,
            path,
            "no private key in it (expected a PEM 'PRIVATE KEY', 'RSA PRIVATE KEY' or 'EC PRIVATE KEY' block)".into(),
        ),
        other => pem_error(what, path, format!("not valid PEM: {other}")),
    })
}

/// One connection to a TLS listener: the TLS handshake, then the encrypted stream.
pub struct TlsTransport {
    state: State,
    /// Whether the peer is on this machine (asked of the socket before wrapping it).
    local: bool,
    /// The listener's address as a client dials it (`tls://…`).
    local_address: Option<Address>,
}

enum State {
    /// The TLS handshake has not finished yet.
    Handshaking(Box<tokio_rustls::Accept<TcpStream>>),
    /// The session is up; writes go through to the socket when they complete.
    Open(Box<WriteThrough<tokio_rustls::server::TlsStream<TcpStream>>>),
    /// The handshake failed: every later read or write fails the same way.
    Failed(io::ErrorKind, String),
}

impl TlsTransport {
    /// Drives the TLS handshake to its end; then the session is open.
    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let outcome = match &mut self.state {
            State::Open(_) => return Poll::Ready(Ok(())),
            State::Failed(kind, why) => return Poll::Ready(Err(io::Error::new(*kind, why.clone()))),
            State::Handshaking(accepting) => ready!(Pin::new(&mut **accepting).poll(cx)),
        };
        match outcome {
            Ok(stream) => {
                self.state = State::Open(Box::new(WriteThrough::new(stream)));
                Poll::Ready(Ok(()))
            }
            Err(e) => {
                let why = format!("TLS handshake failed: {e}");
                self.state = State::Failed(e.kind(), why.clone());
                Poll::Ready(Err(io::Error::new(e.kind(), why)))
            }
        }
    }

    /// The open session, once the handshake is done.
    fn poll_open(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Pin<&mut OpenStream>>> {
        ready!(self.poll_handshake(cx))?;
        match &mut self.state {
            State::Open(stream) => Poll::Ready(Ok(Pin::new(&mut **stream))),
            _ => unreachable!("poll_handshake returned Ok only with the session open"),
        }
    }

    fn tcp(&self) -> Option<&TcpStream> {
        match &self.state {
            State::Open(stream) => Some(stream.get_ref().get_ref().0),
            State::Handshaking(accepting) => accepting.get_ref(),
            State::Failed(..) => None,
        }
    }
}

type OpenStream = WriteThrough<tokio_rustls::server::TlsStream<TcpStream>>;

impl AsyncRead for TlsTransport {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_open(cx))?.poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsTransport {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        ready!(self.poll_open(cx))?.poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_open(cx))?.poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_open(cx))?.poll_shutdown(cx)
    }
}

impl Drop for TlsTransport {
    /// Says goodbye properly (TLS close_notify) where the socket takes it at once, so a
    /// peer can tell the server closing from a connection cut off (Python's `ssl`
    /// reports an EOF without it as a protocol violation).
    fn drop(&mut self) {
        if let State::Open(stream) = &mut self.state {
            let (tcp, session) = stream.get_mut().get_mut();
            session.send_close_notify();
            let mut records = Vec::new();
            while session.wants_write() {
                if session.write_tls(&mut records).is_err() {
                    return;
                }
            }
            let _ = tcp.try_write(&records);
        }
    }
}

impl Transport for TlsTransport {
    fn before_read(&self) {
        if let Some(tcp) = self.tcp() {
            tcp.before_read();
        }
    }

    fn peer_is_local(&self) -> bool {
        self.local
    }

    fn local_address(&self) -> Option<Address> {
        self.local_address.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_in(dir: &Path) -> TlsConfig {
        TlsConfig { cert: dir.join("cert.pem"), key: dir.join("key.pem"), client_ca: None }
    }

    /// A reload reads the files again: one that no longer parses is refused, names
    /// the file, and leaves the configuration as it was; a good one is taken.
    #[test]
    fn a_peer_tls_reload_takes_good_files_and_refuses_bad_ones() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        let (ca, cert_file, key_file) = (dir.path().join("ca.pem"), dir.path().join("c.pem"), dir.path().join("k.pem"));
        for (path, pem) in [(&ca, cert.pem()), (&cert_file, cert.pem()), (&key_file, key.serialize_pem())] {
            std::fs::write(path, pem).unwrap();
        }
        let tls = PeerTls::node(&cert_file, &key_file, &ca).unwrap();
        std::fs::write(&ca, "not a certificate").unwrap();
        let err = tls.reload().unwrap_err().to_string();
        assert!(err.contains("peer TLS CA") && err.contains("ca.pem"), "{err}");
        std::fs::write(&key_file, "not a key").unwrap();
        std::fs::write(&ca, cert.pem()).unwrap();
        assert!(tls.reload().unwrap_err().to_string().contains("TLS key"));
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        tls.reload().unwrap();
        assert!(PeerTls::client(&dir.path().join("missing.pem")).unwrap_err().to_string().contains("missing.pem"));
    }

    #[test]
    fn unreadable_and_malformed_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let files = config_in(dir.path());
        let err = ServerTls::load(files.clone()).unwrap_err().to_string();
        assert!(err.contains("cannot read TLS certificate") && err.contains("cert.pem"), "{err}");
        std::fs::write(&files.cert, "not pem at all").unwrap();
        let err = ServerTls::load(files.clone()).unwrap_err().to_string();
        assert!(err.contains("no certificate in it"), "{err}");
        std::fs::write(&files.cert, "-----BEGIN CERTIFICATE-----\n%%%\n-----END CERTIFICATE-----\n").unwrap();
        let err = ServerTls::load(files.clone()).unwrap_err().to_string();
        assert!(err.contains("not valid PEM"), "{err}");
    }
}
