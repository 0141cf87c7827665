//! A producer that follows its reader's pace: each connection gets an
//! endless stream of numbered 1 KiB messages, sent with `send(..).await`,
//! which waits while the connection's queue is over `max_backpressure`
//! (here 64 KiB). A fast reader gets them as fast as the loopback goes; a
//! slow one slows the producer down, and the server holds at most the bound
//! (plus one message) for it: nothing is dropped, nobody is disconnected.
//!
//! `cargo run -p wharf --example backpressure -- [--listen ADDR] [--demo]`
//!
//! With `--demo` it also runs a reader, on wharf's client, that takes 2,000
//! messages a second for 3 seconds, then reads as fast as it can for 1, and
//! prints what each side saw each second. The producer is ahead at first by what the two
//! sockets' kernel buffers hold (a few MiB on loopback), then goes at the
//! reader's pace with the queue at its bound.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::net::TcpListener;
use wharf::Server;

/// The write-queue bound per connection.
const MAX_BACKPRESSURE: usize = 64 << 10;
/// The size of each message.
const MESSAGE: usize = 1024;

/// What the producers did: messages sent, and the fullest queue seen.
#[derive(Default)]
struct Produced {
    sent: AtomicU64,
    peak: AtomicUsize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let listen = args
        .iter()
        .position(|a| a == "--listen")
        .and_then(|i| args.get(i + 1))
        .map_or("127.0.0.1:3402", String::as_str);
    let demo = args.iter().any(|a| a == "--demo");
    let produced = Arc::new(Produced::default());
    let stats = produced.clone();
    let server = Server::new()
        .max_backpressure(MAX_BACKPRESSURE)
        .on_connection(move |conn| {
            let stats = stats.clone();
            async move {
                let mut payload = vec![b'.'; MESSAGE];
                for n in 0u64.. {
                    let digits = n.to_string();
                    payload[..digits.len()].copy_from_slice(digits.as_bytes());
                    // Waits here while the reader is behind; an error means
                    // the connection is closing.
                    if conn.send(payload.clone()).await.is_err() {
                        break;
                    }
                    stats.sent.fetch_add(1, Ordering::Relaxed);
                    stats
                        .peak
                        .fetch_max(conn.buffered_amount(), Ordering::Relaxed);
                }
            }
        });
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    println!("producing on ws://{addr}/ (queue bound {MAX_BACKPRESSURE} bytes)");
    if !demo {
        server.serve(listener).await?;
        return Ok(());
    }
    tokio::spawn(server.serve(listener));
    let (mut ws, _) = wharf::connect(&format!("ws://{addr}/")).await?;
    let started = Instant::now();
    let (mut got, mut last_sent, mut last_got) = (0u64, 0u64, 0u64);
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    let mut report = started + Duration::from_secs(1);
    for second in 1..=4 {
        let slow = second <= 3;
        while Instant::now() < report {
            if slow {
                // Two messages each millisecond: 2,000 a second.
                tick.tick().await;
                for _ in 0..2 {
                    ws.recv().await.context("the producer closed")?;
                    got += 1;
                }
            } else {
                ws.recv().await.context("the producer closed")?;
                got += 1;
            }
        }
        report += Duration::from_secs(1);
        let sent = produced.sent.load(Ordering::Relaxed);
        println!(
            "second {second} ({}): producer sent {:>7}, reader got {:>7}, queue peak {} bytes",
            if slow {
                "reader at 2,000/s"
            } else {
                "reader at full speed"
            },
            sent - last_sent,
            got - last_got,
            produced.peak.swap(0, Ordering::Relaxed),
        );
        (last_sent, last_got) = (sent, got);
    }
    Ok(())
}
