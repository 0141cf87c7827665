//! What a peer or a handler can make a connection hold, and for how long:
//! floods, handlers that stop reading or return early or panic, peers that
//! stop reading. Each test first failed on the driver it guards.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use wharf::{Client, CloseCode, Disconnect, Server};

use crate::util::{MASK, RawClient, frame, start, within};

/// A client that sends `n` masked pings of 125 bytes as one stream of
/// writes and never reads.
async fn ping_flood(stream: &mut TcpStream, n: usize) {
    let ping = frame(0x9, &[b'p'; 125], Some(MASK));
    let batch: Vec<u8> = (0..256).flat_map(|_| ping.iter().copied()).collect();
    for _ in 0..n / 256 {
        if stream.write_all(&batch).await.is_err() {
            return;
        }
    }
}

#[tokio::test]
async fn a_ping_flood_from_a_peer_that_never_reads_stays_within_the_output_bound() {
    let (tx, mut rx) = mpsc::unbounded_channel::<Client>();
    let server = Server::new().on_connection(move |mut conn| {
        let _ = tx.send(conn.client().clone());
        async move { while conn.recv().await.is_some() {} }
    });
    let addr = start(server).await;
    let mut raw = RawClient::handshake(addr).await;
    let client = within("connection", rx.recv()).await.unwrap();
    let peak = Arc::new(AtomicUsize::new(0));
    let watch = {
        let (client, peak) = (client.clone(), peak.clone());
        tokio::spawn(async move {
            loop {
                peak.fetch_max(client.buffered_amount(), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
    };
    // 128k pings (17 MB): before, one pong each was queued, each pinning
    // its read buffer; the flood ends when the server stops reading.
    let _ =
        tokio::time::timeout(Duration::from_secs(3), ping_flood(&mut raw.stream, 131_072)).await;
    watch.abort();
    // At most 16 pongs of 127 bytes wait in the queue (plus what the
    // socket has not taken of one write).
    let peak = peak.load(Ordering::Relaxed);
    assert!(peak <= 16 * 127 * 2, "output queue reached {peak} bytes");
    assert_eq!(client.state(), wharf::ReadyState::Open);
}

#[tokio::test]
async fn a_handler_that_returns_without_reading_still_completes_the_close_handshake() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let server = Server::new()
        .close_timeout(Duration::from_secs(30))
        .on_connection(move |conn| {
            let tx = tx.clone();
            async move {
                let _ = conn.close(CloseCode::NORMAL, "bye");
                let _ = tx.send(conn.client().clone());
                // Returns at once: nobody will call `recv`.
            }
        });
    let addr = start(server).await;
    let mut raw = RawClient::handshake(addr).await;
    let client = within("connection", rx.recv()).await.unwrap();
    let close = within("close frame", raw.read_frame()).await;
    assert_eq!(close.close_code(), 1000);
    let started = Instant::now();
    raw.write(&frame(0x8, &1000u16.to_be_bytes(), Some(MASK)))
        .await;
    within("end of stream", raw.expect_eof()).await;
    assert!(started.elapsed() < Duration::from_secs(2));
    let why = client.disconnect();
    assert!(
        matches!(&why, Some(Disconnect::Local(c)) if c.code == CloseCode::NORMAL && c.reason == "bye"),
        "{why:?}"
    );
}

#[tokio::test]
async fn a_peer_close_reaches_a_handler_that_never_reads_and_the_connection_ends() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let server = Server::new()
        .close_timeout(Duration::from_secs(30))
        .on_connection(move |conn| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(conn.client().clone());
                // Holds the connection without ever reading, then drops it.
                tokio::time::sleep(Duration::from_millis(300)).await;
                drop(conn);
                std::future::pending::<()>().await;
            }
        });
    let addr = start(server).await;
    let mut raw = RawClient::handshake(addr).await;
    let client = within("connection", rx.recv()).await.unwrap();
    raw.write(&frame(0x1, b"unread", Some(MASK))).await;
    raw.write(&frame(0x8, &1001u16.to_be_bytes(), Some(MASK)))
        .await;
    // Once the handler lets go, the driver takes the message and the close,
    // and echoes it.
    let echo = within("close echo", raw.read_frame()).await;
    assert_eq!(echo.close_code(), 1001);
    within("end of stream", raw.expect_eof()).await;
    let why = client.disconnect();
    assert!(
        matches!(&why, Some(Disconnect::Peer(c)) if c.code == CloseCode::GOING_AWAY),
        "{why:?}"
    );
}

#[tokio::test]
async fn keepalive_works_for_a_handler_that_only_sends() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let server = Server::new()
        .keepalive(Some((
            Duration::from_millis(100),
            Duration::from_millis(150),
        )))
        .on_connection(move |conn| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(conn.client().clone());
                for i in 0.. {
                    if conn.try_send(format!("tick {i}")).is_err() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        });
    let addr = start(server).await;
    let mut raw = RawClient::handshake(addr).await;
    let client = within("connection", rx.recv()).await.unwrap();
    // The peer answers every ping, for ten keepalive periods.
    let until = Instant::now() + Duration::from_millis(1_500);
    let mut pings = 0;
    while Instant::now() < until {
        let f = within("a frame", raw.read_frame()).await;
        match f.opcode {
            0x9 => {
                pings += 1;
                raw.write(&frame(0xa, &f.payload, Some(MASK))).await;
            }
            0x1 => {}
            op => panic!("unexpected opcode {op:#x}"),
        }
    }
    assert!(pings >= 3, "only {pings} pings");
    assert_eq!(client.state(), wharf::ReadyState::Open);
}

#[tokio::test]
async fn a_panicking_handler_closes_with_1011_and_leaves_the_hub() {
    let server = Server::new().on_connection(|conn| async move {
        tokio::task::yield_now().await;
        panic!("handler bug on connection {}", conn.id());
    });
    let hub = server.hub();
    let stats = server.stats();
    let addr = start(server).await;
    let mut raw = RawClient::handshake(addr).await;
    let close = within("close frame", raw.read_frame()).await;
    assert_eq!(close.close_code(), 1011);
    raw.write(&frame(0x8, &1011u16.to_be_bytes(), Some(MASK)))
        .await;
    within("end of stream", raw.expect_eof()).await;
    drop(raw);
    within("hub empties", hub.wait_empty()).await;
    assert_eq!(stats.snapshot().handler_panics, 1);
}

#[tokio::test]
async fn a_peer_that_stops_reading_is_dropped_by_the_write_timeout() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (done_tx, done_rx) = oneshot::channel();
    let done_tx = std::sync::Mutex::new(Some(done_tx));
    let server = Server::new()
        .keepalive(None)
        .write_timeout(Some(Duration::from_millis(300)))
        .max_backpressure(64 << 20)
        .on_connection(move |conn| {
            let tx = tx.clone();
            let done = done_tx.lock().unwrap().take();
            async move {
                let _ = tx.send(conn.client().clone());
                // Fill the socket and its queue, then wait.
                let chunk = vec![b'x'; 60_000];
                while conn.buffered_amount() < 8 << 20 {
                    if conn.try_send(chunk.clone()).is_err() {
                        break;
                    }
                    tokio::task::yield_now().await;
                }
                let mut conn = conn;
                while conn.recv().await.is_some() {}
                if let Some(done) = done {
                    let _ = done.send(conn.disconnect());
                }
            }
        });
    let stats = server.stats();
    let hub = server.hub();
    let addr = start(server).await;
    // A reader with a small window that never reads.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(addr).await.unwrap();
    let _raw = RawClient::handshake_on(stream).await;
    let client = within("connection", rx.recv()).await.unwrap();
    let started = Instant::now();
    let why = within("the handler ends", done_rx).await.unwrap();
    assert!(matches!(why, Some(Disconnect::TimedOut)), "{why:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
    within("hub empties", hub.wait_empty()).await;
    assert_eq!(stats.snapshot().write_timeouts, 1);
    assert!(
        client.try_send("late").is_err(),
        "send on an ended connection"
    );
}

#[tokio::test]
async fn send_on_a_reset_connection_is_an_error() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let server = Server::new().on_connection(move |mut conn| {
        let tx = tx.clone();
        async move {
            while conn.recv().await.is_some() {}
            let _ = tx.send(conn);
        }
    });
    let addr = start(server).await;
    let raw = RawClient::handshake(addr).await;
    drop(raw);
    let conn = within("the handler ends", rx.recv()).await.unwrap();
    assert!(matches!(conn.disconnect(), Some(Disconnect::Reset)));
    assert!(conn.try_send("into the void").is_err());
    assert!(conn.close(CloseCode::NORMAL, "").is_err());
}

#[tokio::test]
async fn a_connection_dropped_in_another_task_without_reading_finishes_its_close() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let server = Server::new()
        .close_timeout(Duration::from_secs(30))
        .on_connection(move |conn| {
            let tx = tx.clone();
            async move {
                // The handler hands the connection to a task of its own,
                // which closes it and, later, drops it unread.
                tokio::spawn(async move {
                    let _ = conn.close(CloseCode::NORMAL, "bye");
                    let _ = tx.send(conn.client().clone());
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    drop(conn);
                });
            }
        });
    let addr = start(server).await;
    let mut raw = RawClient::handshake(addr).await;
    let client = within("connection", rx.recv()).await.unwrap();
    assert_eq!(within("close", raw.read_frame()).await.close_code(), 1000);
    raw.write(&frame(0x1, b"unread", Some(MASK))).await;
    raw.write(&frame(0x8, &1000u16.to_be_bytes(), Some(MASK)))
        .await;
    within("end of stream", raw.expect_eof()).await;
    let why = client.disconnect();
    assert!(matches!(&why, Some(Disconnect::Local(_))), "{why:?}");
}
