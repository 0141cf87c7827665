//! Helpers: the server in-process on a loopback port, wharf's own client,
//! and a raw HTTP/1.1 client over TCP (so paths such as `/../x` reach the
//! server exactly as written). The independent clients are elsewhere:
//! tokio-tungstenite (`chat::..._with_an_independent_client`), Python
//! `websockets` (`rate_limit`) and Chromium (`tests/browser`).

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use wharf::{CloseCode, Connector, Disconnect, Event, Message};
use wharf_server::Config;

/// The longest any single step of a test may take.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(5);

/// A WebSocket client: wharf's.
pub(crate) type Ws = wharf::Connection;

/// Runs `f`, failing the test if it takes longer than [`TIMEOUT`].
pub(crate) async fn within<F: Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(TIMEOUT, f).await {
        Ok(out) => out,
        Err(_) => panic!("timed out after {TIMEOUT:?}: {what}"),
    }
}

/// A server running in this process until [`TestServer::stop`] or the end
/// of the test.
pub(crate) struct TestServer {
    pub(crate) addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<anyhow::Result<()>>,
}

/// Starts `config` on an OS-assigned loopback port.
pub(crate) async fn start(config: Config) -> TestServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local_addr");
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(wharf_server::serve(config, listener, async {
        let _ = rx.await;
    }));
    TestServer {
        addr,
        stop: Some(tx),
        task,
    }
}

/// A configuration for tests: the given mode, everything else default.
pub(crate) fn config(mode: wharf_server::Mode) -> Config {
    let mut c = Config::default();
    c.mode = mode;
    c
}

impl TestServer {
    /// Triggers the graceful shutdown and waits for `serve` to return.
    pub(crate) async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        within("server shutdown", &mut self.task)
            .await
            .expect("server task")
            .expect("serve");
    }

    /// Connects a WebSocket client to `path`, offering `protocol` if given.
    pub(crate) async fn ws(&self, path: &str, protocol: Option<&str>) -> Ws {
        let mut connector = Connector::new();
        if let Some(p) = protocol {
            connector = connector.protocols([p]);
        }
        let url = format!("ws://{}{path}", self.addr);
        let (ws, _) = within("connect", connector.connect(&url))
            .await
            .expect("connect");
        ws
    }

    /// Sends a raw HTTP/1.1 request (head only) and reads the whole
    /// response.
    pub(crate) async fn raw(&self, request: &str) -> RawResponse {
        raw(self.addr, request).await
    }

    /// `GET path` (or another method) with extra headers.
    pub(crate) async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> RawResponse {
        let mut req =
            format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        self.raw(&req).await
    }

    /// The value `/metrics` gives for the sample `name` (labels included).
    pub(crate) async fn metric(&self, name: &str) -> u64 {
        let res = self.request("GET", "/metrics", &[]).await;
        assert_eq!(res.status, 200);
        metric_value(&res.body_text(), name)
            .unwrap_or_else(|| panic!("no metric {name} in\n{}", res.body_text()))
    }

    /// Polls `/metrics` until `name` reads `want` (bounded by [`TIMEOUT`]).
    pub(crate) async fn wait_metric(&self, name: &str, want: u64) {
        within(&format!("{name} to reach {want}"), async {
            loop {
                if self.metric(name).await == want {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
    }
}

/// The value of the sample whose name (with labels) is exactly `name`.
pub(crate) fn metric_value(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// A response read off the wire.
#[derive(Debug)]
pub(crate) struct RawResponse {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl RawResponse {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Writes `request` on a new connection and reads one response: its head,
/// then `Content-Length` bytes (none for `HEAD` and `304`), or up to the
/// server's close when there is no length.
pub(crate) async fn raw(addr: SocketAddr, request: &str) -> RawResponse {
    let head_request = request.starts_with("HEAD ");
    within("raw HTTP exchange", async {
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        tcp.write_all(request.as_bytes()).await.expect("write");
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = tcp.read(&mut chunk).await.expect("read");
            buf.extend_from_slice(&chunk[..n]);
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let res = parse_response(&buf);
                let want = if head_request || res.status == 304 || res.status == 101 {
                    Some(0)
                } else {
                    res.header("content-length")
                        .and_then(|l| l.parse::<usize>().ok())
                };
                if want.is_some_and(|len| buf.len() >= end + 4 + len) || n == 0 {
                    return res;
                }
            } else if n == 0 {
                panic!("connection closed before a response head");
            }
        }
    })
    .await
}

fn parse_response(buf: &[u8]) -> RawResponse {
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(buf)));
    let head = std::str::from_utf8(&buf[..end]).expect("head is text");
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    RawResponse {
        status,
        headers,
        body: buf[end + 4..].to_vec(),
    }
}

/// The next text or binary message (the client answers pings itself).
pub(crate) async fn next(ws: &mut Ws) -> Message {
    within("a message", async {
        match ws.next().await {
            Some(Event::Message(m)) => m,
            other => panic!("expected a message, got {other:?}"),
        }
    })
    .await
}

/// How the connection ended: the next event must be its end.
pub(crate) async fn closed(ws: &mut Ws) -> Disconnect {
    within("the end of the connection", async {
        match ws.next().await {
            Some(Event::Close(why)) => why,
            other => panic!("expected the connection's end, got {other:?}"),
        }
    })
    .await
}

/// The code of the close frame the server started the close handshake
/// with.
pub(crate) async fn closed_by_server(ws: &mut Ws) -> u16 {
    match closed(ws).await {
        Disconnect::Peer(frame) => frame.code.into(),
        other => panic!("expected a close frame from the server, got {other}"),
    }
}

/// Starts the close handshake with 1000 and waits for the server's answer
/// (messages still arriving are skipped).
pub(crate) async fn close(ws: &mut Ws) {
    ws.close(CloseCode::NORMAL, "").expect("close");
    within("the close handshake", async {
        while ws.recv().await.is_some() {}
    })
    .await;
    assert!(
        matches!(ws.disconnect(), Some(Disconnect::Local(_))),
        "{:?}",
        ws.disconnect()
    );
}

/// The next message, parsed as JSON.
pub(crate) async fn next_json(ws: &mut Ws) -> serde_json::Value {
    match next(ws).await {
        Message::Text(t) => serde_json::from_str(&t).expect("server sends JSON"),
        other => panic!("expected text, got {other:?}"),
    }
}

/// Sends a text message.
pub(crate) async fn send_text(ws: &mut Ws, text: &str) {
    within("send", ws.send(text)).await.expect("send");
}

/// A fresh directory under the system's temporary directory, removed when
/// dropped.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("wharf-it-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        Self(dir)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }

    /// Writes `contents` to `relative`, creating directories.
    pub(crate) fn write(&self, relative: &str, contents: &str) -> PathBuf {
        let path = self.0.join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create dir");
        }
        std::fs::write(&path, contents).expect("write file");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
