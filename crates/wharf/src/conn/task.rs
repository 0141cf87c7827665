//! The connection driver: the one future that owns the socket.
//!
//! It reads into a reused buffer that the core parses and unmasks in place,
//! moves data messages to the handle's inbox, and writes every queued frame
//! with vectored writes, many frames per syscall. It reads no more while
//! events wait for `recv`, so a handler that does not call `recv` pushes back
//! on the peer through TCP instead of growing memory, and replies to one
//! read's messages go out together in the next write.
//!
//! Once the core is `Closed` and the queue is flushed, the driver shuts the
//! write side (the server closes TCP first, RFC 6455 §7.1.1) and discards
//! input until the peer's FIN or the close timeout, so the peer reads our
//! close frame instead of a reset.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{Instant, Sleep};
use wharf_proto::{CloseCode, DeflateConfig, Limits, State, Transmit};

use super::{Shared, SlowClient};
use crate::error::Disconnect;
use crate::stats::Counters;

/// The per-connection settings, copied from the server.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub(crate) limits: Limits,
    pub(crate) max_backpressure: usize,
    pub(crate) slow_client: SlowClient,
    pub(crate) deflate: Option<DeflateConfig>,
    pub(crate) close_timeout: Duration,
    pub(crate) keepalive: Option<Keepalive>,
}

/// Ping after `interval` of silence; give up after `timeout` more.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Keepalive {
    pub(crate) interval: Duration,
    pub(crate) timeout: Duration,
}

/// The keepalive timer. It is re-armed lazily: reads only record the time,
/// and the timer, when it fires, works out what is due.
struct Idle {
    keepalive: Keepalive,
    sleep: Pin<Box<Sleep>>,
    last_read: Instant,
    pinged: bool,
}

/// The read size a connection starts with, and returns to once idle: an
/// idle connection holds no more than this (and holds nothing once the
/// keepalive timer finds it silent).
const MIN_READ: usize = 512;
/// The read size doubles each time a read fills the buffer, up to this.
const MAX_READ: usize = 64 * 1024;
/// The most frames gathered into one vectored write.
const MAX_BATCH: usize = 64;
/// Payloads up to this size are copied into the cork buffer; larger ones
/// are written from their own `Bytes`.
const CORK_MAX: usize = 512;

thread_local! {
    /// The cork buffer: small frames of one vectored write, copied together.
    /// Used only within `poll_write`, so it is shared by every connection a
    /// thread drives.
    static CORK: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// One iovec of a vectored write: a run of the cork buffer, or (part of) a
/// large payload of the batch.
#[derive(Clone, Copy)]
enum Segment {
    Cork(usize, usize),
    Payload(usize, usize),
}

/// Owns the socket of one connection.
pub(crate) struct Driver<S> {
    io: S,
    shared: Arc<Shared>,
    read_buf: BytesMut,
    /// The next read's size: grows while reads fill the buffer.
    read_chunk: usize,
    batch: VecDeque<Transmit>,
    /// Bytes of `batch.front()` already written.
    offset: usize,
    write_shut: bool,
    close_timeout: Duration,
    deadline: Option<Pin<Box<Sleep>>>,
    idle: Option<Idle>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Driver<S> {
    /// `read_buf` holds bytes already read past the upgrade request; they are
    /// parsed before the first socket read.
    pub(crate) fn new(io: S, shared: Arc<Shared>, read_buf: BytesMut, settings: Settings) -> Self {
        let now = Instant::now();
        let idle = settings.keepalive.map(|keepalive| Idle {
            keepalive,
            sleep: Box::pin(tokio::time::sleep_until(now + keepalive.interval)),
            last_read: now,
            pinged: false,
        });
        Self {
            io,
            shared,
            read_buf,
            read_chunk: MIN_READ,
            batch: VecDeque::new(),
            offset: 0,
            write_shut: false,
            close_timeout: settings.close_timeout,
            deadline: None,
            idle,
        }
    }

    /// Drives the connection to its end.
    pub(crate) async fn run(mut self) -> Disconnect {
        if !self.read_buf.is_empty() {
            self.process();
        }
        poll_fn(|cx| self.poll_drive(cx)).await
    }

    fn poll_drive(&mut self, cx: &mut Context<'_>) -> Poll<Disconnect> {
        loop {
            let mut progress = false;
            let (finished, closing, pending) = self.gather(cx);
            if !self.batch.is_empty() {
                match self.poll_write(cx) {
                    Poll::Ready(Ok(())) => progress = true,
                    Poll::Ready(Err(())) => return Poll::Ready(self.end(Some(Disconnect::Reset))),
                    Poll::Pending => {}
                }
            }
            if finished && self.batch.is_empty() {
                return self.poll_linger(cx);
            }
            if closing && self.poll_deadline(cx).is_ready() {
                return Poll::Ready(self.end(Some(Disconnect::TimedOut)));
            }
            match self.poll_idle(cx) {
                Poll::Ready(true) => continue,
                Poll::Ready(false) => {
                    // Best effort: the close frame goes out if the socket
                    // takes it now; a silent peer gets no more time.
                    self.gather(cx);
                    let _ = self.poll_write(cx);
                    return Poll::Ready(self.end(Some(Disconnect::TimedOut)));
                }
                Poll::Pending => {}
            }
            if !pending {
                if self.read_buf.capacity() - self.read_buf.len() < self.read_chunk / 2 {
                    self.read_buf.reserve(self.read_chunk);
                }
                let room = self.read_buf.capacity() - self.read_buf.len();
                match tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.read_buf)
                {
                    Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                        return Poll::Ready(self.end(Some(Disconnect::Reset)));
                    }
                    Poll::Ready(Ok(n)) => {
                        if n == room {
                            self.read_chunk = (self.read_chunk * 2).min(MAX_READ);
                        }
                        if let Some(idle) = &mut self.idle {
                            idle.last_read = Instant::now();
                            idle.pinged = false;
                        }
                        self.process();
                        progress = true;
                    }
                    Poll::Pending => {}
                }
            }
            if !progress {
                return Poll::Pending;
            }
        }
    }

    /// Takes queued frames from the core and registers for new ones. Returns
    /// whether the core is finished, whether it is waiting for the peer's
    /// close, and whether events wait for `recv`.
    fn gather(&mut self, cx: &mut Context<'_>) -> (bool, bool, bool) {
        let mut inner = self.shared.lock();
        while self.batch.len() < MAX_BATCH {
            let Some(t) = inner.proto.poll_transmit() else {
                break;
            };
            inner.writing += t.len();
            self.batch.push_back(t);
        }
        match &inner.driver_waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => inner.driver_waker = Some(cx.waker().clone()),
        }
        inner.read_paused = inner.proto.has_events();
        (
            inner.proto.is_finished(),
            inner.proto.state() == State::Closing,
            inner.read_paused,
        )
    }

    /// Writes as much of the batch as the socket takes in one vectored write.
    /// Small frames are first copied together into this thread's cork
    /// buffer: one iovec for a run of small frames costs the kernel less than
    /// two per frame, and the buffer lives only for this call, so no
    /// connection holds it. Large payloads go out from their own `Bytes`.
    /// `Ready(Ok)` means some bytes were written.
    fn poll_write(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ()>> {
        let Self {
            io, batch, offset, ..
        } = self;
        let result = CORK.with(|cork| {
            let mut buf = cork.borrow_mut();
            buf.clear();
            let mut segs = [Segment::Cork(0, 0); 2 * MAX_BATCH];
            let mut n = 0;
            let mut run = 0;
            let mut skip = *offset;
            for (i, t) in batch.iter().enumerate() {
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
            let mut slices = [IoSlice::new(&[]); 2 * MAX_BATCH];
            for (slice, seg) in slices.iter_mut().zip(&segs[..n]) {
                *slice = match *seg {
                    Segment::Cork(a, b) => IoSlice::new(&buf[a..b]),
                    Segment::Payload(i, skip) => IoSlice::new(&batch[i].payload()[skip..]),
                };
            }
            Pin::new(io).poll_write_vectored(cx, &slices[..n])
        });
        let written = match ready!(result) {
            Ok(0) | Err(_) => return Poll::Ready(Err(())),
            Ok(written) => written,
        };
        let mut left = self.offset + written;
        let mut done = 0;
        while let Some(front) = self.batch.front() {
            if left < front.len() {
                break;
            }
            left -= front.len();
            done += front.len();
            self.batch.pop_front();
        }
        self.offset = left;
        if done > 0 {
            self.shared.lock().writing -= done;
        }
        Poll::Ready(Ok(()))
    }

    /// Feeds the read buffer to the core and wakes `recv` if it has events.
    fn process(&mut self) {
        let mut inner = self.shared.lock();
        let _ = inner.proto.receive(&mut self.read_buf);
        if inner.proto.has_events() || inner.proto.state() == State::Closed {
            inner.wake_recv();
        }
    }

    /// After the close handshake (or a failure): shut the write side, then
    /// discard input until the peer's FIN or the close timeout.
    fn poll_linger(&mut self, cx: &mut Context<'_>) -> Poll<Disconnect> {
        if !self.write_shut {
            match Pin::new(&mut self.io).poll_shutdown(cx) {
                Poll::Ready(_) => self.write_shut = true,
                Poll::Pending => return Poll::Pending,
            }
        }
        loop {
            self.read_buf.clear();
            self.read_buf.reserve(MIN_READ);
            match tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.read_buf) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(self.end(None)),
                Poll::Ready(Ok(_)) => continue,
                Poll::Pending => break,
            }
        }
        match self.poll_deadline(cx) {
            Poll::Ready(()) => Poll::Ready(self.end(None)),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Runs the keepalive timer: `Ready(true)` when a ping was queued,
    /// `Ready(false)` when the peer stayed silent past the timeout (a close
    /// frame with 1001 is then queued), `Pending` otherwise.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        let Some(idle) = &mut self.idle else {
            return Poll::Pending;
        };
        loop {
            ready!(idle.sleep.as_mut().poll(cx));
            let k = idle.keepalive;
            let now = Instant::now();
            let silent_until = idle.last_read + k.interval;
            if now < silent_until {
                idle.sleep.as_mut().reset(silent_until);
                continue;
            }
            if !idle.pinged {
                idle.pinged = true;
                // Silent for a whole interval: give back the buffers.
                if self.read_buf.is_empty() {
                    self.read_buf = BytesMut::new();
                    self.read_chunk = MIN_READ;
                }
                if self.batch.is_empty() {
                    self.batch = VecDeque::new();
                }
                idle.sleep.as_mut().reset(silent_until + k.timeout);
                let mut inner = self.shared.lock();
                if inner.proto.ping(Bytes::new()).is_ok() {
                    inner.wake_driver();
                }
                return Poll::Ready(true);
            }
            if now < silent_until + k.timeout {
                idle.sleep.as_mut().reset(silent_until + k.timeout);
                continue;
            }
            self.idle = None;
            let mut inner = self.shared.lock();
            inner.proto.discard_transmits();
            let _ = inner
                .proto
                .close(CloseCode::GOING_AWAY, "keepalive timeout");
            return Poll::Ready(false);
        }
    }

    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let timeout = self.close_timeout;
        self.deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(Instant::now() + timeout)))
            .as_mut()
            .poll(cx)
    }

    /// Records how the connection ended and wakes the handle. `None` means
    /// "as the core says".
    fn end(&mut self, why: Option<Disconnect>) -> Disconnect {
        let mut inner = self.shared.lock();
        let why = inner.outcome().or(why).unwrap_or(Disconnect::Reset);
        inner.ended = Some(why.clone());
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
