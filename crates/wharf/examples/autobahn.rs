//! The conformance server for `scripts/autobahn`: an echo server with the
//! limits raised to what the Autobahn|Testsuite needs (16 MiB messages in
//! 9.1.6/9.2.6, 65,536 fragments in 9.3.1). Not a configuration to expose.
//!
//! permessage-deflate is on, in the dedicated mode (context takeover) unless
//! `--deflate shared` or `--deflate off` says otherwise.
//!
//! `cargo run -p wharf --release --example autobahn -- --listen 127.0.0.1:9001`

use wharf::{DeflateConfig, Limits, Server};

fn main() -> anyhow::Result<()> {
    let arg = |name: &str| std::env::args().skip_while(|a| a != name).nth(1);
    let listen = arg("--listen").unwrap_or_else(|| "127.0.0.1:9001".into());
    let deflate = match arg("--deflate").as_deref() {
        None | Some("dedicated") => Some(DeflateConfig::dedicated(15)),
        Some("shared") => Some(DeflateConfig::shared()),
        Some("off") => None,
        Some(other) => anyhow::bail!("--deflate takes shared, dedicated or off, not {other:?}"),
    };
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
            .deflate(deflate)
            .max_backpressure(128 << 20)
            .on_connection(|mut conn| async move {
                while let Some(msg) = conn.recv().await {
                    let _ = conn.try_send(msg);
                }
            });
        tokio::select! {
            r = server.listen(listen) => r.map_err(anyhow::Error::from),
            _ = tokio::signal::ctrl_c() => Ok(()),
        }
    })
}
