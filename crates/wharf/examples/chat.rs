//! The seed's second program, a chat room: plain HTTP requests get `okay`;
//! when a client connects everyone gets `New Connection: <id>`; every
//! message goes to everyone as `<id>: <message>`; when a client leaves
//! everyone gets `Connection Closed: <id>`. Every event is logged, ready-state
//! changes included. Ctrl-C shuts down gracefully (close 1001 to everyone).
//!
//! With `--legacy-drafts`, clients of the seed's drafts (hixie-75, -76) join
//! the same room as RFC 6455 clients, as in the seed's own chat.
//!
//! `cargo run -p wharf --example chat -- --listen 127.0.0.1:3400 [--legacy-drafts]`

use http::{HeaderValue, Response, header};
use wharf::{Body, Server};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
        .init();
    let listen = std::env::args()
        .skip_while(|a| a != "--listen")
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:3400".into());
    let legacy = std::env::args().any(|a| a == "--legacy-drafts");
    let server = Server::new().legacy_drafts(legacy);
    let hub = server.hub();
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    tracing::info!(%listen, "chat server listening");
    server
        .on_request(|req| async move {
            tracing::info!(method = %req.method(), uri = %req.uri(), "request");
            let mut res = Response::new(Body::from("okay"));
            res.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            res
        })
        .on_connection(move |mut conn| {
            let hub = hub.clone();
            async move {
                let id = conn.id();
                let draft = conn.legacy_draft().map_or("rfc6455", |d| d.name());
                tracing::info!(id, peer = %conn.peer_addr(), draft, "new connection");
                let mut states = conn.state_changes();
                tokio::spawn(async move {
                    while states.changed().await.is_ok() {
                        tracing::info!(id, state = ?*states.borrow(), "ready state changed");
                    }
                });
                tracing::info!(id, "open");
                hub.broadcast(format!("New Connection: {id}"));
                while let Some(msg) = conn.recv().await {
                    let text = match msg.as_text() {
                        Some(t) => t.to_owned(),
                        None => format!("<{} bytes of binary>", msg.len()),
                    };
                    tracing::info!(id, message = %text, "message");
                    hub.broadcast(format!("{id}: {text}"));
                }
                tracing::info!(id, why = ?conn.disconnect(), "close");
                hub.broadcast(format!("Connection Closed: {id}"));
            }
        })
        .serve_with_shutdown(listener, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
