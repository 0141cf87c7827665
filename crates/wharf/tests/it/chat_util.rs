//! Helpers for the hub, slow-client, keepalive, shutdown and upgrade-hook
//! tests: reading text with wharf's client, closing it, and waiting for a
//! condition with a bound.

use std::time::Duration;

use futures_util::StreamExt;
use wharf::{CloseCode, Event, Message};

use crate::util::{Ws, within};

/// Reads the next text message (the client answers pings itself); fails on
/// anything else, on the end of the stream, or after
/// [`TIMEOUT`](crate::util::TIMEOUT).
pub(crate) async fn next_text(ws: &mut Ws) -> String {
    within("next text message", async {
        match ws.next().await {
            Some(Event::Message(Message::Text(text))) => text.as_str().to_owned(),
            other => panic!("expected a text message, got {other:?}"),
        }
    })
    .await
}

/// Sends a text message.
pub(crate) async fn send_text(ws: &mut Ws, text: &str) {
    within("send", ws.send(text)).await.expect("send");
}

/// Starts the close handshake from the client and reads until the server
/// answers, discarding whatever was still on its way; the client's driver
/// then waits for the server's FIN and lets the socket go.
pub(crate) async fn close(mut ws: Ws) {
    ws.close(CloseCode::NORMAL, "").expect("send close");
    within("end of stream after close", async {
        while ws.recv().await.is_some() {}
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
