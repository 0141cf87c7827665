//! TLS in process, with a CA and certificates made here: `wss://` and
//! `https://` verified against the CA, the handshake deadline, plain HTTP on
//! the TLS port, and a certificate replaced while connections stay open.
//! Independent interop: the client here is tokio-tungstenite over
//! tokio-rustls on purpose (not wharf's client, tested in `client`), so that
//! a bug shared by wharf's client and server cannot hide.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::ClientConfig;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use wharf::tls::Tls;

use crate::util::{echo_server, start, within};

/// A test CA, and server certificates signed by it.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "wharf test CA");
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Self { issuer }
    }

    /// A certificate for `localhost` and `127.0.0.1`: its PEM, its key's
    /// PEM, and its DER (what a client sees).
    fn leaf(&self) -> (String, String, CertificateDer<'static>) {
        let key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().clone())
    }

    /// A client that trusts this CA only, offering ALPN `http/1.1`.
    fn client(&self) -> TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.issuer.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        TlsConnector::from(Arc::new(config))
    }
}

/// An echo server with TLS (and `handshake_timeout`), and its TLS handle.
async fn tls_echo(ca: &Ca, handshake_timeout: Duration) -> (SocketAddr, Tls) {
    let (pem, key, _) = ca.leaf();
    let tls = Tls::from_pem(pem.as_bytes(), key.as_bytes()).unwrap();
    let (server, _ended) = echo_server();
    let server = server
        .handshake_timeout(handshake_timeout)
        .tls(Some(tls.clone()));
    (start(server).await, tls)
}

async fn tls_connect(addr: SocketAddr, client: &TlsConnector) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    client.connect(name, tcp).await.expect("TLS handshake")
}

async fn wss(addr: SocketAddr, client: &TlsConnector) -> WebSocketStream<TlsStream<TcpStream>> {
    let tls = tls_connect(addr, client).await;
    let (ws, res) = tokio_tungstenite::client_async("wss://localhost/echo", tls)
        .await
        .expect("wss handshake");
    assert_eq!(res.status(), 101);
    ws
}

async fn echoes(ws: &mut WebSocketStream<TlsStream<TcpStream>>, msg: Message) {
    ws.send(msg.clone()).await.unwrap();
    let back = within("echo", ws.next()).await.unwrap().unwrap();
    assert_eq!(back, msg);
}

/// The server's certificate, as a client sees it.
fn served_cert(ws: &WebSocketStream<TlsStream<TcpStream>>) -> CertificateDer<'static> {
    let (_, session) = ws.get_ref().get_ref();
    session.peer_certificates().unwrap()[0].clone()
}

#[tokio::test]
async fn wss_and_https_verify_against_the_test_ca() {
    let ca = Ca::new();
    let (addr, _tls) = tls_echo(&ca, Duration::from_secs(10)).await;
    let client = ca.client();

    let mut ws = wss(addr, &client).await;
    let (_, session) = ws.get_ref().get_ref();
    assert_eq!(session.alpn_protocol(), Some(&b"http/1.1"[..]));
    echoes(&mut ws, Message::text("over TLS")).await;
    // Larger than a TLS record and than the socket buffers: written in
    // pieces, each flushed.
    let big: Vec<u8> = (0..900_000u32).map(|i| (i % 251) as u8).collect();
    echoes(&mut ws, Message::binary(big)).await;
    ws.close(None).await.unwrap();

    // Plain HTTP over TLS goes to the request handler (through hyper).
    let mut https = tls_connect(addr, &client).await;
    https
        .write_all(b"GET / HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    within("https response", https.read_to_end(&mut response))
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with("okay"), "{text}");

    // A client that does not trust the CA gets no session.
    let stranger = Ca::new().client();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    assert!(stranger.connect(name, tcp).await.is_err());
}

/// Reads until the server closes; how long that took.
async fn closed_after(stream: &mut TcpStream) -> Duration {
    let t0 = Instant::now();
    let mut buf = [0u8; 256];
    loop {
        match within("server closes", stream.read(&mut buf)).await {
            Ok(0) | Err(_) => return t0.elapsed(),
            Ok(_) => {}
        }
    }
}

#[tokio::test]
async fn the_tls_handshake_is_bounded_by_the_handshake_timeout() {
    let ca = Ca::new();
    let deadline = Duration::from_millis(400);
    let (addr, _tls) = tls_echo(&ca, deadline).await;

    // Connects and sends nothing.
    let mut silent = TcpStream::connect(addr).await.unwrap();
    // Sends the first bytes of a ClientHello and stops.
    let mut partial = TcpStream::connect(addr).await.unwrap();
    partial
        .write_all(&[
            0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
        ])
        .await
        .unwrap();
    let (a, b) = tokio::join!(closed_after(&mut silent), closed_after(&mut partial));
    for (what, took) in [("silent", a), ("partial ClientHello", b)] {
        assert!(
            took >= deadline - Duration::from_millis(50) && took < deadline * 4,
            "{what}: closed after {took:?}, deadline {deadline:?}"
        );
    }
    // The server serves on.
    echoes(
        &mut wss(addr, &ca.client()).await,
        Message::text("still here"),
    )
    .await;
}

#[tokio::test]
async fn plain_http_on_the_tls_port_is_refused_and_the_server_serves_on() {
    let ca = Ca::new();
    let (addr, _tls) = tls_echo(&ca, Duration::from_secs(10)).await;
    for request in [
        &b"GET / HTTP/1.1\r\nhost: localhost\r\n\r\n"[..],
        b"GET /chat HTTP/1.1\r\nhost: localhost\r\nupgrade: websocket\r\nconnection: upgrade\r\n\
          sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n",
    ] {
        let mut plain = TcpStream::connect(addr).await.unwrap();
        plain.write_all(request).await.unwrap();
        let mut response = Vec::new();
        within("refusal", plain.read_to_end(&mut response))
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&response);
        assert!(text.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{text}");
        assert!(
            text.ends_with("\r\n\r\nthis port speaks TLS: use https:// or wss://\n"),
            "{text}"
        );
    }
    echoes(
        &mut wss(addr, &ca.client()).await,
        Message::text("still here"),
    )
    .await;
}

/// A fresh directory for this test's files.
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wharf-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn a_reloaded_certificate_serves_new_connections_and_spares_open_ones() {
    let ca = Ca::new();
    let dir = temp_dir("tls-reload");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let (pem_a, key_a, der_a) = ca.leaf();
    std::fs::write(&cert, &pem_a).unwrap();
    std::fs::write(&key, &key_a).unwrap();
    let tls = Tls::from_pem_files(&cert, &key).unwrap();
    let (server, _ended) = echo_server();
    let addr = start(server.tls(Some(tls.clone()))).await;
    let client = ca.client();

    let mut old = wss(addr, &client).await;
    assert_eq!(served_cert(&old), der_a);

    let (pem_b, key_b, der_b) = ca.leaf();
    std::fs::write(&cert, &pem_b).unwrap();
    std::fs::write(&key, &key_b).unwrap();
    tls.reload_pem_files(&cert, &key).unwrap();
    let mut new = wss(addr, &client).await;
    assert_eq!(served_cert(&new), der_b);
    echoes(&mut new, Message::text("new")).await;
    echoes(&mut old, Message::text("old, still open")).await;

    // A bad file is refused, and the certificate in use stays.
    std::fs::write(&key, "not a key").unwrap();
    assert!(tls.reload_pem_files(&cert, &key).is_err());
    std::fs::write(&cert, &pem_a).unwrap();
    std::fs::write(&key, &key_b).unwrap();
    assert!(
        tls.reload_pem_files(&cert, &key).is_err(),
        "a key for another certificate"
    );
    let mut third = wss(addr, &client).await;
    assert_eq!(served_cert(&third), der_b);
    echoes(&mut third, Message::text("third")).await;
    echoes(&mut old, Message::text("old, still open")).await;
    let _ = std::fs::remove_dir_all(&dir);
}
