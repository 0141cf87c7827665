//! The connection state machine (RFC 6455 §5–§7), in quinn-proto's shape.
//!
//! Calling order, repeated for as long as the transport is open:
//!
//! 1. [`Connection::receive`] with the bytes read from the transport (the
//!    same buffer each time: unconsumed bytes stay at its front);
//! 2. [`Connection::poll_event`] until `None`, handing events to the
//!    application, which may call [`Connection::send`], [`Connection::ping`]
//!    or [`Connection::close`];
//! 3. [`Connection::poll_transmit`] until `None`, writing each frame;
//! 4. once [`Connection::state`] is [`State::Closed`] and no transmit is
//!    left, the server closes the transport (§7.1.1).
//!
//! `receive` never needs a writer: pongs are queued as transmits like any
//! other frame. Time is an input too (see `timer`): the transport reports
//! when input arrived and output was taken ([`Connection::handle_input`],
//! [`Connection::handle_written`]) and sleeps until
//! [`Connection::poll_timeout`], then calls [`Connection::handle_timeout`].
//!
//! What a peer can make a connection hold is bounded by construction:
//! - `receive` stops parsing while [`MAX_EVENTS`] events wait, and before
//!   inflating a compressed message while any event waits
//!   ([`Connection::receive_pending`] then says so): undelivered data is at
//!   most one inflated message, plus the wire bytes of uncompressed ones;
//! - pings are answered with at most [`MAX_PONGS`] pongs waiting to be sent
//!   (past it the latest pong takes the place of the last one queued,
//!   RFC 6455 §5.5.3), each a copy of its ping's payload, so that no pong
//!   pins a read buffer; pings and pongs are not events;
//! - a message or frame over `Limits` fails from its header.
//!
//! The close echo, and the close frame that fails the connection on a
//! protocol violation, are queued when `poll_event` reaches the point in the
//! stream where they happened, so the application's replies to the messages
//! before them are sent first (Autobahn 3.2, 4.1.3, 5.15).

use std::collections::VecDeque;
use std::fmt;
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};

use crate::close::{CloseCode, CloseFrame};
use crate::deflate::{Codec, Decoder, DeflateParams};
use crate::error::ProtocolError;
use crate::frame::{FrameHeader, OpCode, Transmit};
use crate::legacy::Draft;
use crate::limits::Limits;
use crate::mask;
use crate::message::{Message, Utf8Bytes};
use crate::rate::{Rate, RateAction, RateLimit};
use crate::timer::{self, Clock, Expired, Timeouts};
use crate::utf8::Utf8Validator;

/// The most events `receive` leaves waiting before it stops parsing.
pub const MAX_EVENTS: usize = 64;
/// The most pongs waiting to be sent.
pub const MAX_PONGS: u8 = 16;

/// Which end of the connection this is.
#[allow(clippy::exhaustive_enums)] // a connection has exactly two ends
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub enum Role {
    /// The end that opened the connection; its frames are masked.
    Client,
    /// The end that accepted it; its frames are never masked.
    Server,
}

/// Where the close handshake stands (the WebSocket API's ready states after
/// the opening handshake, in their spec order).
#[allow(clippy::exhaustive_enums)] // the ready states of the WebSocket API
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub enum State {
    /// Messages flow both ways.
    Open,
    /// We sent a close frame and wait for the peer's.
    Closing,
    /// Both close frames were exchanged, or the connection failed.
    Closed,
}

/// What [`Connection::poll_event`] yields.
#[derive(Clone, Debug, Eq, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// A complete text or binary message (pings are answered, and pongs
    /// taken, without an event).
    Message(Message),
    /// The peer's close frame. If we had not sent one, the echo is queued.
    Close(CloseFrame),
    /// A complete message over the rate limit, under
    /// [`RateAction::Notify`]: the application decides what to do with it.
    RateLimited(Message),
}

/// Why a command could not be carried out.
#[derive(Clone, Copy, Debug, Eq, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// A close frame was already sent or the connection failed.
    #[error("the connection is closing or closed")]
    Closed,
    /// A ping or pong payload was over 125 bytes.
    #[error("control frame payload over 125 bytes")]
    ControlTooLong,
    /// The close code may not be sent (1005, 1006, 1015 or out of range).
    #[error("close code {0} may not be sent")]
    CodeNotSendable(CloseCode),
    /// A binary, ping or pong message on a legacy-draft connection
    /// ([`Connection::with_legacy`]): the drafts carry text only.
    #[error("a legacy-draft connection carries text messages only")]
    NotInDraft,
}

/// Where a client's masking keys come from.
type MaskSource = Box<dyn FnMut() -> [u8; 4] + Send + Sync>;

/// A sans-IO WebSocket connection after the opening handshake.
pub struct Connection {
    role: Role,
    state: State,
    rsv_allowed: u8,
    /// Pong frames in `transmits` (ours and the application's).
    pongs: u16,
    /// The input is over: a close frame or a violation was parsed.
    input_done: bool,
    /// `receive` stopped before the end of its input (events wait).
    stopped: bool,
    /// Compressed messages are handed out by `take_inflation` rather than
    /// inflated by `receive`.
    defer_inflation: bool,
    /// An `Inflation` is out: `receive` waits for `finish_inflation`.
    inflating: bool,
    /// The pre-standard draft this connection speaks instead of RFC 6455.
    legacy: Option<Draft>,
    expired: Option<Expired>,
    limits: Caps,
    timeouts: timer::Limits,
    frame: Option<RxFrame>,
    /// Boxed: it exists only while a fragmented message is arriving.
    message: Option<Box<RxMessage>>,
    utf8: Utf8Validator,
    events: VecDeque<Event>,
    transmits: VecDeque<Transmit>,
    queued: usize,
    /// What few connections need, in one box: a connection is mostly idle
    /// state.
    rare: Option<Box<Rare>>,
    /// Allocated while a deadline runs (see `timer`).
    clock: Option<Box<Clock>>,
    deflate: Option<Box<Codec>>,
}

/// The rare parts of a connection.
#[derive(Default)]
struct Rare {
    error: Option<ProtocolError>,
    peer_close: Option<CloseFrame>,
    /// The close frame this side started the close handshake with.
    local_close: Option<CloseFrame>,
    /// A violation found behind events not yet polled.
    deferred: Option<ProtocolError>,
    /// Client only.
    mask_source: Option<MaskSource>,
    /// A compressed message parsed and not yet inflated (text or not, and
    /// its bytes), with deferred inflation.
    compressed: Option<(bool, Bytes)>,
}

impl Rare {
    fn is_empty(&self) -> bool {
        self.error.is_none()
            && self.peer_close.is_none()
            && self.local_close.is_none()
            && self.deferred.is_none()
            && self.mask_source.is_none()
            && self.compressed.is_none()
    }
}

/// A compressed message taken out of its connection to be inflated where
/// the connection's lock is not held ([`Connection::take_inflation`]):
/// [`Inflation::run`] it, then give it back with
/// [`Connection::finish_inflation`]. It carries the connection's
/// decompressor meanwhile.
pub struct Inflation {
    text: bool,
    data: Bytes,
    limit: usize,
    decoder: Decoder,
    result: Option<Result<Message, ProtocolError>>,
}

impl Inflation {
    /// Inflates the message (bounded by the message limit) and checks its
    /// text; the costly part, with no lock held.
    pub fn run(&mut self) {
        if self.result.is_some() {
            return;
        }
        let out = self
            .decoder
            .decompress(&self.data, self.limit)
            .and_then(|data| {
                Ok(if self.text {
                    Message::Text(
                        Utf8Bytes::try_from(data).map_err(|_| ProtocolError::TextNotUtf8)?,
                    )
                } else {
                    Message::Binary(data)
                })
            });
        self.data = Bytes::new();
        self.result = Some(out);
    }

    /// The compressed size of the message.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether the compressed message is empty.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

impl fmt::Debug for Inflation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inflation")
            .field("text", &self.text)
            .field("len", &self.data.len())
            .field("done", &self.result.is_some())
            .finish_non_exhaustive()
    }
}

/// [`Limits`] in 32 bits each, as a connection holds them: it is mostly idle
/// state. A limit above `u32::MAX` (4 GiB) counts as 4 GiB, more than a
/// frame or message could be buffered anyway.
#[derive(Clone, Copy, Debug)]
struct Caps {
    frame: u32,
    message: u32,
    fragments: u32,
}

impl Caps {
    fn new(l: Limits) -> Self {
        let cap = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        Self {
            frame: cap(l.max_frame_size),
            message: cap(l.max_message_size),
            fragments: cap(l.max_fragments),
        }
    }

    fn frame(self) -> usize {
        self.frame as usize
    }

    fn message(self) -> usize {
        self.message as usize
    }

    fn fragments(self) -> usize {
        self.fragments as usize
    }
}

/// The frame being received: header decoded, payload not yet complete.
/// Lengths fit 32 bits: a frame is at most `Caps::frame`.
#[derive(Debug)]
struct RxFrame {
    fin: bool,
    opcode: OpCode,
    mask: Option<[u8; 4]>,
    len: u32,
    /// Payload bytes at the front of the buffer already unmasked (and, for
    /// uncompressed text, validated).
    processed: u32,
    /// Whether the message is text.
    text: bool,
    /// Whether the message is compressed (permessage-deflate).
    compressed: bool,
}

/// A fragmented message being assembled.
#[derive(Debug)]
struct RxMessage {
    text: bool,
    compressed: bool,
    data: BytesMut,
    fragments: usize,
}

impl Connection {
    /// A server-side connection.
    pub fn server(limits: Limits) -> Self {
        Self::new(Role::Server, limits, None)
    }

    /// A client-side connection; `mask_source` supplies a fresh, unpredictable
    /// masking key for every frame (RFC 6455 §5.3).
    pub fn client(
        limits: Limits,
        mask_source: impl FnMut() -> [u8; 4] + Send + Sync + 'static,
    ) -> Self {
        Self::new(Role::Client, limits, Some(Box::new(mask_source)))
    }

    fn new(role: Role, limits: Limits, mask_source: Option<MaskSource>) -> Self {
        Self {
            role,
            state: State::Open,
            rsv_allowed: 0,
            pongs: 0,
            input_done: false,
            stopped: false,
            defer_inflation: false,
            inflating: false,
            legacy: None,
            expired: None,
            limits: Caps::new(limits),
            timeouts: timer::Limits::default(),
            frame: None,
            message: None,
            utf8: Utf8Validator::new(),
            events: VecDeque::new(),
            transmits: VecDeque::new(),
            queued: 0,
            rare: mask_source.map(|m| {
                Box::new(Rare {
                    mask_source: Some(m),
                    ..Rare::default()
                })
            }),
            clock: None,
            deflate: None,
        }
    }

    /// Hands compressed messages out ([`Connection::take_inflation`])
    /// instead of inflating them in `receive`: a transport that shares the
    /// connection under a lock inflates without holding it.
    #[must_use]
    pub fn with_deferred_inflation(mut self) -> Self {
        self.defer_inflation = true;
        self
    }

    /// A compressed message that `receive` parsed and left to inflate, if
    /// one waits (only with [`Connection::with_deferred_inflation`]).
    /// `receive` parses nothing more until it comes back through
    /// [`Connection::finish_inflation`].
    pub fn take_inflation(&mut self) -> Option<Inflation> {
        let (text, data) = self.rare.as_mut()?.compressed.take()?;
        let decoder = self.deflate.as_mut()?.take_decoder();
        self.inflating = true;
        Some(Inflation {
            text,
            data,
            limit: self.limits.message(),
            decoder,
            result: None,
        })
    }

    /// Whether a compressed message waits for [`Connection::take_inflation`].
    pub fn has_inflation(&self) -> bool {
        self.rare.as_ref().is_some_and(|r| r.compressed.is_some())
    }

    /// Whether an [`Inflation`] is out (taken and not yet finished).
    pub fn is_inflating(&self) -> bool {
        self.inflating
    }

    /// Takes back an inflation (running it first if it was not): its
    /// message becomes the next event, or its error fails the connection
    /// as `receive` would.
    ///
    /// # Errors
    /// The protocol error that failed the connection (1009 past the message
    /// limit, 1007 for invalid deflate data or text).
    pub fn finish_inflation(&mut self, job: Inflation) -> Result<(), ProtocolError> {
        self.settle(job).inspect_err(|e| self.failed(e.clone()))
    }

    /// Takes an inflation back: its decompressor, and its message as the
    /// next event; or its error.
    fn settle(&mut self, mut job: Inflation) -> Result<(), ProtocolError> {
        job.run();
        self.inflating = false;
        if let Some(codec) = self.deflate.as_mut() {
            codec.put_decoder(job.decoder);
        }
        if self.rare.as_ref().is_some_and(|r| r.is_empty()) {
            self.rare = None;
        }
        match job.result {
            Some(Ok(message)) => self.deliver(message),
            Some(Err(e)) => Err(e),
            None => Ok(()),
        }
    }

    /// Sets the connection's deadlines (see [`Timeouts`]); `now` is when
    /// the connection opened, where keepalive silence starts.
    #[must_use]
    pub fn with_timeouts(mut self, timeouts: Timeouts, now: Instant) -> Self {
        self.timeouts = timer::Limits::new(timeouts);
        if self.timeouts.has_keepalive() {
            self.clock = Some(Box::new(Clock::new(now)));
        }
        self
    }

    /// Limits the messages received (see [`RateLimit`]); `now` is when the
    /// connection opened, when its buckets are full. Each message is
    /// charged at the time of the last [`Connection::handle_input`] (the
    /// time its bytes arrived), or `now` before any.
    #[must_use]
    pub fn with_rate_limit(mut self, limit: RateLimit, now: Instant) -> Self {
        // Kept with the deadlines' instants (the clock exists for the
        // connection's life once made): a connection is mostly idle state.
        let clock = self.clock.get_or_insert_with(|| Box::new(Clock::new(now)));
        clock.set_rate(Rate::new(limit, now));
        self
    }

    /// The messages received over the rate limit since the last call
    /// (dropped, delivered as [`Event::RateLimited`], or the one that
    /// failed the connection), for a transport's counters.
    pub fn take_rate_limited(&mut self) -> u32 {
        self.clock
            .as_mut()
            .and_then(|c| c.rate())
            .map_or(0, |r| std::mem::take(&mut r.limited))
    }

    /// The deadlines in force (milliseconds, at most about 49 days).
    pub fn timeouts(&self) -> Timeouts {
        self.timeouts.get()
    }

    /// Turns on permessage-deflate with the parameters agreed in the
    /// handshake: RSV1 becomes legal on a message's first frame.
    #[must_use]
    pub fn with_deflate(mut self, params: DeflateParams) -> Self {
        self.rsv_allowed = 0b100;
        let local = match self.role {
            Role::Server => params,
            Role::Client => params.mirrored(),
        };
        self.deflate = Some(Box::new(Codec::new(params, local)));
        self
    }

    /// Speaks a pre-standard draft (hixie-75 or -76, see [`crate::legacy`])
    /// instead of RFC 6455: its framing in and out, its closing handshake
    /// (-76) or none (-75). Everything else is the same: limits, UTF-8
    /// checks, events, deadlines (but keepalive sends no ping: silence for
    /// the keepalive interval and its timeout closes the connection), the
    /// rate limit. Not with permessage-deflate.
    #[must_use]
    pub fn with_legacy(mut self, draft: Draft) -> Self {
        self.legacy = Some(draft);
        self.rsv_allowed = 0;
        self.deflate = None;
        self
    }

    /// The legacy draft this connection speaks, if not RFC 6455.
    pub fn legacy(&self) -> Option<Draft> {
        self.legacy
    }

    /// The permessage-deflate parameters in force, as agreed in the
    /// handshake, if negotiated.
    pub fn deflate(&self) -> Option<&DeflateParams> {
        self.deflate.as_ref().map(|c| &c.agreed)
    }

    /// This end's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The close handshake's progress.
    pub fn state(&self) -> State {
        self.state
    }

    /// The limits in force (each at most `u32::MAX`).
    pub fn limits(&self) -> Limits {
        Limits {
            max_frame_size: self.limits.frame(),
            max_message_size: self.limits.message(),
            max_fragments: self.limits.fragments(),
        }
    }

    /// The protocol error that failed the connection, if one did.
    pub fn error(&self) -> Option<&ProtocolError> {
        self.rare.as_ref()?.error.as_ref()
    }

    /// The close frame the peer sent, once it has.
    pub fn peer_close(&self) -> Option<&CloseFrame> {
        self.rare.as_ref()?.peer_close.as_ref()
    }

    /// The close frame this side started the close handshake with
    /// ([`Connection::close`]), if it did; `None` when the peer closed
    /// first or the connection failed.
    pub fn local_close(&self) -> Option<&CloseFrame> {
        self.rare.as_ref()?.local_close.as_ref()
    }

    fn rare(&mut self) -> &mut Rare {
        self.rare.get_or_insert_default()
    }

    /// Bytes queued for the transport and not yet taken by `poll_transmit`.
    pub fn buffered_amount(&self) -> usize {
        self.queued
    }

    /// Lets go of the storage of empty queues, and of a dedicated
    /// compressor (the next message starts a fresh deflate stream, which
    /// any peer's decompressor takes), for a connection that has gone
    /// quiet; they grow again on use.
    pub fn shrink(&mut self) {
        if self.events.is_empty() {
            self.events = VecDeque::new();
        }
        if self.transmits.is_empty() {
            self.transmits = VecDeque::new();
        }
        if let Some(codec) = &mut self.deflate {
            codec.release_compressor();
        }
    }

    /// Whether nothing is left to do but close the transport: the state is
    /// `Closed` and every transmit was taken.
    pub fn is_finished(&self) -> bool {
        self.state == State::Closed && self.transmits.is_empty()
    }

    /// Bytes of the frame being received that have not arrived yet: `0`
    /// between frames (or while a header is incomplete). A reader that has
    /// this much room left in its buffer before the next read receives the
    /// frame without moving it.
    pub fn input_needed(&self) -> usize {
        if self.legacy.is_some() {
            // Legacy frames are read to their end byte, or discarded.
            return 0;
        }
        self.frame
            .as_ref()
            .map_or(0, |f| (f.len - f.processed) as usize)
    }

    /// Feeds bytes read from the transport.
    ///
    /// Whole frames are consumed from the front of `buf` and their payloads
    /// unmasked in place; a partial frame stays in `buf` (text already
    /// unmasked and validated, so bad UTF-8 fails before the frame ends).
    /// Pass the same buffer again, with more bytes appended, on the next
    /// call; [`Connection::input_needed`] tells how many bytes the partial
    /// frame still lacks, so that a reader can make room for it at once.
    ///
    /// # Errors
    /// On a protocol violation or exceeded limit. Once the events before it
    /// are polled, the connection is `Closed` with a close frame carrying
    /// [`ProtocolError::close_code`] queued. Later calls discard their input.
    ///
    /// Parsing stops early, leaving the rest of `buf` for the next call,
    /// while [`MAX_EVENTS`] events wait, and before a compressed message
    /// would be inflated while any event waits: see
    /// [`Connection::receive_pending`].
    pub fn receive(&mut self, buf: &mut BytesMut) -> Result<(), ProtocolError> {
        self.stopped = false;
        if self.input_done || self.state == State::Closed {
            buf.clear();
            return Ok(());
        }
        if self.inflating || self.rare.as_ref().is_some_and(|r| r.compressed.is_some()) {
            self.stopped = true;
            return Ok(());
        }
        let received = match self.legacy {
            None => self.receive_frames(buf),
            Some(draft) => self.receive_legacy(buf, draft),
        };
        match received {
            Ok(()) => Ok(()),
            Err(e) => {
                buf.clear();
                self.failed(e.clone());
                Err(e)
            }
        }
    }

    /// Fails the connection on `e`: at once, or once the events before it
    /// are polled.
    fn failed(&mut self, e: ProtocolError) {
        self.input_done = true;
        self.frame = None;
        self.message = None;
        let events = !self.events.is_empty();
        let rare = self.rare();
        rare.compressed = None;
        rare.error = Some(e.clone());
        if events {
            rare.deferred = Some(e);
        } else {
            self.fail(e);
        }
    }

    /// Whether the last [`Connection::receive`] stopped before the end of
    /// its input because events wait: once [`Connection::poll_event`] has
    /// returned `None`, call `receive` again with the same buffer, even if
    /// nothing new was read.
    pub fn receive_pending(&self) -> bool {
        self.stopped
    }

    /// Whether the input is over (the peer's close frame or a violation was
    /// parsed): later input is discarded, so a transport may read on,
    /// waiting for the peer to close, even while events wait.
    pub fn is_input_done(&self) -> bool {
        self.input_done || self.state == State::Closed
    }

    /// Whether events are waiting for [`Connection::poll_event`].
    pub fn has_events(&self) -> bool {
        !self.events.is_empty() || self.rare.as_ref().is_some_and(|r| r.deferred.is_some())
    }

    /// The next event, if any. Reaching the peer's close frame queues its
    /// echo; reaching a protocol violation queues the failing close frame.
    pub fn poll_event(&mut self) -> Option<Event> {
        let Some(event) = self.events.pop_front() else {
            if let Some(e) = self.rare.as_mut().and_then(|r| r.deferred.take()) {
                self.fail(e);
            }
            return None;
        };
        if let Event::Close(close) = &event {
            if self.state == State::Open {
                let echo = CloseFrame {
                    code: close.code,
                    reason: Utf8Bytes::new(),
                };
                self.send_close(&echo);
            }
            self.state = State::Closed;
            self.rare().peer_close = Some(close.clone());
        }
        Some(event)
    }

    /// The next event if it is a message ([`Event::Message`]), leaving
    /// anything else (the peer's close, a message over the rate limit, a
    /// violation) for [`Connection::poll_event`]: for a transport that
    /// takes a run of messages at once and hands them on with its lock
    /// released, so that their replies still go out before a close echo.
    pub fn poll_message(&mut self) -> Option<Message> {
        if !matches!(self.events.front(), Some(Event::Message(_))) {
            return None;
        }
        match self.events.pop_front() {
            Some(Event::Message(m)) => Some(m),
            _ => None,
        }
    }

    /// The next frame to write, if any.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        let t = self.transmits.pop_front()?;
        self.queued -= t.len();
        if self.pongs > 0 && is_pong(&t) {
            self.pongs -= 1;
        }
        Some(t)
    }

    /// Records that input arrived from the peer at `now` (keepalive, and
    /// the time the messages in it are charged to the rate limit).
    pub fn handle_input(&mut self, now: Instant) {
        if let Some(clock) = &mut self.clock {
            if let Some(rate) = clock.rate() {
                rate.input(now);
            }
            clock.heard(now);
        }
    }

    /// Records what the transport did with output at `now`: it took bytes
    /// (`wrote`), or took none; `rest` says whether bytes still wait to be
    /// written (in the transport's hands or in this queue). Output that
    /// waits with nothing written for the write timeout ends the connection
    /// ([`Expired::Write`]). A transport need call this only when output
    /// waits, or waited at the last call ([`Connection::is_stalled`]).
    pub fn handle_written(&mut self, now: Instant, wrote: bool, rest: bool) {
        let rest = rest || !self.transmits.is_empty();
        if !rest {
            if let Some(clock) = &mut self.clock {
                clock.set_stalled(None);
            }
            return;
        }
        if !self.timeouts.has_write() && self.clock.is_none() {
            return;
        }
        let clock = self.clock.get_or_insert_with(|| Box::new(Clock::new(now)));
        if wrote {
            // A peer whose window opened is alive.
            clock.heard(now);
            clock.set_stalled(Some(now));
        } else if clock.stalled().is_none() {
            clock.set_stalled(Some(now));
        }
    }

    /// Whether output waited, unwritten, at the last
    /// [`Connection::handle_written`].
    pub fn is_stalled(&self) -> bool {
        self.clock.as_ref().is_some_and(|c| c.stalled().is_some())
    }

    /// Whether a deadline must be started with the current time: the state
    /// left `Open` (by a command, a violation or the peer's close) since the
    /// last [`Connection::handle_timeout`]. Call `handle_timeout(now)` then.
    pub fn needs_time(&self) -> bool {
        self.state != State::Open
            && self.timeouts.has_close()
            && self.clock.as_ref().is_none_or(|c| c.closing().is_none())
    }

    /// The next instant at which [`Connection::handle_timeout`] must be
    /// called, if any deadline runs.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let clock = self.clock.as_ref()?;
        let l = self.timeouts;
        let keepalive = match self.state {
            State::Open => clock.keepalive_at(l),
            _ => None,
        };
        [keepalive, clock.close_at(l), clock.write_at(l)]
            .into_iter()
            .flatten()
            .min()
    }

    /// Acts on the deadlines due at `now` (and starts the close deadline if
    /// the state left `Open`): queues a keepalive ping, or ends the
    /// connection ([`Connection::expired`]).
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.expired.is_some() {
            return;
        }
        if self.needs_time() {
            self.clock
                .get_or_insert_with(|| Box::new(Clock::new(now)))
                .set_closing(now);
        }
        let l = self.timeouts;
        let waiting = self.has_events();
        let open = self.state == State::Open;
        let Some(clock) = &mut self.clock else {
            return;
        };
        if waiting || (clock.stalled().is_some() && l.has_write()) {
            // Input is paused while the application holds messages back,
            // or while the peer takes no output (the write deadline judges
            // that): the silence is ours, not the peer's.
            clock.heard(now);
        }
        let due = |t: Option<Instant>| t.is_some_and(|t| t <= now);
        if due(clock.close_at(l)) {
            self.expire(Expired::Close);
        } else if due(clock.write_at(l)) {
            self.expire(Expired::Write);
        } else if open && due(clock.keepalive_at(l)) {
            if clock.pinged() {
                self.expire(Expired::Keepalive);
                self.discard_transmits();
                let _ = self.close(CloseCode::GOING_AWAY, "keepalive timeout");
            } else {
                clock.set_pinged();
                if self.legacy.is_none() {
                    // The drafts have no ping: their silence is only timed.
                    let _ = self.ping(Bytes::new());
                }
            }
        }
    }

    /// Which deadline ended the connection, if one did: drop the transport
    /// (for [`Expired::Keepalive`], after writing the close frame if it
    /// takes it at once).
    pub fn expired(&self) -> Option<Expired> {
        self.expired
    }

    fn expire(&mut self, why: Expired) {
        self.expired = Some(why);
        if why == Expired::Write {
            // Nobody will read it.
            self.discard_transmits();
        }
    }

    /// Queues a message.
    ///
    /// # Errors
    /// If the close handshake has begun, or a ping/pong payload is over 125
    /// bytes.
    pub fn send(&mut self, message: Message) -> Result<(), SendError> {
        self.send_with(message, true)
    }

    /// Queues a message that is never compressed, even with permessage-deflate
    /// on: for payloads mixing secrets with attacker-chosen data (CRIME,
    /// BREACH).
    ///
    /// # Errors
    /// As for [`Connection::send`].
    pub fn send_uncompressed(&mut self, message: Message) -> Result<(), SendError> {
        self.send_with(message, false)
    }

    fn send_with(&mut self, message: Message, compress: bool) -> Result<(), SendError> {
        let (opcode, payload) = match message {
            Message::Text(t) => (OpCode::Text, t.into_bytes()),
            Message::Binary(b) => (OpCode::Binary, b),
            Message::Ping(b) => (OpCode::Ping, b),
            Message::Pong(b) => (OpCode::Pong, b),
        };
        if opcode.is_control() && payload.len() > 125 {
            return Err(SendError::ControlTooLong);
        }
        if self.state != State::Open {
            return Err(SendError::Closed);
        }
        if self.legacy.is_some() {
            if opcode != OpCode::Text {
                return Err(SendError::NotInDraft);
            }
            self.push(Transmit::legacy_text(&payload));
            return Ok(());
        }
        let t = match self.deflate.as_mut() {
            Some(codec)
                if compress && !opcode.is_control() && payload.len() >= codec.params.threshold =>
            {
                let compressed = codec.compress(&payload);
                self.encode_rsv(opcode, compressed, 0b100)
            }
            _ => self.encode(opcode, payload),
        };
        if opcode == OpCode::Pong {
            self.pongs = self.pongs.saturating_add(1);
        }
        self.push(t);
        Ok(())
    }

    /// Queues a frame encoded elsewhere, such as one broadcast frame shared
    /// by many connections. Only for the server role: the frame must be
    /// unmasked and final.
    ///
    /// # Errors
    /// If the close handshake has begun.
    pub fn send_encoded(&mut self, transmit: Transmit) -> Result<(), SendError> {
        if self.state != State::Open {
            return Err(SendError::Closed);
        }
        self.push(transmit);
        Ok(())
    }

    /// Drops every queued frame not yet taken by `poll_transmit`, returning
    /// how many bytes were dropped. For a peer that reads too slowly: drop
    /// its backlog, then [`Connection::close`] it.
    pub fn discard_transmits(&mut self) -> usize {
        self.transmits.clear();
        self.pongs = 0;
        std::mem::take(&mut self.queued)
    }

    /// Queues a ping.
    ///
    /// # Errors
    /// As for [`Connection::send`].
    pub fn ping(&mut self, payload: Bytes) -> Result<(), SendError> {
        self.send(Message::Ping(payload))
    }

    /// Starts the close handshake (§7.1.2) with `code` and `reason` (cut to
    /// 123 bytes at a character boundary).
    ///
    /// # Errors
    /// If a close frame was already sent, or `code` may not be sent.
    pub fn close(&mut self, code: CloseCode, reason: &str) -> Result<(), SendError> {
        if !code.is_sendable() {
            return Err(SendError::CodeNotSendable(code));
        }
        if self.state != State::Open {
            return Err(SendError::Closed);
        }
        let frame = CloseFrame::new(code, reason);
        self.send_close(&frame);
        self.rare().local_close = Some(frame);
        self.state = match self.legacy {
            // No closing handshake: the transport's end is the close.
            Some(Draft::Hixie75) => State::Closed,
            _ => State::Closing,
        };
        Ok(())
    }

    fn receive_frames(&mut self, buf: &mut BytesMut) -> Result<(), ProtocolError> {
        while !self.input_done {
            if self.events.len() >= MAX_EVENTS {
                self.stopped = true;
                return Ok(());
            }
            let frame = match self.frame.take() {
                Some(frame) => frame,
                None => match FrameHeader::decode(buf)? {
                    Some((header, n)) => {
                        let frame = self.check_header(header)?;
                        buf.advance(n);
                        frame
                    }
                    None => return Ok(()),
                },
            };
            if buf.len() < frame.len as usize {
                self.partial(frame, buf)?;
                return Ok(());
            }
            if frame.fin && frame.compressed && !self.events.is_empty() {
                // Inflated data costs more than its wire size: only once
                // nothing else waits.
                self.frame = Some(frame);
                self.stopped = true;
                return Ok(());
            }
            let mut payload = buf.split_to(frame.len as usize);
            let done = frame.processed as usize;
            if let Some(key) = frame.mask {
                mask::apply(&mut payload[done..], key, done);
            }
            self.complete(frame, payload)?;
            if self.rare.as_ref().is_some_and(|r| r.compressed.is_some()) {
                // Left for `take_inflation`.
                self.stopped = true;
                return Ok(());
            }
        }
        buf.clear();
        Ok(())
    }

    /// Checks a header against role, extensions, fragmentation and limits,
    /// before any of its payload is buffered.
    fn check_header(&mut self, h: FrameHeader) -> Result<RxFrame, ProtocolError> {
        let rsv1 = h.rsv & 0b100 != 0;
        if h.rsv & !self.rsv_allowed != 0
            || (rsv1
                && matches!(
                    h.opcode,
                    OpCode::Continuation | OpCode::Close | OpCode::Ping | OpCode::Pong
                ))
        {
            return Err(ProtocolError::ReservedBitsSet);
        }
        match (self.role, h.mask.is_some()) {
            (Role::Server, false) => return Err(ProtocolError::MaskMissing),
            (Role::Client, true) => return Err(ProtocolError::MaskUnexpected),
            _ => {}
        }
        let (held, fragments) = match &self.message {
            Some(m) => (m.data.len(), m.fragments),
            None => (0, 0),
        };
        let (text, compressed) = match h.opcode {
            OpCode::Continuation => match &self.message {
                Some(m) => (m.text, m.compressed),
                None => return Err(ProtocolError::ContinuationUnexpected),
            },
            OpCode::Text | OpCode::Binary if self.message.is_some() => {
                return Err(ProtocolError::ContinuationExpected);
            }
            op => (op == OpCode::Text, rsv1),
        };
        let max_frame = self.limits.frame;
        let len = u32::try_from(h.payload_len)
            .ok()
            .filter(|&len| len <= max_frame)
            .ok_or(ProtocolError::FrameTooBig {
                len: h.payload_len,
                max: max_frame as usize,
            })?;
        if !h.opcode.is_control() {
            if held + len as usize > self.limits.message() {
                return Err(ProtocolError::MessageTooBig {
                    max: self.limits.message(),
                });
            }
            if h.opcode == OpCode::Continuation && fragments >= self.limits.fragments() {
                return Err(ProtocolError::FragmentsTooMany {
                    max: self.limits.fragments(),
                });
            }
        }
        Ok(RxFrame {
            fin: h.fin,
            opcode: h.opcode,
            mask: h.mask,
            len,
            processed: 0,
            text,
            compressed,
        })
    }

    /// Handles the part of a frame that has arrived: it is unmasked now,
    /// while the bytes are fresh in cache, and text is validated so that bad
    /// UTF-8 fails fast (Autobahn 6.4.x).
    fn partial(&mut self, mut frame: RxFrame, buf: &mut BytesMut) -> Result<(), ProtocolError> {
        let done = frame.processed as usize;
        if buf.len() > done {
            let fresh = &mut buf[done..];
            if let Some(key) = frame.mask {
                mask::apply(fresh, key, done);
            }
            if frame.text && !frame.compressed {
                if frame.processed == 0 && self.message.is_none() {
                    self.utf8 = Utf8Validator::new();
                }
                self.utf8
                    .feed(fresh)
                    .map_err(|_| ProtocolError::TextNotUtf8)?;
            }
            // Lossless: fewer bytes than the frame's 32-bit length.
            frame.processed = buf.len() as u32;
        }
        self.frame = Some(frame);
        Ok(())
    }

    fn complete(&mut self, frame: RxFrame, payload: BytesMut) -> Result<(), ProtocolError> {
        match frame.opcode {
            OpCode::Ping => {
                if self.state == State::Open {
                    self.pong(&payload);
                }
            }
            OpCode::Pong => {}
            OpCode::Close => {
                let close = CloseFrame::decode(payload.freeze())?;
                self.input_done = true;
                self.message = None;
                self.events.push_back(Event::Close(close));
            }
            OpCode::Text | OpCode::Binary if frame.fin && frame.compressed => {
                self.inflate(frame.text, payload.freeze())?;
            }
            OpCode::Text | OpCode::Binary if frame.fin => {
                let message = if frame.text {
                    if frame.processed > 0 {
                        self.check_utf8(&payload[frame.processed as usize..], true)?;
                    }
                    let text = Utf8Bytes::try_from(payload.freeze())
                        .map_err(|_| ProtocolError::TextNotUtf8)?;
                    Message::Text(text)
                } else {
                    Message::Binary(payload.freeze())
                };
                self.deliver(message)?;
            }
            OpCode::Text | OpCode::Binary => {
                if frame.text && !frame.compressed {
                    if frame.processed == 0 {
                        self.utf8 = Utf8Validator::new();
                    }
                    self.check_utf8(&payload[frame.processed as usize..], false)?;
                }
                self.message = Some(Box::new(RxMessage {
                    text: frame.text,
                    compressed: frame.compressed,
                    data: payload,
                    fragments: 1,
                }));
            }
            OpCode::Continuation => {
                if frame.text && !frame.compressed {
                    self.check_utf8(&payload[frame.processed as usize..], frame.fin)?;
                }
                let Some(message) = self.message.as_mut() else {
                    return Err(ProtocolError::ContinuationUnexpected);
                };
                message.data.extend_from_slice(&payload);
                message.fragments += 1;
                if frame.fin
                    && let Some(m) = self.message.take()
                {
                    if m.compressed {
                        return self.inflate(m.text, m.data.freeze());
                    }
                    let message = if m.text {
                        Message::Text(
                            Utf8Bytes::try_from(m.data.freeze())
                                .map_err(|_| ProtocolError::TextNotUtf8)?,
                        )
                    } else {
                        Message::Binary(m.data.freeze())
                    };
                    self.deliver(message)?;
                }
            }
        }
        Ok(())
    }

    /// Makes a complete message the next event, within the rate limit; over
    /// it, by the limit's action: an error (failing the connection), no
    /// event, or an [`Event::RateLimited`].
    fn deliver(&mut self, message: Message) -> Result<(), ProtocolError> {
        if let Some(rate) = self.clock.as_mut().and_then(|c| c.rate())
            && !rate.admit(message.len())
        {
            rate.limited = rate.limited.saturating_add(1);
            match rate.limiter.action() {
                RateAction::Close => return Err(ProtocolError::RateLimited),
                RateAction::Drop => {}
                RateAction::Notify => self.events.push_back(Event::RateLimited(message)),
            }
            return Ok(());
        }
        self.events.push_back(Event::Message(message));
        Ok(())
    }

    /// Queues a pong (a copy: a ping's payload would pin the read buffer it
    /// arrived in). With [`MAX_PONGS`] already waiting, it replaces the
    /// last one queued.
    fn pong(&mut self, payload: &[u8]) {
        let pong = self.encode(OpCode::Pong, Bytes::copy_from_slice(payload));
        if self.pongs < u16::from(MAX_PONGS) {
            self.pongs += 1;
            self.push(pong);
            return;
        }
        if let Some(last) = self.transmits.iter_mut().rev().find(|t| is_pong(t)) {
            self.queued = self.queued - last.len() + pong.len();
            *last = pong;
        }
    }

    /// A whole compressed message: inflated now (bounded by the message
    /// limit) into the next event, or left for `take_inflation`.
    fn inflate(&mut self, text: bool, payload: Bytes) -> Result<(), ProtocolError> {
        if self.deflate.is_none() {
            return Err(ProtocolError::ReservedBitsSet);
        }
        self.rare().compressed = Some((text, payload));
        if self.defer_inflation {
            return Ok(());
        }
        // An error goes back through `receive`, which fails the connection.
        match self.take_inflation() {
            Some(job) => self.settle(job),
            None => Ok(()),
        }
    }

    fn check_utf8(&mut self, bytes: &[u8], fin: bool) -> Result<(), ProtocolError> {
        self.utf8
            .feed(bytes)
            .map_err(|_| ProtocolError::TextNotUtf8)?;
        if fin {
            self.utf8.finish().map_err(|_| ProtocolError::TextNotUtf8)?;
        }
        Ok(())
    }

    /// Fails the connection (§7.1.7): queue a close frame with the error's
    /// code and reason, and process no more input.
    fn fail(&mut self, e: ProtocolError) {
        if self.state == State::Open {
            self.send_close(&CloseFrame::new(e.close_code(), &e.to_string()));
        }
        self.state = State::Closed;
        self.rare().error = Some(e);
    }

    fn send_close(&mut self, frame: &CloseFrame) {
        match self.legacy {
            None => {}
            Some(Draft::Hixie76) => return self.push(Transmit::legacy_close()),
            Some(Draft::Hixie75) => return,
        }
        let t = self.encode(OpCode::Close, frame.encode());
        self.push(t);
    }

    fn encode(&mut self, opcode: OpCode, payload: Bytes) -> Transmit {
        self.encode_rsv(opcode, payload, 0)
    }

    fn encode_rsv(&mut self, opcode: OpCode, payload: Bytes, rsv: u8) -> Transmit {
        let mut header = FrameHeader::new(true, opcode, None, payload.len() as u64);
        header.rsv = rsv;
        let source = self.rare.as_mut().and_then(|r| r.mask_source.as_mut());
        match (self.role, source) {
            (Role::Client, Some(source)) => {
                let key = source();
                header.mask = Some(key);
                let mut masked = payload.to_vec();
                mask::apply(&mut masked, key, 0);
                Transmit::with_header(header, masked.into())
            }
            _ => Transmit::with_header(header, payload),
        }
    }

    fn push(&mut self, t: Transmit) {
        self.queued += t.len();
        self.transmits.push_back(t);
    }
}

mod hixie;

/// Whether `t` is a pong frame. Frames joined by [`Transmit::concat`] have
/// no header of their own, and are broadcast data, never a pong.
fn is_pong(t: &Transmit) -> bool {
    t.header().first().is_some_and(|b| b & 0x0f == 0xa)
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("role", &self.role)
            .field("state", &self.state)
            .field("limits", &self.limits)
            .field("frame", &self.frame)
            .field("message", &self.message)
            .field("events", &self.events.len())
            .field("transmits", &self.transmits.len())
            .field("error", &self.error())
            .field("expired", &self.expired)
            .finish_non_exhaustive()
    }
}
