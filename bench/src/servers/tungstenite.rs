//! tokio-tungstenite 0.30: `accept_async`, then `next` and `feed`, flushing
//! when no further message is ready (its echo example's `send` flushes every
//! message, a syscall each, which would rank the library by that example
//! rather than by what it can do). Broadcast splits the
//! stream; the writer task feeds every queued message, then flushes once.

use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

use super::{Mode, Registry};

pub(super) async fn serve(listener: TcpListener, mode: Mode) -> anyhow::Result<()> {
    let registry = Registry::new();
    loop {
        let s = super::accept(&listener).await;
        let registry = registry.clone();
        tokio::spawn(async move {
            let Ok(ws) = tokio_tungstenite::accept_async(s).await else {
                return;
            };
            match mode {
                Mode::Echo => super::echo_sink(ws, is_data).await,
                Mode::Broadcast => super::broadcast_sink(ws, &registry, is_data).await,
            }
        });
    }
}

fn is_data(msg: &Message) -> bool {
    msg.is_binary() || msg.is_text()
}
