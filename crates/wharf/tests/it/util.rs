//! Helpers shared by the integration tests: a server on a loopback port,
//! wharf's own client, a tokio-tungstenite client (the independent peer of
//! `echo`, `tls` and the tests that need a client which answers pings and
//! closes only as it reads), and a raw TCP client that writes requests and
//! frames byte by byte and parses what comes back.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use http::{HeaderValue, Response, header};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use wharf::{Body, CloseCode, Connector, Disconnect, Limits, Server};

/// The longest any single step of a test may take.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(5);

/// A WebSocket client: wharf's.
pub(crate) type Ws = wharf::Connection;

/// A WebSocket client over TCP, as tokio-tungstenite connects it.
pub(crate) type Tungstenite = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The RFC 6455 §1.3 sample key and the accept value it must produce.
pub(crate) const SAMPLE_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
pub(crate) const SAMPLE_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// Runs `f`, failing the test if it takes longer than [`TIMEOUT`].
pub(crate) async fn within<F: Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(TIMEOUT, f).await {
        Ok(out) => out,
        Err(_) => panic!("timed out after {TIMEOUT:?}: {what}"),
    }
}

/// Serves `server` on an OS-assigned loopback port for the rest of the test.
pub(crate) async fn start(server: Server) -> SocketAddr {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "off".into()))
        .with_test_writer()
        .try_init();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local_addr");
    tokio::spawn(server.serve(listener));
    addr
}

/// The server of `examples/echo.rs`: plain requests get `200 okay`
/// (`text/plain`), messages are echoed, and a text `kill` closes with 1000.
/// How each connection ended is sent on the returned channel.
pub(crate) fn echo_server() -> (Server, mpsc::UnboundedReceiver<Ended>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let server = Server::new()
        .on_request(|_req| async {
            let mut res = Response::new(Body::from("okay"));
            res.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            res
        })
        .on_connection(move |mut conn| {
            let tx = tx.clone();
            async move {
                while let Some(msg) = conn.recv().await {
                    if msg.as_text() == Some("kill") {
                        let _ = conn.close(CloseCode::NORMAL, "killed");
                        continue;
                    }
                    let _ = conn.try_send(msg);
                }
                let _ = tx.send(Ended {
                    disconnect: conn.disconnect(),
                });
            }
        });
    (server, rx)
}

/// What a handler saw once `recv` returned `None`.
#[derive(Debug)]
pub(crate) struct Ended {
    pub(crate) disconnect: Option<Disconnect>,
}

/// wharf's client, allowing messages of up to 16 MiB.
pub(crate) fn connector() -> Connector {
    Connector::new().limits(
        Limits::default()
            .max_message_size(16 << 20)
            .max_frame_size(16 << 20),
    )
}

/// Connects wharf's client to `ws://addr{path}`, allowing messages of up
/// to 16 MiB.
pub(crate) async fn connect(addr: SocketAddr, path: &str) -> Ws {
    connect_with(connector(), addr, path).await.0
}

/// Connects with `connector`; also returns the `101` response.
pub(crate) async fn connect_with(
    connector: Connector,
    addr: SocketAddr,
    path: &str,
) -> (Ws, Response<()>) {
    let url = format!("ws://{addr}{path}");
    within("websocket connect", connector.connect(&url))
        .await
        .expect("websocket handshake")
}

/// Connects a tokio-tungstenite client to `ws://addr{path}`, allowing
/// messages of up to 16 MiB.
pub(crate) async fn connect_tungstenite(addr: SocketAddr, path: &str) -> Tungstenite {
    let request = format!("ws://{addr}{path}")
        .into_client_request()
        .expect("client request");
    connect_request(request).await.0
}

/// Connects tokio-tungstenite with a prepared request; also returns the
/// `101` response.
pub(crate) async fn connect_request(
    request: http::Request<()>,
) -> (
    Tungstenite,
    tokio_tungstenite::tungstenite::handshake::client::Response,
) {
    let config = WebSocketConfig::default()
        .max_message_size(Some(16 << 20))
        .max_frame_size(Some(16 << 20));
    within(
        "websocket connect",
        tokio_tungstenite::connect_async_with_config(request, Some(config), true),
    )
    .await
    .expect("websocket handshake")
}

/// An HTTP/1.1 response as read off the wire.
#[derive(Debug)]
pub(crate) struct RawResponse {
    pub(crate) status: u16,
    /// Header names lowercased, values as sent.
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl RawResponse {
    /// The value of the first header named `name` (any case).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Asserts the body is one non-empty line of text (a trailing newline
    /// allowed) and returns it.
    pub(crate) fn one_line_body(&self) -> &str {
        let body = std::str::from_utf8(&self.body).expect("body is utf-8");
        let line = body.strip_suffix('\n').unwrap_or(body);
        let line = line.strip_suffix('\r').unwrap_or(line);
        assert!(!line.trim().is_empty(), "body is empty: {body:?}");
        assert!(
            !line.contains(['\n', '\r']),
            "body is more than one line: {body:?}"
        );
        line
    }
}

/// A raw TCP client: writes bytes as given, parses HTTP responses and
/// WebSocket frames from what it reads, keeping any surplus for the next
/// read.
#[derive(Debug)]
pub(crate) struct RawClient {
    pub(crate) stream: TcpStream,
    buf: Vec<u8>,
}

/// A frame as the server sent it.
#[derive(Debug, Eq, PartialEq)]
pub(crate) struct RawFrame {
    pub(crate) fin: bool,
    pub(crate) opcode: u8,
    pub(crate) payload: Vec<u8>,
}

impl RawFrame {
    /// The status code of a close frame.
    pub(crate) fn close_code(&self) -> u16 {
        assert_eq!(self.opcode, 0x8, "not a close frame: {self:?}");
        assert!(self.payload.len() >= 2, "close frame without a code");
        u16::from_be_bytes([self.payload[0], self.payload[1]])
    }
}

impl RawClient {
    pub(crate) async fn connect(addr: SocketAddr) -> Self {
        let stream = within("tcp connect", TcpStream::connect(addr))
            .await
            .expect("tcp connect");
        stream.set_nodelay(true).expect("nodelay");
        Self {
            stream,
            buf: Vec::new(),
        }
    }

    /// A client on a stream connected by the caller (from an address of
    /// its choosing, say), before any handshake.
    pub(crate) fn from_stream(stream: TcpStream) -> Self {
        Self {
            stream,
            buf: Vec::new(),
        }
    }

    /// Connects and completes a valid opening handshake on `/`, asserting
    /// the `101` and its accept key.
    pub(crate) async fn handshake(addr: SocketAddr) -> Self {
        Self::handshake_on(Self::connect(addr).await.stream).await
    }

    /// As [`RawClient::handshake`], on a stream connected by the caller.
    pub(crate) async fn handshake_on(stream: TcpStream) -> Self {
        let mut client = Self {
            stream,
            buf: Vec::new(),
        };
        client.write(upgrade_request("/", &[]).as_bytes()).await;
        let res = client.read_response().await;
        assert_eq!(res.status, 101, "{res:?}");
        assert_eq!(res.header("sec-websocket-accept"), Some(SAMPLE_ACCEPT));
        client
    }

    pub(crate) async fn write(&mut self, bytes: &[u8]) {
        within("write", self.stream.write_all(bytes))
            .await
            .expect("write");
    }

    /// Reads more bytes into the buffer; `false` at end of stream.
    async fn fill(&mut self) -> bool {
        let mut chunk = [0; 16 * 1024];
        let n = within("read", self.stream.read(&mut chunk))
            .await
            .expect("read");
        self.buf.extend_from_slice(&chunk[..n]);
        n > 0
    }

    /// Reads until the buffer holds `n` bytes and takes them.
    async fn take(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            assert!(self.fill().await, "end of stream inside a message");
        }
        self.buf.drain(..n).collect()
    }

    /// Reads one response: the head, then a `Content-Length` body (a `101`
    /// has none).
    pub(crate) async fn read_response(&mut self) -> RawResponse {
        let head_end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            assert!(self.buf.len() < 64 * 1024, "response head too long");
            assert!(self.fill().await, "end of stream inside a response head");
        };
        let head = self.take(head_end).await;
        let head = String::from_utf8(head).expect("response head is utf-8");
        let mut lines = head.split("\r\n");
        let status_line = lines.next().expect("status line");
        let mut parts = status_line.splitn(3, ' ');
        assert_eq!(parts.next(), Some("HTTP/1.1"), "{status_line}");
        let status = parts
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let headers: Vec<(String, String)> = lines
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (name, value) = l.split_once(':').expect("header line");
                (name.trim().to_ascii_lowercase(), value.trim().to_owned())
            })
            .collect();
        let mut res = RawResponse {
            status,
            headers,
            body: Vec::new(),
        };
        assert_ne!(
            res.header("transfer-encoding"),
            Some("chunked"),
            "chunked bodies are not expected"
        );
        if status != 101 {
            let len: usize = res
                .header("content-length")
                .expect("content-length")
                .parse()
                .expect("content-length is a number");
            res.body = self.take(len).await;
        }
        res
    }

    /// Reads one frame from the server, which must be unmasked and have no
    /// reserved bit set.
    pub(crate) async fn read_frame(&mut self) -> RawFrame {
        let (rsv, frame) = self.read_frame_rsv().await;
        assert_eq!(rsv, 0, "reserved bits set");
        frame
    }

    /// Reads one frame from the server, which must be unmasked, with its
    /// RSV bits (RSV1 = `0b100`).
    pub(crate) async fn read_frame_rsv(&mut self) -> (u8, RawFrame) {
        let head = self.take(2).await;
        let fin = head[0] & 0x80 != 0;
        let rsv = (head[0] >> 4) & 0x7;
        let opcode = head[0] & 0x0f;
        assert_eq!(head[1] & 0x80, 0, "server frames must not be masked");
        let len = match head[1] & 0x7f {
            126 => u64::from(u16::from_be_bytes(
                self.take(2).await.try_into().expect("2 bytes"),
            )),
            127 => u64::from_be_bytes(self.take(8).await.try_into().expect("8 bytes")),
            n => u64::from(n),
        };
        let len = usize::try_from(len).expect("frame length fits usize");
        let payload = self.take(len).await;
        (
            rsv,
            RawFrame {
                fin,
                opcode,
                payload,
            },
        )
    }

    /// Asserts that the server closes the connection: reads (discarding at
    /// most 1 MiB) until end of stream, within [`TIMEOUT`].
    pub(crate) async fn expect_eof(&mut self) {
        let mut discarded = std::mem::take(&mut self.buf).len();
        let mut chunk = [0; 16 * 1024];
        within("server closes the connection", async {
            loop {
                match self.stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => discarded += n,
                }
                assert!(discarded < 1 << 20, "no end of stream after 1 MiB");
            }
        })
        .await;
    }
}

/// A valid upgrade request for `path` with the sample key, plus `extra`
/// header lines.
pub(crate) fn upgrade_request(path: &str, extra: &[&str]) -> String {
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: {SAMPLE_KEY}\r\n\
         Sec-WebSocket-Version: 13\r\n"
    );
    for line in extra {
        req.push_str(line);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    req
}

/// A client frame with `opcode` and `payload`, masked with `mask` unless it
/// is `None`.
pub(crate) fn frame(opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = frame_header(opcode, payload.len() as u64, mask);
    match mask {
        Some(key) => out.extend(payload.iter().zip(key.iter().cycle()).map(|(b, k)| b ^ k)),
        None => out.extend_from_slice(payload),
    }
    out
}

/// Just the header of a final client frame announcing `len` payload bytes.
pub(crate) fn frame_header(opcode: u8, len: u64, mask: Option<[u8; 4]>) -> Vec<u8> {
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    let mut out = vec![0x80 | opcode];
    match len {
        0..=125 => out.push(mask_bit | len as u8),
        126..=0xffff => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&len.to_be_bytes());
        }
    }
    if let Some(key) = mask {
        out.extend_from_slice(&key);
    }
    out
}

/// A mask key with no zero bytes, so masking visibly changes the payload.
pub(crate) const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
