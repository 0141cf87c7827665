//! tokio-tungstenite 0.30: `accept_async`, then `next` and `feed`, flushing
//! when no further message is ready (its echo example's `send` flushes every
//! message, a syscall each, which would rank the library by that example
//! rather than by what it can do). Broadcast splits the
//! stream; the writer task feeds every queued message, then flushes once.

use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
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
                Mode::Echo => echo(ws).await,
                Mode::Broadcast => broadcast(ws, &registry).await,
            }
        });
    }
}

/// Echoes with `feed`, flushing once no further message is already
/// readable, so that a burst of messages costs one write (the usual way to
/// drive a `Sink`; `send` would flush, and write, once per message).
async fn echo(mut ws: WebSocketStream<TcpStream>) {
    while let Some(Ok(msg)) = ws.next().await {
        if (msg.is_binary() || msg.is_text()) && ws.feed(msg).await.is_err() {
            return;
        }
        while let Some(Some(Ok(msg))) = ws.next().now_or_never() {
            if (msg.is_binary() || msg.is_text()) && ws.feed(msg).await.is_err() {
                return;
            }
        }
        if ws.flush().await.is_err() {
            return;
        }
    }
}

async fn broadcast(ws: WebSocketStream<TcpStream>, registry: &Registry<Message>) {
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let id = registry.join(tx);
    let writer = tokio::spawn(async move {
        let mut batch = Vec::with_capacity(64);
        while rx.recv_many(&mut batch, 64).await > 0 {
            for msg in batch.drain(..) {
                if sink.feed(msg).await.is_err() {
                    return;
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
    });
    while let Some(Ok(msg)) = stream.next().await {
        if msg.is_binary() || msg.is_text() {
            registry.broadcast(&msg);
        }
    }
    registry.leave(id);
    writer.abort();
}
