//! The benchmark modes, `/healthz`, and the settings reaching the server.

use wharf::Message;
use wharf_server::Mode;

use crate::util::{closed_by_server, config, next, send_text, start, within};

#[tokio::test]
async fn echo_mode_sends_every_message_back() {
    let server = start(config(Mode::Echo)).await;
    let mut ws = server.ws("/anything", None).await;
    send_text(&mut ws, "hello").await;
    assert_eq!(next(&mut ws).await, Message::from("hello"));
    within("send", ws.send(vec![0, 1, 2, 255]))
        .await
        .expect("send");
    assert_eq!(next(&mut ws).await, Message::from(vec![0, 1, 2, 255]));
    drop(ws);
    server.stop().await;
}

#[tokio::test]
async fn broadcast_mode_relays_every_message_to_everyone() {
    let server = start(config(Mode::Broadcast)).await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(server.ws("/", None).await);
    }
    // Every client is registered once its handshake is done.
    server.wait_metric("wharf_connections_open", 3).await;
    send_text(&mut clients[1], "to all").await;
    for ws in &mut clients {
        assert_eq!(next(ws).await, Message::from("to all"));
    }
    drop(clients);
    server.stop().await;
}

#[tokio::test]
async fn message_size_limit_is_applied() {
    let mut c = config(Mode::Echo);
    c.max_message_size = 16;
    let server = start(c).await;
    let mut ws = server.ws("/", None).await;
    send_text(&mut ws, "0123456789abcdef").await;
    assert_eq!(next(&mut ws).await, Message::from("0123456789abcdef"));
    send_text(&mut ws, "0123456789abcdefg").await;
    assert_eq!(closed_by_server(&mut ws).await, 1009);
    drop(ws);
    server.stop().await;
}

#[tokio::test]
async fn healthz_answers_ok_and_other_methods_are_refused() {
    let server = start(config(Mode::Chat)).await;
    let res = server.request("GET", "/healthz", &[]).await;
    assert_eq!((res.status, res.body_text().as_str()), (200, "ok"));
    let res = server.request("GET", "/metrics", &[]).await;
    assert_eq!(res.status, 200);
    assert!(
        res.header("content-type")
            .is_some_and(|t| t.starts_with("text/plain; version=0.0.4"))
    );
    let res = server.request("DELETE", "/", &[]).await;
    assert_eq!(res.status, 405);
    assert_eq!(res.header("allow"), Some("GET, HEAD"));
    let res = server.request("GET", "/nothing-here", &[]).await;
    assert_eq!(res.status, 404);
    server.stop().await;
}
