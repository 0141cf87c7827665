//! `Server::rate_limit`: each action at its exact threshold, with a raw
//! client that sends a burst in one write (so that every message of it is
//! read, and charged, at one instant).

use std::time::Duration;

use wharf::{Disconnect, ProtocolError, RateAction, RateLimit, Server};

use crate::util::{MASK, RawClient, echo_server, frame, start, within};

/// `n` masked text frames `0`, `1`, ... in one buffer.
fn burst(n: usize) -> Vec<u8> {
    (0..n)
        .flat_map(|i| frame(0x1, i.to_string().as_bytes(), Some(MASK)))
        .collect()
}

async fn read_text(client: &mut RawClient) -> String {
    let f = client.read_frame().await;
    assert_eq!(f.opcode, 0x1, "{f:?}");
    String::from_utf8(f.payload).expect("utf-8")
}

#[tokio::test]
async fn close_fails_the_message_after_the_burst_with_1008() {
    let (server, mut ended) = echo_server();
    let server = server.rate_limit(Some(RateLimit::new(RateAction::Close).messages(1, 3)));
    let stats = server.stats();
    let addr = start(server).await;
    let mut client = RawClient::handshake(addr).await;
    client.write(&burst(10)).await;
    for i in 0..3 {
        assert_eq!(read_text(&mut client).await, i.to_string());
    }
    let close = client.read_frame().await;
    assert_eq!(close.close_code(), 1008);
    assert_eq!(&close.payload[2..], b"rate limit exceeded");
    client.expect_eof().await;
    let end = within("handler ends", ended.recv()).await.expect("ended");
    assert_eq!(
        end.disconnect,
        Some(Disconnect::Protocol(ProtocolError::RateLimited))
    );
    let s = stats.snapshot();
    assert_eq!((s.rate_limited, s.rate_limit_closes), (1, 1));
    assert_eq!(s.messages_in, 3);
}

#[tokio::test]
async fn drop_delivers_the_burst_and_drops_the_rest() {
    let (server, _ended) = echo_server();
    // 20 a second: one more every 50 ms.
    let server = server.rate_limit(Some(RateLimit::new(RateAction::Drop).messages(20, 4)));
    let stats = server.stats();
    let addr = start(server).await;
    let mut client = RawClient::handshake(addr).await;
    client.write(&burst(50)).await;
    for i in 0..4 {
        assert_eq!(read_text(&mut client).await, i.to_string());
    }
    tokio::time::sleep(Duration::from_millis(60)).await;
    client.write(&frame(0x1, b"later", Some(MASK))).await;
    // Nothing of the 46 dropped comes between.
    assert_eq!(read_text(&mut client).await, "later");
    let s = stats.snapshot();
    assert_eq!((s.rate_limited, s.rate_limit_closes), (46, 0));
    assert_eq!(s.messages_in, 5);
}

#[tokio::test]
async fn notify_hands_on_marked_messages_and_keeps_the_connection() {
    let server = Server::new()
        .rate_limit(Some(
            RateLimit::new(RateAction::Notify)
                .messages(1000, 1000)
                .bytes(1, 100),
        ))
        .on_connection(|mut conn| async move {
            while let Some(msg) = conn.recv().await {
                let text = msg.as_text().unwrap_or_default().len();
                let reply = if conn.rate_limited() {
                    format!("limited {text}")
                } else {
                    format!("ok {text}")
                };
                let _ = conn.try_send(reply);
            }
        });
    let stats = server.stats();
    let addr = start(server).await;
    let mut client = RawClient::handshake(addr).await;
    // 60 + 40 bytes fill the byte burst exactly; one byte more is over.
    let mut input = frame(0x1, &[b'a'; 60], Some(MASK));
    input.extend(frame(0x1, &[b'b'; 40], Some(MASK)));
    input.extend(frame(0x1, b"c", Some(MASK)));
    input.extend(frame(0x1, b"", Some(MASK)));
    client.write(&input).await;
    for want in ["ok 60", "ok 40", "limited 1", "ok 0"] {
        assert_eq!(read_text(&mut client).await, want);
    }
    assert_eq!(stats.snapshot().rate_limited, 1);
}

#[tokio::test]
async fn no_limit_by_default() {
    let (server, _ended) = echo_server();
    let stats = server.stats();
    let addr = start(server).await;
    let mut client = RawClient::handshake(addr).await;
    client.write(&burst(500)).await;
    for i in 0..500 {
        assert_eq!(read_text(&mut client).await, i.to_string());
    }
    assert_eq!(stats.snapshot().rate_limited, 0);
}
