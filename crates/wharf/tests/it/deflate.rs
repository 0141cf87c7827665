//! permessage-deflate over real sockets: negotiation, compressed messages
//! both ways, the inflate limit (decompression bombs), refused headers, and
//! compress-once broadcast. Client frames are compressed here with flate2,
//! independently of the server's codec. Independent interop: the peers
//! here are hand-written frames and flate2 on purpose (not wharf's client),
//! so that a bug shared by wharf's client and server cannot hide.

use std::net::SocketAddr;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use wharf::{DeflateConfig, Server};

use crate::util::{MASK, RawClient, echo_server, start, upgrade_request, within};

const OFFER: &str = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits";

/// Raw-deflates `data` with a sync flush and strips the `00 00 FF FF` tail,
/// as RFC 7692 §7.2.1 says a sender does.
fn deflate(data: &[u8]) -> Vec<u8> {
    let mut c = Compress::new(Compression::new(6), false);
    let mut out = Vec::with_capacity(data.len() + 64);
    loop {
        let consumed = c.total_in() as usize;
        out.reserve(out.capacity().max(1024));
        c.compress_vec(&data[consumed..], &mut out, FlushCompress::Sync)
            .expect("deflate");
        if c.total_in() as usize == data.len() && out.len() < out.capacity() {
            break;
        }
    }
    assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
    out.truncate(out.len() - 4);
    out
}

/// Inflates a message the server compressed.
fn inflate(data: &[u8]) -> Vec<u8> {
    let mut d = Decompress::new(false);
    let mut input = data.to_vec();
    input.extend_from_slice(&[0, 0, 0xff, 0xff]);
    let mut out = Vec::with_capacity(64 << 10);
    loop {
        let consumed = d.total_in() as usize;
        d.decompress_vec(&input[consumed..], &mut out, FlushDecompress::Sync)
            .expect("inflate");
        if d.total_in() as usize == input.len() && out.len() < out.capacity() {
            return out;
        }
        out.reserve(out.capacity());
    }
}

/// A masked, final, RSV1 (compressed) client frame.
fn compressed_frame(opcode: u8, compressed: &[u8]) -> Vec<u8> {
    let mut out = crate::util::frame(opcode, compressed, Some(MASK));
    out[0] |= 0x40;
    out
}

async fn handshake_with_deflate(addr: SocketAddr) -> (RawClient, Option<String>) {
    let mut client = RawClient::connect(addr).await;
    client
        .write(upgrade_request("/", &[OFFER]).as_bytes())
        .await;
    let res = client.read_response().await;
    assert_eq!(res.status, 101, "{res:?}");
    let ext = res.header("sec-websocket-extensions").map(str::to_owned);
    (client, ext)
}

fn chat_json(n: usize) -> String {
    let texts = [
        "hello there",
        "how is everyone doing today?",
        "shipping the release now",
        "lunch?",
    ];
    (0..n)
        .map(|i| {
            format!(
                r#"{{"type":"message","room":"lobby","id":{i},"name":"user{}","text":"{}","ts":{}}}"#,
                i % 7,
                texts[i % texts.len()],
                1_732_480_000 + i
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn negotiates_and_echoes_compressed_messages() {
    let (server, _ended) = echo_server();
    let addr = start(server.deflate(Some(DeflateConfig::shared()))).await;
    let (mut client, ext) = handshake_with_deflate(addr).await;
    assert_eq!(
        ext.as_deref(),
        Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover")
    );
    // RFC 7692 §7.2.3.1: "Hello" compressed; the echo is under the
    // compression threshold, so it comes back plain.
    client
        .write(&compressed_frame(
            0x1,
            &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00],
        ))
        .await;
    let (rsv, frame) = client.read_frame_rsv().await;
    assert_eq!(
        (rsv, frame.opcode, &frame.payload[..]),
        (0, 0x1, &b"Hello"[..])
    );
    // A larger message comes back compressed, and inflates to what was sent.
    let text = chat_json(20);
    client
        .write(&compressed_frame(0x1, &deflate(text.as_bytes())))
        .await;
    let (rsv, frame) = client.read_frame_rsv().await;
    assert_eq!((rsv, frame.opcode), (0b100, 0x1));
    assert!(
        frame.payload.len() < text.len() / 3,
        "{} bytes",
        frame.payload.len()
    );
    assert_eq!(inflate(&frame.payload), text.as_bytes());
}

#[tokio::test]
async fn without_an_offer_nothing_is_compressed() {
    let (server, _ended) = echo_server();
    let addr = start(server.deflate(Some(DeflateConfig::shared()))).await;
    let mut client = RawClient::handshake(addr).await;
    let text = chat_json(20);
    client
        .write(&crate::util::frame(0x1, text.as_bytes(), Some(MASK)))
        .await;
    let frame = client.read_frame().await;
    assert_eq!(frame.payload, text.as_bytes());
}

#[tokio::test]
async fn decompression_bomb_is_closed_with_1009() {
    let (server, mut ended) = echo_server();
    let addr = start(server.deflate(Some(DeflateConfig::shared()))).await;
    let (mut client, _) = handshake_with_deflate(addr).await;
    // 64 MiB of zeros in about 64 KiB, against the default 1 MiB limit.
    let bomb = deflate(&vec![0u8; 64 << 20]);
    assert!(bomb.len() < 128 << 10);
    client.write(&compressed_frame(0x2, &bomb)).await;
    let frame = client.read_frame().await;
    assert_eq!(frame.close_code(), 1009);
    client.expect_eof().await;
    let ended = within("handler ends", ended.recv()).await.expect("ended");
    assert!(
        matches!(
            ended.disconnect,
            Some(wharf::Disconnect::Protocol(
                wharf::ProtocolError::MessageTooBig { .. }
            ))
        ),
        "{ended:?}"
    );
    // The server is fine: a new connection still echoes.
    let (mut client, _) = handshake_with_deflate(addr).await;
    client
        .write(&crate::util::frame(0x1, b"still here", Some(MASK)))
        .await;
    assert_eq!(client.read_frame().await.payload, b"still here");
}

#[tokio::test]
async fn malformed_extension_header_is_refused_with_400() {
    let (server, _ended) = echo_server();
    let addr = start(server.deflate(Some(DeflateConfig::shared()))).await;
    let mut client = RawClient::connect(addr).await;
    let bad = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits=\"15";
    client.write(upgrade_request("/", &[bad]).as_bytes()).await;
    let res = client.read_response().await;
    assert_eq!(res.status, 400);
    assert_eq!(
        res.one_line_body(),
        "malformed Sec-WebSocket-Extensions header"
    );
}

#[tokio::test]
async fn rsv1_is_refused_when_deflate_was_not_negotiated() {
    let (server, _ended) = echo_server();
    let addr = start(server).await;
    let (mut client, ext) = handshake_with_deflate(addr).await;
    assert_eq!(ext, None, "deflate is off by default");
    client
        .write(&compressed_frame(
            0x1,
            &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00],
        ))
        .await;
    assert_eq!(client.read_frame().await.close_code(), 1002);
}

#[tokio::test]
async fn broadcast_compresses_once_for_compatible_receivers() {
    let server = Server::new().deflate(Some(DeflateConfig::shared()));
    let hub = server.hub();
    let addr = start(server).await;
    let (mut a, _) = handshake_with_deflate(addr).await;
    let (mut b, _) = handshake_with_deflate(addr).await;
    let mut plain = RawClient::handshake(addr).await;
    crate::chat_util::eventually("three clients registered", || hub.len() == 3).await;
    let text = chat_json(30);
    assert_eq!(hub.broadcast(text.clone()), 3);
    let (rsv_a, fa) = a.read_frame_rsv().await;
    let (rsv_b, fb) = b.read_frame_rsv().await;
    let fp = plain.read_frame().await;
    assert_eq!((rsv_a, rsv_b), (0b100, 0b100));
    assert_eq!(
        fa.payload, fb.payload,
        "one compressed frame shared by both"
    );
    assert_eq!(inflate(&fa.payload), text.as_bytes());
    assert_eq!(fp.payload, text.as_bytes());
}

#[tokio::test]
async fn send_uncompressed_is_never_compressed() {
    let server = Server::new()
        .deflate(Some(DeflateConfig::shared()))
        .on_connection(|mut conn| async move {
            while let Some(msg) = conn.recv().await {
                let _ = conn.try_send_uncompressed(msg);
            }
        });
    let addr = start(server).await;
    let (mut client, _) = handshake_with_deflate(addr).await;
    let text = chat_json(20);
    client
        .write(&compressed_frame(0x1, &deflate(text.as_bytes())))
        .await;
    let (rsv, frame) = client.read_frame_rsv().await;
    assert_eq!((rsv, &frame.payload[..]), (0, text.as_bytes()));
}

/// The per-thread state a connection's driver borrows (write batch, cork
/// buffer, shared compressor and decompressor, read-buffer pool) must never
/// carry one connection's bytes into another's: many connections on this
/// one thread, each with several of its own small, large, plain and
/// compressed messages in flight, get exactly their own back, in order.
#[tokio::test]
async fn connections_interleaved_on_one_thread_get_only_their_own_bytes() {
    let (server, _ended) = echo_server();
    let addr = start(server.deflate(Some(DeflateConfig::shared()))).await;
    let clients = (0..16usize).map(|c| async move {
        let (mut client, _) = handshake_with_deflate(addr).await;
        let messages: Vec<String> = (0..30usize)
            .map(|i| {
                let len = [5, 300, 700, 4000, 70_000][(c + i) % 5];
                format!("{c}:{i}:").repeat(len / 6 + 1)
            })
            .collect();
        let frame = |i: usize| {
            let m = messages[i].as_bytes();
            if i.is_multiple_of(2) {
                compressed_frame(0x1, &deflate(m))
            } else {
                crate::util::frame(0x1, m, Some(MASK))
            }
        };
        // Four messages in flight at any time.
        let window = 4;
        for i in 0..window {
            client.write(&frame(i)).await;
        }
        for i in 0..messages.len() {
            let (rsv, echo) = client.read_frame_rsv().await;
            let text = if rsv & 0b100 != 0 {
                inflate(&echo.payload)
            } else {
                echo.payload
            };
            assert!(
                text == messages[i].as_bytes(),
                "connection {c}, message {i}: got {} bytes {:?}.., rsv {rsv}, want {} bytes {:?}..",
                text.len(),
                String::from_utf8_lossy(&text[..text.len().min(40)]),
                messages[i].len(),
                &messages[i][..40.min(messages[i].len())]
            );
            if i + window < messages.len() {
                client.write(&frame(i + window)).await;
            }
        }
    });
    // Debug builds compress slowly: a longer bound than `within`'s.
    tokio::time::timeout(
        std::time::Duration::from_secs(60),
        futures_util::future::join_all(clients.collect::<Vec<_>>()),
    )
    .await
    .expect("every echo within 60 s");
}

/// A connection nobody receives from (its handler returned at once) still
/// inflates one message a driver poll, then yields: a flood of small frames
/// that each inflate to 64 KiB must not stall the other connections of its
/// worker. Were the driver to inflate all it has read in one poll (256 KiB
/// of frames: thousands of messages), the echo below would wait seconds.
#[tokio::test]
async fn a_compressed_flood_nobody_receives_does_not_stall_the_worker() {
    const FLOOD: usize = 3_000;
    let server = Server::new()
        .deflate(Some(DeflateConfig::shared()))
        .route("/flood", |_conn| async {})
        .route("/echo", |mut conn| async move {
            while let Some(m) = conn.recv().await {
                let _ = conn.try_send(m);
            }
        });
    let addr = start(server).await;
    let mut echo = RawClient::connect(addr).await;
    echo.write(upgrade_request("/echo", &[]).as_bytes()).await;
    assert_eq!(echo.read_response().await.status, 101);
    let mut flooder = RawClient::connect(addr).await;
    flooder
        .write(upgrade_request("/flood", &[OFFER]).as_bytes())
        .await;
    let res = flooder.read_response().await;
    assert!(res.header("sec-websocket-extensions").is_some(), "{res:?}");
    let bomb = compressed_frame(0x2, &deflate(&vec![0; 64 << 10]));
    let flood = bomb.repeat(FLOOD);
    let started = std::time::Instant::now();
    let writer = tokio::spawn(async move {
        flooder.write(&flood).await;
        flooder
    });
    let mut worst = std::time::Duration::ZERO;
    let mut rounds = 0;
    let mut written = None;
    // On while the flood is written, and 2 s more while it is inflated.
    while written
        .is_none_or(|at: std::time::Instant| at.elapsed() < std::time::Duration::from_secs(2))
    {
        if written.is_none() && writer.is_finished() {
            written = Some(std::time::Instant::now());
        }
        let sent = std::time::Instant::now();
        echo.write(&crate::util::frame(0x1, b"ping?", Some(MASK)))
            .await;
        let back = tokio::time::timeout(std::time::Duration::from_secs(20), echo.read_frame())
            .await
            .expect("the echo came back");
        assert_eq!(back.payload, b"ping?");
        worst = worst.max(sent.elapsed());
        rounds += 1;
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let _flooder = writer.await.expect("writer");
    eprintln!(
        "{FLOOD} bombs written in {:?}; {rounds} echoes meanwhile, the slowest {worst:?}",
        started.elapsed()
    );
    assert!(
        worst < std::time::Duration::from_millis(500),
        "an echo waited {worst:?} behind the flood"
    );
}
