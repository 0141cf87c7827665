//! The runner: starts each target server pinned to the server's cores with
//! `taskset`, runs each scenario against each target in turn, interleaved
//! over several rounds (round 1: every target, then round 2, ...), so that
//! drift in the machine's state spreads over all targets instead of
//! favouring one.
//!
//! Servers are `wharf-bench server ...` processes (the libraries and peers,
//! which answer `stats` with their allocation counters), or the `wharf`
//! binary itself (`wharf-binary`), which has no such channel: for it, CPU
//! and resident memory come from `/proc` alone, as for every target.

use std::io::{BufRead, BufReader, Read as _, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::load::{self, Metrics};
use crate::proc;
use crate::report::Sample;
use crate::servers::{Deflate, Mode, Target};

/// The first core of the servers (`--server-cpus N`: cores 0..N-1).
pub(crate) const SERVER_CPU: usize = 0;
/// The core of the runner and load generator with one server core.
pub(crate) const CLIENT_CPU: usize = 1;

/// `taskset -c` list of the server's cores: `0` or `0-(n-1)`.
pub(crate) fn server_cpu_list(n: usize) -> String {
    if n <= 1 {
        SERVER_CPU.to_string()
    } else {
        format!("{SERVER_CPU}-{}", SERVER_CPU + n - 1)
    }
}

/// Checks `--server-cpus N` against the machine's `cpus`: the server takes
/// cores 0..N-1 and the load generator needs at least one more. One CPU
/// alone is allowed (everything shares it, with a warning).
///
/// # Errors
/// A clear message when `n` is 0 or leaves the load generator no core.
pub(crate) fn check_server_cpus(n: usize, cpus: usize) -> anyhow::Result<()> {
    if n == 0 {
        bail!("--server-cpus must be at least 1");
    }
    if cpus > 1 && n >= cpus {
        bail!(
            "--server-cpus {n}: this machine has {cpus} CPUs; the server takes cores 0..{} and \
             the load generator needs at least one core of its own, so N must be at most {}",
            n - 1,
            cpus - 1
        );
    }
    if cpus == 1 && n > 1 {
        bail!("--server-cpus {n}: this machine has one CPU");
    }
    Ok(())
}

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
    pub(crate) perf: Option<PathBuf>,
    /// Count each server's syscalls with `perf stat` into this directory.
    pub(crate) perf_stat: Option<PathBuf>,
    /// Cores of the server (0..N-1); the load generator has the others.
    pub(crate) server_cpus: usize,
    /// Where the `wharf` binary's log (its standard error) goes.
    pub(crate) log_dir: PathBuf,
}

impl Options {
    fn secs(&self, s: f64) -> Duration {
        Duration::from_secs_f64(s * self.scale)
    }
}

/// One server configuration in a scenario: a target, and for wharf its
/// deflate mode (for the binary: whether the client offers deflate) and
/// whether each idle connection first sends a message.
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
    /// The `stats` channel of a `wharf-bench server` process; `None` for
    /// the `wharf` binary, which counts no allocations.
    stats: Option<(ChildStdin, BufReader<ChildStdout>)>,
}

/// Counters at one instant.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Snapshot {
    at: Instant,
    server_cpu: f64,
    client_cpu: f64,
    /// The server's allocation counters, when it reports them.
    pub(crate) heap: Option<Heap>,
}

/// A `wharf-bench server` process's allocation counters.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Heap {
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
    /// Server CPU seconds (user + system, every thread).
    pub(crate) server_cpu: f64,
    /// Load-generator CPU seconds.
    pub(crate) client_cpu: f64,
    /// Heap allocations made by the server (`None`: not counted).
    pub(crate) allocs: Option<u64>,
    #[allow(dead_code)]
    pub(crate) alloc_bytes: Option<u64>,
}

impl Snapshot {
    pub(crate) fn until(&self, later: &Self) -> Window {
        let heaps = self.heap.zip(later.heap);
        Window {
            secs: (later.at - self.at).as_secs_f64(),
            server_cpu: later.server_cpu - self.server_cpu,
            client_cpu: later.client_cpu - self.client_cpu,
            allocs: heaps.map(|(a, b)| b.allocs - a.allocs),
            alloc_bytes: heaps.map(|(a, b)| b.alloc_bytes - a.alloc_bytes),
        }
    }
}

impl Window {
    /// Allocations per `n` operations, as a named figure, if counted.
    pub(crate) fn allocs_per(&self, key: &'static str, n: f64) -> Option<(&'static str, f64)> {
        self.allocs.map(|a| (key, a as f64 / n))
    }
}

impl ServerProc {
    /// Starts `target` pinned to the server's cores and waits until it
    /// serves.
    ///
    /// # Errors
    /// If it cannot be started or does not come up.
    pub(crate) fn start(
        target: Target,
        mode: Mode,
        deflate: Deflate,
        opts: &Options,
    ) -> anyhow::Result<Self> {
        if target == Target::WharfBinary {
            return Self::start_binary(mode, opts);
        }
        let exe = std::env::current_exe()?;
        let mut cmd = Command::new("taskset");
        cmd.arg("-c")
            .arg(server_cpu_list(opts.server_cpus))
            .arg(exe)
            .args(["server", target.name(), "--mode", mode.name()])
            .args(["--deflate", deflate.name()])
            .args(["--workers", &opts.server_cpus.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        // `wharf-lib` runs on `Server::workers(N)`; the peers stay on one
        // current-thread runtime, as their examples run.
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
            stats: Some((stdin, stdout)),
        })
    }

    /// Starts the release `wharf` binary with its defaults, but for the
    /// mode, the address and a per-address cap above the load's connection
    /// count (every connection comes from 127.0.0.1; see docs/BENCHMARKS.md).
    /// Its log (standard error) goes to `log_dir/wharf-binary.log`.
    fn start_binary(mode: Mode, opts: &Options) -> anyhow::Result<Self> {
        let exe = wharf_binary();
        if !exe.exists() {
            bail!(
                "{} is missing: build it with `cargo build --release -p wharf-server`",
                exe.display()
            );
        }
        // A free port: bound and released, then given to the binary.
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        std::fs::create_dir_all(&opts.log_dir)?;
        let log_path = opts.log_dir.join("wharf-binary.log");
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("create {}", log_path.display()))?;
        let mut cmd = Command::new("taskset");
        cmd.arg("-c")
            .arg(server_cpu_list(opts.server_cpus))
            .arg(&exe)
            .args(["--mode", mode.name(), "--listen", &addr.to_string()])
            // The default is half of `max-connections`, from `ulimit -n`:
            // 9,856 here (hard limit 20,000), below the memory scenario's
            // 10,000 connections, all from one address.
            .arg("--max-connections-per-ip")
            .arg((opts.idle_conns + 1024).to_string());
        // Its default too (one worker per core it may run on), made
        // explicit.
        cmd.args(["--workers", &opts.server_cpus.to_string()]);
        // Nothing from the caller's environment or a config file: defaults.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("WHARF_") {
                cmd.env_remove(key);
            }
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log));
        let mut child = cmd.spawn().context("spawn taskset (util-linux)")?;
        let pid = child.id().to_string();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait()? {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(5).collect();
                bail!(
                    "wharf-binary exited ({status}): {}",
                    tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
                );
            }
            if healthy(addr) {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("wharf-binary did not answer /healthz on {addr} within 10 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Self {
            child,
            pid,
            addr,
            strict: true,
            stats: None,
        })
    }

    /// CPU time, allocations (if counted) and the time, now.
    ///
    /// # Errors
    /// If the server has died.
    pub(crate) fn snapshot(&mut self) -> anyhow::Result<Snapshot> {
        let heap = match &mut self.stats {
            Some((stdin, stdout)) => {
                stdin.write_all(b"stats\n")?;
                stdin.flush()?;
                let mut line = String::new();
                stdout.read_line(&mut line)?;
                let f: Vec<&str> = line.split_whitespace().collect();
                match f.as_slice() {
                    ["allocs", a, "bytes", b, "live", lb, ly] => Some(Heap {
                        allocs: a.parse()?,
                        alloc_bytes: b.parse()?,
                        live_blocks: lb.parse()?,
                        live_bytes: ly.parse()?,
                    }),
                    _ => bail!("unexpected stats line {line:?}"),
                }
            }
            None => None,
        };
        Ok(Snapshot {
            at: Instant::now(),
            server_cpu: proc::cpu_seconds(&self.pid)?,
            client_cpu: proc::cpu_seconds("self")?,
            heap,
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

/// The release `wharf` binary: `$CARGO_TARGET_DIR/release/wharf`, or the
/// workspace's `target/release/wharf`.
pub(crate) fn wharf_binary() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join("target")
        },
        PathBuf::from,
    );
    target.join("release").join("wharf")
}

/// Builds the release `wharf` binary with `cargo build --release -p
/// wharf-server` when it is missing or older than a source file of the
/// crates it is built from (or `Cargo.lock`), so that the benchmark never
/// measures a stale one. (Not every time: building one package and then
/// another resolves shared dependencies' features differently, and each
/// switch rebuilds them.) A stale binary that cannot be rebuilt is used
/// with a warning.
///
/// # Errors
/// If it is missing and cannot be built.
pub(crate) fn build_wharf_binary() -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let exe = wharf_binary();
    let built = std::fs::metadata(&exe).and_then(|m| m.modified()).ok();
    let sources = ["crates/wharf-proto", "crates/wharf", "crates/wharf-server"]
        .iter()
        .map(|dir| newest(&root.join(dir)))
        .chain([std::fs::metadata(root.join("Cargo.lock"))
            .and_then(|m| m.modified())
            .ok()])
        .flatten()
        .max();
    if let (Some(built), Some(sources)) = (built, sources)
        && built >= sources
    {
        return Ok(());
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    eprintln!("building the wharf binary: cargo build --release -p wharf-server");
    let status = Command::new(cargo)
        .args(["build", "--release", "-p", "wharf-server"])
        .current_dir(&root)
        .status();
    match status {
        Ok(s) if s.success() => Ok(()),
        other if exe.exists() => {
            eprintln!(
                "warning: cargo build --release -p wharf-server failed ({other:?}); \
                 using the existing {}, older than its sources",
                exe.display()
            );
            Ok(())
        }
        other => bail!("cargo build --release -p wharf-server failed: {other:?}"),
    }
}

/// The newest modification time of a file under `dir` (`Cargo.toml`, and
/// everything under `src/`).
fn newest(dir: &Path) -> Option<std::time::SystemTime> {
    fn walk(path: &Path, newest: &mut Option<std::time::SystemTime>) {
        let Ok(meta) = std::fs::metadata(path) else {
            return;
        };
        if meta.is_dir() {
            for entry in std::fs::read_dir(path).into_iter().flatten().flatten() {
                walk(&entry.path(), newest);
            }
        } else if let Ok(t) = meta.modified() {
            *newest = (*newest).max(Some(t));
        }
    }
    let mut t = None;
    walk(&dir.join("Cargo.toml"), &mut t);
    walk(&dir.join("src"), &mut t);
    t
}

/// Whether `GET /healthz` on `addr` answers `200`.
fn healthy(addr: SocketAddr) -> bool {
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    if s.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 200")
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
    fn record(server: &ServerProc, out: &Path) -> anyhow::Result<Self> {
        Self::start(&["record", "-q", "-F", "1999", "-g"], server, out)
    }

    /// `perf stat` of syscalls and context switches into `out`.
    fn stat(server: &ServerProc, out: &Path) -> anyhow::Result<Self> {
        let events = "raw_syscalls:sys_enter,syscalls:sys_enter_writev,\
                      syscalls:sys_enter_recvfrom,syscalls:sys_enter_read,\
                      syscalls:sys_enter_write,syscalls:sys_enter_sendto,\
                      syscalls:sys_enter_epoll_wait,context-switches";
        Self::start(&["stat", "-e", events], server, out)
    }

    fn start(args: &[&str], server: &ServerProc, out: &Path) -> anyhow::Result<Self> {
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
    if scenario == Scenario::Memory && targets.contains(&Target::WharfBinary) {
        // The binary offers `shared` deflate as shipped: here the load
        // generator takes it, as browsers do.
        out.push(Config {
            target: Target::WharfBinary,
            deflate: Deflate::Shared,
            one_message: false,
        });
    }
    if scenario == Scenario::Memory && targets.contains(&Target::WharfLib) {
        for deflate in [Deflate::Shared, Deflate::Dedicated] {
            for one_message in [false, true] {
                out.push(Config {
                    target: Target::WharfLib,
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
    let mut server = ServerProc::start(config.target, mode, config.deflate, opts)?;
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
        let mut server = ServerProc::start(target, Mode::Broadcast, Deflate::Off, opts)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_cpus_leave_the_load_generator_a_core() {
        assert_eq!(server_cpu_list(1), "0");
        assert_eq!(server_cpu_list(3), "0-2");
        assert!(check_server_cpus(1, 2).is_ok());
        assert!(check_server_cpus(1, 1).is_ok());
        assert!(check_server_cpus(15, 16).is_ok());
        let e = check_server_cpus(2, 2).unwrap_err().to_string();
        assert!(e.contains("at most 1"), "{e}");
        assert!(check_server_cpus(0, 2).is_err());
        assert!(check_server_cpus(2, 1).is_err());
    }
}
