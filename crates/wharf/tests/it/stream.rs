//! The connection as tokio-tungstenite users hold one: a `Stream` of events
//! that ends by saying how, a `Sink` with real backpressure, `split`, and an
//! async `send` that follows the reader's pace.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::CloseFrame as WsCloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCode;
use wharf::{CloseCode, Disconnect, Event, Message, SendError, Server};

use crate::util::{RawClient, connect_tungstenite, start, within};

/// The write-queue bound of the backpressure tests.
const MAX: usize = 64 << 10;
/// The size of each message the producer sends.
const CHUNK: usize = 16 << 10;
/// How many it sends: 32 MiB, far past the socket buffers of loopback, so
/// the queue must hold back the producer or grow past its bound.
const CHUNKS: usize = 2_048;

#[tokio::test]
async fn the_stream_yields_each_message_then_how_the_peer_closed_then_ends() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let server = Server::new().on_connection(move |mut conn| {
        let tx = tx.clone();
        async move {
            let mut seen = Vec::new();
            while let Some(event) = conn.next().await {
                seen.push(event);
            }
            // Past its end the stream stays ended, and `recv` agrees.
            assert!(conn.next().await.is_none());
            assert!(conn.recv().await.is_none());
            let _ = tx.send(seen);
        }
    });
    let addr = start(server).await;
    let mut ws = connect_tungstenite(addr, "/").await;
    within("send", ws.send(WsMessage::text("one")))
        .await
        .unwrap();
    within("send", ws.send(WsMessage::binary(vec![2, 2])))
        .await
        .unwrap();
    let bye = WsCloseFrame {
        code: WsCode::Away,
        reason: "bye".into(),
    };
    within("close", ws.close(Some(bye))).await.unwrap();
    let seen = within("handler", rx.recv()).await.unwrap();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert_eq!(seen[0], Event::Message(Message::from("one")));
    assert_eq!(seen[1], Event::Message(Message::from(vec![2u8, 2])));
    let Event::Close(Disconnect::Peer(frame)) = &seen[2] else {
        panic!("expected Close(Peer), got {:?}", seen[2]);
    };
    assert_eq!(frame.code, CloseCode::GOING_AWAY);
    assert_eq!(frame.reason.as_str(), "bye");
    assert!(seen[2] != Event::Close(Disconnect::Reset));
}

#[tokio::test]
async fn split_halves_echo_through_forward_in_order() {
    let server = Server::new().on_connection(|conn| async move {
        let (write, read) = conn.split();
        let messages = read.filter_map(|event| async move {
            match event {
                Event::Message(m) => Some(Ok(m)),
                _ => None,
            }
        });
        let _ = messages.forward(write).await;
    });
    let addr = start(server).await;
    let mut ws = connect_tungstenite(addr, "/").await;
    for i in 0..200 {
        ws.feed(WsMessage::text(format!("m{i}"))).await.unwrap();
    }
    within("flush", ws.flush()).await.unwrap();
    for i in 0..200 {
        let got = within("echo", ws.next()).await.unwrap().unwrap();
        assert_eq!(got, WsMessage::text(format!("m{i}")));
    }
    // Closing the client ends the read half, so `forward` closes the
    // write half: the close handshake completes.
    within("close", ws.close(None)).await.unwrap();
    let end = within("end", ws.next()).await;
    assert!(
        matches!(end, None | Some(Ok(WsMessage::Close(_)))),
        "{end:?}"
    );
}

/// A producer that awaits `send` (or drives the `Sink`) while its reader
/// starts late: 32 MiB go through a 64 KiB queue with no message lost and
/// no close, and the queue never holds more than its bound plus one message.
async fn producer_follows_a_late_reader(sink: bool) {
    let peak = Arc::new(AtomicUsize::new(0));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let server = Server::new().max_backpressure(MAX);
    let seen = peak.clone();
    let server = server.on_connection(move |mut conn| {
        let (peak, tx) = (seen.clone(), tx.clone());
        async move {
            let mut result = Ok(());
            for i in 0..CHUNKS {
                let mut chunk = vec![0u8; CHUNK];
                chunk[..8].copy_from_slice(&(i as u64).to_be_bytes());
                result = if sink {
                    conn.feed(Message::from(chunk)).await
                } else {
                    conn.send(chunk).await
                };
                if result.is_err() {
                    break;
                }
                peak.fetch_max(conn.buffered_amount(), Ordering::Relaxed);
            }
            if result.is_ok() && sink {
                result = conn.flush().await;
                assert_eq!(conn.buffered_amount(), 0, "flushed");
            }
            let _ = tx.send(result);
            while conn.recv().await.is_some() {}
        }
    });
    let addr = start(server).await;
    let mut ws = connect_tungstenite(addr, "/").await;
    // The reader starts late: the socket buffers fill, then the queue.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        rx.try_recv().is_err(),
        "the producer finished before anything was read"
    );
    for i in 0..CHUNKS {
        let got = within("message", ws.next()).await.unwrap().unwrap();
        let WsMessage::Binary(data) = got else {
            panic!("expected binary, got {got:?}")
        };
        assert_eq!(data.len(), CHUNK);
        assert_eq!(data[..8], (i as u64).to_be_bytes(), "message {i} in order");
    }
    assert_eq!(within("producer", rx.recv()).await.unwrap(), Ok(()));
    let peak = peak.load(Ordering::Relaxed);
    assert!(
        peak <= MAX + CHUNK + 14,
        "the queue held {peak} bytes, past its bound of {MAX} plus one message"
    );
}

#[tokio::test]
async fn an_awaited_send_follows_a_late_reader_within_the_bound() {
    producer_follows_a_late_reader(false).await;
}

#[tokio::test]
async fn the_sink_follows_a_late_reader_within_the_bound() {
    producer_follows_a_late_reader(true).await;
}

#[tokio::test]
async fn a_send_waiting_on_a_peer_that_never_reads_ends_at_the_write_timeout() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let server = Server::new()
        .max_backpressure(MAX)
        .write_timeout(Some(Duration::from_secs(1)));
    let server = server.on_connection(move |conn| {
        let tx = tx.clone();
        async move {
            let started = Instant::now();
            let mut sent = 0;
            let why = loop {
                if let Err(e) = conn.send(vec![0u8; CHUNK]).await {
                    break e;
                }
                sent += 1;
                assert!(sent < 1_000_000, "the peer never read, yet sends went on");
            };
            let _ = tx.send((why, started.elapsed(), conn.disconnect()));
        }
    });
    let addr = start(server).await;
    // Handshakes, then never reads.
    let _raw = RawClient::handshake(addr).await;
    let (why, took, end) = within("the waiting send gives up", rx.recv())
        .await
        .unwrap();
    assert_eq!(why, SendError::Closed);
    assert!(took < Duration::from_secs(4), "took {took:?}");
    assert_eq!(end, Some(Disconnect::TimedOut));
}

#[tokio::test]
async fn try_send_keeps_the_slow_client_policy_where_send_waits() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let server = Server::new().max_backpressure(MAX);
    let server = server.on_connection(move |conn| {
        let tx = tx.clone();
        async move {
            let mut result = Ok(());
            for _ in 0..CHUNKS {
                result = conn.try_send(vec![0u8; CHUNK]);
                if result.is_err() {
                    break;
                }
            }
            let _ = tx.send(result);
        }
    });
    let addr = start(server).await;
    let _raw = RawClient::handshake(addr).await;
    let result = within("try_send meets the bound", rx.recv()).await.unwrap();
    assert_eq!(result, Err(SendError::Backpressure));
}

#[tokio::test]
async fn closed_resolves_once_the_tcp_connection_is_gone() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let server = Server::new().on_connection(move |mut conn| {
        let tx = tx.clone();
        async move {
            while conn.recv().await.is_some() {}
            let handshake_over = Instant::now();
            let why = conn.closed().await;
            let _ = tx.send((why, handshake_over.elapsed(), conn.disconnect()));
        }
    });
    let addr = start(server).await;
    let mut ws = connect_tungstenite(addr, "/").await;
    within("close", ws.close(None)).await.unwrap();
    // The server closes TCP first; the client's FIN comes when it lets go.
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(ws);
    let (why, waited, end) = within("closed", rx.recv()).await.unwrap();
    // A close frame without a code reads as 1005 (RFC 6455 §7.1.5).
    assert!(
        matches!(why, Disconnect::Peer(ref f) if f.code == CloseCode::NO_STATUS_RECEIVED),
        "{why:?}"
    );
    assert_eq!(Some(why), end);
    assert!(
        waited >= Duration::from_millis(150),
        "closed() returned before the client let go ({waited:?})"
    );
}
