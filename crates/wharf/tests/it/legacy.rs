//! The seed's drafts (hixie-75, hixie-76) behind `Server::legacy_drafts`:
//! a minimal client of each draft written here from the drafts' text (no
//! package that still speaks them runs on this Python or Node), with
//! wharf's client for RFC 6455, all in one room.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::StreamExt;
use md5::{Digest, Md5};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wharf::{Event, Hub, Message, Server};

use crate::chat_util::{next_text, send_text};
use crate::util::{connect, start, within};

/// A hixie client: the handshake, `0x00 … 0xFF` frames, -76's close.
struct Legacy {
    tcp: TcpStream,
    buf: Vec<u8>,
    /// A plain request was sent before the upgrade: skip its response.
    skip_plain: bool,
}

/// The draft's example keys (-76 §1.3) and their parts, and its `key3`.
const KEY1: &str = "4 @1  46546xW%0l 1 5";
const KEY2: &str = "12998 5 Y3 1  .P00";
const KEY3: &[u8; 8] = b"^n:ds[4U";

impl Legacy {
    /// The request of `draft` (75 or 76) for `path`, with its `key3`.
    fn request(draft: u8, addr: SocketAddr, path: &str) -> Vec<u8> {
        let mut req = format!(
            "GET {path} HTTP/1.1\r\nUpgrade: WebSocket\r\nConnection: Upgrade\r\n\
             Host: {addr}\r\nOrigin: http://{addr}\r\n"
        );
        if draft == 76 {
            req.push_str(&format!(
                "Sec-WebSocket-Key1: {KEY1}\r\nSec-WebSocket-Key2: {KEY2}\r\n"
            ));
        }
        req.push_str("\r\n");
        let mut bytes = req.into_bytes();
        if draft == 76 {
            bytes.extend_from_slice(KEY3);
        }
        bytes
    }

    async fn connect(draft: u8, addr: SocketAddr) -> Self {
        let tcp = within("connect", TcpStream::connect(addr)).await.unwrap();
        Self::handshake_on(draft, addr, tcp, Vec::new()).await
    }

    /// Sends the handshake on `tcp` (after `before`, a request to send
    /// first on the same connection) and checks the `101`.
    async fn handshake_on(draft: u8, addr: SocketAddr, tcp: TcpStream, before: Vec<u8>) -> Self {
        let mut me = Self {
            tcp,
            buf: Vec::new(),
            skip_plain: !before.is_empty(),
        };
        let mut out = before;
        out.extend_from_slice(&Self::request(draft, addr, "/room?x=1"));
        me.tcp.write_all(&out).await.unwrap();
        let head = me.read_head().await;
        if draft == 75 {
            // -75 clients compare these bytes exactly.
            assert!(
                head.starts_with(
                    "HTTP/1.1 101 Web Socket Protocol Handshake\r\n\
                     Upgrade: WebSocket\r\nConnection: Upgrade\r\n"
                ),
                "{head}"
            );
            let lower = head.to_ascii_lowercase();
            assert!(lower.contains(&format!("websocket-origin: http://{addr}\r\n")));
            assert!(lower.contains(&format!("websocket-location: ws://{addr}/room?x=1\r\n")));
        } else {
            assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
            let lower = head.to_ascii_lowercase();
            assert!(lower.contains(&format!("sec-websocket-origin: http://{addr}\r\n")));
            assert!(lower.contains(&format!("sec-websocket-location: ws://{addr}/room?x=1\r\n")));
            let answer = me.read_exact(16).await;
            let mut md5 = Md5::new();
            md5.update(829_309_203u32.to_be_bytes());
            md5.update(259_970_620u32.to_be_bytes());
            md5.update(KEY3);
            assert_eq!(answer, md5.finalize()[..]);
            assert_eq!(answer, b"8jKS'y:G*Co,Wxa-", "the draft's answer");
        }
        me
    }

    /// Reads a response head (skipping any before it that is not a `101`).
    async fn read_head(&mut self) -> String {
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head: Vec<u8> = self.buf.drain(..end + 4).collect();
                let head = String::from_utf8(head).unwrap();
                if self.skip_plain && !head.starts_with("HTTP/1.1 101") {
                    // A plain response before the upgrade: its body too.
                    let len: usize = head
                        .to_ascii_lowercase()
                        .split("content-length: ")
                        .nth(1)
                        .and_then(|r| r.split("\r\n").next())
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(0);
                    self.read_exact(len).await;
                    self.skip_plain = false;
                    continue;
                }
                return head;
            }
            self.fill().await;
        }
    }

    async fn fill(&mut self) {
        let mut chunk = [0u8; 4096];
        let n = within("legacy read", self.tcp.read(&mut chunk))
            .await
            .unwrap();
        assert!(n > 0, "closed early; had {:?}", self.buf);
        self.buf.extend_from_slice(&chunk[..n]);
    }

    async fn read_exact(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            self.fill().await;
        }
        self.buf.drain(..n).collect()
    }

    async fn send(&mut self, text: &str) {
        let mut frame = vec![0x00];
        frame.extend_from_slice(text.as_bytes());
        frame.push(0xff);
        self.tcp.write_all(&frame).await.unwrap();
    }

    /// The next text message.
    async fn recv(&mut self) -> String {
        loop {
            if let Some(end) = self.buf.iter().position(|&b| b == 0xff) {
                assert_eq!(self.buf[0], 0x00, "a text frame: {:?}", self.buf);
                let frame: Vec<u8> = self.buf.drain(..=end).collect();
                return String::from_utf8(frame[1..end].to_vec()).unwrap();
            }
            self.fill().await;
        }
    }

    /// Everything until the server closes the connection.
    async fn rest(&mut self) -> Vec<u8> {
        let mut all = std::mem::take(&mut self.buf);
        within("legacy eof", self.tcp.read_to_end(&mut all))
            .await
            .unwrap();
        all
    }
}

/// `examples/chat.rs` with the drafts on.
fn chat_server() -> (Server, Hub) {
    crate::hub::chat_server_on(Server::new().legacy_drafts(true))
}

#[tokio::test]
async fn a_mixed_room_of_all_three_protocols() {
    let (server, hub) = chat_server();
    let stats = server.stats();
    let addr = start(server).await;
    let mut h75 = Legacy::connect(75, addr).await;
    let join75 = h75.recv().await;
    let mut h76 = Legacy::connect(76, addr).await;
    let join76 = h76.recv().await;
    assert_eq!(h75.recv().await, join76);
    let mut ws = connect(addr, "/").await;
    let join_ws = next_text(&mut ws).await;
    assert_eq!(h75.recv().await, join_ws);
    assert_eq!(h76.recv().await, join_ws);
    let id = |join: &str| join.trim_start_matches("New Connection: ").to_owned();

    h75.send("from 75").await;
    let line = format!("{}: from 75", id(&join75));
    assert_eq!(h75.recv().await, line);
    assert_eq!(h76.recv().await, line);
    assert_eq!(next_text(&mut ws).await, line);
    h76.send("from 76 — café").await;
    let line = format!("{}: from 76 — café", id(&join76));
    assert_eq!(h75.recv().await, line);
    assert_eq!(h76.recv().await, line);
    assert_eq!(next_text(&mut ws).await, line);
    send_text(&mut ws, "from 6455").await;
    let line = format!("{}: from 6455", id(&join_ws));
    assert_eq!(h75.recv().await, line);
    assert_eq!(h76.recv().await, line);
    assert_eq!(next_text(&mut ws).await, line);

    // Binary reaches the RFC 6455 client only; the drafts skip it, counted.
    assert_eq!(hub.broadcast(Message::Binary(vec![1, 2, 3].into())), 1);
    let binary = within("binary", ws.next()).await;
    assert!(
        matches!(binary, Some(Event::Message(Message::Binary(_)))),
        "{binary:?}"
    );
    hub.broadcast("after binary");
    assert_eq!(next_text(&mut ws).await, "after binary");
    assert_eq!(h75.recv().await, "after binary");
    assert_eq!(h76.recv().await, "after binary");
    let snap = stats.snapshot();
    assert_eq!(snap.legacy_binary_skipped, 2);
    assert_eq!(
        (
            snap.connections_total,
            snap.connections_hixie75,
            snap.connections_hixie76
        ),
        (3, 1, 1)
    );

    // -76's closing handshake: our 0xFF 0x00 is echoed, then the end.
    h76.tcp.write_all(b"\xff\x00").await.unwrap();
    let rest = h76.rest().await;
    assert!(rest.ends_with(b"\xff\x00"), "{rest:?}");
    let left = format!("Connection Closed: {}", id(&join76));
    assert_eq!(h75.recv().await, left);
    // -75 closes with the transport.
    drop(h75);
    assert_eq!(
        next_text(&mut ws).await,
        format!("Connection Closed: {}", id(&join76))
    );
    assert_eq!(
        next_text(&mut ws).await,
        format!("Connection Closed: {}", id(&join75))
    );
}

#[tokio::test]
async fn off_by_default_a_legacy_handshake_gets_426_and_a_reason() {
    let addr = start(Server::new()).await;
    for draft in [75, 76] {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(&Legacy::request(draft, addr, "/"))
            .await
            .unwrap();
        let mut all = Vec::new();
        within("refusal", tcp.read_to_end(&mut all)).await.unwrap();
        let text = String::from_utf8_lossy(&all);
        assert!(text.starts_with("HTTP/1.1 426 "), "{text}");
        assert!(
            text.ends_with(&format!(
                "\r\n\r\nhixie-{draft} handshake refused: this server speaks only RFC 6455 (version 13)"
            )),
            "{text}"
        );
    }
}

#[tokio::test]
async fn bad_keys_are_refused_with_400() {
    let addr = start(Server::new().legacy_drafts(true)).await;
    for (key1, reason) in [
        ("12345", "Sec-WebSocket-Key has no spaces"),
        (
            "1 2 3",
            "Sec-WebSocket-Key number is not a multiple of its spaces",
        ),
    ] {
        let req = String::from_utf8(Legacy::request(76, addr, "/"))
            .unwrap()
            .replace(KEY1, key1);
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(req.as_bytes()).await.unwrap();
        let mut all = Vec::new();
        within("refusal", tcp.read_to_end(&mut all)).await.unwrap();
        let text = String::from_utf8_lossy(&all);
        assert!(text.starts_with("HTTP/1.1 400 "), "{text}");
        assert!(text.ends_with(reason), "{text}");
    }
}

/// An upgrade after a plain request on the same connection is read by
/// hyper: the `101` head comes from hyper, the -76 answer after it.
#[tokio::test]
async fn both_drafts_on_hypers_path() {
    let (server, _hub) = chat_server();
    let addr = start(server).await;
    for draft in [75, 76] {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let plain = format!("GET / HTTP/1.1\r\nHost: {addr}\r\n\r\n").into_bytes();
        let mut client = Legacy::handshake_on(draft, addr, tcp, plain).await;
        let join = client.recv().await;
        assert!(join.starts_with("New Connection: "), "{join}");
        client.send("hello").await;
        let id = join.trim_start_matches("New Connection: ");
        assert_eq!(client.recv().await, format!("{id}: hello"));
    }
}

#[tokio::test]
async fn key3_split_and_late_is_still_answered() {
    let (server, _hub) = chat_server();
    let addr = start(server).await;
    let req = Legacy::request(76, addr, "/room?x=1");
    let (head, key3) = req.split_at(req.len() - 5);
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(head).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    tcp.write_all(key3).await.unwrap();
    let mut client = Legacy {
        tcp,
        buf: Vec::new(),
        skip_plain: false,
    };
    let head = client.read_head().await;
    assert!(head.starts_with("HTTP/1.1 101 WebSocket Protocol Handshake\r\n"));
    assert_eq!(client.read_exact(16).await, b"8jKS'y:G*Co,Wxa-");
}

#[tokio::test]
async fn no_ping_silence_times_out_with_the_closing_handshake() {
    let server = Server::new().legacy_drafts(true).keepalive(Some((
        Duration::from_millis(100),
        Duration::from_millis(100),
    )));
    let addr = start(server).await;
    let mut h76 = Legacy::connect(76, addr).await;
    let started = tokio::time::Instant::now();
    let rest = h76.rest().await;
    assert_eq!(rest, b"\xff\x00", "no ping, then the closing handshake");
    assert!(started.elapsed() >= Duration::from_millis(150));
    let mut h75 = Legacy::connect(75, addr).await;
    assert_eq!(h75.rest().await, b"", "-75 closes with the transport");
}

#[tokio::test]
async fn invalid_text_and_oversized_frames_end_the_connection() {
    let server = Server::new()
        .legacy_drafts(true)
        .limits(wharf::Limits::default().max_message_size(16))
        .on_connection(|mut conn| async move {
            while let Some(m) = conn.recv().await {
                let _ = conn.try_send(m);
            }
        });
    let addr = start(server).await;
    let mut h76 = Legacy::connect(76, addr).await;
    h76.send("ok").await;
    assert_eq!(h76.recv().await, "ok");
    h76.tcp.write_all(b"\x00\xc3\x28\xff").await.unwrap();
    assert_eq!(h76.rest().await, b"\xff\x00");
    let mut h76 = Legacy::connect(76, addr).await;
    h76.tcp.write_all(&[b'x'; 64]).await.unwrap();
    h76.tcp.write_all(b"\x00").await.unwrap();
    assert_eq!(h76.rest().await, b"\xff\x00");
    let mut h75 = Legacy::connect(75, addr).await;
    h75.send("seventeen bytes!!").await;
    assert_eq!(h75.rest().await, b"");
}
