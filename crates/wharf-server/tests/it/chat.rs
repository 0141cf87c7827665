//! The chat protocol, wharf.chat.v1, as a client sees it: wharf's client,
//! and once, end to end, tokio-tungstenite, an independent one (so that a
//! bug shared by wharf's client and server cannot hide).

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite;
use wharf::Message;
use wharf_server::Mode;

use crate::util::{
    TestServer, Ws, close, closed_by_server, config, next_json, send_text, start, within,
};

const PROTOCOL: &str = "wharf.chat.v1";

/// Connects, checks the welcome, and returns the client with its id.
async fn connect(server: &TestServer) -> (Ws, u64) {
    let mut ws = server.ws("/chat", Some(PROTOCOL)).await;
    let welcome = next_json(&mut ws).await;
    assert_eq!(welcome["v"], 1);
    assert_eq!(welcome["type"], "welcome");
    assert_eq!(welcome["protocol"], PROTOCOL);
    let id = welcome["id"].as_u64().expect("welcome has an id");
    (ws, id)
}

async fn join(ws: &mut Ws, room: &str, name: &str) {
    send_text(
        ws,
        &json!({"v": 1, "type": "join", "room": room, "name": name}).to_string(),
    )
    .await;
}

async fn say(ws: &mut Ws, text: &str) {
    send_text(
        ws,
        &json!({"v": 1, "type": "say", "text": text}).to_string(),
    )
    .await;
}

fn is(msg: &Value, kind: &str) {
    assert_eq!(msg["type"], kind, "expected {kind}, got {msg}");
    assert_eq!(msg["v"], 1, "{msg}");
}

#[tokio::test]
async fn bad_messages_get_an_error_and_the_connection_stays_open() {
    let server = start(config(Mode::Chat)).await;
    let (mut ws, id) = connect(&server).await;
    let cases: &[(&str, &str)] = &[
        ("{not json", "bad_json"),
        ("42", "bad_message"),
        (r#"{"text":"no type"}"#, "missing_field"),
        (r#"{"type":"dance"}"#, "unknown_type"),
        (r#"{"type":"join","room":"r"}"#, "missing_field"),
        (r#"{"type":"say","text":"before joining"}"#, "not_joined"),
        (r#"{"type":"leave"}"#, "not_joined"),
        (r#"{"v":9,"type":"leave"}"#, "bad_version"),
    ];
    for (sent, code) in cases {
        send_text(&mut ws, sent).await;
        let reply = next_json(&mut ws).await;
        is(&reply, "error");
        assert_eq!(reply["code"], *code, "for {sent}: {reply}");
        assert!(reply["reason"].as_str().is_some_and(|r| !r.is_empty()));
    }
    let long_name = "n".repeat(33);
    join(&mut ws, "r", &long_name).await;
    assert_eq!(next_json(&mut ws).await["code"], "too_long");
    within(
        "send binary",
        ws.send(Message::Binary(vec![1, 2, 3].into())),
    )
    .await
    .expect("send");
    assert_eq!(next_json(&mut ws).await["code"], "bad_message");

    // Still open, and the protocol still works.
    join(&mut ws, "r", "ann").await;
    let joined = next_json(&mut ws).await;
    is(&joined, "joined");
    assert_eq!(joined["id"], id);
    assert_eq!(joined["online"], 1);
    say(&mut ws, "still here").await;
    let msg = next_json(&mut ws).await;
    is(&msg, "message");
    assert_eq!(msg["text"], "still here");
    drop(ws);
    server.stop().await;
}

#[tokio::test]
async fn rooms_keep_their_messages_to_themselves() {
    let server = start(config(Mode::Chat)).await;
    let (mut ann, ann_id) = connect(&server).await;
    let (mut bob, bob_id) = connect(&server).await;
    let (mut cat, cat_id) = connect(&server).await;

    join(&mut ann, "red", "ann").await;
    let j = next_json(&mut ann).await;
    is(&j, "joined");
    assert_eq!(
        (j["room"].as_str(), j["online"].as_u64()),
        (Some("red"), Some(1))
    );

    join(&mut bob, "red", "bob").await;
    for ws in [&mut ann, &mut bob] {
        let j = next_json(ws).await;
        is(&j, "joined");
        assert_eq!(j["id"], bob_id);
        assert_eq!(j["name"], "bob");
        assert_eq!(j["online"], 2);
    }

    join(&mut cat, "blue", "cat").await;
    let j = next_json(&mut cat).await;
    assert_eq!(
        (j["room"].as_str(), j["online"].as_u64()),
        (Some("blue"), Some(1))
    );

    say(&mut ann, "hello red").await;
    for ws in [&mut ann, &mut bob] {
        let m = next_json(ws).await;
        is(&m, "message");
        assert_eq!(m["room"], "red");
        assert_eq!(m["id"], ann_id);
        assert_eq!(m["name"], "ann");
        assert_eq!(m["text"], "hello red");
        assert!(m["ts"].as_u64().is_some_and(|ts| ts > 1_600_000_000_000));
    }
    say(&mut bob, "hi ann").await;
    for ws in [&mut ann, &mut bob] {
        let m = next_json(ws).await;
        assert_eq!(
            (m["id"].as_u64(), m["text"].as_str()),
            (Some(bob_id), Some("hi ann"))
        );
    }

    // Cat's next message is its own: nothing from red came in between.
    say(&mut cat, "anyone in blue?").await;
    let m = next_json(&mut cat).await;
    is(&m, "message");
    assert_eq!(
        (m["id"].as_u64(), m["room"].as_str()),
        (Some(cat_id), Some("blue"))
    );

    // Bob leaves by closing: ann sees it, with the new count.
    close(&mut bob).await;
    let l = next_json(&mut ann).await;
    is(&l, "left");
    assert_eq!(
        (l["id"].as_u64(), l["online"].as_u64()),
        (Some(bob_id), Some(1))
    );

    // Ann moves to blue: cat sees her arrive.
    join(&mut ann, "blue", "ann").await;
    let j = next_json(&mut cat).await;
    is(&j, "joined");
    assert_eq!(
        (j["id"].as_u64(), j["online"].as_u64()),
        (Some(ann_id), Some(2))
    );
    drop((ann, bob, cat));
    server.stop().await;
}

#[tokio::test]
async fn leave_tells_the_room_and_the_leaver() {
    let server = start(config(Mode::Chat)).await;
    let (mut ann, ann_id) = connect(&server).await;
    let (mut bob, _) = connect(&server).await;
    join(&mut ann, "r", "ann").await;
    let _ = next_json(&mut ann).await;
    join(&mut bob, "r", "bob").await;
    let _ = next_json(&mut ann).await;
    let _ = next_json(&mut bob).await;
    send_text(&mut ann, r#"{"type":"leave"}"#).await;
    for ws in [&mut ann, &mut bob] {
        let l = next_json(ws).await;
        is(&l, "left");
        assert_eq!(
            (l["id"].as_u64(), l["online"].as_u64()),
            (Some(ann_id), Some(1))
        );
    }
    // Out of the room, ann hears nothing more from it.
    say(&mut bob, "bye").await;
    let _ = next_json(&mut bob).await;
    say(&mut ann, "hello?").await;
    assert_eq!(next_json(&mut ann).await["code"], "not_joined");
    drop((ann, bob));
    server.stop().await;
}

#[tokio::test]
async fn clients_without_a_subprotocol_are_served_and_others_refused() {
    let server = start(config(Mode::Chat)).await;
    let mut plain = server.ws("/", None).await;
    is(&next_json(&mut plain).await, "welcome");

    let res = server
        .raw(
            "GET /chat HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Protocol: wharf.chat.v2\r\n\r\n",
        )
        .await;
    assert_eq!(res.status, 400);
    assert!(
        res.body_text().contains("wharf.chat.v1"),
        "{}",
        res.body_text()
    );
    let refused = "wharf_handshake_refusals_total{status=\"400\",reason=\"unsupported subprotocol: this server speaks wharf.chat.v1\"}";
    assert_eq!(server.metric(refused).await, 1);
    drop(plain);
    server.stop().await;
}

#[tokio::test]
async fn shutdown_closes_clients_with_1001() {
    let server = start(config(Mode::Chat)).await;
    let (mut ws, _) = connect(&server).await;
    // The client must keep reading to answer the close.
    let stopping = tokio::spawn(server.stop());
    assert_eq!(closed_by_server(&mut ws).await, 1001);
    drop(ws);
    within("shutdown", stopping).await.expect("stopped");
}

/// tokio-tungstenite's client, with its own handshake, framing and masking.
type Independent =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn independent(server: &TestServer) -> Independent {
    use tungstenite::client::IntoClientRequest as _;
    let mut req = format!("ws://{}/chat", server.addr)
        .into_client_request()
        .expect("request");
    req.headers_mut()
        .insert("sec-websocket-protocol", PROTOCOL.parse().expect("header"));
    let (ws, res) = within("connect", tokio_tungstenite::connect_async(req))
        .await
        .expect("connect");
    assert_eq!(
        res.headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok()),
        Some(PROTOCOL)
    );
    ws
}

/// The next message as tokio-tungstenite reads it: text, parsed as JSON,
/// or the close frame's code (pings and pongs skipped).
async fn independent_next(ws: &mut Independent) -> Result<Value, u16> {
    within("a message", async {
        loop {
            match ws.next().await {
                Some(Ok(tungstenite::Message::Text(t))) => {
                    return Ok(serde_json::from_str(&t).expect("server sends JSON"));
                }
                Some(Ok(tungstenite::Message::Close(Some(f)))) => return Err(u16::from(f.code)),
                Some(Ok(tungstenite::Message::Ping(_) | tungstenite::Message::Pong(_))) => {}
                other => panic!("expected text or a close, got {other:?}"),
            }
        }
    })
    .await
}

async fn independent_send(ws: &mut Independent, msg: Value) {
    within("send", ws.send(tungstenite::Message::text(msg.to_string())))
        .await
        .expect("send");
}

#[tokio::test]
async fn the_chat_protocol_runs_end_to_end_with_an_independent_client() {
    let server = start(config(Mode::Chat)).await;
    let mut ann = independent(&server).await;
    let mut bob = independent(&server).await;
    let mut ids = Vec::new();
    for ws in [&mut ann, &mut bob] {
        let welcome = independent_next(ws).await.expect("welcome");
        is(&welcome, "welcome");
        assert_eq!(welcome["protocol"], PROTOCOL);
        ids.push(welcome["id"].as_u64().expect("welcome has an id"));
    }
    let (ann_id, bob_id) = (ids[0], ids[1]);

    // A bad message: an error, and the connection stays open.
    within("send", ann.send(tungstenite::Message::text("{not json")))
        .await
        .expect("send");
    let e = independent_next(&mut ann).await.expect("error");
    is(&e, "error");
    assert_eq!(e["code"], "bad_json");

    independent_send(
        &mut ann,
        json!({"v": 1, "type": "join", "room": "r", "name": "ann"}),
    )
    .await;
    let j = independent_next(&mut ann).await.expect("joined");
    is(&j, "joined");
    assert_eq!(
        (j["id"].as_u64(), j["online"].as_u64()),
        (Some(ann_id), Some(1))
    );
    independent_send(
        &mut bob,
        json!({"v": 1, "type": "join", "room": "r", "name": "bob"}),
    )
    .await;
    for ws in [&mut ann, &mut bob] {
        let j = independent_next(ws).await.expect("joined");
        is(&j, "joined");
        assert_eq!(
            (j["id"].as_u64(), j["online"].as_u64()),
            (Some(bob_id), Some(2))
        );
    }

    // Past 125 bytes (a 16-bit length) and with non-ASCII text.
    let text = "héllo wörld ".repeat(20);
    independent_send(&mut ann, json!({"v": 1, "type": "say", "text": text})).await;
    for ws in [&mut ann, &mut bob] {
        let m = independent_next(ws).await.expect("message");
        is(&m, "message");
        assert_eq!(
            (m["id"].as_u64(), m["name"].as_str(), m["text"].as_str()),
            (Some(ann_id), Some("ann"), Some(text.as_str()))
        );
    }

    // Bob leaves by closing: the server echoes his close, ann sees him go.
    let bye = tungstenite::protocol::CloseFrame {
        code: tungstenite::protocol::frame::coding::CloseCode::Normal,
        reason: "bye".into(),
    };
    within("close", bob.close(Some(bye))).await.expect("close");
    assert_eq!(independent_next(&mut bob).await, Err(1000));
    let l = independent_next(&mut ann).await.expect("left");
    is(&l, "left");
    assert_eq!(
        (l["id"].as_u64(), l["online"].as_u64()),
        (Some(bob_id), Some(1))
    );

    // Shutdown closes ann with 1001.
    let stopping = tokio::spawn(server.stop());
    assert_eq!(independent_next(&mut ann).await, Err(1001));
    drop((ann, bob));
    within("shutdown", stopping).await.expect("stopped");
}
