//! Graceful shutdown: queued messages go out, then close 1001, then the
//! server stops listening and returns.

use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use wharf::Server;

use crate::chat_util::eventually;
use crate::util::{Tungstenite, connect_tungstenite, upgrade_request, within};

const CLIENTS: usize = 3;
const MESSAGES: usize = 100;

/// Reads text messages until the close frame, then on to the end of the
/// stream (tungstenite answers the close as it reads); drops the socket.
async fn read_until_close(mut ws: Tungstenite) -> (Vec<String>, Option<CloseFrame>) {
    let mut texts = Vec::new();
    loop {
        match within("next message", ws.next()).await {
            Some(Ok(Message::Text(t))) => texts.push(t.as_str().to_owned()),
            Some(Ok(Message::Close(frame))) => {
                let end = within("end of stream", ws.next()).await;
                assert!(end.is_none(), "expected the end of the stream, got {end:?}");
                return (texts, frame);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn shutdown_flushes_queued_messages_then_closes_with_1001_and_stops_listening() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local_addr");
    let server =
        Server::new().on_connection(|mut conn| async move { while conn.recv().await.is_some() {} });
    let hub = server.hub();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve_with_shutdown(listener, async {
        stop_rx.await.ok();
    }));

    let mut readers = Vec::new();
    for _ in 0..CLIENTS {
        let ws = connect_tungstenite(addr, "/").await;
        readers.push(tokio::spawn(read_until_close(ws)));
    }
    eventually("every client registered", || hub.len() == CLIENTS).await;

    for i in 0..MESSAGES {
        assert_eq!(hub.broadcast(format!("msg {i}")), CLIENTS);
    }
    stop_tx.send(()).expect("server is waiting for the signal");

    let expected: Vec<String> = (0..MESSAGES).map(|i| format!("msg {i}")).collect();
    for reader in readers {
        let (texts, frame) = within("client sees the close", reader)
            .await
            .expect("reader task");
        assert!(
            texts == expected,
            "got {} messages, expected all {MESSAGES} in order: {texts:?}",
            texts.len()
        );
        let frame = frame.expect("a close frame with a code");
        assert_eq!(frame.code, CloseCode::Away);
    }
    within("serve_with_shutdown returns", serving)
        .await
        .expect("serve task")
        .expect("serve result");
    assert!(hub.is_empty());

    // Nobody is listening any more.
    match TcpStream::connect(addr).await {
        Err(_) => {}
        Ok(mut stream) => {
            let request = upgrade_request("/", &[]);
            let _ = stream.write_all(request.as_bytes()).await;
            let mut got = Vec::new();
            let _ = within("no answer", stream.read_to_end(&mut got)).await;
            assert!(
                !got.starts_with(b"HTTP/1.1 101"),
                "upgraded after shutdown: {:?}",
                String::from_utf8_lossy(&got)
            );
        }
    }
}
