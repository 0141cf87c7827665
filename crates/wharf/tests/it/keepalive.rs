//! Keepalive pings and the handshake timeout: silent peers are dropped,
//! live ones are not.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use wharf::{Disconnect, Server};

use crate::util::{RawClient, connect_tungstenite, echo_server, start, within};

/// Ping after 200 ms of silence; give up 300 ms later.
const KEEPALIVE: Option<(Duration, Duration)> =
    Some((Duration::from_millis(200), Duration::from_millis(300)));

/// Reads until end of stream (or a reset), returning what arrived; fails
/// if that takes longer than `limit`.
async fn read_to_end(client: &mut RawClient, limit: Duration) -> Vec<u8> {
    let mut got = Vec::new();
    let mut chunk = [0; 4096];
    let read = async {
        loop {
            match client.stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&chunk[..n]),
            }
            assert!(got.len() < 64 << 10, "no end of stream: {got:?}");
        }
    };
    tokio::time::timeout(limit, read)
        .await
        .unwrap_or_else(|_| panic!("the server did not end the connection within {limit:?}"));
    got
}

#[tokio::test]
async fn drops_a_peer_that_does_not_answer_pings() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let server = Server::new()
        .keepalive(KEEPALIVE)
        .on_connection(move |mut conn| {
            let tx = tx.clone();
            async move {
                while conn.recv().await.is_some() {}
                // `recv` may end a moment before the driver records why.
                for _ in 0..200 {
                    if conn.disconnect().is_some() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                let _ = tx.send(conn.disconnect());
            }
        });
    let addr = start(server).await;
    let mut client = RawClient::handshake(addr).await;

    let ping = tokio::time::timeout(Duration::from_secs(1), client.read_frame())
        .await
        .expect("a ping within 1 s");
    assert_eq!(ping.opcode, 0x9, "{ping:?}");
    assert!(ping.fin);

    // No pong: the server gives up, with a close frame (1001) if the socket
    // took it, and then ends TCP.
    let rest = read_to_end(&mut client, Duration::from_secs(2)).await;
    if !rest.is_empty() {
        assert_eq!(rest[0], 0x88, "expected only a close frame, got {rest:?}");
        assert!(rest.len() >= 4, "close frame without a code: {rest:?}");
        assert_eq!(
            rest[1] as usize,
            rest.len() - 2,
            "one close frame: {rest:?}"
        );
        assert_eq!(u16::from_be_bytes([rest[2], rest[3]]), 1001, "{rest:?}");
    }

    let why = within("handler reports", rx.recv())
        .await
        .expect("reported");
    assert_eq!(why, Some(Disconnect::TimedOut));
}

#[tokio::test]
async fn keeps_a_peer_that_answers_pings() {
    let (server, _ended) = echo_server();
    let addr = start(server.keepalive(KEEPALIVE)).await;
    // tokio-tungstenite, whose pings are visible (wharf's client answers
    // them unseen); it answers each ping on its next read, so keep reading.
    let mut ws = connect_tungstenite(addr, "/").await;
    let until = tokio::time::Instant::now() + Duration::from_millis(1500);
    let mut pings = 0;
    while let Ok(next) = tokio::time::timeout_at(until, ws.next()).await {
        match next {
            Some(Ok(Message::Ping(_))) => pings += 1,
            other => panic!("expected only pings, got {other:?}"),
        }
    }
    assert!(pings >= 2, "keepalive pinged {pings} times in 1.5 s");

    within("send", ws.send(Message::text("still here")))
        .await
        .expect("send");
    let echo = within("echo", ws.next()).await;
    assert!(
        matches!(&echo, Some(Ok(Message::Text(t))) if t.as_str() == "still here"),
        "{echo:?}"
    );
}

#[tokio::test]
async fn drops_a_connection_whose_request_head_stalls() {
    let server = Server::new().handshake_timeout(Duration::from_millis(300));
    let addr = start(server).await;
    let mut client = RawClient::connect(addr).await;
    let started = tokio::time::Instant::now();
    client.write(b"GET / HTTP/1.1\r\nHost: x\r\n").await;
    // Whatever hyper may say first, the connection ends, and not before the
    // timeout.
    read_to_end(&mut client, Duration::from_secs(2)).await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(250),
        "dropped after {waited:?}, before the timeout"
    );
}
