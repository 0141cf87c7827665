//! The seed's first program: plain HTTP requests get `200 okay`, WebSocket
//! messages are echoed and logged (their length and a short prefix), and a
//! text message `kill` closes the connection normally.
//!
//! With `--legacy-drafts` it also answers the seed's own clients, which
//! speak draft-hixie-75 (the seed's first server) or -76, as that server
//! does: every message echoed, `kill` closes.
//!
//! `cargo run -p wharf --example echo -- --listen 127.0.0.1:3400 [--legacy-drafts]`

use http::{HeaderValue, Response, header};
use wharf::{Body, CloseCode, Message, Server};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
        .init();
    let listen = listen_arg().unwrap_or_else(|| "127.0.0.1:3400".into());
    tracing::info!(%listen, "echo server listening");
    let legacy = std::env::args().any(|a| a == "--legacy-drafts");
    Server::new()
        .legacy_drafts(legacy)
        .on_request(|_req| async {
            let mut res = Response::new(Body::from("okay"));
            res.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            res
        })
        .on_connection(|mut conn| async move {
            let draft = conn.legacy_draft().map_or("rfc6455", |d| d.name());
            tracing::info!(id = conn.id(), peer = %conn.peer_addr(), draft, "open");
            while let Some(msg) = conn.recv().await {
                // Its length and a short prefix: a log line costs the
                // same whatever a client sends.
                tracing::info!(id = conn.id(), len = msg.len(), prefix = ?prefix(&msg), "message");
                if msg.as_text() == Some("kill") {
                    let _ = conn.close(CloseCode::NORMAL, "killed");
                    continue;
                }
                if let Err(e) = conn.try_send(msg) {
                    tracing::warn!(id = conn.id(), error = %e, "send failed");
                }
            }
            tracing::info!(id = conn.id(), why = ?conn.disconnect(), "close");
        })
        .listen(listen)
        .await?;
    Ok(())
}

/// At most the first 32 bytes of a message, as text where they are text.
fn prefix(msg: &Message) -> String {
    let bytes = msg.as_bytes();
    let shown = String::from_utf8_lossy(&bytes[..bytes.len().min(32)]);
    if bytes.len() > 32 {
        format!("{shown}...")
    } else {
        shown.into_owned()
    }
}

/// `--listen ADDR` or `--listen=ADDR`.
fn listen_arg() -> Option<String> {
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--listen" {
            return args.next();
        }
        if let Some(v) = a.strip_prefix("--listen=") {
            return Some(v.to_owned());
        }
    }
    None
}
