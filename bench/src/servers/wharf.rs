//! wharf, as its README writes an echo server, and its hub's encode-once
//! broadcast. Keepalive is off (no timers); the limits are the defaults;
//! one worker (the caller's current-thread runtime) unless the runner's
//! `--server-cpus N` asks for `Server::workers(N)`.

use tokio::net::TcpListener;
use wharf::DeflateConfig;

use super::{Deflate, Mode};

pub(super) async fn serve(
    listener: TcpListener,
    mode: Mode,
    deflate: Deflate,
    workers: usize,
) -> anyhow::Result<()> {
    let server = wharf::Server::new().workers(workers.max(1));
    let server = server.keepalive(None).deflate(match deflate {
        Deflate::Off => None,
        Deflate::Shared => Some(DeflateConfig::shared()),
        Deflate::Dedicated => Some(DeflateConfig::dedicated(15)),
    });
    let server = match mode {
        Mode::Echo => server.on_connection(|mut conn| async move {
            while let Some(m) = conn.recv().await {
                let _ = conn.try_send(m);
            }
        }),
        Mode::Broadcast => {
            let hub = server.hub();
            server.on_connection(move |mut conn| {
                let hub = hub.clone();
                async move {
                    while let Some(m) = conn.recv().await {
                        hub.broadcast(m);
                    }
                }
            })
        }
    };
    server.serve(listener).await?;
    Ok(())
}
