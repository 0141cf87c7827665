//! wharf's client (`wharf::connect`, `wharf::Connector`) against real
//! servers: wharf's own (plain, with permessage-deflate in every mode, over
//! TLS with a certificate made here), an independent one (Python's
//! `websockets`), through a real HTTP CONNECT proxy (Debian's tinyproxy),
//! and refusals.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use http::StatusCode;
use wharf::{CloseCode, ConnectErrorKind, Connector, DeflateConfig, Disconnect, Message, Refuse};

use crate::util::{echo_server, start, within};

/// Sends each message and expects it back.
async fn echoes(conn: &mut wharf::Connection, messages: &[Message]) {
    for m in messages {
        conn.send(m.clone()).await.unwrap();
        let back = within("echo", conn.recv()).await.expect("a message back");
        assert_eq!(&back, m);
    }
}

fn messages() -> Vec<Message> {
    vec![
        Message::from("hello"),
        Message::from("a text long enough to be compressed, ".repeat(40)),
        Message::from(vec![0u8; 70_000]),
        Message::from((0..=255u8).cycle().take(100_000).collect::<Vec<u8>>()),
        Message::from(""),
    ]
}

#[tokio::test]
async fn echoes_with_a_wharf_server_and_closes_cleanly() {
    let (server, mut ended) = echo_server();
    let addr = start(server).await;
    let (mut conn, res) = within("connect", wharf::connect(&format!("ws://{addr}/echo?x=1")))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(conn.path(), "/echo");
    assert_eq!(conn.peer_addr(), addr);
    assert_eq!(conn.deflate(), None);
    echoes(&mut conn, &messages()).await;
    conn.close(CloseCode::NORMAL, "bye").unwrap();
    assert!(within("close", conn.recv()).await.is_none());
    assert!(
        matches!(conn.disconnect(), Some(Disconnect::Local(ref f)) if f.reason == "bye"),
        "{:?}",
        conn.disconnect()
    );
    let seen = within("the server's end", ended.recv()).await.unwrap();
    assert!(
        matches!(seen.disconnect, Some(Disconnect::Peer(ref f)) if f.reason == "bye"),
        "{seen:?}"
    );
}

#[tokio::test]
async fn agrees_on_a_subprotocol() {
    let server = echo_server().0.protocols(["b", "c"]);
    let addr = start(server).await;
    let connector = Connector::new().protocols(["a", "c"]);
    let (conn, res) = within("connect", connector.connect(&format!("ws://{addr}/")))
        .await
        .unwrap();
    assert_eq!(conn.protocol(), Some("c"));
    assert_eq!(res.headers()["sec-websocket-protocol"], "c");
}

#[tokio::test]
async fn compresses_in_every_mode_a_wharf_server_agrees_to() {
    let mut narrow = DeflateConfig::dedicated(15);
    narrow.client_max_window_bits = 8;
    for (server_config, client_config) in [
        (DeflateConfig::shared(), DeflateConfig::dedicated(15)),
        (DeflateConfig::dedicated(15), DeflateConfig::dedicated(15)),
        (DeflateConfig::dedicated(9), DeflateConfig::shared()),
        (narrow, DeflateConfig::dedicated(15)),
    ] {
        let server = echo_server().0.deflate(Some(server_config));
        let addr = start(server).await;
        let connector = Connector::new().deflate(Some(client_config));
        let (mut conn, _) = within("connect", connector.connect(&format!("ws://{addr}/")))
            .await
            .unwrap();
        let agreed = *conn.deflate().expect("deflate agreed");
        if server_config == narrow {
            assert_eq!(agreed.client_max_window_bits, 8);
        }
        echoes(&mut conn, &messages()).await;
    }
}

#[tokio::test]
async fn a_refusal_carries_its_status_and_reason() {
    let server = echo_server().0.on_upgrade(|up| async move {
        if up.path() == "/private" {
            return Err(Refuse::new(StatusCode::FORBIDDEN, "no entry"));
        }
        Ok(up)
    });
    let addr = start(server).await;
    let err = within("connect", wharf::connect(&format!("ws://{addr}/private")))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ConnectErrorKind::Refused);
    assert_eq!(err.status(), Some(StatusCode::FORBIDDEN));
    let body = err.response().unwrap().body();
    assert_eq!(String::from_utf8_lossy(body).trim(), "no entry");
    // A plain HTTP server is a refusal too: wharf answers 426 to a non-upgrade,
    // here a bad URL scheme never reaches the network.
    let err = wharf::connect("http://127.0.0.1:1/").await.unwrap_err();
    assert_eq!(err.kind(), ConnectErrorKind::Url);
    // A header that is not HTTP is refused before the network, by name.
    let bad = Connector::new().header("x-bad", "line\r\nbreak");
    let err = bad.connect(&format!("ws://{addr}/")).await.unwrap_err();
    assert_eq!(err.kind(), ConnectErrorKind::Request);
    assert!(err.to_string().contains("x-bad"), "{err}");
}

#[tokio::test]
async fn an_endless_response_head_is_cut_at_16_kib() {
    // A server that answers with a header line that never ends: 64 MiB of
    // it, or until the client lets go.
    const FLOOD: usize = 64 << 20;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let flood = tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 1024];
        let _ = tokio::io::AsyncReadExt::read(&mut tcp, &mut buf).await;
        let mut written = 0;
        let head = b"HTTP/1.1 101 Switching Protocols\r\nx-pad: ";
        if tokio::io::AsyncWriteExt::write_all(&mut tcp, head)
            .await
            .is_err()
        {
            return written;
        }
        let chunk = vec![b'a'; 64 << 10];
        while written < FLOOD {
            match tokio::io::AsyncWriteExt::write_all(&mut tcp, &chunk).await {
                Ok(()) => written += chunk.len(),
                Err(_) => break,
            }
        }
        written
    });
    let err = within("connect", wharf::connect(&format!("ws://{addr}/")))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ConnectErrorKind::Response);
    assert!(err.to_string().contains("16 KiB"), "{err}");
    let written = within("the flood ends", flood).await.unwrap();
    assert!(
        written < FLOOD,
        "the client took all {written} bytes of the flood instead of giving up"
    );
}

/// A fake server's answer to one upgrade request: a `101` with the right
/// accept key, then `pad` more header lines (the head is left open).
fn head_with_padding(request: &[u8], pad: usize) -> Vec<String> {
    // The request's headers, as a server validates them, give the accept key.
    let request = String::from_utf8_lossy(request);
    let mut headers = http::HeaderMap::new();
    for line in request.lines().skip(1) {
        if let Some((name, value)) = line.split_once(':') {
            headers.append(
                http::HeaderName::from_bytes(name.trim().as_bytes()).unwrap(),
                value.trim().parse().unwrap(),
            );
        }
    }
    let hs = wharf_proto::Handshake::validate(&http::Method::GET, http::Version::HTTP_11, &headers)
        .expect("a valid upgrade request");
    let mut lines = vec![
        "HTTP/1.1 101 Switching Protocols\r\n".to_owned(),
        "upgrade: websocket\r\n".to_owned(),
        "connection: upgrade\r\n".to_owned(),
        format!(
            "sec-websocket-accept: {}\r\n",
            hs.accept().to_str().unwrap()
        ),
    ];
    lines.extend((0..pad).map(|i| format!("x-pad-{i}: {i}\r\n")));
    lines
}

/// Serves one connection: reads the request, writes `lines` (then the
/// blank line if `end`), and keeps the socket open for a second.
async fn answer_with(
    lines: impl FnOnce(&[u8]) -> Vec<String> + Send + 'static,
    end: bool,
) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 4096];
        let n = tokio::io::AsyncReadExt::read(&mut tcp, &mut buf)
            .await
            .unwrap();
        let mut head = lines(&buf[..n]).concat();
        if end {
            head.push_str("\r\n");
        }
        let _ = tokio::io::AsyncWriteExt::write_all(&mut tcp, head.as_bytes()).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    });
    addr
}

#[tokio::test]
async fn a_response_of_64_headers_is_taken_and_of_65_refused() {
    // 3 the handshake needs, plus 61 (then 62) of padding.
    let addr = answer_with(|req| head_with_padding(req, 61), true).await;
    let (conn, res) = within("connect", wharf::connect(&format!("ws://{addr}/")))
        .await
        .expect("64 header fields are within the bound");
    assert_eq!(res.headers().len(), 64);
    assert_eq!(res.headers()["x-pad-60"], "60");
    let _ = conn.close(CloseCode::NORMAL, "");

    let addr = answer_with(|req| head_with_padding(req, 62), true).await;
    let err = within("connect", wharf::connect(&format!("ws://{addr}/")))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ConnectErrorKind::Response);
    assert_eq!(err.to_string(), "the response has over 64 headers");
}

#[tokio::test]
async fn a_flood_of_header_lines_is_refused_at_the_65th() {
    // 10,000 header lines: the first 100 at once, the rest only once the
    // client has answered. A client that waited for the end of the head
    // would time out here; one that stops at the 65th field fails at once
    // and lets go of the socket, so the rest cannot all be written.
    const LINES: usize = 10_000;
    const FIRST: usize = 100;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (answered, go_on) = tokio::sync::oneshot::channel::<()>();
    let flood = tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 4096];
        let n = tokio::io::AsyncReadExt::read(&mut tcp, &mut buf)
            .await
            .unwrap();
        let lines = head_with_padding(&buf[..n], LINES - 4);
        let (first, rest) = lines.split_at(FIRST);
        tokio::io::AsyncWriteExt::write_all(&mut tcp, first.concat().as_bytes())
            .await
            .unwrap();
        let _ = go_on.await;
        let mut written = FIRST;
        for line in rest {
            if tokio::io::AsyncWriteExt::write_all(&mut tcp, line.as_bytes())
                .await
                .is_err()
            {
                break;
            }
            written += 1;
            tokio::task::yield_now().await;
        }
        written
    });
    let err = within("connect", wharf::connect(&format!("ws://{addr}/")))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ConnectErrorKind::Response);
    assert_eq!(err.to_string(), "the response has over 64 headers");
    drop(answered);
    let written = within("the flood ends", flood).await.unwrap();
    assert!(
        written < LINES,
        "all {written} header lines were written to a client that had given up"
    );
}

#[tokio::test]
async fn a_response_that_breaks_the_rules_says_which() {
    // A server that answers 101 with a wrong accept key.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 1024];
        let _ = tokio::io::AsyncReadExt::read(&mut tcp, &mut buf).await;
        let _ = tokio::io::AsyncWriteExt::write_all(
            &mut tcp,
            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\
              connection: upgrade\r\nsec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
        )
        .await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    });
    let err = within("connect", wharf::connect(&format!("ws://{addr}/")))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ConnectErrorKind::Response);
    assert_eq!(err.rule(), Some(&wharf_proto::ResponseError::Accept));
}

#[tokio::test]
async fn the_handshake_timeout_bounds_a_silent_server() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (_tcp, _) = listener.accept().await.unwrap();
        tokio::time::sleep(Duration::from_secs(3)).await;
    });
    let started = Instant::now();
    let connector = Connector::new().handshake_timeout(Duration::from_millis(300));
    let err = within("connect", connector.connect(&format!("ws://{addr}/")))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ConnectErrorKind::TimedOut);
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn waits_for_the_server_to_close_tcp_after_the_close_handshake() {
    // The server starts the close: the client answers and then waits for
    // the server's FIN (RFC 6455 §7.1.1): the server sees a clean end.
    let (server, mut ended) = echo_server();
    let addr = start(server).await;
    let (mut conn, _) = wharf::connect(&format!("ws://{addr}/")).await.unwrap();
    conn.send("kill").await.unwrap();
    assert!(within("close", conn.recv()).await.is_none());
    assert!(
        matches!(conn.disconnect(), Some(Disconnect::Peer(ref f)) if f.reason == "killed"),
        "{:?}",
        conn.disconnect()
    );
    // The server saw its close answered, then the client wait for its FIN:
    // a clean end, not a reset.
    let seen = within("the server's end", ended.recv()).await.unwrap();
    assert!(
        matches!(seen.disconnect, Some(Disconnect::Local(_))),
        "{seen:?}"
    );
}

/// A child process killed when the test ends.
struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Whether `python3` can import `websockets`, installing it with pip once
/// if it cannot.
fn python_websockets() -> bool {
    let importable = || {
        Command::new("python3")
            .args(["-c", "import websockets.asyncio.server"])
            .status()
            .is_ok_and(|s| s.success())
    };
    if importable() {
        return true;
    }
    let _ = Command::new("python3")
        .args(["-m", "pip", "install", "--quiet", "websockets>=13"])
        .status();
    importable()
}

/// A free loopback port (bound, then let go for the child to take).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Python's `websockets` echo server with permessage-deflate (its default),
/// started on a free port.
async fn python_echo() -> Option<(Kill, SocketAddr)> {
    if !python_websockets() {
        eprintln!(
            "SKIPPED: python3 cannot import websockets and pip could not install it \
             (python3 -m pip install websockets)"
        );
        return None;
    }
    let port = free_port();
    let script = format!(
        "import asyncio\n\
         from websockets.asyncio.server import serve\n\
         async def echo(ws):\n\
         \x20   async for m in ws:\n\
         \x20       await ws.send(m)\n\
         async def main():\n\
         \x20   async with serve(echo, '127.0.0.1', {port}, max_size=2**24, subprotocols=['chat']):\n\
         \x20       await asyncio.sleep(60)\n\
         asyncio.run(main())\n"
    );
    let child = Command::new("python3")
        .args(["-c", &script])
        .stdout(Stdio::null())
        .spawn()
        .expect("python3 runs");
    let child = Kill(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "the python server did not listen"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Some((child, SocketAddr::from(([127, 0, 0, 1], port))))
}

#[tokio::test]
async fn echoes_with_python_websockets_with_deflate() {
    let Some((_server, addr)) = python_echo().await else {
        return;
    };
    for config in [DeflateConfig::dedicated(15), DeflateConfig::shared()] {
        let connector = Connector::new()
            .protocols(["chat"])
            .deflate(Some(config))
            .limits(wharf::Limits::default().max_message_size(1 << 24));
        let (mut conn, res) = within("connect", connector.connect(&format!("ws://{addr}/")))
            .await
            .unwrap();
        assert_eq!(conn.protocol(), Some("chat"));
        assert!(
            res.headers()["sec-websocket-extensions"]
                .to_str()
                .unwrap()
                .starts_with("permessage-deflate"),
            "{res:?}"
        );
        assert!(conn.deflate().is_some());
        echoes(&mut conn, &messages()).await;
        conn.close(CloseCode::NORMAL, "done").unwrap();
        assert!(within("close", conn.recv()).await.is_none());
        assert!(
            matches!(conn.disconnect(), Some(Disconnect::Local(_))),
            "{:?}",
            conn.disconnect()
        );
    }
}

/// Debian's tinyproxy on a free port, allowing CONNECT to any port, with
/// basic authentication if `auth` is given.
fn tinyproxy(auth: Option<(&str, &str)>) -> Option<(Kill, u16, tempdir::Dir)> {
    let bin = ["/usr/bin/tinyproxy", "/usr/sbin/tinyproxy"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .or_else(|| {
            eprintln!("SKIPPED: tinyproxy is not installed (scripts/install-proxies)");
            None
        })?;
    let dir = tempdir::Dir::new();
    let port = free_port();
    let mut conf = format!(
        "Port {port}\nListen 127.0.0.1\nTimeout 30\nMaxClients 16\nAllow 127.0.0.1\n\
         LogLevel Info\nLogFile \"{}/log\"\nPidFile \"{}/pid\"\n",
        dir.path().display(),
        dir.path().display()
    );
    if let Some((user, password)) = auth {
        conf.push_str(&format!("BasicAuth {user} {password}\n"));
    }
    // Without ConnectPort lines, CONNECT is allowed to every port.
    let conf_path = dir.path().join("tinyproxy.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let child = Command::new(bin)
        .args(["-d", "-c"])
        .arg(&conf_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("tinyproxy runs");
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "tinyproxy did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    Some((Kill(child), port, dir))
}

#[tokio::test]
async fn connects_through_an_http_connect_proxy() {
    let Some((_proxy, port, dir)) = tinyproxy(Some(("ann", "s3cret"))) else {
        return;
    };
    let (server, _) = echo_server();
    let addr = start(server).await;
    let url = format!("ws://{addr}/through");
    let connector = Connector::new()
        .proxy(&format!("http://ann:s3cret@127.0.0.1:{port}"))
        .unwrap();
    let (mut conn, _) = within("connect", connector.connect(&url)).await.unwrap();
    echoes(&mut conn, &messages()).await;
    let log = std::fs::read_to_string(dir.path().join("log")).unwrap_or_default();
    assert!(log.contains("CONNECT"), "the proxy saw no CONNECT: {log}");
    // Wrong credentials: the proxy's refusal, with its status.
    let connector = Connector::new()
        .proxy(&format!("http://ann:guess@127.0.0.1:{port}"))
        .unwrap();
    let err = within("connect", connector.connect(&url))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ConnectErrorKind::Proxy);
    // 407 by RFC 9110 §15.5.8; tinyproxy 1.11 answers 401.
    let status = err.status().map(|s| s.as_u16());
    assert!(matches!(status, Some(401 | 407)), "{err}: {status:?}");
}

#[cfg(feature = "tls")]
#[tokio::test]
async fn wss_to_a_wharf_tls_server_with_a_certificate_made_here() {
    use std::sync::Arc;

    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    let cert = params.self_signed(&key).unwrap();
    let tls =
        wharf::tls::Tls::from_pem(cert.pem().as_bytes(), key.serialize_pem().as_bytes()).unwrap();
    let (server, _) = echo_server();
    let addr = start(server.tls(Some(tls)).deflate(Some(DeflateConfig::shared()))).await;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = Connector::new()
        .tls_config(Arc::new(config))
        .deflate(Some(DeflateConfig::shared()));
    let (mut conn, _) = within(
        "connect",
        connector.connect(&format!("wss://localhost:{}/secure", addr.port())),
    )
    .await
    .unwrap();
    assert!(conn.deflate().is_some());
    echoes(&mut conn, &messages()).await;
    conn.close(CloseCode::NORMAL, "").unwrap();
    assert!(within("close", conn.recv()).await.is_none());
    // The default roots (the system's) do not know this certificate.
    let err = within(
        "connect",
        wharf::connect(&format!("wss://localhost:{}/", addr.port())),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ConnectErrorKind::Tls);
}

#[tokio::test]
async fn connects_over_a_stream_of_the_callers() {
    let (server, _) = echo_server();
    let addr = start(server).await;
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut conn, _) = within(
        "connect",
        Connector::new().connect_on(tcp, "ws://example.com/over"),
    )
    .await
    .unwrap();
    echoes(&mut conn, &messages()).await;
}

/// A temporary directory removed at drop.
mod tempdir {
    use std::path::{Path, PathBuf};

    pub(crate) struct Dir(PathBuf);

    impl Dir {
        pub(crate) fn new() -> Self {
            static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let path =
                std::env::temp_dir().join(format!("wharf-client-test-{}-{n}", std::process::id()));
            std::fs::create_dir_all(&path).unwrap();
            Self(path)
        }

        pub(crate) fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
