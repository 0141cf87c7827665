//! `Server::on_message`: connections served by a callback per message, with
//! no handler future: every message once and in order (plain and
//! compressed, across frame and read boundaries), the close handshake, a
//! panicking callback, rooms joined from the callback, and a peer that
//! floods and never reads, which meets the write-queue bound.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::Message as TMessage;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as TCloseCode;
use wharf::{DeflateConfig, Event, Server, SlowClient};

use crate::util::{MASK, RawClient, connect, connect_tungstenite, connector, frame, start, within};

fn echo() -> Server {
    Server::new().on_message(|client, message| {
        let _ = client.try_send(message);
    })
}

#[tokio::test]
async fn every_message_comes_back_once_in_order_and_the_close_is_answered() {
    let server = echo();
    let hub = server.hub();
    let addr = start(server).await;
    let mut ws = connect_tungstenite(addr, "/").await;
    // Sizes across the length encodings and the driver's read sizes; sent
    // four at a time before reading, so several are parsed from one read
    // (and the four stay under the 1 MiB queue bound).
    let sizes = [0usize, 1, 125, 126, 4_000, 65_535, 65_536, 200_000];
    for batch in 0..100 {
        let mut sent = Vec::new();
        for i in batch * 4..batch * 4 + 4 {
            let len = sizes[i % sizes.len()];
            let msg = if i % 2 == 0 {
                TMessage::text(format!("{i:06}{}", "é".repeat(len / 2)))
            } else {
                let mut bytes = vec![(i % 251) as u8; len + 6];
                bytes[..6].copy_from_slice(format!("{i:06}").as_bytes());
                TMessage::binary(bytes)
            };
            sent.push(msg.clone());
            within("send", ws.feed(msg)).await.expect("send");
        }
        within("flush", ws.flush()).await.expect("flush");
        for (i, want) in sent.iter().enumerate() {
            let got = within("echo", ws.next())
                .await
                .expect("a message")
                .expect("no error");
            assert!(
                got == *want,
                "message {} came back different",
                batch * 4 + i
            );
        }
    }
    within(
        "close",
        ws.close(Some(CloseFrame {
            code: TCloseCode::Normal,
            reason: "bye".into(),
        })),
    )
    .await
    .expect("close");
    match within("close echo", ws.next()).await {
        Some(Ok(TMessage::Close(Some(frame)))) => assert_eq!(frame.code, TCloseCode::Normal),
        other => panic!("expected the close echo, got {other:?}"),
    }
    drop(ws);
    within("hub empties", hub.wait_empty()).await;
}

#[tokio::test]
async fn compressed_messages_are_inflated_before_the_callback() {
    let server = echo().deflate(Some(DeflateConfig::dedicated(15)));
    let addr = start(server).await;
    let (mut ws, response) = within(
        "connect",
        connector()
            .deflate(Some(DeflateConfig::dedicated(15)))
            .connect(&format!("ws://{addr}/")),
    )
    .await
    .expect("handshake");
    assert!(
        response.headers().get("sec-websocket-extensions").is_some(),
        "deflate was not agreed"
    );
    // Highly compressible: a few KiB on the wire inflate to 1 MiB, which
    // the driver inflates with the lock released, then calls back.
    let big = "wharf ".repeat((1 << 20) / 6);
    for i in 0..20 {
        let text = if i % 5 == 4 {
            big.clone()
        } else {
            format!("message {i}")
        };
        ws.send(text.clone()).await.expect("send");
        match within("echo", ws.next()).await {
            Some(Event::Message(m)) => assert_eq!(m.as_text(), Some(text.as_str())),
            other => panic!("expected message {i}, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_panicking_callback_closes_with_1011_and_discards_the_rest() {
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let server = Server::new().on_message(move |client, message| {
        seen.fetch_add(1, Ordering::SeqCst);
        if message.as_text() == Some("boom") {
            panic!("callback bug on connection {}", client.id());
        }
        let _ = client.try_send(message);
    });
    let hub = server.hub();
    let stats = server.stats();
    let addr = start(server).await;
    let mut raw = RawClient::handshake(addr).await;
    raw.write(&frame(0x1, b"one", Some(MASK))).await;
    assert_eq!(within("echo", raw.read_frame()).await.payload, b"one");
    // The panic, and a message behind it in the same write.
    let mut both = frame(0x1, b"boom", Some(MASK));
    both.extend(frame(0x1, b"after", Some(MASK)));
    raw.write(&both).await;
    let close = within("close frame", raw.read_frame()).await;
    assert_eq!(close.opcode, 0x8);
    assert_eq!(close.close_code(), 1011);
    raw.write(&frame(0x8, &1000u16.to_be_bytes(), Some(MASK)))
        .await;
    within("end of stream", raw.expect_eof()).await;
    drop(raw);
    within("hub empties", hub.wait_empty()).await;
    assert_eq!(stats.snapshot().handler_panics, 1);
    assert_eq!(calls.load(Ordering::SeqCst), 2, "called after its panic");
}

#[tokio::test]
async fn a_callback_joins_rooms_and_publishes_across_workers() {
    let server = Server::new().workers(2);
    let hub = server.hub();
    let publisher = hub.clone();
    let server = server.on_message(move |client, message| {
        match message.as_text().and_then(|t| t.strip_prefix("join ")) {
            Some(room) => {
                client.join(room);
                let _ = client.try_send(format!("joined {room}"));
            }
            None => {
                publisher.publish("room", message);
            }
        }
    });
    let addr = start(server).await;
    let mut members = Vec::new();
    for _ in 0..4 {
        let mut ws = connect(addr, "/").await;
        ws.send("join room").await.expect("send");
        match within("joined", ws.next()).await {
            Some(Event::Message(m)) => assert_eq!(m.as_text(), Some("joined room")),
            other => panic!("expected the join's answer, got {other:?}"),
        }
        members.push(ws);
    }
    assert_eq!(hub.room_len("room"), 4);
    let sender = connect(addr, "/").await;
    for i in 0..100 {
        sender.send(format!("{i}")).await.expect("send");
    }
    for ws in &mut members {
        for i in 0..100 {
            match within("published", ws.next()).await {
                Some(Event::Message(m)) => assert_eq!(m.as_text(), Some(format!("{i}").as_str())),
                other => panic!("expected message {i}, got {other:?}"),
            }
        }
    }
}

/// An attacker's echo flood: 64 KiB messages as fast as the socket takes
/// them, for 3 s, never reading a reply. Were the callback path to read on
/// while replies pile up, the queue would grow at the flood's rate (GiBs
/// in 3 s): it must stay within `max_backpressure` plus one message, the
/// server reading nothing more once its socket refuses output, so that the
/// peer is pushed back through TCP.
#[tokio::test]
async fn a_peer_that_floods_and_never_reads_meets_the_queue_bound() {
    const BOUND: usize = 256 << 10;
    const MSG: usize = 64 << 10;
    let server = echo()
        .max_backpressure(BOUND)
        .slow_client(SlowClient::Close);
    let hub = server.hub();
    let addr = start(server).await;
    let mut raw = RawClient::handshake(addr).await;
    within("registered", async {
        while hub.is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    let client = hub.clients().pop().expect("the connection");
    let done = Arc::new(AtomicBool::new(false));
    let (watcher, stop) = (client.clone(), done.clone());
    let peak = tokio::spawn(async move {
        let mut peak = 0;
        while !stop.load(Ordering::SeqCst) {
            peak = peak.max(watcher.buffered_amount());
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        peak
    });
    let one = frame(0x2, &vec![7u8; MSG], Some(MASK));
    let started = Instant::now();
    let mut written = 0usize;
    while started.elapsed() < Duration::from_secs(3) {
        match tokio::time::timeout(Duration::from_millis(200), raw.stream.write_all(&one)).await {
            Ok(Ok(())) => written += one.len(),
            // Refused: the server closed.
            Ok(Err(_)) => break,
            // Not taken: pushed back; keep trying until the time is up.
            Err(_) => {}
        }
    }
    done.store(true, Ordering::SeqCst);
    let peak = within("watcher", peak).await.expect("watcher");
    eprintln!("flood: {written} bytes written in 3 s, queue peak {peak} bytes");
    assert!(
        peak <= BOUND + MSG + 64,
        "write queue peaked at {peak} bytes over a {BOUND}-byte bound"
    );
    assert!(
        written < 64 << 20,
        "the server took {written} bytes from a peer that never reads"
    );
    drop(raw);
    within("hub empties", hub.wait_empty()).await;
    assert!(client.disconnect().is_some(), "no account of the end");
}
