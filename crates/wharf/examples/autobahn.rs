//! The conformance server for `scripts/autobahn`: an echo server with the
//! limits raised to what the Autobahn|Testsuite needs (16 MiB messages in
//! 9.1.6/9.2.6, 65,536 fragments in 9.3.1). Not a configuration to expose.
//!
//! `cargo run -p wharf --release --example autobahn -- --listen 127.0.0.1:9001`

use wharf::{Limits, Server};

fn main() -> anyhow::Result<()> {
    let listen = std::env::args()
        .skip_while(|a| a != "--listen")
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9001".into());
    let limits = Limits::default()
        .max_frame_size(64 << 20)
        .max_message_size(64 << 20)
        .max_fragments(1 << 20);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let server = Server::new()
            .limits(limits)
            .max_backpressure(128 << 20)
            .on_connection(|mut conn| async move {
                while let Some(msg) = conn.recv().await {
                    let _ = conn.send(msg);
                }
            });
        tokio::select! {
            r = server.listen(listen) => r.map_err(anyhow::Error::from),
            _ = tokio::signal::ctrl_c() => Ok(()),
        }
    })
}
