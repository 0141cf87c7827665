//! # wharf-bench
//!
//! The `wharf` binary (`wharf-binary`: crates/wharf-server, release build,
//! default settings) and the library (`wharf-lib`: a current-thread
//! runtime, keepalive off) against raw TCP, sockudo-ws, tokio-tungstenite,
//! fastwebsockets and tokio-websockets, in one run, with ratios to the
//! binary. See `docs/BENCHMARKS.md` for the method and the latest figures.
//!
//! ```text
//! cargo run --release -p wharf-bench -- all                # every scenario (~9 min)
//! cargo run --release -p wharf-bench -- echo-small         # one scenario
//! cargo run --release -p wharf-bench -- echo-small,echo-1k --rounds 5
//! cargo run --release -p wharf-bench -- compression        # no server needed
//! cargo run --release -p wharf-bench -- echo-small --targets wharf-binary,sockudo-ws
//! cargo run --release -p wharf-bench -- server wharf-lib --mode echo --addr 127.0.0.1:9000
//! cargo run --release -p wharf-bench -- report target/bench/results.json   # re-render
//! cargo run --release -p wharf-bench -- tls                # TLS vs plain (~1 min)
//! cargo run --release -p wharf-bench -- cluster            # two nodes over Redis (~1 min)
//! ```
//!
//! Scenarios: `echo-latency`, `echo-small`, `echo-1k`, `echo-64k`,
//! `broadcast`, `memory`, `handshake`, `compression`. Options: `--rounds N`
//! (3), `--scale F` (1.0; multiplies every duration), `--targets a,b,...`
//! (all: `wharf-binary`, `wharf-lib`, `raw-tcp`, `sockudo-ws`,
//! `tokio-tungstenite`, `fastwebsockets`, `tokio-websockets`), `--conns N`
//! (10,000 idle connections), `--server-cpus N` (1), `--no-search` (skip the
//! broadcast rate search), `--out DIR` (`target/bench`), `--svg PATH`
//! (`docs/bench/results.svg` for `all`, else `DIR/results.svg`), `--perf
//! DIR` (attach `perf record -g` to every server, one file per run),
//! `--perf-stat DIR` (count every server's syscalls with `perf stat`).
//!
//! Servers run pinned to cores 0..N-1 (`taskset -c 0`, or `0-(N-1)` with
//! `--server-cpus N`); the runner and load generator pin themselves to the
//! other cores (N must leave at least one: on a 2-core machine, N = 1).
//! The `wharf` binary gets `--workers N` (its default under that mask
//! anyway) and `wharf-lib` runs on `Server::workers(N)`; the peers are one
//! current-thread runtime each, so they use one core whatever N.
//!
//! `wharf-binary` runs `target/release/wharf` (the runner first builds it
//! with `cargo build --release -p wharf-server` if it is missing or older
//! than its sources) with its defaults, except `--mode`, `--listen` and
//! `--max-connections-per-ip` (see docs/BENCHMARKS.md); its log goes to
//! `OUT/logs/wharf-binary.log`. It counts no allocations: its rows have
//! no allocation or live-heap figures, only `/proc` ones.

mod alloc;
mod client;
mod cluster;
mod compression;
mod hist;
mod load;
mod proc;
mod report;
mod runner;
mod servers;
mod tls;

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context as _, bail};

use crate::runner::{Options, Scenario};
use crate::servers::{Deflate, Mode, Target};

#[global_allocator]
static ALLOC: alloc::Counting = alloc::Counting;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(command) = args.first() else {
        usage();
        return Ok(());
    };
    match command.as_str() {
        "server" => server(&args[1..]),
        "tls" => tls::bench(&args[1..]),
        "cluster" => cluster::bench(&args[1..]),
        "tls-server" => tls::server(&args[1..]),
        "report" => rerender(&args[1..]),
        "help" | "-h" | "--help" => {
            usage();
            Ok(())
        }
        _ => bench(command, &args[1..]),
    }
}

fn usage() {
    eprintln!(
        "usage: wharf-bench all|SCENARIO[,SCENARIO...] [--rounds N] [--scale F] [--targets a,b] \
         [--conns N] [--server-cpus N] [--no-search] [--out DIR] [--svg PATH]\n       \
         wharf-bench server TARGET [--mode echo|broadcast] [--deflate off|shared|dedicated] [--addr ADDR] [--workers N]\n       \
         wharf-bench report results.json [--out DIR] [--svg PATH]\n\
         scenarios: {}\ntargets: {}",
        Scenario::ALL.map(Scenario::name).join(", "),
        Target::ALL.map(Target::name).join(", ")
    );
}

/// `wharf-bench server TARGET ...`: one server in the foreground.
fn server(args: &[String]) -> anyhow::Result<()> {
    let target = args
        .first()
        .and_then(|t| Target::parse(t))
        .context("server: name a target")?;
    let (mut mode, mut deflate, mut addr) = (Mode::Echo, Deflate::Off, "127.0.0.1:0".to_owned());
    let mut workers = 1;
    let mut it = args[1..].iter();
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--mode" => {
                mode = match value.as_str() {
                    "echo" => Mode::Echo,
                    "broadcast" => Mode::Broadcast,
                    _ => bail!("--mode echo|broadcast"),
                }
            }
            "--deflate" => {
                deflate = Deflate::parse(value).context("--deflate off|shared|dedicated")?
            }
            "--addr" => addr.clone_from(value),
            "--workers" => workers = value.parse().context("--workers N")?,
            _ => bail!("unknown option {flag}"),
        }
    }
    servers::run(target, mode, deflate, &addr, workers)
}

fn bench(command: &str, args: &[String]) -> anyhow::Result<()> {
    let scenarios: Vec<Scenario> = if command == "all" {
        Scenario::ALL.to_vec()
    } else {
        command
            .split(',')
            .map(|s| Scenario::parse(s).with_context(|| format!("unknown scenario {s:?}")))
            .collect::<anyhow::Result<_>>()?
    };
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut opts = Options {
        rounds: 3,
        scale: 1.0,
        targets: Target::ALL.to_vec(),
        idle_conns: 10_000,
        no_search: false,
        perf: None,
        perf_stat: None,
        server_cpus: 1,
        log_dir: PathBuf::new(),
    };
    let mut out_dir = root.join("target").join("bench");
    let mut svg_path = None;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        if flag == "--no-search" {
            opts.no_search = true;
            continue;
        }
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--rounds" => opts.rounds = value.parse()?,
            "--scale" => opts.scale = value.parse()?,
            "--conns" => opts.idle_conns = value.parse()?,
            "--server-cpus" => {
                opts.server_cpus = value
                    .parse()
                    .with_context(|| format!("--server-cpus {value:?}: not a number"))?;
            }
            "--targets" => {
                opts.targets = value
                    .split(',')
                    .map(|t| Target::parse(t).with_context(|| format!("unknown target {t:?}")))
                    .collect::<anyhow::Result<_>>()?;
            }
            "--out" => out_dir = PathBuf::from(value),
            "--svg" => svg_path = Some(PathBuf::from(value)),
            "--perf" => opts.perf = Some(PathBuf::from(value)),
            "--perf-stat" => opts.perf_stat = Some(PathBuf::from(value)),
            _ => bail!("unknown option {flag}"),
        }
    }
    let svg_path = svg_path.unwrap_or_else(|| {
        if command == "all" {
            root.join("docs").join("bench").join("results.svg")
        } else {
            out_dir.join("results.svg")
        }
    });

    opts.log_dir = out_dir.join("logs");
    let cpus = proc::cpus();
    runner::check_server_cpus(opts.server_cpus, cpus)?;
    proc::raise_nofile();
    // Before pinning, which narrows what this process may see (and lets
    // the build use every core).
    if opts.targets.contains(&Target::WharfBinary) {
        runner::build_wharf_binary()?;
    }
    let env = environment(&root, command, args, opts.server_cpus);
    if cpus > opts.server_cpus {
        proc::pin_to_cpus(opts.server_cpus..cpus)?;
    } else {
        eprintln!("warning: one CPU only: server and load generator share it");
    }
    eprintln!("{}", serde_json::to_string_pretty(&env)?);

    let started = std::time::Instant::now();
    let samples = runner::run(&scenarios, &opts)?;
    eprintln!("finished in {:.0} s", started.elapsed().as_secs_f64());
    publish(&env, &samples, &out_dir, &svg_path)
}

/// `wharf-bench report results.json`: the tables, JSON and chart again,
/// from a saved run.
fn rerender(args: &[String]) -> anyhow::Result<()> {
    let path = args.first().context("report: name a results.json")?;
    let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path)?)?;
    let samples: Vec<report::Sample> = serde_json::from_value(doc["samples"].clone())?;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut out_dir = root.join("target").join("bench");
    let mut svg_path = out_dir.join("results.svg");
    let mut it = args[1..].iter();
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--out" => out_dir = PathBuf::from(value),
            "--svg" => svg_path = PathBuf::from(value),
            _ => bail!("unknown option {flag}"),
        }
    }
    publish(&doc["environment"], &samples, &out_dir, &svg_path)
}

/// Prints the tables and writes `results.json`, `results.md` and the chart.
fn publish(
    env: &serde_json::Value,
    samples: &[report::Sample],
    out_dir: &std::path::Path,
    svg_path: &std::path::Path,
) -> anyhow::Result<()> {
    let summaries = report::summarize(samples);
    let tables = format!(
        "{}\n#### Goals of issue 16\n\n{}\n#### Goals of issue 6\n\n{}",
        report::markdown(&summaries),
        report::goals16(&summaries),
        report::goals(&summaries)
    );
    println!("{tables}");
    let json = report::write_json(out_dir, env, samples, &summaries)?;
    std::fs::write(out_dir.join("results.md"), &tables)?;
    let rounds = samples.iter().map(|s| s.round).max().unwrap_or(0);
    let subtitle = format!(
        "{} · {} · {} · {rounds} rounds · {}",
        env["date"].as_str().unwrap_or_default(),
        env["cpu"].as_str().unwrap_or_default(),
        env["rustc"].as_str().unwrap_or_default(),
        env["command"].as_str().unwrap_or_default(),
    );
    if let Some(dir) = svg_path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(svg_path, report::svg(&summaries, &subtitle))?;
    eprintln!(
        "wrote {}, {} and {}",
        json.display(),
        out_dir.join("results.md").display(),
        svg_path.display()
    );
    Ok(())
}

fn run_text(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// Date, machine, toolchain and peer versions, for the record.
fn environment(
    root: &std::path::Path,
    command: &str,
    args: &[String],
    server_cpus: usize,
) -> serde_json::Value {
    let cpu = run_text("lscpu", &[])
        .lines()
        .find_map(|l| l.strip_prefix("Model name:").map(|m| m.trim().to_owned()))
        .unwrap_or_default();
    let lock = std::fs::read_to_string(root.join("Cargo.lock")).unwrap_or_default();
    let version = |name: &str| -> String {
        let needle = format!("name = \"{name}\"\nversion = \"");
        lock.find(&needle)
            .and_then(|i| lock[i + needle.len()..].split('"').next())
            .unwrap_or("?")
            .to_owned()
    };
    let peers: serde_json::Map<String, serde_json::Value> = [
        "tokio",
        "sockudo-ws",
        "hyper",
        "tokio-tungstenite",
        "tungstenite",
        "fastwebsockets",
        "tokio-websockets",
    ]
    .iter()
    .map(|n| ((*n).to_owned(), serde_json::Value::from(version(n))))
    .collect();
    serde_json::json!({
        "date": run_text("date", &["-u", "+%Y-%m-%d"]),
        "cpu": cpu,
        "cpus": proc::cpus(),
        "kernel": run_text("uname", &["-r"]),
        "rustc": run_text("rustc", &["--version"]),
        "commit": run_text("git", &["-C", &root.to_string_lossy(), "rev-parse", "--short", "HEAD"]),
        "server_cpus": server_cpus,
        "versions": peers,
        "command": format!("cargo run --release -p wharf-bench -- {command} {}", args.join(" ")).trim().to_owned(),
    })
}
