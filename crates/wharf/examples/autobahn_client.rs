//! The conformance client for `scripts/autobahn --client`: runs every case
//! of an Autobahn|Testsuite fuzzingserver with wharf's client, echoing each
//! text and binary message back, then asks for the report. Limits are
//! raised to what the suite needs (16 MiB messages in 9.*); permessage-
//! deflate is offered in its most permissive form (context takeover,
//! `client_max_window_bits` for the server to pick), so that the 12.* and
//! 13.* cases can ask for any parameters, at compression level 1 as the
//! server's `autobahn` example (the level changes no verdict: the suite
//! inflates every echo; it changes most of the client's CPU in 12.*/13.*).
//!
//! `cargo run -p wharf --release --example autobahn_client -- --url ws://127.0.0.1:9001 --agent wharf`

use std::time::{Duration, Instant};

use anyhow::Context as _;
use wharf::{Connector, DeflateConfig, Limits, Message};

fn main() -> anyhow::Result<()> {
    let arg = |name: &str| std::env::args().skip_while(|a| a != name).nth(1);
    let url = arg("--url").unwrap_or_else(|| "ws://127.0.0.1:9001".into());
    let agent = arg("--agent").unwrap_or_else(|| "wharf".into());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(&url, &agent))
}

async fn run(url: &str, agent: &str) -> anyhow::Result<()> {
    let limits = Limits::default()
        .max_frame_size(64 << 20)
        .max_message_size(64 << 20)
        .max_fragments(1 << 20);
    let connector = Connector::new()
        .limits(limits)
        .max_backpressure(128 << 20)
        .deflate(Some(DeflateConfig::dedicated(15).level(1)))
        .handshake_timeout(Duration::from_secs(30));
    let count = {
        let (mut conn, _) = connector
            .connect(&format!("{url}/getCaseCount"))
            .await
            .context("asking the case count")?;
        match conn.recv().await {
            Some(Message::Text(n)) => n.parse::<u32>().context("the case count")?,
            other => anyhow::bail!("expected the case count, got {other:?}"),
        }
    };
    println!("case count: {count}");
    let started = Instant::now();
    for case in 1..=count {
        let case_url = format!("{url}/runCase?case={case}&agent={agent}");
        match connector.connect(&case_url).await {
            Ok((mut conn, _)) => {
                while let Some(message) = conn.recv().await {
                    if matches!(message, Message::Text(_) | Message::Binary(_)) {
                        let _ = conn.try_send(message);
                    }
                }
                // The suite records a case once its TCP connection is gone.
                conn.closed().await;
            }
            Err(e) => println!("case {case}: {e}"),
        }
        if case % 50 == 0 {
            println!("{case}/{count} cases in {:.0?}", started.elapsed());
        }
    }
    let (mut conn, _) = connector
        .connect(&format!("{url}/updateReports?agent={agent}"))
        .await
        .context("asking for the report")?;
    while conn.recv().await.is_some() {}
    println!(
        "{count} cases run in {:.1?}; reports updated",
        started.elapsed()
    );
    Ok(())
}
