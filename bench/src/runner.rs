//! The runner: starts each target server pinned to core 0 with `taskset`,
//! runs each scenario against each target in turn, interleaved over several
//! rounds (round 1: every target, then round 2, ...), so that drift in the
//! machine's state spreads over all targets instead of favouring one.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::load::{self, Metrics};
use crate::proc;
use crate::report::Sample;
use crate::servers::{Deflate, Mode, Target};

/// The core the servers run on; the load generator takes the next one.
pub(crate) const SERVER_CPU: usize = 0;
/// The core of the runner and load generator.
pub(crate) const CLIENT_CPU: usize = 1;

/// A scenario of issue 6.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub(crate) enum Scenario {
    EchoLatency,
    EchoSmall,
    Echo1k,
    Echo64k,
    Broadcast,
    Memory,
    Handshake,
    Compression,
}

impl Scenario {
    pub(crate) const ALL: [Self; 8] = [
        Self::EchoLatency,
        Self::EchoSmall,
        Self::Echo1k,
        Self::Echo64k,
        Self::Broadcast,
        Self::Memory,
        Self::Handshake,
        Self::Compression,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::EchoLatency => "echo-latency",
            Self::EchoSmall => "echo-small",
            Self::Echo1k => "echo-1k",
            Self::Echo64k => "echo-64k",
            Self::Broadcast => "broadcast",
            Self::Memory => "memory",
            Self::Handshake => "handshake",
            Self::Compression => "compression",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.name() == s)
    }
}

/// How the runner was asked to run.
#[derive(Clone, Debug)]
pub(crate) struct Options {
    pub(crate) rounds: usize,
    /// Multiplies every duration (0.2 for a quick smoke run).
    pub(crate) scale: f64,
    pub(crate) targets: Vec<Target>,
    /// Connections in the memory scenario.
    pub(crate) idle_conns: usize,
    /// Skip the broadcast rate search.
    pub(crate) no_search: bool,
    /// Record each server with `perf record -g` into this directory.
    pub(crate) perf: Option<std::path::PathBuf>,
    /// Count each server's syscalls with `perf stat` into this directory.
    pub(crate) perf_stat: Option<std::path::PathBuf>,
}

impl Options {
    fn secs(&self, s: f64) -> Duration {
        Duration::from_secs_f64(s * self.scale)
    }
}

/// One server configuration in a scenario: a target, and for wharf its
/// deflate mode and whether each idle connection first sends a message.
#[derive(Clone, Copy, Debug)]
struct Config {
    target: Target,
    deflate: Deflate,
    one_message: bool,
}

impl Config {
    fn plain(target: Target) -> Self {
        Self {
            target,
            deflate: Deflate::Off,
            one_message: false,
        }
    }

    fn label(&self) -> String {
        let mut s = self.target.name().to_owned();
        if self.deflate != Deflate::Off {
            s.push_str(" deflate-");
            s.push_str(self.deflate.name());
            if self.one_message {
                s.push_str(" +1 msg");
            }
        }
        s
    }
}

/// A server process under test.
#[derive(Debug)]
pub(crate) struct ServerProc {
    child: Child,
    pid: String,
    pub(crate) addr: SocketAddr,
    /// Whether the server answers upgrades with `101` (all but raw TCP).
    pub(crate) strict: bool,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

/// Counters at one instant.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Snapshot {
    at: Instant,
    server_cpu: f64,
    client_cpu: f64,
    allocs: u64,
    alloc_bytes: u64,
    /// The server's live heap: blocks and bytes.
    pub(crate) live_blocks: i64,
    pub(crate) live_bytes: i64,
}

/// What happened between two snapshots.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Window {
    pub(crate) secs: f64,
    /// Server CPU seconds (user + system).
    pub(crate) server_cpu: f64,
    /// Load-generator CPU seconds.
    pub(crate) client_cpu: f64,
    /// Heap allocations made by the server.
    pub(crate) allocs: u64,
    #[allow(dead_code)]
    pub(crate) alloc_bytes: u64,
}

impl Snapshot {
    pub(crate) fn until(&self, later: &Self) -> Window {
        Window {
            secs: (later.at - self.at).as_secs_f64(),
            server_cpu: later.server_cpu - self.server_cpu,
            client_cpu: later.client_cpu - self.client_cpu,
            allocs: later.allocs - self.allocs,
            alloc_bytes: later.alloc_bytes - self.alloc_bytes,
        }
    }
}

impl ServerProc {
    /// Starts `wharf-bench server ...` pinned to [`SERVER_CPU`] and waits
    /// for its address.
    ///
    /// # Errors
    /// If it cannot be started or does not report an address.
    pub(crate) fn start(target: Target, mode: Mode, deflate: Deflate) -> anyhow::Result<Self> {
        let exe = std::env::current_exe()?;
        let mut cmd = Command::new("taskset");
        cmd.arg("-c")
            .arg(SERVER_CPU.to_string())
            .arg(exe)
            .args(["server", target.name(), "--mode", mode.name()])
            .args(["--deflate", deflate.name()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().context("spawn taskset (util-linux)")?;
        let pid = child.id().to_string();
        let stdin = child.stdin.take().context("stdin")?;
        let mut stdout = BufReader::new(child.stdout.take().context("stdout")?);
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        let Some(addr) = line.trim().strip_prefix("listening ") else {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{} did not start: {line:?}", target.name());
        };
        let addr = addr.parse()?;
        Ok(Self {
            child,
            pid,
            addr,
            strict: target != Target::Raw,
            stdin,
            stdout,
        })
    }

    /// CPU time, allocations and the time, now.
    ///
    /// # Errors
    /// If the server has died.
    pub(crate) fn snapshot(&mut self) -> anyhow::Result<Snapshot> {
        self.stdin.write_all(b"stats\n")?;
        self.stdin.flush()?;
        let mut line = String::new();
        self.stdout.read_line(&mut line)?;
        let f: Vec<&str> = line.split_whitespace().collect();
        let (allocs, alloc_bytes, live_blocks, live_bytes) = match f.as_slice() {
            ["allocs", a, "bytes", b, "live", lb, ly] => {
                (a.parse()?, b.parse()?, lb.parse()?, ly.parse()?)
            }
            _ => bail!("unexpected stats line {line:?}"),
        };
        Ok(Snapshot {
            at: Instant::now(),
            server_cpu: proc::cpu_seconds(&self.pid)?,
            client_cpu: proc::cpu_seconds("self")?,
            allocs,
            alloc_bytes,
            live_blocks,
            live_bytes,
        })
    }

    /// The server's resident memory in bytes.
    ///
    /// # Errors
    /// If the server has died.
    pub(crate) fn rss(&self) -> anyhow::Result<u64> {
        proc::rss_bytes(&self.pid)
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        // Our own child, by its handle: nothing else is signalled.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `perf record` attached to a server for the length of a run.
#[derive(Debug)]
struct Perf(Child);

impl Perf {
    /// `perf record -g` (a profile) into `out`.
    fn record(server: &ServerProc, out: &std::path::Path) -> anyhow::Result<Self> {
        Self::start(&["record", "-q", "-F", "1999", "-g"], server, out)
    }

    /// `perf stat` of syscalls and context switches into `out`.
    fn stat(server: &ServerProc, out: &std::path::Path) -> anyhow::Result<Self> {
        let events = "raw_syscalls:sys_enter,syscalls:sys_enter_writev,\
                      syscalls:sys_enter_recvfrom,syscalls:sys_enter_read,\
                      syscalls:sys_enter_write,syscalls:sys_enter_sendto,\
                      syscalls:sys_enter_epoll_wait,context-switches";
        Self::start(&["stat", "-e", events], server, out)
    }

    fn start(args: &[&str], server: &ServerProc, out: &std::path::Path) -> anyhow::Result<Self> {
        if let Some(dir) = out.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let child = Command::new("perf")
            .args(args)
            .args(["-p", &server.pid, "-o"])
            .arg(out)
            .stdout(Stdio::null())
            .spawn()
            .context("spawn perf")?;
        // perf needs a moment to attach before the load starts.
        std::thread::sleep(Duration::from_millis(300));
        Ok(Self(child))
    }
}

impl Drop for Perf {
    fn drop(&mut self) {
        // SIGINT to our own perf child (by its pid) makes it write its data.
        if let Ok(pid) = i32::try_from(self.0.id()) {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(pid, libc::SIGINT) };
        }
        let _ = self.0.wait();
    }
}

/// Runs `scenarios` and returns every sample, printing progress.
///
/// # Errors
/// If a server cannot be started. A failed run is reported and skipped.
pub(crate) fn run(scenarios: &[Scenario], opts: &Options) -> anyhow::Result<Vec<Sample>> {
    let mut samples = Vec::new();
    for &scenario in scenarios {
        if scenario == Scenario::Compression {
            samples.extend(crate::compression::samples());
            continue;
        }
        let configs = configs(scenario, &opts.targets);
        for round in 1..=opts.rounds {
            for config in &configs {
                let label = config.label();
                eprint!("[{} round {round}] {label} ... ", scenario.name());
                let _ = std::io::stderr().flush();
                match run_one(scenario, config, opts, round) {
                    Ok(metrics) => {
                        eprintln!("{}", brief(&metrics));
                        samples.push(Sample::new(scenario.name(), &label, round, metrics));
                    }
                    Err(e) => eprintln!("failed: {e:#}"),
                }
            }
        }
        if scenario == Scenario::Broadcast && !opts.no_search {
            for config in &configs {
                let label = config.label();
                eprint!("[broadcast-max] {label} ... ");
                let _ = std::io::stderr().flush();
                match search_rate(config.target, opts) {
                    Ok(metrics) => {
                        eprintln!("{}", brief(&metrics));
                        samples.push(Sample::new("broadcast-max", &label, 1, metrics));
                    }
                    Err(e) => eprintln!("failed: {e:#}"),
                }
            }
        }
    }
    Ok(samples)
}

fn brief(metrics: &Metrics) -> String {
    metrics
        .iter()
        .take(4)
        .map(|(k, v)| format!("{k}={v:.3}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn configs(scenario: Scenario, targets: &[Target]) -> Vec<Config> {
    let mut out: Vec<Config> = targets
        .iter()
        .filter(|&&t| !(scenario == Scenario::Broadcast && t == Target::Raw))
        .map(|&t| Config::plain(t))
        .collect();
    if scenario == Scenario::Memory && targets.contains(&Target::Wharf) {
        for deflate in [Deflate::Shared, Deflate::Dedicated] {
            for one_message in [false, true] {
                out.push(Config {
                    target: Target::Wharf,
                    deflate,
                    one_message,
                });
            }
        }
    }
    out
}

fn run_one(
    scenario: Scenario,
    config: &Config,
    opts: &Options,
    round: usize,
) -> anyhow::Result<Metrics> {
    let mode = if scenario == Scenario::Broadcast {
        Mode::Broadcast
    } else {
        Mode::Echo
    };
    let mut server = ServerProc::start(config.target, mode, config.deflate)?;
    let name = format!(
        "{}-{}-r{round}",
        scenario.name(),
        config.label().replace([' ', '+'], "_")
    );
    let _perf = match &opts.perf {
        Some(dir) => Some(Perf::record(&server, &dir.join(format!("{name}.data")))?),
        None => None,
    };
    let _stat = match &opts.perf_stat {
        Some(dir) => Some(Perf::stat(&server, &dir.join(format!("{name}.txt")))?),
        None => None,
    };
    let (warmup, measure) = (opts.secs(0.5), opts.secs(2.0));
    match scenario {
        Scenario::EchoLatency => load::echo_latency(&mut server, 32, warmup, measure),
        Scenario::EchoSmall => load::echo_throughput(&mut server, 100, 32, 16, warmup, measure),
        Scenario::Echo1k => load::echo_throughput(&mut server, 100, 1024, 4, warmup, measure),
        Scenario::Echo64k => load::echo_throughput(&mut server, 10, 65536, 4, warmup, measure),
        Scenario::Broadcast => load::broadcast(
            &mut server,
            load::Broadcast {
                receivers: 1000,
                rate: 4000.0,
                size: 64,
                warmup,
                measure: opts.secs(2.5),
                grace: Duration::from_millis(500),
            },
        ),
        Scenario::Memory => {
            let deflate = config.deflate != Deflate::Off;
            let message = config
                .one_message
                .then(crate::compression::client_frame)
                .transpose()?;
            load::idle_memory(
                &mut server,
                opts.idle_conns,
                deflate,
                message,
                opts.secs(1.0).max(Duration::from_millis(300)),
            )
        }
        Scenario::Handshake => load::handshakes(&mut server, 32, warmup, measure),
        Scenario::Compression => unreachable!("handled without a server"),
    }
}

/// The highest broadcast rate sustained (zero loss and no growing backlog,
/// see `load::broadcast`): doubling from 4,000 msg/s until a rate fails
/// (or halving until one passes), then three bisection steps; each trial
/// on a fresh server.
fn search_rate(target: Target, opts: &Options) -> anyhow::Result<Metrics> {
    let trial = |rate: f64| -> anyhow::Result<bool> {
        let mut server = ServerProc::start(target, Mode::Broadcast, Deflate::Off)?;
        let m = load::broadcast(
            &mut server,
            load::Broadcast {
                receivers: 1000,
                rate,
                size: 64,
                warmup: opts.secs(0.5),
                measure: opts.secs(2.0),
                grace: Duration::from_millis(500),
            },
        )?;
        Ok(m.iter().any(|&(k, v)| k == "stable" && v == 1.0))
    };
    let (mut pass, mut fail) = (0.0f64, None::<f64>);
    let mut rate = 4000.0;
    let mut trials = 0;
    if trial(rate)? {
        trials += 1;
        pass = rate;
        while fail.is_none() && rate < 256_000.0 {
            rate *= 2.0;
            trials += 1;
            if trial(rate)? {
                pass = rate;
            } else {
                fail = Some(rate);
            }
        }
    } else {
        trials += 1;
        fail = Some(rate);
        while pass == 0.0 && rate > 250.0 {
            rate /= 2.0;
            trials += 1;
            if trial(rate)? {
                pass = rate;
            } else {
                fail = Some(rate);
            }
        }
    }
    if let Some(mut hi) = fail {
        for _ in 0..3 {
            let mid = ((pass + hi) / 2.0 / 250.0).round() * 250.0;
            if mid <= pass || mid >= hi {
                break;
            }
            trials += 1;
            if trial(mid)? {
                pass = mid;
            } else {
                hi = mid;
            }
        }
    }
    Ok(vec![
        ("max_rate", pass),
        ("max_deliveries_per_s", pass * 1000.0),
        ("trials", f64::from(trials)),
    ])
}
