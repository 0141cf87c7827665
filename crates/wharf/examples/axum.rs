//! wharf inside an axum application: two routes upgrade into one hub, a
//! third answers JSON.
//!
//! - `/chat`: a chat room; every message goes to every connection, on both
//!   routes, as `<id>: <message>`;
//! - `/feed`: listens only: it hears the chat (its own messages are
//!   dropped);
//! - `/stats`: `{"connections": n, "messages_in": n}`, from the server's
//!   hub and counters.
//!
//! The `Router` is served by wharf (`Server::on_request_service`: the
//! extractor finds the server by itself), or with `--axum-serve` by
//! `axum::serve` (the server's `Endpoint` added as a layer). Either way the
//! connections have the server's settings: here 64 KiB messages, 256 KiB
//! of backpressure, permessage-deflate.
//!
//! `cargo run -p wharf --features axum --example axum -- --listen 127.0.0.1:3400 [--axum-serve]`

use std::net::SocketAddr;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use wharf::axum::WebSocketUpgrade;
use wharf::{DeflateConfig, Limits, Message, Server};

/// What the handlers share: the server's endpoint (its hub and counters).
#[derive(Clone)]
struct App {
    endpoint: wharf::Endpoint,
}

async fn chat(upgrade: WebSocketUpgrade) -> Response {
    upgrade.on_upgrade(|mut conn| async move {
        let id = conn.id();
        while let Some(msg) = conn.recv().await {
            if let Message::Text(text) = msg {
                conn.hub().broadcast(format!("{id}: {text}"));
            }
        }
    })
}

async fn feed(upgrade: WebSocketUpgrade) -> Response {
    upgrade.on_upgrade(|mut conn| async move { while conn.recv().await.is_some() {} })
}

async fn stats(State(app): State<App>) -> impl IntoResponse {
    Json(serde_json::json!({
        "connections": app.endpoint.hub().len(),
        "messages_in": app.endpoint.stats().snapshot().messages_in,
    }))
}

fn router(app: App) -> Router {
    Router::new()
        .route("/chat", get(chat))
        .route("/feed", get(feed))
        .route("/stats", get(stats))
        .with_state(app)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
        .init();
    let listen = std::env::args()
        .skip_while(|a| a != "--listen")
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:3400".into());
    let server = Server::new()
        .limits(Limits::default().max_message_size(64 << 10))
        .max_backpressure(256 << 10)
        .deflate(Some(DeflateConfig::default()));
    let app = App {
        endpoint: server.endpoint(),
    };
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    if std::env::args().any(|a| a == "--axum-serve") {
        tracing::info!(%listen, "served by axum::serve");
        let router = router(app.clone()).layer(axum::Extension(app.endpoint));
        let make = router.into_make_service_with_connect_info::<SocketAddr>();
        axum::serve(listener, make).await?;
    } else {
        tracing::info!(%listen, "served by wharf");
        server
            .on_request_service(router(app))
            .serve(listener)
            .await?;
    }
    Ok(())
}
