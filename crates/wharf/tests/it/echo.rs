//! Echo through a real tokio-tungstenite client: payload sizes at every
//! frame length boundary, pings, and the close handshake from either side.
//! Independent interop: tokio-tungstenite stays here on purpose (not wharf's
//! client), so that a bug shared by wharf's client and server cannot hide.

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use wharf::Disconnect;

use crate::util::{Tungstenite, connect_tungstenite, echo_server, start, within};

/// Payload lengths around the 7-bit, 16-bit and 64-bit length encodings,
/// up to exactly the default 1 MiB message limit.
const SIZES: [usize; 6] = [0, 125, 126, 65_535, 65_536, 1 << 20];

/// Text of exactly `len` bytes mixing 1- to 4-byte characters, so that
/// characters straddle frame and read boundaries.
fn text_of_len(len: usize) -> String {
    let mut text = String::with_capacity(len);
    for c in "aé€😀".chars().cycle() {
        let room = len - text.len();
        if room == 0 {
            break;
        }
        text.push(if c.len_utf8() <= room { c } else { 'a' });
    }
    text
}

async fn round_trip(ws: &mut Tungstenite, msg: Message) -> Message {
    within("send", ws.send(msg)).await.expect("send");
    within("echo", ws.next())
        .await
        .expect("a message")
        .expect("no error")
}

#[tokio::test]
async fn echoes_text_and_binary_at_frame_length_boundaries() {
    let (server, _ended) = echo_server();
    let addr = start(server).await;
    let mut ws = connect_tungstenite(addr, "/").await;
    for len in SIZES {
        let text = text_of_len(len);
        assert_eq!(text.len(), len);
        let echoed = round_trip(&mut ws, Message::text(text.clone())).await;
        let Message::Text(echoed) = echoed else {
            panic!("expected text of {len} bytes, got {echoed:?}");
        };
        assert!(
            echoed.as_bytes() == text.as_bytes(),
            "text of {len} bytes differs"
        );

        let binary: Vec<u8> = (0..len).map(|i| (i * 31 + 7) as u8).collect();
        let echoed = round_trip(&mut ws, Message::binary(binary.clone())).await;
        let Message::Binary(echoed) = echoed else {
            panic!("expected binary of {len} bytes, got {echoed:?}");
        };
        assert!(echoed[..] == binary[..], "binary of {len} bytes differs");
    }
}

/// Several messages in flight at once, large and small mixed, so that
/// frames straddle reads and the server moves between read buffers while
/// earlier payloads are still queued for writing (zero-copy echo). At most
/// three are unanswered at a time: together under the server's 1 MiB send
/// queue bound, which a client that stops reading would otherwise meet.
#[tokio::test]
async fn echoes_a_pipelined_mix_of_large_and_small_messages_intact() {
    let (server, _ended) = echo_server();
    let addr = start(server).await;
    let ws = connect_tungstenite(addr, "/").await;
    let (mut tx, mut rx) = ws.split();
    let sizes: Vec<usize> = (0..120)
        .map(|i| match i % 6 {
            0 => 65_536,
            1 => 3,
            2 => 100_000,
            3 => 1_000,
            4 => 200_000 + i,
            _ => 40_000,
        })
        .collect();
    let payload =
        |i: usize, len: usize| -> Vec<u8> { (0..len).map(|j| (j * 7 + i * 13) as u8).collect() };
    let window = std::sync::Arc::new(tokio::sync::Semaphore::new(3));
    let expected = sizes.clone();
    let permits = window.clone();
    let writer = tokio::spawn(async move {
        for (i, len) in sizes.into_iter().enumerate() {
            permits.acquire().await.expect("open").forget();
            tx.send(Message::binary(payload(i, len)))
                .await
                .expect("send");
        }
        tx
    });
    for (i, len) in expected.into_iter().enumerate() {
        let echoed = within("echo", rx.next())
            .await
            .expect("a message")
            .expect("no error");
        let Message::Binary(echoed) = echoed else {
            panic!("message {i}: expected binary, got {echoed:?}");
        };
        assert!(
            echoed[..] == payload(i, len)[..],
            "message {i} of {len} bytes differs"
        );
        window.add_permits(1);
    }
    let _tx = writer.await.expect("writer");
}

#[tokio::test]
async fn answers_ping_with_pong_carrying_the_same_payload() {
    let (server, _ended) = echo_server();
    let addr = start(server).await;
    let mut ws = connect_tungstenite(addr, "/").await;
    for payload in [&b""[..], b"are you there?", &[0xa5; 125]] {
        let pong = round_trip(&mut ws, Message::Ping(payload.to_vec().into())).await;
        assert_eq!(pong, Message::Pong(payload.to_vec().into()));
    }
    // Data still flows after the pings.
    let echoed = round_trip(&mut ws, Message::text("after")).await;
    assert_eq!(echoed, Message::text("after"));
}

/// Sends `kill` and checks the client's side of the close handshake: a
/// close frame with 1000 and the reason, then the end of the stream.
async fn kill(ws: &mut Tungstenite) {
    within("send", ws.send(Message::text("kill")))
        .await
        .expect("send");
    let close = within("close frame", ws.next())
        .await
        .expect("a message")
        .expect("no error");
    let Message::Close(Some(frame)) = close else {
        panic!("expected a close frame, got {close:?}");
    };
    assert_eq!(frame.code, CloseCode::Normal);
    assert_eq!(frame.reason, "killed");
    // tungstenite answers the close; the server then closes TCP.
    let end = within("end of stream", ws.next()).await;
    assert!(end.is_none(), "expected the end of the stream, got {end:?}");
}

#[tokio::test]
async fn kill_closes_with_1000_and_the_handler_sees_the_echoed_close() {
    let (server, mut ended) = echo_server();
    let addr = start(server).await;
    let mut ws = connect_tungstenite(addr, "/").await;
    kill(&mut ws).await;
    let ended = within("handler returns", ended.recv())
        .await
        .expect("handler reported");
    // The handler closed first; the peer answered.
    let Some(Disconnect::Local(frame)) = ended.disconnect else {
        panic!("expected Disconnect::Local, got {:?}", ended.disconnect);
    };
    assert_eq!(frame.code, wharf::CloseCode::NORMAL);
    assert_eq!(frame.reason.as_str(), "killed");
}

#[tokio::test]
async fn answers_the_client_close_with_its_code() {
    let (server, mut ended) = echo_server();
    let addr = start(server).await;
    let mut ws = connect_tungstenite(addr, "/").await;
    let frame = CloseFrame {
        code: CloseCode::Away,
        reason: "bye".into(),
    };
    within("close", ws.close(Some(frame))).await.expect("close");
    let echo = within("close echo", ws.next())
        .await
        .expect("a message")
        .expect("no error");
    let Message::Close(Some(echo)) = echo else {
        panic!("expected a close frame, got {echo:?}");
    };
    assert_eq!(echo.code, CloseCode::Away);
    let end = within("end of stream", ws.next()).await;
    assert!(end.is_none(), "expected the end of the stream, got {end:?}");

    let ended = within("handler returns", ended.recv())
        .await
        .expect("handler reported");
    let Some(Disconnect::Peer(frame)) = ended.disconnect else {
        panic!("expected Disconnect::Peer, got {:?}", ended.disconnect);
    };
    assert_eq!(frame.code, wharf::CloseCode::GOING_AWAY);
    assert_eq!(frame.reason.as_str(), "bye");
}

#[tokio::test]
async fn disconnect_is_closed_once_recv_returns_none_after_kill() {
    let (server, mut ended) = echo_server();
    let addr = start(server).await;
    let mut ws = connect_tungstenite(addr, "/").await;
    kill(&mut ws).await;
    let ended = within("handler returns", ended.recv())
        .await
        .expect("handler reported");
    match ended.disconnect {
        Some(Disconnect::Local(frame)) => assert_eq!(frame.code, wharf::CloseCode::NORMAL),
        other => panic!("expected Disconnect::Local, got {other:?}"),
    }
}
