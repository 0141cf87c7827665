//! The HTTP paths, bounded: the same caps on a connection's first request
//! (read by wharf) and on later ones (read by hyper): head size and header
//! count (431), request target (414), upgrades with a body (400); one
//! handshake deadline; a refused upgrade closes its connection; a stalled
//! writer of plain HTTP responses is timed out.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http::Response;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wharf::{Body, Server};

use crate::util::{RawClient, TIMEOUT, echo_server, start, upgrade_request, within};

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";

/// What came back on a connection until the server ended it.
#[derive(Debug)]
struct Answer {
    /// The status of the first response, if one began.
    status: Option<u16>,
    /// Everything read, as text (lossy).
    text: String,
    /// Whether the server ended the connection (within the test timeout).
    closed: bool,
}

impl Answer {
    /// The body of the first response (after its head).
    fn body(&self) -> &str {
        self.text.split_once("\r\n\r\n").map_or("", |(_, b)| b)
    }

    /// Asserts a `status` with a one-line body.
    fn assert_refused(&self, status: u16) {
        assert_eq!(self.status, Some(status), "{self:?}");
        assert!(self.closed, "left open: {self:?}");
        let line = self.body().trim_end_matches('\n');
        assert!(!line.trim().is_empty(), "empty reason: {self:?}");
        assert!(!line.contains('\n'), "more than one line: {self:?}");
    }
}

/// Writes `request` (ignoring a write the server cut short), then reads
/// until the server ends the connection or the test timeout passes.
async fn exchange(stream: &mut TcpStream, request: &[u8]) -> Answer {
    let _ = stream.write_all(request).await;
    read_to_close(stream).await
}

/// Reads until end of stream or reset (at most 1 MiB), or for
/// [`TIMEOUT`].
async fn read_to_close(stream: &mut TcpStream) -> Answer {
    let mut got = Vec::new();
    let mut chunk = [0; 16 * 1024];
    let closed = tokio::time::timeout(TIMEOUT, async {
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&chunk[..n]),
            }
            assert!(got.len() < 1 << 20, "no end of stream after 1 MiB");
        }
    })
    .await
    .is_ok();
    let text = String::from_utf8_lossy(&got).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|s| s.get(..3))
        .and_then(|s| s.parse().ok());
    Answer {
        status,
        text,
        closed,
    }
}

/// A connection on which one plain request was answered, so that the next
/// request is read by hyper.
async fn after_one_request(addr: SocketAddr) -> TcpStream {
    let mut raw = RawClient::connect(addr).await;
    raw.write(GET).await;
    assert_eq!(raw.read_response().await.status, 200);
    raw.stream
}

/// An upgrade request with one 200 KB header.
fn huge_head() -> Vec<u8> {
    let big = format!("X-Big: {}", "a".repeat(200_000));
    upgrade_request("/", &[&big]).into_bytes()
}

/// An upgrade request with 80 small headers.
fn many_headers() -> Vec<u8> {
    let lines: Vec<String> = (0..80).map(|i| format!("X-H{i}: {i}")).collect();
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    upgrade_request("/", &lines).into_bytes()
}

#[tokio::test]
async fn an_oversized_head_gets_431_on_both_paths() {
    let (server, _ended) = echo_server();
    let addr = start(server).await;
    for (what, request) in [
        ("200 KB header", huge_head()),
        ("80 headers", many_headers()),
    ] {
        let mut first = RawClient::connect(addr).await.stream;
        let answer = exchange(&mut first, &request).await;
        assert_eq!(
            answer.status,
            Some(431),
            "first request, {what}: {answer:?}"
        );
        answer.assert_refused(431);

        let mut later = after_one_request(addr).await;
        let answer = exchange(&mut later, &request).await;
        assert_eq!(
            answer.status,
            Some(431),
            "later request, {what}: {answer:?}"
        );
    }
}

#[tokio::test]
async fn an_overlong_target_gets_414_on_both_paths() {
    let (server, _ended) = echo_server();
    let addr = start(server).await;
    let path = format!("/{}", "p".repeat(9 * 1024));
    let upgrade = upgrade_request(&path, &[]).into_bytes();
    let plain = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").into_bytes();
    // A request line longer than the whole head limit.
    let endless = format!("GET /{} HTTP/1.1\r\n\r\n", "q".repeat(20 * 1024)).into_bytes();
    for request in [&upgrade, &plain, &endless] {
        let mut first = RawClient::connect(addr).await.stream;
        exchange(&mut first, request).await.assert_refused(414);
    }
    for request in [&upgrade, &plain] {
        let mut later = after_one_request(addr).await;
        exchange(&mut later, request).await.assert_refused(414);
    }
}

#[tokio::test]
async fn an_upgrade_with_a_body_is_refused_on_both_paths() {
    let (server, _ended) = echo_server();
    let addr = start(server).await;
    // The "body" is a masked empty text frame: never to be read as one.
    let frame = b"\x81\x80abcd";
    let mut with_length = upgrade_request("/", &["Content-Length: 6"]).into_bytes();
    with_length.extend_from_slice(frame);
    let mut chunked = upgrade_request("/", &["Transfer-Encoding: chunked"]).into_bytes();
    chunked.extend_from_slice(b"6\r\n\x81\x80abcd\r\n0\r\n\r\n");
    for request in [&with_length, &chunked] {
        let mut first = RawClient::connect(addr).await.stream;
        let answer = exchange(&mut first, request).await;
        answer.assert_refused(400);
        let mut later = after_one_request(addr).await;
        exchange(&mut later, request).await.assert_refused(400);
    }
}

#[tokio::test]
async fn a_refused_upgrade_closes_its_connection_on_both_paths() {
    let (server, _ended) = echo_server();
    let addr = start(server).await;
    let keyless = upgrade_request("/", &[]).replace("Sec-WebSocket-Key", "X-Not-A-Key");
    // What a smuggler would put behind it.
    let request = format!("{keyless}GET /smuggled HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let mut first = RawClient::connect(addr).await.stream;
    let answer = exchange(&mut first, request.as_bytes()).await;
    answer.assert_refused(400);
    assert_eq!(answer.text.matches("HTTP/1.1 ").count(), 1, "{answer:?}");

    let mut later = after_one_request(addr).await;
    let answer = exchange(&mut later, request.as_bytes()).await;
    answer.assert_refused(400);
    assert!(
        answer
            .text
            .to_ascii_lowercase()
            .contains("connection: close"),
        "{answer:?}"
    );
    assert_eq!(
        answer.text.matches("HTTP/1.1 ").count(),
        1,
        "the request behind the refused upgrade was answered: {answer:?}"
    );
}

/// From accept until the first request head is complete, one deadline: a
/// head trickled in lines (past the size at which wharf's own parser hands
/// over to hyper) is cut when it runs out, not given a fresh one.
#[tokio::test]
async fn a_trickled_head_is_cut_at_the_handshake_timeout() {
    let timeout = Duration::from_millis(1000);
    let (server, _ended) = echo_server();
    let addr = start(server.handshake_timeout(timeout)).await;
    let mut stream = RawClient::connect(addr).await.stream;
    let started = Instant::now();
    let _ = stream
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n")
        .await;
    let line = format!("X-Slow: {}\r\n", "s".repeat(1000));
    let mut chunk = [0; 4096];
    let ended = within("the server ends the connection", async {
        loop {
            tokio::select! {
                r = stream.read(&mut chunk) => {
                    if matches!(r, Ok(0) | Err(_)) {
                        return started.elapsed();
                    }
                }
                () = tokio::time::sleep(Duration::from_millis(40)) => {
                    let _ = stream.write_all(line.as_bytes()).await;
                }
            }
        }
    })
    .await;
    assert!(
        ended < timeout + Duration::from_millis(400),
        "held {ended:?} with a handshake timeout of {timeout:?}"
    );
}

/// Pipelined requests whose answers are never read: once no byte can be
/// written for the write timeout, the connection is dropped rather than
/// held (with its buffered answers) for as long as the client likes.
#[tokio::test]
async fn a_stalled_http_writer_is_timed_out() {
    const REQUESTS: usize = 200;
    const BODY: usize = 64 * 1024;
    let server = Server::new()
        .write_timeout(Some(Duration::from_millis(500)))
        .on_request(|_req| async { Response::new(Body::from(vec![b'x'; BODY])) });
    let addr = start(server).await;
    let mut stream = RawClient::connect(addr).await.stream;
    let requests = GET.repeat(REQUESTS);
    within("write the requests", stream.write_all(&requests))
        .await
        .expect("write");
    // Far longer than the write timeout, reading nothing.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mut read = 0usize;
    let mut chunk = vec![0; 64 * 1024];
    let total = REQUESTS * BODY;
    within("read what was sent", async {
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => read += n,
            }
            if read > total {
                break;
            }
        }
    })
    .await;
    assert!(
        read < total,
        "a stalled connection was held: {read} bytes of answers ({REQUESTS} x {BODY} body bytes) still came"
    );
}
