//! Cross-node delivery through Redis (issue 13's benchmark): one publisher
//! on node A, subscribers split between nodes A and B (the `wharf` binary in
//! broadcast mode with `--redis`), a fixed message rate; latency per node,
//! server CPU per delivery, Redis CPU, losses; and the same load on one node
//! alone beside it.
//!
//! ```text
//! cargo run --release -p wharf-bench -- cluster [--subs 1000] [--rates 1000,4000] [--secs 10]
//!     [--bin target/release/wharf] [--threads 2]
//! ```
//!
//! Each message carries the nanoseconds since the run began (one clock: the
//! publisher and the subscribers are this process). Subscribers run on
//! `--threads` current-thread runtimes; they and the publisher are wharf's
//! client (`wharf::connect`).

use std::net::TcpListener as StdListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures_util::FutureExt as _;
use wharf::{Connection, Message};

use crate::hist::Histogram;
use crate::proc::cpu_seconds;

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    fn pid(&self) -> String {
        self.0.id().to_string()
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(StdListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn wait_port(port: u16) -> anyhow::Result<()> {
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("nothing listens on port {port}")
}

fn node(bin: &str, redis: Option<u16>, number: u16) -> anyhow::Result<(Proc, u16)> {
    let port = free_port()?;
    let mut cmd = Command::new(bin);
    cmd.args([
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--mode",
        "broadcast",
    ])
    .args(["--rate-limit-messages", "off", "--rate-limit-bytes", "off"])
    .args(["--workers", "1"])
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    if let Some(redis) = redis {
        cmd.args(["--redis", &format!("redis://127.0.0.1:{redis}/0")])
            .args(["--redis-node-number", &number.to_string()]);
    }
    let child = Proc(cmd.spawn().with_context(|| format!("cannot start {bin}"))?);
    wait_port(port)?;
    Ok((child, port))
}

/// A connection to the node on `port` (wharf's client sets `TCP_NODELAY`).
async fn connect(port: u16) -> anyhow::Result<Connection> {
    let (ws, _) = wharf::connect(&format!("ws://127.0.0.1:{port}/")).await?;
    Ok(ws)
}

/// One run's figures for one node's subscribers.
struct Side {
    hist: Histogram,
    received: u64,
}

/// Runs `rate` messages a second for `secs` from a publisher on `ports[0]`
/// to `subs` subscribers spread over `ports`; the histograms per port.
fn run_load(
    ports: &[u16],
    subs: usize,
    rate: u64,
    secs: u64,
    threads: usize,
) -> anyhow::Result<Vec<Side>> {
    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let ready = Arc::new(std::sync::Barrier::new(threads + 1));
    let mut handles = Vec::new();
    for t in 0..threads {
        let mine: Vec<(usize, u16)> = (0..subs)
            .filter(|i| i % threads == t)
            .map(|i| (i % ports.len(), ports[i % ports.len()]))
            .collect();
        let (stop, ready, n) = (stop.clone(), ready.clone(), ports.len());
        handles.push(std::thread::spawn(move || -> anyhow::Result<Vec<Side>> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let mut sides: Vec<Side> = (0..n)
                    .map(|_| Side {
                        hist: Histogram::default(),
                        received: 0,
                    })
                    .collect();
                let mut streams = Vec::new();
                for (side, port) in mine {
                    let ws = connect(port).await?;
                    streams.push((side, ws));
                }
                ready.wait();
                let (tx, mut rx) =
                    tokio::sync::mpsc::unbounded_channel::<(usize, Histogram, u64)>();
                for (side, mut ws) in streams {
                    let (tx, stop) = (tx.clone(), stop.clone());
                    tokio::spawn(async move {
                        let mut hist = Histogram::default();
                        let mut got = 0;
                        while !stop.load(Ordering::Relaxed) {
                            let next = tokio::time::timeout(Duration::from_millis(200), ws.recv());
                            match next.await {
                                Ok(Some(Message::Binary(b))) if b.len() >= 8 => {
                                    let mut w = [0; 8];
                                    w.copy_from_slice(&b[..8]);
                                    let sent = u64::from_be_bytes(w);
                                    let now = u64::try_from(start.elapsed().as_nanos())
                                        .unwrap_or(u64::MAX);
                                    hist.record(now.saturating_sub(sent));
                                    got += 1;
                                }
                                Ok(Some(_)) | Err(_) => {}
                                Ok(None) => break,
                            }
                        }
                        let _ = tx.send((side, hist, got));
                    });
                }
                drop(tx);
                while let Some((side, hist, got)) = rx.recv().await {
                    sides[side].hist.merge(&hist);
                    sides[side].received += got;
                }
                Ok(sides)
            })
        }));
    }
    ready.wait();
    // Let subscriptions settle (Redis SUBSCRIBE is at attach, but be safe).
    std::thread::sleep(Duration::from_millis(500));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut publisher = connect(ports[0]).await?;
        let every = Duration::from_nanos(1_000_000_000 / rate);
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        for _ in 0..rate * secs {
            tick.tick().await;
            let now = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
            let mut body = now.to_be_bytes().to_vec();
            body.resize(64, 0);
            // Waits while the write queue is over its bound.
            publisher.send(Message::Binary(body.into())).await?;
            // Drain the publisher's own copy now and then.
            while let Some(Some(_)) = publisher.recv().now_or_never() {}
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        anyhow::Ok(())
    })?;
    stop.store(true, Ordering::Relaxed);
    let mut total: Vec<Side> = ports
        .iter()
        .map(|_| Side {
            hist: Histogram::default(),
            received: 0,
        })
        .collect();
    for h in handles {
        let sides = h
            .join()
            .map_err(|_| anyhow::anyhow!("a subscriber thread panicked"))??;
        for (t, s) in total.iter_mut().zip(sides) {
            t.hist.merge(&s.hist);
            t.received += s.received;
        }
    }
    Ok(total)
}

/// The counters of a node's `/metrics` that account for losses: slow
/// clients closed or dropped, backplane drops, gaps and reconnects.
fn counters(port: u16) -> anyhow::Result<String> {
    use std::io::{Read as _, Write as _};
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port))?;
    tcp.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(
        tcp,
        "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )?;
    let mut body = String::new();
    tcp.read_to_string(&mut body)?;
    let wanted = [
        "wharf_slow_client_closes_total",
        "wharf_slow_client_drops_total",
        "wharf_write_timeouts_total",
        "wharf_backplane_dropped",
        "wharf_backplane_gaps",
        "wharf_backplane_reconnects",
        "wharf_fanouts_dropped_total",
    ];
    let found: Vec<String> = body
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| wanted.iter().any(|w| l.starts_with(w)))
        .map(str::to_owned)
        .collect();
    Ok(found.join(", "))
}

const USAGE: &str = "usage: wharf-bench cluster [--subs N] [--rates R,R..] [--secs S] \
                     [--bin PATH] [--threads N]";

/// `wharf-bench cluster ...`
pub(crate) fn bench(args: &[String]) -> anyhow::Result<()> {
    let mut subs = 1000;
    let mut rates = vec![1000, 4000];
    let mut secs = 10;
    let mut bin = "target/release/wharf".to_owned();
    let mut threads = 2;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().context("a value after the option");
        match a.as_str() {
            "--subs" => subs = value()?.parse()?,
            "--rates" => {
                rates = value()?
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<_, _>>()?;
            }
            "--secs" => secs = value()?.parse()?,
            "--bin" => bin = value()?.clone(),
            "--threads" => threads = value()?.parse()?,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => bail!("unknown option {other}\n{USAGE}"),
        }
    }
    crate::proc::raise_nofile();
    println!(
        "| setup | rate msg/s | node | subs | p50 ms | p99 ms | max ms | lost | server CPU µs/delivery | Redis CPU % |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for &rate in &rates {
        for cluster in [true, false] {
            let redis_port = free_port()?;
            let dir = std::env::temp_dir().join(format!("wharf-bench-redis-{redis_port}"));
            std::fs::create_dir_all(&dir)?;
            let redis = Proc(
                Command::new("redis-server")
                    .args(["--port", &redis_port.to_string(), "--bind", "127.0.0.1"])
                    .args(["--save", "", "--appendonly", "no"])
                    .current_dir(&dir)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .context("cannot start redis-server")?,
            );
            wait_port(redis_port)?;
            let mut nodes = vec![node(&bin, cluster.then_some(redis_port), 1)?];
            if cluster {
                nodes.push(node(&bin, Some(redis_port), 2)?);
                std::thread::sleep(Duration::from_millis(500));
            }
            let ports: Vec<u16> = nodes.iter().map(|(_, p)| *p).collect();
            let pids: Vec<String> = nodes.iter().map(|(p, _)| p.pid()).collect();
            let cpu0: f64 = pids.iter().map(|p| cpu_seconds(p).unwrap_or(0.0)).sum();
            let rcpu0 = cpu_seconds(&redis.pid())?;
            let wall = Instant::now();
            let sides = run_load(&ports, subs, rate, secs, threads)?;
            let wall = wall.elapsed().as_secs_f64();
            let cpu: f64 = pids
                .iter()
                .map(|p| cpu_seconds(p).unwrap_or(0.0))
                .sum::<f64>()
                - cpu0;
            let rcpu = cpu_seconds(&redis.pid())? - rcpu0;
            let delivered: u64 = sides.iter().map(|s| s.received).sum();
            let per = cpu * 1e6 / delivered.max(1) as f64;
            for (i, side) in sides.iter().enumerate() {
                let n = subs / ports.len() + usize::from(i < subs % ports.len());
                let expected = (n as u64) * rate * secs;
                let ms = |q: f64| side.hist.quantile(q) as f64 / 1e6;
                println!(
                    "| {} | {rate} | {} | {n} | {:.2} | {:.2} | {:.2} | {} | {per:.2} | {:.1} |",
                    if cluster { "2 nodes + Redis" } else { "1 node" },
                    if i == 0 { "A (publisher)" } else { "B" },
                    ms(0.5),
                    ms(0.99),
                    side.hist.max() as f64 / 1e6,
                    expected.saturating_sub(side.received),
                    100.0 * rcpu / wall,
                );
            }
            // Where the losses went: each node's own counters.
            for (i, port) in ports.iter().enumerate() {
                println!(
                    "  node {}: {}",
                    if i == 0 { "A" } else { "B" },
                    counters(*port).unwrap_or_else(|e| format!("no /metrics: {e}"))
                );
            }
            drop(nodes);
            drop(redis);
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    Ok(())
}
