//! Helpers for the hub, slow-client, keepalive, shutdown and upgrade-hook
//! tests: reading text from a tokio-tungstenite client, closing it, and
//! waiting for a condition with a bound.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use crate::util::{Client, within};

/// Reads the next text message, skipping pings and pongs; fails on anything
/// else, on the end of the stream, or after
/// [`TIMEOUT`](crate::util::TIMEOUT).
pub(crate) async fn next_text(ws: &mut Client) -> String {
    within("next text message", async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(text))) => return text.as_str().to_owned(),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                other => panic!("expected a text message, got {other:?}"),
            }
        }
    })
    .await
}

/// Sends a text message.
pub(crate) async fn send_text(ws: &mut Client, text: &str) {
    within("send", ws.send(Message::text(text)))
        .await
        .expect("send");
}

/// Starts the close handshake from the client and reads until the server
/// ends the stream, discarding whatever was still on its way; the socket is
/// dropped afterwards, so the server sees the FIN.
pub(crate) async fn close(mut ws: Client) {
    within("client close", ws.close(None))
        .await
        .expect("send close");
    within("end of stream after close", async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}

/// Polls `done` every 10 ms until it holds, failing after
/// [`TIMEOUT`](crate::util::TIMEOUT).
pub(crate) async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    within(what, async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

/// The id in a welcome message `id:<n>` sent by a test server.
pub(crate) fn parse_welcome(text: &str) -> u64 {
    text.strip_prefix("id:")
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("expected a welcome `id:<n>`, got {text:?}"))
}
