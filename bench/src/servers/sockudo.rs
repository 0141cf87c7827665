//! sockudo-ws 3.1 with its default features (SIMD masking, corking):
//! `WebSocketServer::<Http1>::accept` with `Config::default()` (keepalive
//! pings and idle timeout on, as shipped), after `init_clock` (called by
//! [`super::run`] before the runtime starts, as its documentation asks).
//!
//! Echo: the unified `WebSocketStream` (`Stream` + `Sink`), `feed` and one
//! flush once no further message is ready, inside
//! `tokio::task::unconstrained`, like the other `Sink` peers.
//!
//! Broadcast: its own pub/sub (`PubSub`, one topic; a subscriber is an
//! unbounded channel of `Message`, whose payload is shared `Bytes`), and one
//! task per connection selecting between the next message read and the
//! queue, as its `pubsub_echo` example does, but on the unified stream with
//! `feed` and one flush per batch taken from the queue: its split writer
//! writes every frame to the socket, one syscall per delivery, which would
//! rank the example rather than the library.

use sockudo_ws::server::WebSocketServer;
use sockudo_ws::{Config, Http1, Message, PubSub};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::Mode;

/// The one topic every broadcast connection subscribes to.
const TOPIC: &str = "all";

pub(super) async fn serve(listener: TcpListener, mode: Mode) -> anyhow::Result<()> {
    let server = WebSocketServer::<Http1>::new(Config::default());
    let pubsub = std::sync::Arc::new(PubSub::new());
    loop {
        let s = super::accept(&listener).await;
        let (server, pubsub) = (server.clone(), pubsub.clone());
        tokio::spawn(tokio::task::unconstrained(async move {
            let Ok((ws, _handshake)) = server.accept(s).await else {
                return;
            };
            match mode {
                Mode::Echo => super::echo_sink(ws, is_data).await,
                Mode::Broadcast => broadcast(ws, &pubsub).await,
            }
        }));
    }
}

fn is_data(msg: &Message) -> bool {
    matches!(msg, Message::Text(_) | Message::Binary(_))
}

async fn broadcast<S>(mut ws: S, pubsub: &PubSub)
where
    S: futures_util::Stream<Item = sockudo_ws::Result<Message>>
        + futures_util::Sink<Message>
        + Unpin,
{
    use futures_util::{SinkExt, StreamExt};
    let (tx, mut rx) = mpsc::unbounded_channel();
    let id = pubsub.create_subscriber(tx);
    pubsub.subscribe(id, TOPIC);
    let mut batch = Vec::with_capacity(64);
    loop {
        tokio::select! {
            msg = ws.next() => match msg {
                Some(Ok(msg)) if is_data(&msg) => {
                    pubsub.publish(TOPIC, msg);
                }
                Some(Ok(Message::Close(_)) | Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
            n = rx.recv_many(&mut batch, 64) => {
                if n == 0 {
                    break;
                }
                let mut failed = false;
                for msg in batch.drain(..) {
                    if ws.feed(msg).await.is_err() {
                        failed = true;
                        break;
                    }
                }
                if failed || ws.flush().await.is_err() {
                    break;
                }
            }
        }
    }
    pubsub.remove_subscriber(id);
}
