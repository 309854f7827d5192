//! TLS to `tls://` servers: [`ClientTls`], the CA bundle that verifies the server
//! (and the client certificate some servers require), and the connection's TLS
//! handshake with its failures explained.
//!
//! rustls with the ring crypto provider, chosen explicitly: nothing here installs a
//! process-wide default, which stays the program's own. The authkey handshake runs
//! inside TLS, unchanged.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use agora_proto::flushing::WriteThrough;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;

use crate::error::{Error, Result};

/// How a client verifies a `tls://` server, and proves itself to one that asks for a
/// client certificate (mutual TLS). Set it with
/// [`ManagerOptions::tls`](crate::ManagerOptions::tls).
///
/// ```no_run
/// use agora_client::{ClientTls, Manager, ManagerOptions};
///
/// # async fn demo() -> agora_client::Result<()> {
/// let tls = ClientTls::from_ca_file("/etc/agora/tls/ca.pem")?
///     .with_client_cert_files("/etc/agora/tls/worker.pem", "/etc/agora/tls/worker-key.pem")?;
/// let manager =
///     Manager::connect_with("tls://agora.internal:50000", b"secret", ManagerOptions::new().tls(tls)).await?;
/// # let _ = manager; Ok(()) }
/// ```
#[derive(Clone)]
pub struct ClientTls {
    roots: Arc<RootCertStore>,
    config: Arc<ClientConfig>,
    server_name: Option<String>,
    with_client_cert: bool,
}

impl ClientTls {
    /// Trusts the CA certificates in `ca_pem` (PEM `BEGIN CERTIFICATE` blocks): the
    /// server's certificate must chain to one of them and carry the name dialled.
    pub fn from_ca_pem(ca_pem: &[u8]) -> Result<ClientTls> {
        let mut roots = RootCertStore::empty();
        for cert in certificates(ca_pem, "the CA bundle")? {
            roots.add(cert).map_err(|e| Error::Tls(format!("the CA bundle holds an unusable certificate: {e}")))?;
        }
        let roots = Arc::new(roots);
        let config = builder()?.with_root_certificates(roots.clone()).with_no_client_auth();
        Ok(ClientTls { roots, config: Arc::new(config), server_name: None, with_client_cert: false })
    }

    /// [`ClientTls::from_ca_pem`] with the PEM read from the file at `path`.
    pub fn from_ca_file(path: impl AsRef<Path>) -> Result<ClientTls> {
        ClientTls::from_ca_pem(&read(path.as_ref(), "CA bundle")?)
    }

    /// Presents this certificate chain (leaf first) and its private key to servers
    /// that require client certificates (`agora serve --tls-client-ca`).
    pub fn with_client_cert(mut self, cert_pem: &[u8], key_pem: &[u8]) -> Result<ClientTls> {
        let chain = certificates(cert_pem, "the client certificate")?;
        let key = PrivateKeyDer::from_pem_slice(key_pem)
            .map_err(|e| Error::Tls(format!("the client key is not a PEM private key: {e}")))?;
        let config = builder()?
            .with_root_certificates(self.roots.clone())
            .with_client_auth_cert(chain, key)
            .map_err(|e| Error::Tls(format!("the client certificate and key do not go together: {e}")))?;
        self.config = Arc::new(config);
        self.with_client_cert = true;
        Ok(self)
    }

    /// [`ClientTls::with_client_cert`] with the PEM read from files.
    pub fn with_client_cert_files(self, cert: impl AsRef<Path>, key: impl AsRef<Path>) -> Result<ClientTls> {
        let cert_pem = read(cert.as_ref(), "client certificate")?;
        let key_pem = read(key.as_ref(), "client key")?;
        self.with_client_cert(&cert_pem, &key_pem)
    }

    /// Checks the server's certificate for `name` instead of the host of the address
    /// (to dial an IP address whose certificate names a host, say).
    pub fn server_name(mut self, name: impl Into<String>) -> ClientTls {
        self.server_name = Some(name.into());
        self
    }

    /// Runs the TLS handshake over `tcp` with the server at `host`; the stream's
    /// writes are on the wire when they complete.
    pub(crate) async fn connect(&self, tcp: TcpStream, host: &str) -> Result<TlsStream> {
        let name = self.server_name.as_deref().unwrap_or(host);
        let server_name = ServerName::try_from(name.to_owned())
            .map_err(|_| Error::Tls(format!("'{name}' is not a valid server name to check the certificate for")))?;
        let connector = tokio_rustls::TlsConnector::from(self.config.clone());
        let stream = connector.connect(server_name, tcp).await.map_err(|e| Error::Tls(self.explain(&e, host)))?;
        Ok(TlsStream(WriteThrough::new(stream)))
    }

    /// Why a TLS session could not be set up, in words that say what to fix.
    pub(crate) fn explain(&self, e: &std::io::Error, host: &str) -> String {
        let name = self.server_name.as_deref().unwrap_or(host);
        let Some(tls) = e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) else {
            return format!("TLS handshake failed: {e}");
        };
        use rustls::{AlertDescription as Alert, CertificateError as Cert};
        match tls {
            rustls::Error::InvalidCertificate(Cert::UnknownIssuer | Cert::BadSignature) => format!(
                "the server's certificate is not signed by a CA in this client's CA bundle ({tls}): \
                 is the bundle the CA that issued the server's certificate?"
            ),
            rustls::Error::InvalidCertificate(Cert::NotValidForName | Cert::NotValidForNameContext { .. }) => format!(
                "the server's certificate is not valid for the name '{name}' ({tls}): connect by a name \
                 the certificate carries, or set the name to check with ClientTls::server_name"
            ),
            rustls::Error::InvalidCertificate(Cert::Expired | Cert::ExpiredContext { .. }) => {
                format!("the server's certificate has expired ({tls})")
            }
            rustls::Error::AlertReceived(Alert::CertificateRequired | Alert::HandshakeFailure)
                if !self.with_client_cert =>
            {
                format!(
                    "the server requires a client certificate (mutual TLS) and this client has none ({tls}): \
                     add one with ClientTls::with_client_cert"
                )
            }
            rustls::Error::AlertReceived(
                Alert::BadCertificate | Alert::UnknownCA | Alert::CertificateUnknown | Alert::DecryptError,
            ) => format!(
                "the server refused this client's certificate ({tls}): is it signed by the CA the server \
                 trusts for clients (--tls-client-ca)?"
            ),
            rustls::Error::InvalidMessage(_) => format!(
                "the server does not speak TLS here ({tls}): is this port a plain listener? Dial it without \
                 tls://, or the server's tls:// address"
            ),
            other => format!("TLS failed: {other}"),
        }
    }
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("ca_certificates", &self.roots.len())
            .field("client_certificate", &self.with_client_cert)
            .field("server_name", &self.server_name)
            .finish()
    }
}

impl PartialEq for ClientTls {
    /// The same settings object (clones of one [`ClientTls`]).
    fn eq(&self, other: &ClientTls) -> bool {
        Arc::ptr_eq(&self.config, &other.config) && self.server_name == other.server_name
    }
}

impl Eq for ClientTls {}

/// True if `e` is rustls's report of a TLS failure.
pub(crate) fn is_tls_error(e: &std::io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<rustls::Error>())
}

/// A rustls client config builder with the ring provider, chosen explicitly.
fn builder() -> Result<rustls::ConfigBuilder<ClientConfig, rustls::WantsVerifier>> {
    ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::Tls(format!("cannot read the {what} {}: {e}", path.display())))
}

fn certificates(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Tls(format!("{what} is not valid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(Error::Tls(format!("{what} holds no certificate (expected PEM 'BEGIN CERTIFICATE' blocks)")));
    }
    Ok(certs)
}

/// A client's TLS connection.
pub(crate) struct TlsStream(WriteThrough<tokio_rustls::client::TlsStream<TcpStream>>);

impl tokio::io::AsyncRead for TlsStream {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for TlsStream {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl Drop for TlsStream {
    /// Closes the session properly (TLS close_notify) where the socket takes it at once,
    /// so the server sees a clean close rather than a cut connection.
    fn drop(&mut self) {
        let (tcp, session) = self.0.get_mut().get_mut();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn tls_error(result: Result<ClientTls>) -> String {
        match result {
            Err(Error::Tls(message)) => message,
            other => panic!("expected a TLS error, got {other:?}"),
        }
    }

    #[test]
    fn unusable_pem_says_what_is_wrong() {
        let why = tls_error(ClientTls::from_ca_pem(b"no pem here"));
        assert!(why.contains("holds no certificate"), "{why}");
        let why = tls_error(ClientTls::from_ca_pem(b"-----BEGIN CERTIFICATE-----\n%%%\n-----END CERTIFICATE-----\n"));
        assert!(why.contains("not valid PEM"), "{why}");
        let why = tls_error(ClientTls::from_ca_file("/nonexistent/ca.pem"));
        assert!(why.contains("cannot read the CA bundle /nonexistent/ca.pem"), "{why}");
    }
}
