//! TLS in process (the `tls` feature): rustls with its *ring* provider.
//!
//! [`Tls`] holds the server's rustls configuration; [`Server::tls`] serves
//! `https://` and `wss://` with it on the listener's port. The handshake
//! runs in the connection's own task, under the handshake deadline
//! ([`Server::handshake_timeout`]), which counts from accept until the first
//! request head is complete: a client that connects and sends nothing, or
//! part of a `ClientHello`, is dropped at the deadline. A connection whose
//! first byte cannot start a TLS record (plain HTTP on the TLS port) gets a
//! `400` in plain text, "this port speaks TLS", and is closed.
//!
//! The configuration can be replaced while serving ([`Tls::reload_pem_files`],
//! [`Tls::replace`]): new connections get the new certificate, open ones
//! keep the session they have.
//!
//! Why *ring*: it builds with a C compiler alone on every platform rustls
//! supports, in seconds; aws-lc-rs (rustls' default) needs CMake on some
//! targets (and Go for its FIPS build) and takes minutes to compile. Both
//! are maintained and fast; an application that wants aws-lc-rs builds its
//! own [`rustls::ServerConfig`] and hands it to [`Tls::new`].
//!
//! ALPN offers `http/1.1` (WebSocket over HTTP/2, RFC 8441, would add
//! `h2` here).
//!
//! [`Server::tls`]: crate::Server::tls
//! [`Server::handshake_timeout`]: crate::Server::handshake_timeout

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use bytes::BytesMut;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::head::Prefixed;

pub use rustls;

/// A TLS connection over an accepted stream (its first bytes already read,
/// hence `Prefixed`).
pub(crate) type TlsStream<S> = tokio_rustls::server::TlsStream<Prefixed<S>>;

/// The protocols offered in ALPN, most preferred first.
const ALPN: &[&[u8]] = &[b"http/1.1"];

/// The first byte of a TLS handshake record (RFC 8446 §5.1).
const HANDSHAKE_RECORD: u8 = 0x16;

/// The answer to plain HTTP on the TLS port.
const NOT_TLS: &[u8] = b"HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\n\
content-length: 45\r\nconnection: close\r\n\r\nthis port speaks TLS: use https:// or wss://\n";

/// A server's TLS configuration, shared by its clones: replacing it (a
/// certificate renewed) changes it for every server it was given to.
#[derive(Clone)]
pub struct Tls {
    current: Arc<RwLock<Arc<ServerConfig>>>,
}

impl Tls {
    /// Serves with `config` as it is (its ALPN protocols included; add
    /// `http/1.1`).
    pub fn new(config: Arc<ServerConfig>) -> Self {
        Self {
            current: Arc::new(RwLock::new(config)),
        }
    }

    /// A configuration from a PEM certificate chain (the server's
    /// certificate first) and a PEM private key (PKCS#8, PKCS#1 or SEC1),
    /// with rustls' safe defaults (TLS 1.3 and 1.2), no client
    /// certificates, and ALPN `http/1.1`.
    ///
    /// # Errors
    /// If either holds no valid PEM item of its kind, or the key does not
    /// match the certificate.
    pub fn from_pem(cert_chain: &[u8], key: &[u8]) -> Result<Self, TlsError> {
        Ok(Self::new(Arc::new(server_config(cert_chain, key)?)))
    }

    /// [`Tls::from_pem`] with the contents of two files.
    ///
    /// # Errors
    /// If a file cannot be read, or as for [`Tls::from_pem`].
    pub fn from_pem_files(cert_chain: &Path, key: &Path) -> Result<Self, TlsError> {
        Ok(Self::new(Arc::new(config_from_files(cert_chain, key)?)))
    }

    /// Reads the two files again and serves new connections with them
    /// (a renewed certificate). On any error the current configuration
    /// stays.
    ///
    /// # Errors
    /// As for [`Tls::from_pem_files`].
    pub fn reload_pem_files(&self, cert_chain: &Path, key: &Path) -> Result<(), TlsError> {
        let config = config_from_files(cert_chain, key)?;
        self.replace(Arc::new(config));
        Ok(())
    }

    /// Serves new connections with `config`; open ones are not affected.
    pub fn replace(&self, config: Arc<ServerConfig>) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = config;
    }

    /// The configuration new connections get.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The TLS handshake on an accepted stream: `Err` with a one-line
    /// reason if the peer closed, failed the handshake, or spoke plain
    /// HTTP (answered `400` first). The caller bounds it in time.
    pub(crate) async fn accept<S>(&self, mut io: S) -> Result<TlsStream<S>, &'static str>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut first = BytesMut::with_capacity(512);
        match io.read_buf(&mut first).await {
            Ok(0) | Err(_) => return Err("closed before a TLS handshake"),
            Ok(_) => {}
        }
        if first[0] != HANDSHAKE_RECORD {
            let _ = io.write_all(NOT_TLS).await;
            let _ = io.shutdown().await;
            // Read what the client sent on (its request head, a body),
            // so that closing does not reset the connection before it read
            // the answer; the caller's deadline bounds this.
            let mut rest = [0u8; 1024];
            for _ in 0..64 {
                match io.read(&mut rest).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            return Err("plain HTTP on the TLS port");
        }
        let acceptor = tokio_rustls::TlsAcceptor::from(self.config());
        acceptor
            .accept(Prefixed::new(first.freeze(), io))
            .await
            .map_err(|_| "TLS handshake failed")
    }
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let config = self.config();
        f.debug_struct("Tls")
            .field("alpn_protocols", &config.alpn_protocols)
            .finish_non_exhaustive()
    }
}

/// Why a TLS configuration could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A certificate or key file could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The certificate chain holds no valid PEM certificate, or a
    /// malformed one.
    #[error("no valid PEM certificate in the certificate chain")]
    Certificate(#[source] rustls_pki_types::pem::Error),
    /// The key holds no valid PEM private key.
    #[error("no valid PEM private key (PKCS#8, PKCS#1 or SEC1)")]
    Key(#[source] rustls_pki_types::pem::Error),
    /// rustls refused the pair (an unsupported key type, or a key that
    /// does not match the certificate).
    #[error("the certificate and key were refused")]
    Rustls(#[source] rustls::Error),
}

fn config_from_files(cert_chain: &Path, key: &Path) -> Result<ServerConfig, TlsError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            path: path.to_owned(),
            source,
        })
    };
    server_config(&read(cert_chain)?, &read(key)?)
}

/// A server configuration with the *ring* provider and rustls' safe
/// defaults, no client authentication, ALPN `http/1.1`.
fn server_config(cert_chain: &[u8], key: &[u8]) -> Result<ServerConfig, TlsError> {
    let certs = CertificateDer::pem_slice_iter(cert_chain)
        .collect::<Result<Vec<_>, _>>()
        .map_err(TlsError::Certificate)?;
    if certs.is_empty() {
        return Err(TlsError::Certificate(
            rustls_pki_types::pem::Error::NoItemsFound,
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(key).map_err(TlsError::Key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Rustls)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(TlsError::Rustls)?;
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_pem_is_refused_with_a_reason() {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let (pem, key) = (cert.cert.pem(), cert.signing_key.serialize_pem());
        assert!(Tls::from_pem(pem.as_bytes(), key.as_bytes()).is_ok());
        let e = Tls::from_pem(b"", key.as_bytes()).unwrap_err();
        assert!(matches!(e, TlsError::Certificate(_)), "{e}");
        let e = Tls::from_pem(pem.as_bytes(), pem.as_bytes()).unwrap_err();
        assert!(matches!(e, TlsError::Key(_)), "{e}");
        let other = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let e = Tls::from_pem(pem.as_bytes(), other.signing_key.serialize_pem().as_bytes())
            .unwrap_err();
        assert!(matches!(e, TlsError::Rustls(_)), "{e}");
        let e =
            Tls::from_pem_files(Path::new("/nonexistent/cert.pem"), Path::new("/x")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/cert.pem"), "{e}");
    }

    #[test]
    fn not_tls_answer_is_well_formed() {
        let text = std::str::from_utf8(NOT_TLS).unwrap();
        let (_, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(text.contains(&format!("content-length: {}\r\n", body.len())));
    }
}
