//! The opening handshake: refusals, subprotocols, and bytes pipelined
//! behind the upgrade request.

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use wharf::Server;

use crate::util::{
    MASK, RawClient, RawResponse, connect_request, echo_server, frame, start, upgrade_request,
    within,
};

/// Sends `request` on a fresh connection and returns the response.
async fn refusal(request: &str) -> RawResponse {
    let (server, _ended) = echo_server();
    let addr = start(server).await;
    let mut client = RawClient::connect(addr).await;
    client.write(request.as_bytes()).await;
    client.read_response().await
}

#[tokio::test]
async fn refuses_upgrade_without_key_with_400() {
    let res = refusal(
        "GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await;
    assert_eq!(res.status, 400, "{res:?}");
    res.one_line_body();
}

#[tokio::test]
async fn refuses_version_8_with_426_naming_version_13() {
    let request =
        upgrade_request("/", &[]).replace("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8");
    let res = refusal(&request).await;
    assert_eq!(res.status, 426, "{res:?}");
    assert_eq!(res.header("sec-websocket-version"), Some("13"));
    res.one_line_body();
}

#[tokio::test]
async fn refuses_post_upgrade_with_405() {
    let request = upgrade_request("/", &["Content-Length: 0"]).replacen("GET", "POST", 1);
    let res = refusal(&request).await;
    assert_eq!(res.status, 405, "{res:?}");
    res.one_line_body();
}

#[tokio::test]
async fn echoes_a_frame_pipelined_with_the_upgrade_request() {
    let (server, _ended) = echo_server();
    let addr = start(server).await;
    let mut client = RawClient::connect(addr).await;
    let mut bytes = upgrade_request("/", &[]).into_bytes();
    bytes.extend(frame(0x1, b"pipelined", Some(MASK)));
    client.write(&bytes).await;

    let res = client.read_response().await;
    assert_eq!(res.status, 101, "{res:?}");
    let echoed = client.read_frame().await;
    assert!(echoed.fin);
    assert_eq!(echoed.opcode, 0x1);
    assert_eq!(echoed.payload, b"pipelined");
}

#[tokio::test]
async fn agrees_on_a_subprotocol_and_shows_path_and_query() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let server = Server::new()
        .protocols(["chat"])
        .on_connection(move |conn| {
            let tx = tx.clone();
            async move {
                let _ = tx.send((
                    conn.protocol().map(str::to_owned),
                    conn.path().to_owned(),
                    conn.query().map(str::to_owned),
                ));
            }
        });
    let addr = start(server).await;
    let mut request = format!("ws://{addr}/rooms/lobby?user=ann&x=1")
        .into_client_request()
        .expect("client request");
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        http::HeaderValue::from_static("superchat, chat"),
    );
    let (mut ws, res) = connect_request(request).await;
    assert_eq!(
        res.headers()
            .get("sec-websocket-protocol")
            .map(|v| v.as_bytes()),
        Some(&b"chat"[..])
    );

    let (protocol, path, query) = within("handler runs", rx.recv())
        .await
        .expect("handler reported");
    assert_eq!(protocol.as_deref(), Some("chat"));
    assert_eq!(path, "/rooms/lobby");
    assert_eq!(query.as_deref(), Some("user=ann&x=1"));

    // The handler returned, which closes the connection normally.
    let close = within("close", ws.next()).await;
    assert!(
        matches!(
            close,
            Some(Ok(tokio_tungstenite::tungstenite::Message::Close(_)))
        ),
        "expected a close frame, got {close:?}"
    );
}
