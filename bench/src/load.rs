//! The load generator: one scenario against one running server, returning
//! named figures.
//!
//! It runs on one tokio current-thread runtime pinned to its own core,
//! with one task per connection: tokio's per-wakeup cost is small next to
//! the syscalls, which it makes no more of than a hand-written epoll loop
//! would (one read per readable event, one write per batch of frames). The
//! frames are masked once before the run and written in slices; replies are
//! walked in the read buffer without copying (`client::FrameReader`). The
//! one-connection latency test uses a blocking socket instead, so that no
//! scheduler sits between the reply and the clock.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::LocalSet;

use crate::client::{self, FrameReader, ReadError, Upgraded};
use crate::hist::Histogram;
use crate::runner::ServerProc;

/// Named figures from one run, in display order.
pub(crate) type Metrics = Vec<(&'static str, f64)>;

/// Read buffer per connection.
const READ_BUF: usize = 64 * 1024;

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn read_error(e: ReadError) -> anyhow::Error {
    anyhow!("server frame stream ended: {e:?}")
}

/// Upgrades `n` connections, `concurrency` at a time. With `message`, each
/// connection then sends that (pre-masked) frame and waits for one reply.
async fn connect_many(
    addr: SocketAddr,
    strict: bool,
    req: &Rc<Vec<u8>>,
    n: usize,
    concurrency: usize,
    message: Option<&Rc<Vec<u8>>>,
) -> anyhow::Result<Vec<(TcpStream, Upgraded)>> {
    let out = Rc::new(RefCell::new(Vec::with_capacity(n)));
    let mut workers = Vec::new();
    for w in 0..concurrency.min(n) {
        let (req, out, message) = (req.clone(), out.clone(), message.cloned());
        workers.push(tokio::task::spawn_local(async move {
            for _ in (w..n).step_by(concurrency) {
                let (mut s, mut up) = client::connect(addr, &req, strict).await?;
                if let Some(frame) = &message {
                    s.write_all(frame).await?;
                    let mut reader = FrameReader::default();
                    let mut got = false;
                    reader
                        .feed(&up.leftover, |f| got |= f.is_data())
                        .map_err(read_error)?;
                    let mut buf = [0u8; 4096];
                    while !got {
                        let k = s.read(&mut buf).await?;
                        if k == 0 {
                            bail!("closed before replying");
                        }
                        reader
                            .feed(&buf[..k], |f| got |= f.is_data())
                            .map_err(read_error)?;
                    }
                    up.leftover.clear();
                }
                out.borrow_mut().push((s, up));
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for w in workers {
        w.await??;
    }
    let conns = std::mem::take(&mut *out.borrow_mut());
    Ok(conns)
}

/// Echo latency: one connection, one message in flight, a blocking socket.
pub(crate) fn echo_latency(
    server: &mut ServerProc,
    size: usize,
    warmup: Duration,
    measure: Duration,
) -> anyhow::Result<Metrics> {
    let (mut s, up) =
        client::connect_blocking(server.addr, &client::request(false), server.strict)?;
    let frame = client::binary_frames(size, 1, 11);
    let mut reader = FrameReader::new(!server.strict);
    reader.feed(&up.leftover, |_| {}).map_err(read_error)?;
    let mut buf = vec![0u8; READ_BUF];
    let mut roundtrip = || -> anyhow::Result<()> {
        use std::io::{Read, Write};
        s.write_all(&frame)?;
        let mut got = false;
        while !got {
            let n = s.read(&mut buf)?;
            if n == 0 {
                bail!("closed");
            }
            reader
                .feed(&buf[..n], |f| got |= f.is_data())
                .map_err(read_error)?;
        }
        Ok(())
    };
    let t0 = Instant::now();
    while t0.elapsed() < warmup {
        roundtrip()?;
    }
    let mut rtts: Vec<u64> = Vec::with_capacity(1 << 18);
    let before = server.snapshot()?;
    let t1 = Instant::now();
    while t1.elapsed() < measure {
        let a = Instant::now();
        roundtrip()?;
        rtts.push(a.elapsed().as_nanos() as u64);
    }
    let w = before.until(&server.snapshot()?);
    rtts.sort_unstable();
    let n = rtts.len().max(1) as f64;
    let pick = |q: f64| rtts[((q * n) as usize).min(rtts.len() - 1)] as f64 / 1e3;
    let mean = rtts.iter().sum::<u64>() as f64 / n / 1e3;
    let mut m = vec![
        ("p50_us", pick(0.50)),
        ("p99_us", pick(0.99)),
        ("mean_us", mean),
        ("msg_per_s", n / w.secs),
        ("server_cpu_us_per_msg", w.server_cpu * 1e6 / n),
    ];
    m.extend(w.allocs_per("allocs_per_msg", n));
    Ok(m)
}

/// Echo throughput: `conns` connections, each keeping `inflight` messages
/// of `size` bytes outstanding (a closed loop: every reply sends one more).
pub(crate) fn echo_throughput(
    server: &mut ServerProc,
    conns: usize,
    size: usize,
    inflight: usize,
    warmup: Duration,
    measure: Duration,
) -> anyhow::Result<Metrics> {
    let rt = runtime()?;
    let local = LocalSet::new();
    let (addr, masked_ok) = (server.addr, !server.strict);
    local.block_on(&rt, async {
        let req = Rc::new(client::request(false));
        let streams = connect_many(addr, server.strict, &req, conns, 16, None).await?;
        let frames = Rc::new(client::binary_frames(size, inflight, 5));
        let count = Rc::new(Cell::new(0u64));
        let errors = Rc::new(Cell::new(0u64));
        let stop = Rc::new(Cell::new(false));
        let mut tasks = Vec::new();
        for (s, up) in streams {
            let (frames, count, errors, stop) =
                (frames.clone(), count.clone(), errors.clone(), stop.clone());
            tasks.push(tokio::task::spawn_local(async move {
                let reader = FrameReader::new(masked_ok);
                let result = echo_conn(s, up, reader, &frames, inflight, &count, &stop).await;
                if let Err(e) = result
                    && !stop.get()
                {
                    errors.set(errors.get() + 1);
                    eprintln!("echo connection failed: {e}");
                }
            }));
        }
        tokio::time::sleep(warmup).await;
        let before = server.snapshot()?;
        let c0 = count.get();
        tokio::time::sleep(measure).await;
        let w = before.until(&server.snapshot()?);
        let n = (count.get() - c0) as f64;
        stop.set(true);
        for t in tasks {
            t.abort();
        }
        if errors.get() > 0 {
            bail!("{} connections failed", errors.get());
        }
        let mut m = vec![
            ("msg_per_s", n / w.secs),
            ("mib_per_s", n * size as f64 / w.secs / (1 << 20) as f64),
            ("server_cpu_ns_per_msg", w.server_cpu * 1e9 / n),
            ("server_cpu_pct", w.server_cpu / w.secs * 100.0),
            ("client_cpu_pct", w.client_cpu / w.secs * 100.0),
        ];
        m.extend(w.allocs_per("allocs_per_msg", n));
        Ok(m)
    })
}

async fn echo_conn(
    mut s: TcpStream,
    up: Upgraded,
    mut reader: FrameReader,
    frames: &[u8],
    inflight: usize,
    count: &Cell<u64>,
    stop: &Cell<bool>,
) -> anyhow::Result<()> {
    let flen = frames.len() / inflight;
    let mut buf = vec![0u8; READ_BUF];
    s.write_all(frames).await?;
    let mut k = 0usize;
    reader
        .feed(&up.leftover, |f| k += usize::from(f.is_data()))
        .map_err(read_error)?;
    loop {
        while k > 0 {
            let m = k.min(inflight);
            count.set(count.get() + m as u64);
            if stop.get() {
                return Ok(());
            }
            s.write_all(&frames[..m * flen]).await?;
            k -= m;
        }
        let n = s.read(&mut buf).await?;
        if n == 0 {
            bail!("closed by the server");
        }
        reader
            .feed(&buf[..n], |f| k += usize::from(f.is_data()))
            .map_err(read_error)?;
    }
}

/// Parameters of one broadcast run.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Broadcast {
    pub(crate) receivers: usize,
    /// Messages per second sent by the one sender.
    pub(crate) rate: f64,
    pub(crate) size: usize,
    pub(crate) warmup: Duration,
    pub(crate) measure: Duration,
    /// How long after the last send every delivery must have arrived.
    pub(crate) grace: Duration,
}

#[derive(Debug, Default)]
struct Received {
    hist: Histogram,
    /// Latencies of messages sent in the first and the second half of the
    /// measured window: a backlog that grows shows as a later half slower
    /// than the earlier one.
    halves: [Histogram; 2],
    count: u64,
    failed: u64,
}

/// Broadcast: `receivers` connections; the first also sends, at a fixed
/// rate, messages stamped with a sequence number and the send time.
/// Latency is from the write on the sender's socket to the read on each
/// receiver's. Zero loss: every receiver got every message within `grace`
/// of the last send, and no connection was closed. Stable: zero loss, and
/// the median latency of the second half of the window is no more than
/// 1.5 times (plus 5 ms) that of the first: the server keeps up instead of
/// building a backlog that the grace period happens to absorb.
pub(crate) fn broadcast(server: &mut ServerProc, p: Broadcast) -> anyhow::Result<Metrics> {
    let rt = runtime()?;
    let local = LocalSet::new();
    let addr = server.addr;
    local.block_on(&rt, async {
        let req = Rc::new(client::request(false));
        let conns = connect_many(addr, server.strict, &req, p.receivers, 16, None).await?;
        // Every connection is registered once its handshake is answered;
        // let the servers' tasks settle before sending.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let base = Instant::now();
        let state = Rc::new(RefCell::new(Received::default()));
        // Send-time bounds (ns since `base`): the measured window and its middle.
        let measure_from = Rc::new(Cell::new((u64::MAX, u64::MAX)));
        let mut tasks = Vec::new();
        let mut sender = None;
        for (i, (s, up)) in conns.into_iter().enumerate() {
            let (state, from) = (state.clone(), measure_from.clone());
            if i == 0 {
                let (r, w) = s.into_split();
                sender = Some(w);
                tasks.push(tokio::task::spawn_local(receive(r, up, state, base, from)));
            } else {
                tasks.push(tokio::task::spawn_local(receive(s, up, state, base, from)));
            }
        }
        let Some(mut sender) = sender else {
            bail!("no connections");
        };
        let mut seq = 0u64;
        let warm = (p.rate * p.warmup.as_secs_f64()) as u64;
        let measured = (p.rate * p.measure.as_secs_f64()) as u64;
        send_paced(&mut sender, p, warm, &mut seq, base).await?;
        let from = base.elapsed().as_nanos() as u64;
        measure_from.set((from, from + p.measure.as_nanos() as u64 / 2));
        let before = server.snapshot()?;
        let r0 = state.borrow().count;
        send_paced(&mut sender, p, measured, &mut seq, base).await?;
        let sent_end = Instant::now();
        let r_send_end = state.borrow().count;
        let expected = seq * p.receivers as u64;
        while state.borrow().count < expected
            && state.borrow().failed == 0
            && sent_end.elapsed() < p.grace
        {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let w = before.until(&server.snapshot()?);
        for t in tasks {
            t.abort();
        }
        let st = state.borrow();
        let delivered = (st.count - r0) as f64;
        let lost = expected.saturating_sub(st.count);
        let zero_loss = lost == 0 && st.failed == 0;
        let (a, b) = (st.halves[0].quantile(0.5), st.halves[1].quantile(0.5));
        let stable = zero_loss && (b as f64) <= a as f64 * 1.5 + 5e6;
        let ms = |ns: u64| ns as f64 / 1e6;
        let mut m = vec![
            ("rate", p.rate),
            (
                "deliveries_per_s",
                (r_send_end - r0) as f64 / p.measure.as_secs_f64(),
            ),
            ("zero_loss", f64::from(u8::from(zero_loss))),
            ("stable", f64::from(u8::from(stable))),
            ("lost", lost as f64),
            ("closed_conns", st.failed as f64),
            ("p50_ms", ms(st.hist.quantile(0.5))),
            ("p99_ms", ms(st.hist.quantile(0.99))),
            ("max_ms", ms(st.hist.max())),
            ("mean_ms", st.hist.mean() / 1e6),
            ("p50_first_half_ms", ms(a)),
            ("p50_second_half_ms", ms(b)),
            ("server_cpu_ns_per_delivery", w.server_cpu * 1e9 / delivered),
            ("server_cpu_pct", w.server_cpu / w.secs * 100.0),
            ("client_cpu_pct", w.client_cpu / w.secs * 100.0),
            ("samples", st.hist.len() as f64),
        ];
        m.extend(w.allocs_per("allocs_per_delivery", delivered));
        Ok(m)
    })
}

async fn send_paced(
    w: &mut tokio::net::tcp::OwnedWriteHalf,
    p: Broadcast,
    count: u64,
    seq: &mut u64,
    base: Instant,
) -> anyhow::Result<()> {
    let mut payload = vec![b'x'; p.size.max(16)];
    let key = [0x37, 0xfa, 0x21, 0x3d];
    let mut out = Vec::with_capacity(64 * (p.size + 14));
    let start = Instant::now();
    let mut sent = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    while sent < count {
        tick.tick().await;
        let due = ((start.elapsed().as_secs_f64() * p.rate) as u64 + 1).min(count);
        if due <= sent {
            continue;
        }
        out.clear();
        let now = base.elapsed().as_nanos() as u64;
        for _ in sent..due {
            payload[..8].copy_from_slice(&seq.to_le_bytes());
            payload[8..16].copy_from_slice(&now.to_le_bytes());
            client::push_masked(&mut out, 0x82, &payload, key);
            *seq += 1;
        }
        w.write_all(&out).await?;
        sent = due;
    }
    Ok(())
}

async fn receive<R: AsyncRead + Unpin>(
    mut r: R,
    up: Upgraded,
    state: Rc<RefCell<Received>>,
    base: Instant,
    measure_from: Rc<Cell<(u64, u64)>>,
) {
    let mut reader = FrameReader::default();
    let mut buf = vec![0u8; READ_BUF];
    let mut take = |bytes: &[u8]| {
        let now = base.elapsed().as_nanos() as u64;
        let (from, mid) = measure_from.get();
        let mut st = state.borrow_mut();
        let ok = reader.feed(bytes, |f| {
            if f.is_data() {
                st.count += 1;
                let (_, sent) = f.stamp();
                if sent >= from {
                    let latency = now.saturating_sub(sent);
                    st.hist.record(latency);
                    st.halves[usize::from(sent >= mid)].record(latency);
                }
            }
        });
        if ok.is_err() {
            st.failed += 1;
        }
        ok.is_ok()
    };
    if !take(&up.leftover) {
        return;
    }
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => {
                state.borrow_mut().failed += 1;
                return;
            }
            Ok(n) => {
                if !take(&buf[..n]) {
                    return;
                }
            }
        }
    }
}

/// Idle memory: the server's resident memory grown by `conns` idle
/// connections, per connection. With `message`, every connection first
/// sends that frame and waits for its echo (to make a dedicated-deflate
/// server allocate its per-connection state).
pub(crate) fn idle_memory(
    server: &mut ServerProc,
    conns: usize,
    offer_deflate: bool,
    message: Option<Vec<u8>>,
    settle: Duration,
) -> anyhow::Result<Metrics> {
    let rt = runtime()?;
    let local = LocalSet::new();
    let addr = server.addr;
    local.block_on(&rt, async {
        let req = Rc::new(client::request(offer_deflate));
        let message = message.map(Rc::new);
        // One connection first, so that lazily built state (hyper, the
        // runtime's first task slab) is in the baseline.
        drop(connect_many(addr, server.strict, &req, 1, 1, message.as_ref()).await?);
        tokio::time::sleep(settle).await;
        let before = server.rss()?;
        let heap_before = server.snapshot()?;
        let start = Instant::now();
        let open = connect_many(addr, server.strict, &req, conns, 64, message.as_ref()).await?;
        let setup = start.elapsed();
        tokio::time::sleep(settle).await;
        let after = server.rss()?;
        let heap_after = server.snapshot()?;
        let negotiated = open.iter().filter(|(_, up)| up.deflate).count();
        let mut m = vec![(
            "bytes_per_conn",
            after.saturating_sub(before) as f64 / conns as f64,
        )];
        // Live heap: only from a server that counts its allocations.
        if let (Some(a), Some(b)) = (heap_before.heap, heap_after.heap) {
            m.push((
                "heap_bytes_per_conn",
                (b.live_bytes - a.live_bytes) as f64 / conns as f64,
            ));
            m.push((
                "heap_blocks_per_conn",
                (b.live_blocks - a.live_blocks) as f64 / conns as f64,
            ));
        }
        m.extend([
            ("rss_before_mib", before as f64 / (1 << 20) as f64),
            ("rss_after_mib", after as f64 / (1 << 20) as f64),
            ("deflate_pct", negotiated as f64 * 100.0 / conns as f64),
            ("setup_s", setup.as_secs_f64()),
        ]);
        Ok(m)
    })
}

/// Handshakes: `concurrency` workers, each connecting, upgrading, and
/// resetting the connection (`SO_LINGER` 0, so that no side keeps
/// TIME_WAIT state), in a loop.
pub(crate) fn handshakes(
    server: &mut ServerProc,
    concurrency: usize,
    warmup: Duration,
    measure: Duration,
) -> anyhow::Result<Metrics> {
    let rt = runtime()?;
    let local = LocalSet::new();
    let (addr, strict) = (server.addr, server.strict);
    local.block_on(&rt, async {
        let req = Rc::new(client::request(false));
        let count = Rc::new(Cell::new(0u64));
        let errors = Rc::new(Cell::new(0u64));
        let stop = Rc::new(Cell::new(false));
        let mut tasks = Vec::new();
        for _ in 0..concurrency {
            let (req, count, errors, stop) =
                (req.clone(), count.clone(), errors.clone(), stop.clone());
            tasks.push(tokio::task::spawn_local(async move {
                while !stop.get() {
                    match handshake(addr, &req, strict).await {
                        Ok(()) => count.set(count.get() + 1),
                        Err(_) => {
                            errors.set(errors.get() + 1);
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                    }
                }
            }));
        }
        tokio::time::sleep(warmup).await;
        let before = server.snapshot()?;
        let (c0, e0) = (count.get(), errors.get());
        tokio::time::sleep(measure).await;
        let w = before.until(&server.snapshot()?);
        let n = (count.get() - c0) as f64;
        let failed = errors.get() - e0;
        stop.set(true);
        for t in tasks {
            t.abort();
        }
        let mut m = vec![
            ("handshakes_per_s", n / w.secs),
            ("server_cpu_us_per_hs", w.server_cpu * 1e6 / n),
            ("server_cpu_pct", w.server_cpu / w.secs * 100.0),
            ("client_cpu_pct", w.client_cpu / w.secs * 100.0),
            ("errors", failed as f64),
        ];
        m.extend(w.allocs_per("allocs_per_hs", n));
        Ok(m)
    })
}

async fn handshake(addr: SocketAddr, req: &[u8], strict: bool) -> anyhow::Result<()> {
    let mut s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    s.write_all(req).await?;
    let mut buf = [0u8; 1024];
    let mut len = 0;
    loop {
        let n = s.read(&mut buf[len..]).await?;
        if n == 0 {
            bail!("closed during the handshake");
        }
        len += n;
        if client::parse_response(&buf[..len], strict)?.is_some() {
            break;
        }
        if len == buf.len() {
            bail!("response head too long");
        }
    }
    s.set_zero_linger()?;
    Ok(())
}
