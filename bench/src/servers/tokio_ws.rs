//! tokio-websockets 0.13: `ServerBuilder::accept`, then `next` and `feed`,
//! flushing when no further message is ready, inside
//! `tokio::task::unconstrained`. Broadcast
//! splits the stream; the writer task feeds every queued message, then
//! flushes once.

use tokio::net::TcpListener;
use tokio_websockets::{Message, ServerBuilder};

use super::{Mode, Registry};

pub(super) async fn serve(listener: TcpListener, mode: Mode) -> anyhow::Result<()> {
    let registry = Registry::new();
    loop {
        let s = super::accept(&listener).await;
        let registry = registry.clone();
        tokio::spawn(tokio::task::unconstrained(async move {
            let Ok((_req, ws)) = ServerBuilder::new().accept(s).await else {
                return;
            };
            match mode {
                Mode::Echo => super::echo_sink(ws, is_data).await,
                Mode::Broadcast => super::broadcast_sink(ws, &registry, is_data).await,
            }
        }));
    }
}

fn is_data(msg: &Message) -> bool {
    msg.is_binary() || msg.is_text()
}
