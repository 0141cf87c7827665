//! The conformance server for `scripts/autobahn`: an echo server with the
//! limits raised to what the Autobahn|Testsuite needs (16 MiB messages in
//! 9.1.6/9.2.6, 65,536 fragments in 9.3.1). Not a configuration to expose.
//!
//! permessage-deflate is on, in the dedicated mode (context takeover) unless
//! `--deflate shared` or `--deflate off` says otherwise, at compression level
//! 1 unless `--deflate-level N` (0 to 9) says otherwise. The level changes no
//! byte the suite judges (it inflates and compares each echo) but most of the
//! server's time: the 12.* and 13.* cases echo 216,000 messages of up to
//! 128 KiB, and at level 6 deflate takes about 85% of the server's CPU in
//! them (docs/CONFORMANCE.md).
//!
//! `cargo run -p wharf --release --example autobahn -- --listen 127.0.0.1:9001`

use wharf::{DeflateConfig, Limits, Server};

fn main() -> anyhow::Result<()> {
    let arg = |name: &str| std::env::args().skip_while(|a| a != name).nth(1);
    let listen = arg("--listen").unwrap_or_else(|| "127.0.0.1:9001".into());
    let level = match arg("--deflate-level").as_deref() {
        None => 1,
        Some(n) => match n.parse::<u32>() {
            Ok(level @ 0..=9) => level,
            _ => anyhow::bail!("--deflate-level takes 0 to 9, not {n:?}"),
        },
    };
    let deflate = match arg("--deflate").as_deref() {
        None | Some("dedicated") => Some(DeflateConfig::dedicated(15).level(level)),
        Some("shared") => Some(DeflateConfig::shared().level(level)),
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
