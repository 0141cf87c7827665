//! The `wharf` binary's library: configuration and the server it runs.
//!
//! For now it runs the seed's first program (plain HTTP requests get `okay`,
//! WebSocket messages are echoed, `kill` closes); the chat server with its
//! web page replaces it once the hub exists.

use std::net::SocketAddr;

use http::{HeaderValue, Response, header};
use wharf::{Body, CloseCode, Server};

/// What to run.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Config {
    /// The address to listen on.
    pub listen: SocketAddr,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 3400)),
        }
    }
}

/// Runs the server until the process is stopped.
///
/// # Errors
/// If the address cannot be bound.
pub async fn run(config: Config) -> anyhow::Result<()> {
    tracing::info!(listen = %config.listen, "wharf listening");
    Server::new()
        .on_request(|_req| async {
            let mut res = Response::new(Body::from("okay"));
            res.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            res
        })
        .on_connection(|mut conn| async move {
            tracing::info!(id = conn.id(), peer = %conn.peer_addr(), "open");
            while let Some(msg) = conn.recv().await {
                if msg.as_text() == Some("kill") {
                    let _ = conn.close(CloseCode::NORMAL, "killed");
                } else {
                    let _ = conn.send(msg);
                }
            }
            tracing::info!(id = conn.id(), why = ?conn.disconnect(), "close");
        })
        .listen(config.listen)
        .await?;
    Ok(())
}
