//! Criterion benchmark of the hub's publish path across worker shards:
//! publishers on N threads (1, 2, 4, 8) into rooms whose members are spread
//! over the shards of a [`Server::workers`]`(W)` server (W = 2, 4), so that
//! contention on the publish path shows.
//!
//! The members are real wharf connections, in memory: the server serves a
//! [`Listener`] of `tokio::io::DuplexStream`s, and wharf clients
//! ([`Connector::connect_on`]) on a runtime of their own read and count
//! every message. Each room has [`PER_SHARD`] members on every shard.
//!
//! Groups (each iteration is one publish; throughput in messages):
//! - `thread`: [`Hub::publish`] from plain threads, which deliver to every
//!   shard themselves. Timed: until every publisher's calls returned (each
//!   member's queue then holds the message).
//! - `worker`: a handler publishes from its worker (local delivery, one
//!   hand-over per other shard through its inbox). The bench tells N
//!   publishing connections "publish K times"; timed: from the order until
//!   every handler reported back that its publishes returned (the hand-overs
//!   may still be queued in the other workers' inboxes). A handler yields
//!   to its worker every [`YIELD_EVERY`] publishes, as one publishing per
//!   message received would, so that the worker's members keep draining.
//! - `deliver`: end to end, timed until every member read every message
//!   (throughput: deliveries per second), for both paths.
//!
//! Rooms: `shared`, one room for all publishers (one directory stripe); or
//! `own`, a room per publisher. Between samples (not timed) the bench waits
//! until every member has read every message, so no queue grows across
//! samples; the server drops rather than closes a member over its bound
//! ([`SlowClient::Drop`]) and the bench reports any drop.
//!
//! Wall time on a small machine mixes the publishers with the delivery
//! running beside them, so after each server's groups the bench also
//! prints CPU time: per publish, what the publishers spent in `publish`
//! (their threads' CPU clocks; the serial cost), and for `deliver` per
//! delivery, the server's and the clients' share of the process's. Those
//! are the figures that carry over to more cores (`docs/BENCHMARKS.md`).
//!
//! ```text
//! cargo bench -p wharf --bench publish            # the whole matrix, under 3 minutes
//! cargo bench -p wharf --bench publish -- thread/w2
//! cargo test -p wharf --benches                   # smoke: every benchmark runs once
//! ```

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Condvar, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput};
use rustix::time::{ClockId, clock_gettime};
use tokio::io::DuplexStream;
use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot};
use wharf::{Connection, Connector, Hub, Listener, Server, SlowClient};

/// Members of each room on each shard.
const PER_SHARD: usize = 2;
/// The publisher counts measured.
const PUBLISHERS: [usize; 4] = [1, 2, 4, 8];
/// The most publishers: one room each in the `own` layout.
const MAX_PUBLISHERS: usize = 8;
/// The worker counts measured.
const WORKERS: [usize; 2] = [2, 4];
/// A handler publishing in a loop yields to its worker this often.
const YIELD_EVERY: u64 = 32;
/// What is published: a small chat message.
const PAYLOAD: &[u8] = b"a message of 32 bytes, say chat.";
/// How long the bench waits for members to read what was published.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Where each publisher publishes.
#[derive(Clone, Copy, Debug)]
enum Rooms {
    /// One room for every publisher.
    Shared,
    /// A room per publisher.
    Own,
}

impl Rooms {
    fn name(self) -> &'static str {
        match self {
            Self::Shared => "shared",
            Self::Own => "own",
        }
    }

    fn room(self, publisher: usize) -> String {
        match self {
            Self::Shared => "shared".to_owned(),
            Self::Own => format!("own-{publisher}"),
        }
    }

    /// The layout's rooms, each once.
    fn all(self) -> Vec<String> {
        match self {
            Self::Shared => vec![self.room(0)],
            Self::Own => (0..MAX_PUBLISHERS).map(|p| self.room(p)).collect(),
        }
    }
}

/// Accepts the in-memory streams the bench's clients send it.
struct MemoryListener {
    streams: mpsc::UnboundedReceiver<DuplexStream>,
}

impl Listener for MemoryListener {
    type Io = DuplexStream;

    async fn accept(&mut self) -> io::Result<(DuplexStream, SocketAddr)> {
        match self.streams.recv().await {
            Some(io) => Ok((io, SocketAddr::from(([0, 0, 0, 0], 0)))),
            // The bench is over: no more connections.
            None => std::future::pending().await,
        }
    }
}

/// Messages read by all members, and a wake-up when a target is reached.
#[derive(Default)]
struct Received {
    count: AtomicU64,
    target: AtomicU64,
    lock: Mutex<()>,
    reached: Condvar,
}

impl Received {
    fn add(&self) {
        let n = self.count.fetch_add(1, Ordering::AcqRel) + 1;
        if n == self.target.load(Ordering::Acquire) {
            // Taken so that a waiter between its check and its wait is
            // woken: it holds the lock until it waits.
            let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.reached.notify_all();
        }
    }

    /// Waits until `target` messages were read in all; `false` on timeout.
    fn wait(&self, target: u64) -> bool {
        self.target.store(target, Ordering::Release);
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        let mut guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        while self.count.load(Ordering::Acquire) < target {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            guard = self
                .reached
                .wait_timeout(guard, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }
}

/// A server of `workers` workers, its members, and its publishing clients.
struct Rig {
    workers: usize,
    hub: Hub,
    received: Arc<Received>,
    /// Messages all members should have read so far.
    expected: u64,
    /// Per layout (`Rooms as usize`): an order channel to each publishing
    /// connection's client task.
    publishers: [Vec<mpsc::UnboundedSender<u64>>; 2],
    /// Each publisher's report: the CPU time its publishes took.
    done: std::sync::mpsc::Receiver<Duration>,
    clients: Handle,
    /// CPU time spent, by benchmark.
    cpu: BTreeMap<String, Cpu>,
}

/// CPU time a benchmark spent over all its samples (warm-up included).
#[derive(Default)]
struct Cpu {
    publishes: u64,
    /// In the publishers' own calls to `Hub::publish`, summed.
    publishers: Duration,
    /// In the whole process, over the timed part (`deliver` only).
    process: Duration,
    /// In the clients' thread, over the timed part (`deliver` only).
    clients: Duration,
}

impl Rig {
    fn start(workers: usize) -> Self {
        let server = Server::new()
            .workers(workers)
            .keepalive(None)
            .write_timeout(None)
            .max_backpressure(64 << 20)
            .slow_client(SlowClient::Drop);
        let hub = server.hub();
        let server = server.on_connection(serve);
        let (streams_tx, streams) = mpsc::unbounded_channel();
        std::thread::Builder::new()
            .name("bench-worker-0".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("server runtime");
                let _ = runtime.block_on(server.serve(MemoryListener { streams }));
            })
            .expect("server thread");
        let clients = client_runtime();
        let received = Arc::new(Received::default());
        let (done_tx, done) = std::sync::mpsc::channel();
        let (opened_tx, opened) = oneshot::channel();
        clients.spawn(open(
            workers,
            streams_tx,
            received.clone(),
            done_tx,
            opened_tx,
        ));
        let publishers = opened.blocking_recv().expect("clients opened");
        let rig = Self {
            workers,
            hub,
            received,
            expected: 0,
            publishers,
            done,
            clients,
            cpu: BTreeMap::new(),
        };
        rig.check_spread();
        rig
    }

    /// Members of each room.
    fn members(&self) -> usize {
        PER_SHARD * self.workers
    }

    /// Asserts that every room has [`PER_SHARD`] members on every shard
    /// (a connection's id names its shard).
    fn check_spread(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        for rooms in [Rooms::Shared, Rooms::Own] {
            for room in rooms.all() {
                while self.hub.room_len(&room) < self.members() {
                    assert!(Instant::now() < deadline, "{room}: members did not join");
                    std::thread::sleep(Duration::from_millis(1));
                }
                let mut shards = vec![0; self.workers];
                for id in self.hub.members(&room) {
                    shards[((id - 1) % self.workers as u64) as usize] += 1;
                }
                assert_eq!(shards, vec![PER_SHARD; self.workers], "{room}");
            }
        }
    }

    /// `iters` publishes from `n` plain threads; the time until all
    /// returned, and the CPU time the threads spent publishing.
    fn publish_from_threads(&self, rooms: Rooms, n: usize, iters: u64) -> (Duration, Duration) {
        let names: Vec<String> = (0..n).map(|p| rooms.room(p)).collect();
        let start = Barrier::new(n + 1);
        let message = Bytes::from_static(PAYLOAD);
        std::thread::scope(|s| {
            let threads: Vec<_> = names
                .iter()
                .enumerate()
                .map(|(p, room)| {
                    let (hub, start, message) = (&self.hub, &start, &message);
                    s.spawn(move || {
                        start.wait();
                        let cpu = thread_cpu();
                        for _ in 0..share(iters, p, n) {
                            hub.publish(room, message.clone());
                        }
                        thread_cpu() - cpu
                    })
                })
                .collect();
            start.wait();
            let began = Instant::now();
            let cpu = threads
                .into_iter()
                .map(|t| t.join().expect("publisher thread"))
                .sum();
            (began.elapsed(), cpu)
        })
    }

    /// `iters` publishes by the handlers of `n` publishing connections, on
    /// their workers; the time until every handler reported back, and the
    /// CPU time the handlers spent publishing.
    fn publish_from_workers(&self, rooms: Rooms, n: usize, iters: u64) -> (Duration, Duration) {
        let start = Instant::now();
        for (p, order) in self.publishers[rooms as usize][..n].iter().enumerate() {
            order.send(share(iters, p, n)).expect("publisher open");
        }
        let cpu = (0..n)
            .map(|_| self.done.recv().expect("publisher reported"))
            .sum();
        (start.elapsed(), cpu)
    }

    /// The CPU time of the clients' thread so far.
    fn clients_cpu(&self) -> Duration {
        let (tx, rx) = oneshot::channel();
        self.clients.spawn(async move { tx.send(thread_cpu()) });
        rx.blocking_recv().expect("client runtime")
    }

    /// Waits until the members have read the `iters` publishes just made.
    fn drain(&mut self, iters: u64) {
        self.expected += iters * self.members() as u64;
        if !self.received.wait(self.expected) {
            let got = self.received.count.load(Ordering::Acquire);
            eprintln!(
                "w{}: members read {got} of {} messages; {} dropped",
                self.workers,
                self.expected,
                self.dropped()
            );
            self.expected = got;
        }
    }

    /// Messages dropped so far: by members' queues, and hand-overs to full
    /// inboxes.
    fn dropped(&self) -> u64 {
        let queues: u64 = self.hub.clients().iter().map(wharf::Client::dropped).sum();
        queues + self.hub.fanouts_dropped()
    }
}

/// The CPU time this thread has run.
fn thread_cpu() -> Duration {
    timespec(clock_gettime(ClockId::ThreadCPUTime))
}

/// The CPU time this process has run, on all its threads.
fn process_cpu() -> Duration {
    timespec(clock_gettime(ClockId::ProcessCPUTime))
}

fn timespec(t: rustix::time::Timespec) -> Duration {
    let secs = u64::try_from(t.tv_sec).unwrap_or(0);
    Duration::new(secs, u32::try_from(t.tv_nsec).unwrap_or(0))
}

/// The `p`-th of `n` publishers' part of `iters` publishes.
fn share(iters: u64, p: usize, n: usize) -> u64 {
    let (n, p) = (n as u64, p as u64);
    iters / n + u64::from(p < iters % n)
}

/// The server's handler: `/member/ROOM` joins the room and reads (and
/// drops) anything sent; `/publish/ROOM` publishes to the room as often as
/// each message it gets says, then answers with the CPU time that took (in
/// nanoseconds; between yields nothing else runs on the thread).
async fn serve(mut conn: Connection) {
    let path = conn.path().to_owned();
    if let Some(room) = path.strip_prefix("/member/") {
        conn.join(room);
        while conn.recv().await.is_some() {}
    } else if let Some(room) = path.strip_prefix("/publish/") {
        let message = Bytes::from_static(PAYLOAD);
        while let Some(order) = conn.recv().await {
            let times: u64 = order.as_text().and_then(|t| t.parse().ok()).unwrap_or(0);
            let mut cpu = Duration::ZERO;
            let mut sent = 0;
            while sent < times {
                let chunk = YIELD_EVERY.min(times - sent);
                let began = thread_cpu();
                for _ in 0..chunk {
                    conn.hub().publish(room, message.clone());
                }
                cpu += thread_cpu() - began;
                sent += chunk;
                tokio::task::yield_now().await;
            }
            if conn.send(cpu.as_nanos().to_string()).await.is_err() {
                break;
            }
        }
    }
}

/// A current-thread runtime on a thread of its own, for the clients.
fn client_runtime() -> Handle {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("bench-clients".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("client runtime");
            tx.send(runtime.handle().clone()).expect("bench waiting");
            runtime.block_on(std::future::pending::<()>());
        })
        .expect("client thread");
    rx.recv().expect("client runtime started")
}

/// Opens, in an order that places them (the server hands connections to
/// its workers in turn): every room's members, a run of `PER_SHARD *
/// workers` connections each, so each shard gets `PER_SHARD`; then the
/// publishers of each layout, publisher `p` on worker `p % workers`.
async fn open(
    workers: usize,
    streams: mpsc::UnboundedSender<DuplexStream>,
    received: Arc<Received>,
    done: std::sync::mpsc::Sender<Duration>,
    opened: oneshot::Sender<[Vec<mpsc::UnboundedSender<u64>>; 2]>,
) {
    let connector = Connector::new().keepalive(None).write_timeout(None);
    let connect = |path: String| {
        let (client, server) = tokio::io::duplex(64 << 10);
        streams.send(server).expect("server accepting");
        let connector = connector.clone();
        async move {
            let url = format!("ws://bench{path}");
            let (conn, _) = connector.connect_on(client, &url).await.expect("connect");
            conn
        }
    };
    for rooms in [Rooms::Shared, Rooms::Own] {
        for room in rooms.all() {
            for _ in 0..PER_SHARD * workers {
                let mut conn = connect(format!("/member/{room}")).await;
                let received = received.clone();
                tokio::spawn(async move {
                    while conn.recv().await.is_some() {
                        received.add();
                    }
                });
            }
        }
    }
    let mut publishers = [Vec::new(), Vec::new()];
    for rooms in [Rooms::Shared, Rooms::Own] {
        for p in 0..MAX_PUBLISHERS {
            let mut conn = connect(format!("/publish/{}", rooms.room(p))).await;
            let (order_tx, mut orders) = mpsc::unbounded_channel::<u64>();
            let done = done.clone();
            tokio::spawn(async move {
                while let Some(times) = orders.recv().await {
                    if conn.send(times.to_string()).await.is_err() {
                        break;
                    }
                    let Some(report) = conn.recv().await else {
                        break;
                    };
                    let nanos = report.as_text().and_then(|t| t.parse().ok());
                    let cpu = Duration::from_nanos(nanos.unwrap_or(0));
                    done.send(cpu).expect("bench waiting");
                }
            });
            publishers[rooms as usize].push(order_tx);
        }
    }
    let _ = opened.send(publishers);
}

/// Which path a publish takes.
#[derive(Clone, Copy)]
enum Path {
    Thread,
    Worker,
}

impl Rig {
    /// `iters` publishes; the wall time they took (see the module docs),
    /// and the CPU time they took, counted as benchmark `id`'s.
    fn publish(&mut self, id: &str, path: Path, rooms: Rooms, n: usize, iters: u64) -> Duration {
        let (took, cpu) = match path {
            Path::Thread => self.publish_from_threads(rooms, n, iters),
            Path::Worker => self.publish_from_workers(rooms, n, iters),
        };
        let spent = self.cpu.entry(id.to_owned()).or_default();
        spent.publishes += iters;
        spent.publishers += cpu;
        took
    }

    /// Prints the CPU time per publish, and for `deliver` per delivery.
    fn report_cpu(&self) {
        eprintln!(
            "w{}: CPU time (all samples, warm-up included)",
            self.workers
        );
        for (id, spent) in &self.cpu {
            let per = |d: Duration, n: u64| d.as_nanos() as f64 / n.max(1) as f64;
            let publish = per(spent.publishers, spent.publishes);
            if spent.process.is_zero() {
                eprintln!("  {id:<32} {publish:>8.0} ns per publish (publishers)");
                continue;
            }
            let deliveries = spent.publishes * self.members() as u64;
            // The server's share: all but the clients' thread and, from
            // plain threads, the publishers.
            let publishers = match id.contains("/thread/") {
                true => spent.publishers,
                false => Duration::ZERO,
            };
            let server = spent.process.saturating_sub(spent.clients + publishers);
            eprintln!(
                "  {id:<32} {publish:>8.0} ns per publish (publishers); per delivery: \
                 server {:.0} ns, clients {:.0} ns",
                per(server, deliveries),
                per(spent.clients, deliveries),
            );
        }
    }
}

fn bench_publish(c: &mut Criterion) {
    for workers in WORKERS {
        let mut rig = Rig::start(workers);
        for (group, path) in [("thread", Path::Thread), ("worker", Path::Worker)] {
            let mut g = c.benchmark_group(format!("{group}/w{workers}"));
            g.throughput(Throughput::Elements(1));
            for rooms in [Rooms::Shared, Rooms::Own] {
                for n in PUBLISHERS {
                    let id = format!("{group}/w{workers}/{}/{n}", rooms.name());
                    g.bench_function(BenchmarkId::new(rooms.name(), n), |b| {
                        b.iter_custom(|iters| {
                            let took = rig.publish(&id, path, rooms, n, iters);
                            rig.drain(iters);
                            took
                        });
                    });
                }
            }
            g.finish();
        }
        // End to end: until every member read every message.
        let mut g = c.benchmark_group(format!("deliver/w{workers}"));
        g.throughput(Throughput::Elements(rig.members() as u64));
        for (name, path) in [("thread", Path::Thread), ("worker", Path::Worker)] {
            for n in [1, MAX_PUBLISHERS] {
                let id = format!("deliver/w{workers}/{name}/shared/{n}");
                g.bench_function(BenchmarkId::new(format!("{name}/shared"), n), |b| {
                    b.iter_custom(|iters| {
                        let clients = rig.clients_cpu();
                        let process = process_cpu();
                        let start = Instant::now();
                        rig.publish(&id, path, Rooms::Shared, n, iters);
                        rig.drain(iters);
                        let took = start.elapsed();
                        let process = process_cpu() - process;
                        let clients = rig.clients_cpu() - clients;
                        let spent = rig.cpu.entry(id.clone()).or_default();
                        spent.process += process;
                        spent.clients += clients;
                        took
                    });
                });
            }
        }
        g.finish();
        rig.report_cpu();
        let dropped = rig.dropped();
        if dropped > 0 {
            eprintln!("w{workers}: {dropped} messages dropped");
        }
    }
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_millis(1500))
        .configure_from_args()
}

// What `criterion_group!` and `criterion_main!` expand to, written out:
// the macro's generated `pub fn` has no doc comment and trips `missing_docs`.
fn main() {
    let mut c = config();
    bench_publish(&mut c);
    c.final_summary();
}
