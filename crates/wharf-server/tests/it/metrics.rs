//! `/metrics` counts exactly what the test did.

use wharf::Message;
use wharf_server::Mode;

use crate::util::{close, config, next, next_json, send_text, start};

#[tokio::test]
async fn metrics_count_connections_messages_and_bytes() {
    const CLIENTS: usize = 3;
    const MESSAGES: usize = 5;
    let server = start(config(Mode::Echo)).await;
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(server.ws("/", None).await);
    }
    let mut bytes = 0;
    for (c, ws) in clients.iter_mut().enumerate() {
        for m in 0..MESSAGES {
            let text = format!("client {c} message {m}");
            bytes += text.len() as u64;
            send_text(ws, &text).await;
            assert_eq!(next(ws).await, Message::from(text));
        }
    }
    // Every echo has arrived, so every counter is final.
    let total = (CLIENTS * MESSAGES) as u64;
    assert_eq!(
        server.metric("wharf_connections_open").await,
        CLIENTS as u64
    );
    assert_eq!(
        server.metric("wharf_connections_total").await,
        CLIENTS as u64
    );
    assert_eq!(server.metric("wharf_messages_in_total").await, total);
    assert_eq!(server.metric("wharf_messages_out_total").await, total);
    assert_eq!(server.metric("wharf_bytes_in_total").await, bytes);
    assert_eq!(server.metric("wharf_bytes_out_total").await, bytes);
    assert_eq!(server.metric("wharf_slow_client_closes_total").await, 0);
    assert_eq!(server.metric("wharf_slow_client_drops_total").await, 0);
    assert_eq!(server.metric("wharf_rooms").await, 0);

    // A refused handshake: no Sec-WebSocket-Key.
    let res = server
        .raw(
            "GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Version: 13\r\n\r\n",
        )
        .await;
    assert_eq!(res.status, 400);
    let text = server.request("GET", "/metrics", &[]).await.body_text();
    let refusals: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("wharf_handshake_refusals_total{status=\"400\",reason=\""))
        .collect();
    assert_eq!(refusals.len(), 1, "{text}");
    assert!(refusals[0].ends_with("\"} 1"), "{text}");

    for mut ws in clients {
        close(&mut ws).await;
    }
    server.wait_metric("wharf_connections_open", 0).await;
    assert_eq!(
        server.metric("wharf_connections_total").await,
        CLIENTS as u64
    );
    server.stop().await;
}

#[tokio::test]
async fn metrics_count_rooms() {
    let server = start(config(Mode::Chat)).await;
    let mut a = server.ws("/chat", Some("wharf.chat.v1")).await;
    let mut b = server.ws("/chat", Some("wharf.chat.v1")).await;
    let _ = next_json(&mut a).await;
    let _ = next_json(&mut b).await;
    send_text(&mut a, r#"{"type":"join","room":"one","name":"a"}"#).await;
    send_text(&mut b, r#"{"type":"join","room":"two","name":"b"}"#).await;
    let _ = next_json(&mut a).await;
    let _ = next_json(&mut b).await;
    assert_eq!(server.metric("wharf_rooms").await, 2);
    send_text(&mut b, r#"{"type":"leave"}"#).await;
    let _ = next_json(&mut b).await;
    assert_eq!(server.metric("wharf_rooms").await, 1);
    drop((a, b));
    server.stop().await;
}
