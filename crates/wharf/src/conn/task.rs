//! The connection driver: the one future that owns the socket.
//!
//! It reads into a reused buffer that the core parses and unmasks in place,
//! moves data messages to the handle's inbox, and writes every queued frame
//! with vectored writes, many frames per syscall. It reads no more while
//! events wait for `recv` (unless the input is over, to see the peer's FIN),
//! nor while the socket refuses its output, so a handler that does not call
//! `recv`, or a peer that does not read, pushes back through TCP instead of
//! growing memory; replies to one read's messages go out together in the
//! next write. One poll reads at most `READ_BUDGET` bytes, so a peer that
//! sends without pause delays only its own connection.
//!
//! The driver owns the protocol: pings are answered and pongs taken by the
//! core without the handler; once the handler has dropped its
//! `Connection`, the driver takes the remaining events itself, so the close
//! handshake completes. It sleeps until the core's next deadline
//! (`poll_timeout`: keepalive, close, write progress) and hands the core the
//! time; an expired deadline ends the connection.
//!
//! Once the core is `Closed` and the queue is flushed, the driver shuts the
//! write side (the server closes TCP first, RFC 6455 §7.1.1) and discards
//! input until the peer's FIN or the close timeout, so the peer reads our
//! close frame instead of a reset.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::io::IoSlice;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker, ready};
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;
use wharf_proto::{
    CloseCode, DeflateConfig, Expired, Limits, Message, ProtocolError, RateLimit, Role, Timeouts,
    Transmit,
};

use super::{Client, End, Receiver, Shared, SlowClient, wheel};
use crate::caps::Caps;
use crate::error::Disconnect;
use crate::hub::Hub;
use crate::stats::{Counters, Stats};

/// The per-connection settings: the server's, shared by its connections,
/// with the server's counters and hub (one pointer per connection for all
/// three).
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub(crate) limits: Limits,
    pub(crate) max_backpressure: usize,
    pub(crate) slow_client: SlowClient,
    pub(crate) deflate: Option<DeflateConfig>,
    pub(crate) close_timeout: Duration,
    pub(crate) keepalive: Option<Keepalive>,
    /// How long queued output may wait with no byte written.
    pub(crate) write_timeout: Option<Duration>,
    pub(crate) keep_headers: bool,
    /// Limits on the messages each connection receives.
    pub(crate) rate_limit: Option<RateLimit>,
    pub(crate) stats: Stats,
    /// The server's registry of connections and rooms.
    pub(crate) hub: Hub,
    /// The connection caps, which a counted connection leaves at its end.
    pub(crate) caps: Caps,
    /// The message callback (`Server::on_message`) of the connections
    /// served by one.
    pub(crate) on_message: Option<OnMessage>,
    /// Its companions (`Server::on_open`, `Server::on_close`).
    pub(crate) on_open: Option<Hook<OpenFn>>,
    pub(crate) on_close: Option<Hook<CloseFn>>,
}

/// A connection event's callback.
pub(crate) struct Hook<F: ?Sized>(pub(crate) Arc<F>);

impl<F: ?Sized> Clone for Hook<F> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<F: ?Sized> std::fmt::Debug for Hook<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hook")
    }
}

/// What `Server::on_open` takes.
pub(crate) type OpenFn = dyn Fn(&Client) + Send + Sync;
/// What `Server::on_close` takes.
pub(crate) type CloseFn = dyn Fn(&Client, &Disconnect) + Send + Sync;

/// A message callback: called by a connection's driver with each message,
/// so that the connection holds no handler future.
#[derive(Clone)]
pub(crate) struct OnMessage(pub(crate) Arc<MessageFn>);

/// What `Server::on_message` takes.
pub(crate) type MessageFn = dyn Fn(&Client, Message) + Send + Sync;

impl std::fmt::Debug for OnMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OnMessage")
    }
}

impl Settings {
    /// The core's deadlines.
    pub(crate) fn timeouts(&self) -> Timeouts {
        let mut t = Timeouts::default().close(self.close_timeout);
        if let Some(k) = self.keepalive {
            t = t.keepalive(k.interval, k.timeout);
        }
        if let Some(w) = self.write_timeout {
            t = t.write(w);
        }
        t
    }
}

/// Ping after `interval` of silence; give up after `timeout` more.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Keepalive {
    pub(crate) interval: Duration,
    pub(crate) timeout: Duration,
}

/// Frames the socket did not take yet, while it is full.
#[derive(Default)]
struct Unwritten {
    frames: VecDeque<Transmit>,
    /// Bytes of `frames.front()` already written.
    offset: usize,
}

/// The read size a connection starts with.
const MIN_READ: usize = 512;
/// The read size doubles each time a read fills the buffer, up to this.
const MAX_READ: usize = 64 * 1024;
/// A larger frame sets the room of the reads that follow it to hold one
/// such frame whole (up to this size), so that a stream of large frames is
/// read without moving a partial frame from one buffer to another.
const MAX_ROOM: usize = POOL_MAX;
/// The longest frame header.
const MAX_HEADER: usize = 14;
/// The most frames gathered into one vectored write.
const MAX_BATCH: usize = 64;
/// The most iovecs in one write (frames past them wait for the next).
const MAX_IOV: usize = 16;
/// Payloads up to this size are copied into the cork buffer; larger ones
/// are written from their own `Bytes`.
const CORK_MAX: usize = 512;
/// Read buffers kept for reuse by each thread.
const POOL: usize = 64;
/// Larger read buffers are not kept.
const POOL_MAX: usize = 256 * 1024;
/// The most bytes of read buffers a thread keeps for reuse.
const POOL_BYTES: usize = 1 << 20;
/// The most bytes one poll of a driver reads; then it yields.
const READ_BUDGET: usize = 256 * 1024;
/// The most rounds of one poll of a driver; then it yields.
const MAX_ROUNDS: usize = 64;

thread_local! {
    /// The cork buffer: small frames of one vectored write, copied together.
    /// Used only within `poll_write`, so it is shared by every connection a
    /// thread drives.
    static CORK: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// The frames of the write in progress, taken from the core; what the
    /// socket does not take moves to the connection's own `unwritten`.
    static BATCH: RefCell<Vec<Transmit>> = const { RefCell::new(Vec::new()) };
    /// Read buffers for reuse: those of connections that had nothing left
    /// to parse when the socket ran dry (a connection holds one only while
    /// bytes are in flight), and those a connection filled. A buffer may
    /// still be shared with received payloads (zero-copy messages); it is
    /// reused once they are dropped (`BytesMut::try_reclaim`), so a steady
    /// stream of messages cycles through the same few allocations.
    static READ_BUFS: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
    /// The capacity of the buffers in `READ_BUFS`, at most `POOL_BYTES`.
    static READ_BUFS_BYTES: Cell<usize> = const { Cell::new(0) };
    /// Set while a `Task` polls its driver with its handler polled next, in
    /// the same turn: `recv` waiting in that handler needs no wake (a wake
    /// would only poll the task once more).
    static HANDLER_NEXT: Cell<bool> = const { Cell::new(false) };
    /// Set once the driver being polled has inflated a message: one a poll
    /// (at most `max_message_size` of output), then it yields, so that
    /// input cheap to send and costly to inflate delays only its own
    /// connection.
    static INFLATED: Cell<bool> = const { Cell::new(false) };
}

/// One iovec of a vectored write: a run of the cork buffer, or (part of) a
/// large payload of the batch.
#[derive(Clone, Copy)]
enum Segment {
    Cork(usize, usize),
    Payload(usize, usize),
}

/// What the core said when the driver last gathered frames.
#[derive(Clone, Copy, Default)]
struct Status {
    /// Closed, every frame taken.
    finished: bool,
    /// Events wait for `recv`: read no more.
    paused: bool,
    /// `receive` stopped early and nothing waits: parse the rest.
    reparse: bool,
    /// A compressed message waits to be inflated.
    inflation: bool,
    /// Output waited unwritten at the last flush.
    stalled: bool,
    /// A deadline ended the connection.
    expired: Option<Expired>,
    /// The core's next deadline.
    deadline: Option<Instant>,
}

/// What a flush did.
enum Flush {
    /// Nothing was queued.
    Empty,
    /// Some bytes were written.
    Wrote,
    /// The socket is full; its waker is registered.
    Blocked,
    Failed,
}

/// A connection's task: its driver and its handler, polled together. After
/// the handler runs, the driver is polled again, so that its replies go out
/// in this same turn.
pub(crate) struct Task<S> {
    /// `None` once the connection has ended.
    driver: Option<Driver<S>>,
    /// `None` once the handler has returned (or when the application
    /// handles the connection in a task of its own).
    handler: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Task<S> {
    pub(crate) fn new(
        driver: Driver<S>,
        handler: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    ) -> Self {
        Self {
            driver: Some(driver),
            handler,
        }
    }

    fn poll_driver(&mut self, cx: &mut Context<'_>) {
        let Some(driver) = &mut self.driver else {
            return;
        };
        if let Poll::Ready(why) = driver.poll_drive(cx) {
            retire(&driver.shared, &why);
            self.driver = None;
        }
    }

    /// Polls the handler. A panic in it is caught here: it is logged, the
    /// connection is closed with 1011, and the handler is dropped, while the
    /// driver finishes the close handshake.
    fn poll_handler(&mut self, cx: &mut Context<'_>) {
        let Some(handler) = &mut self.handler else {
            return;
        };
        match std::panic::catch_unwind(AssertUnwindSafe(|| handler.as_mut().poll(cx))) {
            Ok(Poll::Pending) => {}
            Ok(Poll::Ready(())) => self.handler = None,
            Err(panic) => {
                let what = panic_text(&*panic);
                if let Some(driver) = &self.driver {
                    let shared = &driver.shared;
                    tracing::error!(id = shared.id, peer = %shared.info.peer(), panic = what, "connection handler panicked; closing with 1011");
                    Counters::add(&shared.stats().handler_panics, 1);
                    let mut inner = shared.lock();
                    let _ = inner
                        .proto
                        .close(CloseCode::INTERNAL_ERROR, "internal error");
                    inner.wake_driver();
                    inner.publish_state();
                } else {
                    // The connection had ended; so had its counters.
                    tracing::error!(
                        panic = what,
                        "connection handler panicked after its connection ended"
                    );
                }
                self.handler = None;
            }
        }
    }
}

/// Whatever ends a connection's task — its driver's end, a panic, the
/// task's cancellation, the runtime's shutdown — the connection leaves the
/// hub and its counters are settled.
impl<S> Drop for Task<S> {
    fn drop(&mut self) {
        if let Some(driver) = self.driver.take() {
            let why = {
                let mut inner = driver.shared.lock();
                inner.ended.get_or_insert(End::Reset);
                inner.publish_state();
                inner.wake_recv();
                inner.disconnect().unwrap_or(Disconnect::Reset)
            };
            retire(&driver.shared, &why);
        }
    }
}

/// Hands each message waiting in the core to the server's message callback
/// (`Server::on_message`), with the lock released, parsing and inflating on
/// what `receive` left in `buf` behind them, until the input is used up: a
/// connection served by a callback holds no events. A panic in the callback
/// is caught: it is logged, the connection is closed with 1011, and later
/// messages are discarded.
fn dispatch(shared: &Arc<Shared>, buf: &mut BytesMut) {
    /// Messages taken under one lock.
    const RUN: usize = 16;
    let Some(on_message) = &shared.settings.on_message else {
        return;
    };
    let mut client: Option<Client> = None;
    loop {
        let mut inner = shared.lock();
        let mut run: [Option<Message>; RUN] = Default::default();
        let (mut count, mut bytes) = (0, 0);
        while count < RUN {
            let Some(m) = inner.proto.poll_message() else {
                break;
            };
            bytes += m.len();
            run[count] = Some(m);
            count += 1;
        }
        if count == 0 {
            match inner.proto.poll_event() {
                Some(wharf_proto::Event::Close(_)) => inner.publish_state(),
                // Over the rate limit under `Notify`: counted, not handed on.
                Some(_) => {}
                None => {
                    if inner.proto.has_inflation() {
                        // One inflation a poll: this one now, or the next
                        // in the driver's next poll.
                        if !inflate_now() {
                            return;
                        }
                        let Some(mut job) = inner.proto.take_inflation() else {
                            return;
                        };
                        drop(inner);
                        job.run();
                        let _ = shared.lock().proto.finish_inflation(job);
                    } else if inner.proto.receive_pending() {
                        let _ = inner.proto.receive(buf);
                    } else {
                        return;
                    }
                }
            }
            continue;
        }
        drop(inner);
        shared
            .stats()
            .received_many(shared.key(), count as u64, bytes);
        let client = client.get_or_insert_with(|| Client::new(shared.clone()));
        let mut call = || {
            for message in run.iter_mut().take(count).filter_map(Option::take) {
                if let Err(panic) =
                    std::panic::catch_unwind(AssertUnwindSafe(|| (on_message.0)(client, message)))
                {
                    return Some(panic);
                }
            }
            None
        };
        // A run's broadcasts go out together when it ends (`hub::cork`).
        let panicked = if count > 1 {
            crate::hub::corked(call)
        } else {
            call()
        };
        if let Some(panic) = panicked {
            fail_callback(shared, "message", &*panic).drain(buf);
            return;
        }
    }
}

/// Whether the driver being polled may inflate a message now: once a
/// poll (`INFLATED`), which this call uses up.
pub(crate) fn inflate_now() -> bool {
    !INFLATED.replace(true)
}

/// A panic's message, if it has one.
fn panic_text(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a non-string payload")
}

/// Takes an ended connection out of the hub and the counters.
fn retire(shared: &Arc<Shared>, why: &Disconnect) {
    shared.stats().flush(shared.key(), true);
    shared.settings.hub.remove(shared.id);
    if shared.info.counted() {
        shared.settings.caps.release(shared.info.peer().ip());
    }
    tracing::debug!(id = shared.id, peer = %shared.info.peer(), ?why, "connection closed");
    if let Some(on_close) = shared
        .settings
        .on_close
        .as_ref()
        .filter(|_| shared.info.served_by_callback())
    {
        let client = Client::new(shared.clone());
        if let Err(panic) =
            std::panic::catch_unwind(AssertUnwindSafe(|| (on_close.0)(&client, why)))
        {
            tracing::error!(id = shared.id, peer = %shared.info.peer(), panic = panic_text(&*panic), "close callback panicked");
            Counters::add(&shared.stats().handler_panics, 1);
        }
    }
}

/// Calls the server's open callback (`Server::on_open`) for a connection
/// served by its message callback, before the connection's first message.
/// A panic in it closes the connection with 1011.
pub(crate) fn opened(shared: &Arc<Shared>, client: &Client) {
    let Some(on_open) = shared
        .settings
        .on_open
        .as_ref()
        .filter(|_| shared.info.served_by_callback())
    else {
        return;
    };
    if let Err(panic) = std::panic::catch_unwind(AssertUnwindSafe(|| (on_open.0)(client))) {
        drop(fail_callback(shared, "open", &*panic));
    }
}

/// After a panic in the server's `which` callback: logs and counts it,
/// closes the connection with 1011, and hands its later messages to the
/// driver, which discards them. Returns the connection's state, locked.
fn fail_callback<'a>(
    shared: &'a Shared,
    which: &str,
    panic: &(dyn std::any::Any + Send),
) -> std::sync::MutexGuard<'a, super::Inner> {
    tracing::error!(id = shared.id, peer = %shared.info.peer(), panic = panic_text(panic), "{which} callback panicked; closing with 1011");
    Counters::add(&shared.stats().handler_panics, 1);
    let mut inner = shared.lock();
    inner.receiver = Receiver::Driver;
    let _ = inner
        .proto
        .close(CloseCode::INTERNAL_ERROR, "internal error");
    inner.publish_state();
    inner
}

impl<S: AsyncRead + AsyncWrite + Unpin> Future for Task<S> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let _tally = this
            .driver
            .as_ref()
            .map(|d| Counters::tally(d.shared.key()));
        HANDLER_NEXT.set(this.handler.is_some());
        this.poll_driver(cx);
        HANDLER_NEXT.set(false);
        if this.handler.is_some() {
            // What the handler broadcasts in this poll (every message that
            // `recv` had ready) goes out together when it ends (`hub::cork`).
            crate::hub::corked(|| this.poll_handler(cx));
            this.poll_driver(cx);
        }
        if let Some(driver) = &this.driver {
            driver.shared.stats().flush(driver.shared.key(), false);
        }
        if this.driver.is_none() && this.handler.is_none() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

/// An accepted connection's one task: the opening (TLS and request head,
/// handshake, or plain HTTP through hyper), boxed because it is large and
/// short-lived;
/// then, after an upgrade, the WebSocket connection's `Task` in its place,
/// so that an open connection costs no second spawn and its task stays at
/// the size of a `Task`.
pub(crate) enum Lifecycle<S> {
    Opening(Pin<Box<dyn Future<Output = Option<Task<S>>> + Send>>),
    Open(Task<S>),
}

impl<S: AsyncRead + AsyncWrite + Unpin> Future for Lifecycle<S> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        if let Self::Opening(opening) = this {
            match ready!(opening.as_mut().poll(cx)) {
                Some(task) => *this = Self::Open(task),
                None => return Poll::Ready(()),
            }
        }
        match this {
            Self::Open(task) => Pin::new(task).poll(cx),
            Self::Opening(_) => Poll::Ready(()),
        }
    }
}

/// Owns the socket of one connection.
pub(crate) struct Driver<S> {
    io: S,
    shared: Arc<Shared>,
    /// Empty (no allocation) while nothing is in flight: see `READ_BUFS`.
    read_buf: BytesMut,
    /// The room wanted for a read between frames: grows while reads fill
    /// the buffer, and to the size of a large frame after one.
    read_chunk: u32,
    /// Bytes the frame being received still lacks (`input_needed`).
    frame_rest: u32,
    /// Frames the socket did not take: `Some` only while it is full.
    unwritten: Option<Box<Unwritten>>,
    /// Sleeps until the core's next deadline when it is near (or earlier:
    /// it is moved only to an earlier instant).
    timer: Option<Pin<Box<Sleep>>>,
    /// The connection's slot on its worker's wheel, or `wheel::NONE`.
    wheel_key: u32,
    /// The tick its slot is armed for, or `wheel::NONE`.
    wheel_tick: u32,
}

impl<S> Drop for Driver<S> {
    fn drop(&mut self) {
        self.shared.wheel().release(self.wheel_key);
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Driver<S> {
    /// `read_buf` holds bytes already read past the upgrade request; they are
    /// parsed before the first socket read.
    pub(crate) fn new(io: S, shared: Arc<Shared>, read_buf: BytesMut) -> Self {
        let mut driver = Self {
            io,
            shared,
            read_buf,
            read_chunk: MIN_READ as u32,
            frame_rest: 0,
            unwritten: None,
            timer: None,
            wheel_key: wheel::NONE,
            wheel_tick: wheel::NONE,
        };
        if !driver.read_buf.is_empty() {
            driver.process(None, None);
        }
        driver
    }

    fn poll_drive(&mut self, cx: &mut Context<'_>) -> Poll<Disconnect> {
        let mut budget = READ_BUDGET;
        INFLATED.set(false);
        for _ in 0..MAX_ROUNDS {
            let mut progress = false;
            let (status, flush) = self.flush(cx);
            match flush {
                Flush::Wrote => progress = true,
                Flush::Failed => return Poll::Ready(self.end(End::Reset)),
                Flush::Empty | Flush::Blocked => {}
            }
            if status.inflation && INFLATED.get() && !status.finished {
                // One inflation a poll: the next one in the next.
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            if let Some(why) = status.expired {
                return Poll::Ready(self.expire(cx, why));
            }
            if status.finished && self.unwritten.is_none() {
                return self.poll_linger(cx, status.deadline);
            }
            if self.poll_timer(cx, status.deadline) {
                continue;
            }
            if status.reparse {
                self.process(None, None);
                progress = true;
            } else if !status.paused && self.unwritten.is_none() {
                if budget == 0 {
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                match self.poll_read(cx) {
                    Poll::Ready(Some(n)) => {
                        budget = budget.saturating_sub(n);
                        progress = true;
                    }
                    Poll::Ready(None) => return Poll::Ready(self.end(End::Reset)),
                    Poll::Pending => {}
                }
            }
            if !progress {
                return Poll::Pending;
            }
        }
        // Work is left: let the other tasks of this thread run first.
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Ends a connection whose deadline passed. After a keepalive timeout
    /// the close frame goes out if the socket takes it now; a silent peer
    /// gets no more time.
    fn expire(&mut self, cx: &mut Context<'_>, why: Expired) -> Disconnect {
        if why == Expired::Keepalive {
            self.flush(cx);
        }
        if why == Expired::Write {
            Counters::add(&self.shared.stats().write_timeouts, 1);
        }
        let ended = self.end(End::TimedOut);
        if !matches!(ended, Disconnect::TimedOut) {
            // The core's account (the peer's close, say) names the end,
            // but a deadline cut it short: a timeout all the same.
            Counters::add(&self.shared.stats().timeouts, 1);
        }
        ended
    }

    /// Waits for `deadline`: on the worker's wheel when it is far (see
    /// `wheel`), else on a timer of the connection's own. When it passes,
    /// hands the core the time. Returns whether it did (the core may have
    /// queued a ping or ended the connection).
    fn poll_timer(&mut self, cx: &mut Context<'_>, deadline: Option<Instant>) -> bool {
        let Some(at) = deadline else {
            self.timer = None;
            self.disarm();
            return false;
        };
        if self.timer.is_none() {
            let wheel = self.shared.wheel();
            let tick = wheel.tick_of(at);
            if self.wheel_tick != wheel::NONE && tick >= self.wheel_tick {
                // Armed no later than the deadline: nothing to do until
                // that tick has passed.
                if !wheel.passed(self.wheel_tick) {
                    return false;
                }
            }
            let now = Instant::now();
            if at <= now {
                self.disarm();
                return self.fire(now);
            }
            if at - now >= wheel::COARSE {
                wheel.arm(&mut self.wheel_key, tick, &self.shared);
                self.wheel_tick = tick;
                return false;
            }
            self.disarm();
        }
        let at = tokio::time::Instant::from_std(at);
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
        if timer.deadline() > at {
            timer.as_mut().reset(at);
        }
        if timer.as_mut().poll(cx).is_pending() {
            return false;
        }
        self.timer = None;
        self.fire(Instant::now())
    }

    /// Hands the core the time at a deadline.
    fn fire(&mut self, now: Instant) -> bool {
        self.shared.lock().proto.handle_timeout(now);
        true
    }

    /// Takes the connection's deadline off the wheel.
    fn disarm(&mut self) {
        if self.wheel_tick != wheel::NONE {
            self.shared.wheel().disarm(self.wheel_key);
            self.wheel_tick = wheel::NONE;
        }
    }

    /// Reads once and feeds the core: `Ready(Some(bytes read))`, or
    /// `Ready(None)` at the end of input.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<Option<usize>> {
        let rest = self.frame_rest as usize;
        let limit = self.make_room(rest);
        let chunk = self.read_chunk as usize;
        let mut buf = (&mut self.read_buf).limit(limit);
        match tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut buf) {
            Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => Poll::Ready(None),
            Poll::Ready(Ok(n)) => {
                if rest == 0 {
                    if n == limit && chunk < MAX_READ {
                        self.read_chunk = (chunk * 2).min(MAX_READ) as u32;
                    } else if n < chunk / 2 && chunk > MAX_READ {
                        // Small frames again after large ones.
                        self.read_chunk = MAX_READ as u32;
                    }
                }
                // The time matters to keepalive and to the rate limit.
                let settings = &self.shared.settings;
                let timed = settings.keepalive.is_some() || settings.rate_limit.is_some();
                let now = timed.then(Instant::now);
                self.process(Some(cx.waker()), now);
                Poll::Ready(Some(n))
            }
            Poll::Pending => {
                self.release_read_buf();
                Poll::Pending
            }
        }
    }

    /// Makes room in the read buffer for the next read and returns how much
    /// it may read. Inside a frame (`rest` bytes still to come), the frame
    /// must fit whole; if it would leave too little room behind it, the read
    /// stops at its end, so that the next frame starts in a fresh buffer
    /// with nothing to move. Between frames, `read_chunk`.
    fn make_room(&mut self, rest: usize) -> usize {
        let chunk = self.read_chunk as usize;
        let len = self.read_buf.len();
        let spare = self.read_buf.capacity() - len;
        let enough = match rest {
            0 if chunk > MAX_READ => chunk,
            0 => chunk / 2,
            rest => rest,
        };
        let enough = enough.max(1);
        if spare < enough && !self.read_buf.try_reclaim(enough) {
            // A buffer from the pool, or a new one; the partial frame (if
            // any) moves to it.
            let want = if rest == 0 { chunk } else { rest };
            let mut fresh = take_read_buf(len + enough)
                .unwrap_or_else(|| BytesMut::with_capacity((len + want).max(chunk)));
            fresh.extend_from_slice(&self.read_buf);
            let mut old = std::mem::replace(&mut self.read_buf, fresh);
            old.clear();
            put_read_buf(old);
        }
        let spare = self.read_buf.capacity() - self.read_buf.len();
        if rest > 0 && spare - rest < MAX_READ.min(chunk) / 2 {
            rest
        } else {
            spare
        }
    }

    /// Once the socket has nothing to read and no partial frame is left,
    /// gives the read buffer back to the thread's pool, even while replies
    /// still share its memory: the pool reuses it only once they are gone.
    fn release_read_buf(&mut self) {
        if self.read_buf.is_empty() && self.read_buf.capacity() > 0 {
            put_read_buf(std::mem::take(&mut self.read_buf));
        }
    }

    /// Takes queued frames from the core (registering for new ones) and
    /// writes as many as the socket takes in one vectored write.
    fn flush(&mut self, cx: &mut Context<'_>) -> (Status, Flush) {
        // Counted before written: see `Counters::tally`.
        self.shared.stats().flush(self.shared.key(), false);
        BATCH.with(|batch| {
            let mut batch = batch.borrow_mut();
            // Shared by every connection of the thread: it must hold
            // nothing between two flushes.
            debug_assert!(batch.is_empty(), "a write batch leaked between connections");
            let mut offset = 0;
            if let Some(unwritten) = &mut self.unwritten {
                batch.extend(unwritten.frames.drain(..));
                offset = std::mem::take(&mut unwritten.offset);
            }
            let status = self.gather(cx, &mut batch);
            if batch.is_empty() {
                // A transport that buffers what it was given (TLS records
                // the socket did not take) sends it now; a TCP socket has
                // nothing to flush.
                return match Pin::new(&mut self.io).poll_flush(cx) {
                    Poll::Ready(Err(_)) => (status, Flush::Failed),
                    _ => (status, Flush::Empty),
                };
            }
            let flush = match poll_write(&mut self.io, cx, &batch, offset) {
                Poll::Pending => {
                    if !status.stalled {
                        let mut inner = self.shared.lock();
                        inner.proto.handle_written(Instant::now(), false, true);
                    }
                    Flush::Blocked
                }
                Poll::Ready(None) => Flush::Failed,
                Poll::Ready(Some(written)) => {
                    let mut left = offset + written;
                    let mut done = 0;
                    let mut n = 0;
                    for t in batch.iter() {
                        if left < t.len() {
                            break;
                        }
                        left -= t.len();
                        done += t.len();
                        n += 1;
                    }
                    batch.drain(..n);
                    offset = left;
                    let rest = !batch.is_empty();
                    if done > 0 || rest || status.stalled {
                        let mut inner = self.shared.lock();
                        inner.writing -= done;
                        inner.wake_writers();
                        if rest || status.stalled {
                            inner.proto.handle_written(Instant::now(), true, rest);
                        }
                    }
                    Flush::Wrote
                }
            };
            if batch.is_empty() {
                // Written out: let go of the queue until the socket fills up.
                self.unwritten = None;
            } else {
                let unwritten = self.unwritten.get_or_insert_default();
                unwritten.frames.extend(batch.drain(..));
                unwritten.offset = offset;
            }
            (status, flush)
        })
    }

    /// Moves queued frames from the core to `batch` and registers for new
    /// ones.
    fn gather(&mut self, cx: &mut Context<'_>, batch: &mut Vec<Transmit>) -> Status {
        let mut inner = self.shared.lock();
        while batch.len() < MAX_BATCH {
            let Some(t) = inner.proto.poll_transmit() else {
                break;
            };
            inner.writing += t.len();
            batch.push(t);
        }
        match &inner.driver_waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => inner.driver_waker = Some(cx.waker().clone()),
        }
        if inner.proto.needs_time() {
            inner.proto.handle_timeout(Instant::now());
        }
        let events = inner.proto.has_events();
        inner.read_paused = events;
        Status {
            finished: inner.proto.is_finished(),
            // Past the end of input, reading only looks for the peer's FIN.
            paused: events && !inner.proto.is_input_done(),
            reparse: !events && inner.proto.receive_pending(),
            inflation: inner.proto.has_inflation(),
            stalled: inner.proto.is_stalled(),
            expired: inner.proto.expired(),
            deadline: inner.proto.poll_timeout(),
        }
    }

    /// Feeds the read buffer to the core (input that arrived at `now`, if
    /// the time matters), inflating a compressed message with the lock
    /// released, and wakes `recv` if it has events, unless `recv`
    /// waits in this task's handler, polled next (`own` is this task's
    /// waker). Without a handler (its `Connection` dropped), the events are
    /// taken and dropped here, so that the close handshake completes.
    fn process(&mut self, own: Option<&Waker>, now: Option<Instant>) {
        let mut inner = self.shared.lock();
        if let Some(now) = now {
            inner.proto.handle_input(now);
        }
        let _ = inner.proto.receive(&mut self.read_buf);
        if let Some(mut job) = (inner.proto.has_inflation() && inflate_now())
            .then(|| inner.proto.take_inflation())
            .flatten()
        {
            // The costly part, without the lock that broadcasts to this
            // connection take: at most one message per poll.
            drop(inner);
            job.run();
            inner = self.shared.lock();
            let _ = inner.proto.finish_inflation(job);
        }
        match inner.receiver {
            Receiver::Handler => {}
            Receiver::Driver => inner.drain(&mut self.read_buf),
            Receiver::Callback => {
                drop(inner);
                dispatch(&self.shared, &mut self.read_buf);
                inner = self.shared.lock();
            }
        }
        let limited = inner.proto.take_rate_limited();
        if limited > 0 {
            let stats = self.shared.stats();
            Counters::add(&stats.rate_limited, u64::from(limited));
            if inner.proto.error() == Some(&ProtocolError::RateLimited) {
                // The one message that failed the connection (the rest of
                // the input is discarded).
                Counters::add(&stats.rate_limit_closes, 1);
            }
        }
        let rest = inner.proto.input_needed();
        if inner.proto.has_events() || inner.proto.state() == wharf_proto::State::Closed {
            let polled_next = HANDLER_NEXT.get()
                && own
                    .is_some_and(|own| inner.recv_waker.as_ref().is_some_and(|w| w.will_wake(own)));
            if !polled_next {
                inner.wake_recv();
            }
        }
        drop(inner);
        self.frame_rest = u32::try_from(rest).unwrap_or(u32::MAX);
        let frame = self.read_buf.len() + rest + MAX_HEADER;
        if rest > 0 && frame > self.read_chunk as usize {
            self.read_chunk = frame.min(MAX_ROOM) as u32;
        }
    }

    /// After the close handshake (or a failure): shut the write side, then
    /// discard input until the peer's FIN or the close deadline.
    ///
    /// A client waits for the server's FIN first, and shuts nothing: the
    /// server closes TCP first (RFC 6455 §7.1.1).
    fn poll_linger(&mut self, cx: &mut Context<'_>, deadline: Option<Instant>) -> Poll<Disconnect> {
        let (client, shut) = {
            let inner = self.shared.lock();
            (inner.proto.role() == Role::Client, inner.write_shut)
        };
        if !client && !shut {
            match Pin::new(&mut self.io).poll_shutdown(cx) {
                Poll::Ready(_) => self.shared.lock().write_shut = true,
                Poll::Pending => {
                    // A transport whose shutdown waits on the peer (TLS)
                    // is bounded by the close deadline too.
                    return match self.poll_expiry(cx, deadline) {
                        true => Poll::Ready(self.end(End::Reset)),
                        false => Poll::Pending,
                    };
                }
            }
        }
        self.read_buf.clear();
        self.release_read_buf();
        let mut discard = [0u8; 256];
        let mut rounds = 0;
        loop {
            if rounds == MAX_ROUNDS {
                // A peer that keeps sending: come back after the others.
                cx.waker().wake_by_ref();
                break;
            }
            rounds += 1;
            let mut buf = ReadBuf::new(&mut discard);
            match Pin::new(&mut self.io).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if buf.filled().is_empty() => {
                    return Poll::Ready(self.end(End::Reset));
                }
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(_)) => return Poll::Ready(self.end(End::Reset)),
                Poll::Pending => break,
            }
        }
        match self.poll_expiry(cx, deadline) {
            true => Poll::Ready(self.end(End::Reset)),
            false => Poll::Pending,
        }
    }

    /// Runs the timer until it is pending: whether a deadline expired.
    fn poll_expiry(&mut self, cx: &mut Context<'_>, deadline: Option<Instant>) -> bool {
        let mut deadline = deadline;
        while self.poll_timer(cx, deadline) {
            let inner = self.shared.lock();
            if inner.proto.expired().is_some() {
                return true;
            }
            deadline = inner.proto.poll_timeout();
        }
        false
    }

    /// Records how the connection ended and wakes the handle; the core's
    /// account (close handshake, violation) wins over `why`.
    fn end(&mut self, why: End) -> Disconnect {
        let mut inner = self.shared.lock();
        inner.ended = Some(why);
        let why = inner.disconnect().unwrap_or(Disconnect::Reset);
        inner.publish_state();
        inner.wake_recv();
        drop(inner);
        let stats = self.shared.stats();
        match &why {
            Disconnect::Protocol(_) => Counters::add(&stats.protocol_errors, 1),
            Disconnect::TimedOut => Counters::add(&stats.timeouts, 1),
            _ => {}
        }
        why
    }
}

/// Keeps an emptied read buffer for reuse, unless it is too large to keep.
/// A thread keeps at most `POOL` buffers and `POOL_BYTES` of them: the
/// oldest go first (they may never fit what is asked now).
fn put_read_buf(buf: BytesMut) {
    // Not an empty handle (a connection's first buffer): it could never be
    // reused, and would only lengthen every search of the pool.
    let cap = buf.capacity();
    if (1..=POOL_MAX).contains(&cap) {
        READ_BUFS.with(|p| {
            let mut pool = p.borrow_mut();
            let mut bytes = READ_BUFS_BYTES.get() + cap;
            while !pool.is_empty() && (pool.len() >= POOL || bytes > POOL_BYTES) {
                bytes -= pool.remove(0).capacity();
            }
            pool.push(buf);
            READ_BUFS_BYTES.set(bytes);
        });
    }
}

/// Takes a buffer of at least `want` bytes from the pool, if one is free.
fn take_read_buf(want: usize) -> Option<BytesMut> {
    READ_BUFS.with(|p| {
        let mut pool = p.borrow_mut();
        let i = pool.iter_mut().rposition(|b| b.try_reclaim(want))?;
        let buf = pool.swap_remove(i);
        // Counted at the capacity it had when kept.
        READ_BUFS_BYTES.set(READ_BUFS_BYTES.get().saturating_sub(buf.capacity()));
        Some(buf)
    })
}

/// Writes as much of `batch` (less its first `offset` bytes) as the socket
/// takes in one vectored write of at most `MAX_IOV` iovecs; `Ready(None)`
/// if the socket failed. Small frames are first copied together into this
/// thread's cork buffer: one iovec for a run of small frames costs the
/// kernel less than two per frame, and the buffer lives only for this
/// call, so no connection holds it. Large payloads go out from their own
/// `Bytes`. What does not fit in this write stays for the next.
fn poll_write<S: AsyncWrite + Unpin>(
    io: &mut S,
    cx: &mut Context<'_>,
    batch: &[Transmit],
    offset: usize,
) -> Poll<Option<usize>> {
    let result = CORK.with(|cork| {
        let mut buf = cork.borrow_mut();
        buf.clear();
        // Small arrays: zeroing them is a cost paid on every write.
        let mut segs = [Segment::Cork(0, 0); MAX_IOV];
        let mut n = 0;
        let mut run = 0;
        let mut skip = offset;
        for (i, t) in batch.iter().enumerate() {
            // Room for this frame's (at most) two iovecs and the cork run
            // before them.
            if n + 3 > MAX_IOV {
                break;
            }
            let (header, payload) = (t.header(), &t.payload()[..]);
            let hs = skip.min(header.len());
            skip -= hs;
            let ps = skip.min(payload.len());
            skip -= ps;
            buf.extend_from_slice(&header[hs..]);
            if payload.len() - ps <= CORK_MAX {
                buf.extend_from_slice(&payload[ps..]);
            } else {
                if buf.len() > run {
                    segs[n] = Segment::Cork(run, buf.len());
                    n += 1;
                }
                run = buf.len();
                segs[n] = Segment::Payload(i, ps);
                n += 1;
            }
        }
        if buf.len() > run {
            segs[n] = Segment::Cork(run, buf.len());
            n += 1;
        }
        let slice = |seg: Segment| match seg {
            Segment::Cork(a, b) => IoSlice::new(&buf[a..b]),
            Segment::Payload(i, skip) => IoSlice::new(&batch[i].payload()[skip..]),
        };
        if n == 1 {
            // The usual case once small frames are corked: a plain write,
            // which costs the kernel less than a writev.
            return Pin::new(io).poll_write(cx, &slice(segs[0]));
        }
        let mut slices = [IoSlice::new(&[]); MAX_IOV];
        for (out, seg) in slices.iter_mut().zip(&segs[..n]) {
            *out = slice(*seg);
        }
        Pin::new(io).poll_write_vectored(cx, &slices[..n])
    });
    match ready!(result) {
        Ok(0) | Err(_) => Poll::Ready(None),
        Ok(written) => Poll::Ready(Some(written)),
    }
}

/// What an idle connection holds is mostly these two blocks (with tokio's
/// own per-socket state and the handler's future): keep them from growing
/// unnoticed. The task's future must stay within 128 bytes for tokio's
/// 128-byte-aligned task cell to fit in 256; the shared state, with the
/// Arc's two counts, within mimalloc's 320-byte size class.
#[cfg(all(test, target_pointer_width = "64"))]
mod sizes {
    #[test]
    fn an_idle_connection_stays_small() {
        type Tcp = crate::listener::Stream<tokio::net::TcpStream>;
        let task = size_of::<super::Task<Tcp>>().max(size_of::<super::Lifecycle<Tcp>>());
        let shared = size_of::<super::Shared>();
        assert!(task <= 128, "connection task future grew to {task} bytes");
        assert!(
            shared <= 304,
            "shared connection state grew to {shared} bytes (an Arc of more than 320 leaves mimalloc's 320-byte size class)"
        );
    }
}
