//! The handles an application holds for a connection, and the state they
//! share with the connection's driver task.
//!
//! The driver (`task.rs`) owns the socket; handles only touch the shared
//! state under a short, never-awaited lock. Sending never blocks: a message
//! is encoded into the write queue, whose size in bytes is bounded by
//! `max_backpressure`; past it the server's [`SlowClient`] policy applies
//! (see [`crate::docs::limits`]).

pub(crate) mod task;
pub(crate) mod wheel;

use std::fmt;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use futures_core::Stream;
use futures_sink::Sink;
use http::{Extensions, HeaderMap};
use tokio::sync::watch;
use wharf_proto::{CloseCode, DeflateParams, Draft, Message, State, Transmit};

use crate::error::{CloseError, Disconnect, SendError};
use crate::hub::Hub;
use crate::stats::Counters;
use task::Settings;

/// What happens when a send would push a connection's write queue past
/// `max_backpressure`.
#[derive(Clone, Copy, Debug, Default, Eq, PartialEq)]
#[non_exhaustive]
pub enum SlowClient {
    /// Drop the queued backlog and close the connection with 1008 (the
    /// default): a client that cannot keep up is better reconnected.
    #[default]
    Close,
    /// Drop the message that does not fit, count it
    /// ([`Client::dropped`]) and keep the connection.
    Drop,
}

/// A cloneable handle to one connection: send to it, close it, ask its
/// state, from any task. The hub hands these out; a connection's handler
/// holds the [`Connection`] ([`Connection::client`]).
///
/// Sending: [`Client::send`] waits for room under `max_backpressure` (and
/// `Client` is a `Sink` of [`Message`]s); [`Client::try_send`] never waits
/// and applies the server's [`SlowClient`] policy.
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
}

/// One WebSocket connection, as its handler sees it: what a [`Client`]
/// does, plus receiving: [`Connection::recv`], or the connection as a
/// `Stream` of [`Event`]s (and a `Sink` of [`Message`]s), so the `futures`
/// combinators apply; [`Connection::split`] for a reader and a writer.
///
/// ```no_run
/// use futures_util::{SinkExt, StreamExt};
/// use wharf::{Connection, Event, Message};
///
/// // Echo, as a tokio-tungstenite user writes it.
/// async fn echo(mut conn: Connection) -> Result<(), wharf::SendError> {
///     while let Some(Event::Message(m)) = conn.next().await {
///         conn.send(m).await?; // `SinkExt::send`: waits for room
///     }
///     Ok(())
/// }
/// ```
///
/// Dropping the `Connection` starts the close handshake with 1000 (normal)
/// if it is still open; queued messages are written first.
pub struct Connection {
    client: Client,
    /// The message `recv` last returned was over the rate limit.
    limited: bool,
    /// The stream has yielded its `Event::Close`.
    done: bool,
}

/// What the upgrade request said, kept for the connection's lifetime.
/// Only what is asked for is kept: an idle connection's memory is mostly
/// this and the core.
#[derive(Debug)]
pub(crate) struct Info {
    peer: Peer,
    /// The request target (path and query) followed by the subprotocol:
    /// one string rather than two saves 8 bytes per connection. Empty for
    /// "/" without a subprotocol.
    text: Box<str>,
    /// Where the subprotocol starts in `text`; `u32::MAX` without one.
    protocol_at: u32,
    /// Counted under the server's connection caps until its task ends.
    counted: bool,
    /// The pre-standard draft spoken, if not RFC 6455 (in padding).
    legacy: Option<Draft>,
    /// Served by the server's message callback, whose open and close
    /// callbacks apply to it (in padding).
    callback: bool,
    /// What most connections lack, in one block allocated only for those
    /// that have some of it.
    extras: Option<Box<Extras>>,
}

/// A socket address in 24 bytes rather than `SocketAddr`'s 32: an IPv6
/// flow label is not kept (the scope id is).
#[derive(Clone, Copy, Debug)]
struct Peer {
    ip: [u8; 16],
    scope_id: u32,
    port: u16,
    v6: bool,
}

impl Peer {
    fn new(addr: SocketAddr) -> Self {
        match addr {
            SocketAddr::V4(a) => {
                let mut ip = [0; 16];
                ip[..4].copy_from_slice(&a.ip().octets());
                Self {
                    ip,
                    scope_id: 0,
                    port: a.port(),
                    v6: false,
                }
            }
            SocketAddr::V6(a) => Self {
                ip: a.ip().octets(),
                scope_id: a.scope_id(),
                port: a.port(),
                v6: true,
            },
        }
    }

    fn addr(self) -> SocketAddr {
        if self.v6 {
            let ip = std::net::Ipv6Addr::from(self.ip);
            std::net::SocketAddrV6::new(ip, self.port, 0, self.scope_id).into()
        } else {
            let [a, b, c, d, ..] = self.ip;
            SocketAddr::from(([a, b, c, d], self.port))
        }
    }
}

#[derive(Debug)]
struct Extras {
    /// Kept only with [`Server::keep_headers`](crate::Server::keep_headers).
    headers: Option<HeaderMap>,
    /// Attached by the upgrade hook.
    data: Extensions,
    /// The permessage-deflate parameters agreed in the handshake.
    deflate: Option<DeflateParams>,
    /// The socket's peer, when a proxy vouched for another `peer`.
    socket: Option<SocketAddr>,
}

impl Info {
    #[expect(
        clippy::too_many_arguments,
        reason = "called once, in `server::open`, field by field"
    )]
    pub(crate) fn new(
        peer: SocketAddr,
        target: Box<str>,
        protocol: Option<&str>,
        headers: Option<HeaderMap>,
        data: Extensions,
        deflate: Option<DeflateParams>,
        socket: Option<SocketAddr>,
        counted: bool,
    ) -> Self {
        let mut text = String::from(target);
        let protocol_at = match (protocol, u32::try_from(text.len())) {
            (Some(p), Ok(at)) if at < u32::MAX => {
                text.push_str(p);
                at
            }
            _ => u32::MAX,
        };
        Self {
            peer: Peer::new(peer),
            // The commonest target, "/" without a subprotocol, is kept as
            // the empty string, which allocates nothing (no request target
            // is empty).
            text: if protocol_at == u32::MAX && text == "/" {
                Box::default()
            } else {
                text.into_boxed_str()
            },
            protocol_at,
            counted,
            legacy: None,
            callback: false,
            extras: (headers.is_some()
                || !data.is_empty()
                || deflate.is_some()
                || socket.is_some())
            .then(|| {
                Box::new(Extras {
                    headers,
                    data,
                    deflate,
                    socket,
                })
            }),
        }
    }

    pub(crate) fn peer(&self) -> SocketAddr {
        self.peer.addr()
    }

    /// The socket's own peer (a proxy, when one vouched for `peer`).
    pub(crate) fn socket(&self) -> SocketAddr {
        self.extras
            .as_ref()
            .and_then(|e| e.socket)
            .unwrap_or_else(|| self.peer())
    }

    /// Marks a connection that speaks a legacy draft.
    pub(crate) fn with_legacy(mut self, draft: Option<Draft>) -> Self {
        self.legacy = draft;
        self
    }

    /// Marks a connection served by the server's message callback.
    pub(crate) fn with_callback(mut self, callback: bool) -> Self {
        self.callback = callback;
        self
    }

    /// Whether the server's message callback serves the connection (its
    /// open and close callbacks then apply).
    pub(crate) fn served_by_callback(&self) -> bool {
        self.callback
    }

    /// Whether the connection is counted under the connection caps.
    pub(crate) fn counted(&self) -> bool {
        self.counted
    }

    fn headers(&self) -> Option<&HeaderMap> {
        self.extras.as_ref()?.headers.as_ref()
    }

    fn data<T: Clone + Send + Sync + 'static>(&self) -> Option<&T> {
        self.extras.as_ref()?.data.get::<T>()
    }

    fn deflate(&self) -> Option<&DeflateParams> {
        self.extras.as_ref()?.deflate.as_ref()
    }

    /// The request target: path and query.
    fn target(&self) -> &str {
        match self.protocol_at {
            u32::MAX if self.text.is_empty() => "/",
            u32::MAX => &self.text,
            at => &self.text[..at as usize],
        }
    }

    fn protocol(&self) -> Option<&str> {
        match self.protocol_at {
            u32::MAX => None,
            at => Some(&self.text[at as usize..]),
        }
    }
}

/// The state shared by the handles and the driver: one allocation per
/// connection, beside its task.
pub(crate) struct Shared {
    inner: Mutex<Inner>,
    id: u64,
    info: Info,
    pub(crate) settings: Arc<Settings>,
}

pub(crate) struct Inner {
    /// The core. Its event queue is the inbox: `recv` polls it, and the
    /// driver reads no more from the socket until it is empty.
    pub(crate) proto: wharf_proto::Connection,
    /// Bytes the driver took from the core and has not finished writing.
    pub(crate) writing: usize,
    pub(crate) recv_waker: Option<Waker>,
    pub(crate) driver_waker: Option<Waker>,
    /// The driver stopped reading because events wait for `recv`.
    pub(crate) read_paused: bool,
    /// The driver shut the socket's write side (lingering after the end).
    /// Kept here, where it costs no space, rather than in the driver, whose
    /// future must stay within 128 bytes.
    pub(crate) write_shut: bool,
    /// Who takes the core's events: `recv`, or the driver itself.
    pub(crate) receiver: Receiver,
    /// Messages dropped under [`SlowClient::Drop`] (saturating): 32 bits fit
    /// in this struct's padding.
    dropped: u32,
    /// Why the connection ended, once the driver is done, when the core
    /// cannot tell (see [`Inner::outcome`]).
    pub(crate) ended: Option<End>,
    /// Set once somebody watches the ready state or waits to send: most
    /// connections never do, and pay 8 bytes for it.
    watchers: Option<Box<Watchers>>,
}

/// Who takes a connection's events (one byte, in `Inner`'s padding).
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub(crate) enum Receiver {
    /// The handler's `Connection` (`recv`, the `Stream`).
    Handler,
    /// Nobody: the `Connection` is gone (or never was), so the driver
    /// takes the events and drops them, completing the close handshake.
    Driver,
    /// The server's message callback (`Server::on_message`), which the
    /// driver calls with each message.
    Callback,
}

/// Who waits on a connection besides its handler's `recv`.
#[derive(Default)]
struct Watchers {
    /// The ready state's watchers (`Client::state_changes`).
    state_tx: Option<watch::Sender<ReadyState>>,
    /// Senders waiting for room in the write queue (`Client::send`, the
    /// `Sink`), or for it to drain: woken when the driver writes, and when
    /// the state changes.
    writers: Vec<Waker>,
}

/// How the driver ended a connection, when the core has no account of it
/// (a close handshake or a violation), which comes first.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub(crate) enum End {
    Reset,
    TimedOut,
}

impl Shared {
    pub(crate) fn new(
        proto: wharf_proto::Connection,
        id: u64,
        info: Info,
        settings: Arc<Settings>,
    ) -> Self {
        Self {
            id,
            info,
            settings,
            inner: Mutex::new(Inner {
                proto,
                writing: 0,
                recv_waker: None,
                driver_waker: None,
                read_paused: false,
                write_shut: false,
                receiver: Receiver::Handler,
                dropped: 0,
                ended: None,
                watchers: None,
            }),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        // Broadcasts this thread holds back (`hub::cork`) go first: whatever
        // is done under this lock comes after them.
        crate::hub::release();
        self.lock_inbound()
    }

    /// The lock, for taking what the peer sent (`recv`): nothing sent
    /// after it depends on it, so broadcasts held back stay held, and a
    /// handler's publishes of every message `recv` had ready go out
    /// together.
    pub(crate) fn lock_inbound(&self) -> MutexGuard<'_, Inner> {
        // Nothing done under this lock can panic halfway through an update
        // that later users would trip over, so a poisoned lock is recovered.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues an encoded frame under the slow-client policy.
    pub(crate) fn send_encoded(&self, t: Transmit) -> Result<(), SendError> {
        let len = self.queue_encoded(t)?;
        self.count_out(len);
        Ok(())
    }

    /// Queues an encoded frame under the slow-client policy, uncounted:
    /// returns its payload's length.
    fn queue_encoded(&self, t: Transmit) -> Result<usize, SendError> {
        let mut inner = self.lock();
        if inner.proto.state() != State::Open || inner.ended.is_some() {
            return Err(SendError::Closed);
        }
        if self.over_bound(&inner, t.len()) {
            return Err(self.overflow(&mut inner));
        }
        let len = t.payload().len();
        inner.proto.send_encoded(t)?;
        self.frames_queued(&mut inner);
        Ok(len)
    }

    /// Queues encoded frames in order under the slow-client policy, with
    /// one lock and one wake for them all, uncounted: returns how many
    /// messages were queued and their payloads' length, for a caller that
    /// counts many (a broadcast). `joined` is the same run as one transmit
    /// (`Transmit::concat`), with its message count and payload length,
    /// queued whole if it fits. Past the bound, `SlowClient::Drop` drops
    /// the frames that do not fit; `SlowClient::Close` closes the
    /// connection and queues no more.
    pub(crate) fn queue_encoded_run(
        &self,
        joined: Option<(&Transmit, usize, usize)>,
        run: impl Iterator<Item = Transmit>,
    ) -> (usize, usize) {
        let mut inner = self.lock();
        let (mut n, mut bytes) = (0, 0);
        match joined {
            // Whole only if all of it fits: an empty queue takes one
            // message past the bound, never a run.
            Some((t, messages, payload))
                if inner.proto.state() == State::Open
                    && inner.ended.is_none()
                    && inner.buffered() + t.len() <= self.settings.max_backpressure =>
            {
                if inner.proto.send_encoded(t.clone()).is_ok() {
                    (n, bytes) = (messages, payload);
                }
            }
            _ => {
                for t in run {
                    if inner.proto.state() != State::Open || inner.ended.is_some() {
                        break;
                    }
                    if self.over_bound(&inner, t.len()) {
                        let _ = self.overflow(&mut inner);
                        continue;
                    }
                    let len = t.payload().len();
                    if inner.proto.send_encoded(t).is_err() {
                        break;
                    }
                    n += 1;
                    bytes += len;
                }
            }
        }
        if n > 0 {
            self.frames_queued(&mut inner);
        }
        (n, bytes)
    }

    pub(crate) fn count_out(&self, len: usize) {
        self.stats().queued(self.key(), len);
    }

    /// Wakes the driver for frames just queued (or input to read again),
    /// unless this thread is polling this connection's own task: its driver
    /// runs again before that poll ends (`Task::poll`), and a wake would
    /// only poll the task once more for nothing.
    pub(crate) fn frames_queued(&self, inner: &mut Inner) {
        if !crate::stats::polling(self.key()) {
            inner.wake_driver();
        }
    }

    /// This connection's key in the thread's message tally (its address).
    pub(crate) fn key(&self) -> usize {
        std::ptr::from_ref(self).addr()
    }

    pub(crate) fn deflate(&self) -> Option<&DeflateParams> {
        self.info.deflate()
    }

    /// The coarse timer of this connection's worker.
    pub(crate) fn wheel(&self) -> &Arc<wheel::Wheel> {
        self.settings.hub.wheel(self.id)
    }

    /// The legacy draft the connection speaks, if not RFC 6455.
    pub(crate) fn legacy(&self) -> Option<Draft> {
        self.info.legacy
    }

    /// Counts a binary message not sent to this legacy-draft connection.
    pub(crate) fn skipped(&self) {
        Counters::add(&self.stats().legacy_binary_skipped, 1);
    }

    pub(crate) fn stats(&self) -> &Counters {
        self.settings.stats.counters()
    }

    /// Whether queueing `len` more bytes would pass `max_backpressure`. An
    /// empty queue always takes one message, however large.
    fn over_bound(&self, inner: &Inner, len: usize) -> bool {
        let buffered = inner.buffered();
        buffered > 0 && buffered + len > self.settings.max_backpressure
    }

    fn overflow(&self, inner: &mut Inner) -> SendError {
        match self.settings.slow_client {
            SlowClient::Drop => {
                inner.dropped = inner.dropped.saturating_add(1);
                Counters::add(&self.stats().slow_client_drops, 1);
                SendError::Dropped
            }
            SlowClient::Close => {
                if inner.proto.state() == State::Open {
                    Counters::add(&self.stats().slow_client_closes, 1);
                }
                inner.proto.discard_transmits();
                let _ = inner.proto.close(
                    CloseCode::POLICY_VIOLATION,
                    "slow consumer: send queue full",
                );
                inner.wake_driver();
                inner.publish_state();
                SendError::Backpressure
            }
        }
    }
}

impl Inner {
    pub(crate) fn wake_driver(&mut self) {
        if let Some(w) = self.driver_waker.take() {
            w.wake();
        }
    }

    pub(crate) fn wake_recv(&mut self) {
        if let Some(w) = self.recv_waker.take() {
            w.wake();
        }
    }

    pub(crate) fn buffered(&self) -> usize {
        self.proto.buffered_amount() + self.writing
    }

    /// Takes and drops every event, parsing on what `receive` left in
    /// `buf` behind them: for a connection nobody receives from, so that
    /// the peer's close is reached and answered.
    pub(crate) fn drain(&mut self, buf: &mut bytes::BytesMut) {
        loop {
            let mut closed = false;
            while let Some(event) = self.proto.poll_event() {
                closed |= matches!(event, wharf_proto::Event::Close(_));
            }
            if closed {
                self.publish_state();
            }
            debug_assert!(!self.proto.is_inflating(), "drained during an inflation");
            if self.proto.has_inflation() {
                // One inflation a poll: the driver, woken, takes the next.
                if !task::inflate_now() {
                    return;
                }
                if let Some(job) = self.proto.take_inflation() {
                    let _ = self.proto.finish_inflation(job);
                }
            } else if self.proto.receive_pending() {
                let _ = self.proto.receive(buf);
            } else {
                return;
            }
        }
    }

    fn ready_state(&self) -> ReadyState {
        if self.ended.is_some() {
            return ReadyState::Closed;
        }
        match self.proto.state() {
            State::Open => ReadyState::Open,
            State::Closing => ReadyState::Closing,
            State::Closed => ReadyState::Closed,
        }
    }

    /// How the connection ended: as the core tells (a violation, or the
    /// peer's close frame once the close handshake is over), else as the
    /// driver recorded.
    pub(crate) fn disconnect(&self) -> Option<Disconnect> {
        self.outcome().or(match self.ended {
            None => None,
            Some(End::TimedOut) => Some(Disconnect::TimedOut),
            Some(End::Reset) => Some(Disconnect::Reset),
        })
    }

    /// How the connection ended, as far as the core can tell: a violation
    /// or the peer's close frame once the close handshake is over.
    pub(crate) fn outcome(&self) -> Option<Disconnect> {
        if self.proto.state() != State::Closed {
            return None;
        }
        let proto = &self.proto;
        match (proto.error(), proto.local_close(), proto.peer_close()) {
            (Some(e), _, _) => Some(Disconnect::Protocol(e.clone())),
            (None, Some(ours), _) => Some(Disconnect::Local(ours.clone())),
            (None, None, Some(theirs)) => Some(Disconnect::Peer(theirs.clone())),
            (None, None, None) => None,
        }
    }

    /// Wakes the senders waiting for room: bytes were written, or the
    /// connection is closing.
    pub(crate) fn wake_writers(&mut self) {
        if let Some(w) = &mut self.watchers {
            for w in w.writers.drain(..) {
                w.wake();
            }
        }
    }

    /// Registers a sender to wake on the next write or state change.
    fn wait_writer(&mut self, waker: &Waker) {
        let writers = &mut self.watchers.get_or_insert_default().writers;
        if !writers.iter().any(|w| w.will_wake(waker)) {
            writers.push(waker.clone());
        }
    }

    /// Tells watchers about a ready-state change, if there was one, and
    /// wakes waiting senders (they may have to give up).
    pub(crate) fn publish_state(&mut self) {
        self.wake_writers();
        let now = self.ready_state();
        if let Some(tx) = self.watchers.as_ref().and_then(|w| w.state_tx.as_ref()) {
            tx.send_if_modified(|s| std::mem::replace(s, now) != now);
        }
    }
}

/// The WebSocket API's ready state (the seed's `readyStateChange`).
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
#[non_exhaustive]
pub enum ReadyState {
    /// The opening handshake is in progress.
    Connecting,
    /// Messages flow both ways.
    Open,
    /// The close handshake has begun.
    Closing,
    /// The connection is closed.
    Closed,
}

/// What a connection's stream yields: each message, then how the
/// connection ended (once), then nothing.
///
/// ```no_run
/// use futures_util::StreamExt;
/// use wharf::{Connection, Event};
///
/// async fn handle(mut conn: Connection) {
///     while let Some(event) = conn.next().await {
///         match event {
///             Event::Message(m) => println!("got {} bytes", m.len()),
///             Event::Close(why) if why.is_normal() => println!("closed"),
///             Event::Close(why) => println!("ended: {why}"),
///             _ => {}
///         }
///     }
/// }
/// ```
#[derive(Clone, Debug, Eq, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// A text or binary message (pings and pongs are answered and taken by
    /// the connection itself).
    Message(Message),
    /// The connection ended, and how: the last item.
    Close(Disconnect),
}

/// What a send does with a message that would push the write queue past
/// `max_backpressure`.
#[derive(Clone, Copy)]
enum WhenFull<'a> {
    /// Apply the [`SlowClient`] policy.
    Policy,
    /// Give the message back and wake this waker when bytes are written.
    Wait(&'a Waker),
    /// Queue it anyway (the `Sink`'s `start_send`, after `poll_ready`).
    Force,
}

impl Client {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// An id unique within its server (its hub), increasing in the order
    /// connections open on a worker (1, 2, 3... with one worker).
    pub fn id(&self) -> u64 {
        self.shared.id
    }

    /// The client's address: the socket's peer, or the client a trusted
    /// proxy vouched for ([`Server::trusted_proxies`](crate::Server::trusted_proxies),
    /// [`Server::proxy_protocol`](crate::Server::proxy_protocol)).
    pub fn peer_addr(&self) -> SocketAddr {
        self.shared.info.peer()
    }

    /// The address at the other end of the socket: the proxy's when one
    /// vouched for [`Client::peer_addr`], else the same address.
    pub fn socket_addr(&self) -> SocketAddr {
        self.shared.info.socket()
    }

    /// The upgrade request's path.
    pub fn path(&self) -> &str {
        let target = self.shared.info.target();
        target.split_once('?').map_or(target, |(path, _)| path)
    }

    /// The upgrade request's query string, if any.
    pub fn query(&self) -> Option<&str> {
        self.shared.info.target().split_once('?').map(|(_, q)| q)
    }

    /// The upgrade request's headers, if the server keeps them
    /// ([`Server::keep_headers`](crate::Server::keep_headers)); otherwise
    /// `None`: read them in the upgrade hook
    /// ([`Server::on_upgrade`](crate::Server::on_upgrade)) and attach what
    /// the connection needs with [`Upgrade::insert`](crate::Upgrade::insert).
    pub fn headers(&self) -> Option<&HeaderMap> {
        self.shared.info.headers()
    }

    /// The subprotocol agreed in the handshake, if any.
    pub fn protocol(&self) -> Option<&str> {
        self.shared.info.protocol()
    }

    /// Data attached before the `101` by the upgrade hook
    /// ([`Upgrade::insert`](crate::Upgrade::insert)).
    pub fn data<T: Clone + Send + Sync + 'static>(&self) -> Option<&T> {
        self.shared.info.data::<T>()
    }

    /// The hub this connection is registered with.
    pub fn hub(&self) -> &Hub {
        &self.shared.settings.hub
    }

    /// Joins a room of the hub; see [`Hub::join`].
    pub fn join(&self, room: &str) -> bool {
        self.shared.settings.hub.join(room, self.id())
    }

    /// Leaves a room of the hub; see [`Hub::leave`].
    pub fn leave(&self, room: &str) -> bool {
        self.shared.settings.hub.leave(room, self.id())
    }

    /// Sends a message, waiting while the write queue is over
    /// `max_backpressure`: a producer goes at the pace the peer reads. The
    /// message is encoded here and written by the connection's driver, in
    /// order. An empty queue always takes one message, however large.
    ///
    /// ```no_run
    /// # async fn produce(client: wharf::Client, lines: Vec<String>) -> Result<(), wharf::SendError> {
    /// for line in lines {
    ///     client.send(line).await?; // waits while the peer is behind
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`SendError::Closed`] once the close handshake has begun (also while
    /// waiting); [`SendError::NotInDraft`] for a binary message to a
    /// legacy-draft connection.
    ///
    /// # Cancel safety
    /// Cancel safe: the message is queued whole, or (cancelled while
    /// waiting) not at all.
    pub async fn send(&self, message: impl Into<Message>) -> Result<(), SendError> {
        self.send_waiting(message.into(), true).await
    }

    /// As [`Client::send`], for a message that is never compressed, even
    /// when the connection negotiated permessage-deflate: for payloads that
    /// mix secrets with data an attacker chooses (CRIME, BREACH).
    ///
    /// # Errors
    /// As for [`Client::send`].
    ///
    /// # Cancel safety
    /// As for [`Client::send`].
    pub async fn send_uncompressed(&self, message: impl Into<Message>) -> Result<(), SendError> {
        self.send_waiting(message.into(), false).await
    }

    /// Queues a message at once, never waiting: the call for broadcasts and
    /// for servers that must not be slowed by one client. When the queue
    /// would pass `max_backpressure`, the server's [`SlowClient`] policy
    /// applies.
    ///
    /// # Errors
    /// [`SendError::Closed`] once the close handshake has begun. When the
    /// queue would exceed `max_backpressure`: [`SendError::Backpressure`]
    /// (the connection is being closed with 1008) or [`SendError::Dropped`].
    /// [`SendError::NotInDraft`] for a binary message to a legacy-draft
    /// connection.
    pub fn try_send(&self, message: impl Into<Message>) -> Result<(), SendError> {
        self.push(message.into(), true, WhenFull::Policy).map(drop)
    }

    /// As [`Client::try_send`], for a message that is never compressed (see
    /// [`Client::send_uncompressed`]).
    ///
    /// # Errors
    /// As for [`Client::try_send`].
    pub fn try_send_uncompressed(&self, message: impl Into<Message>) -> Result<(), SendError> {
        self.push(message.into(), false, WhenFull::Policy).map(drop)
    }

    async fn send_waiting(&self, message: Message, compress: bool) -> Result<(), SendError> {
        let mut message = Some(message);
        poll_fn(|cx| {
            let Some(m) = message.take() else {
                return Poll::Ready(Err(SendError::Closed));
            };
            match self.push(m, compress, WhenFull::Wait(cx.waker())) {
                Ok(None) => Poll::Ready(Ok(())),
                Ok(Some(m)) => {
                    message = Some(m);
                    Poll::Pending
                }
                Err(e) => Poll::Ready(Err(e)),
            }
        })
        .await
    }

    /// Queues `message` unless the queue is full, where `full` says what
    /// happens; `Ok(Some(message))` gives it back to wait.
    fn push(
        &self,
        message: Message,
        compress: bool,
        full: WhenFull<'_>,
    ) -> Result<Option<Message>, SendError> {
        if self.shared.legacy().is_some() && !matches!(message, Message::Text(_)) {
            self.shared.skipped();
            return Err(SendError::NotInDraft);
        }
        let mut inner = self.shared.lock();
        if inner.ended.is_some() {
            // Reset or timed out: the core never saw a close.
            return Err(SendError::Closed);
        }
        if inner.proto.state() == State::Open && self.shared.over_bound(&inner, message.len()) {
            match full {
                WhenFull::Policy => return Err(self.shared.overflow(&mut inner)),
                WhenFull::Wait(waker) => {
                    inner.wait_writer(waker);
                    return Ok(Some(message));
                }
                WhenFull::Force => {}
            }
        }
        let len = message.len();
        if compress {
            inner.proto.send(message)?;
        } else {
            inner.proto.send_uncompressed(message)?;
        }
        self.shared.frames_queued(&mut inner);
        drop(inner);
        self.shared.count_out(len);
        Ok(None)
    }

    /// Waits until every queued byte has been handed to the socket.
    fn poll_drained(&self, cx: &mut Context<'_>, closing: bool) -> Poll<Result<(), SendError>> {
        let mut inner = self.shared.lock();
        if inner.buffered() == 0 {
            return Poll::Ready(Ok(()));
        }
        if inner.ended.is_some() {
            // What is left will never be written.
            return Poll::Ready(if closing {
                Ok(())
            } else {
                Err(SendError::Closed)
            });
        }
        inner.wait_writer(cx.waker());
        Poll::Pending
    }

    /// The permessage-deflate parameters agreed in the handshake, if any.
    pub fn deflate(&self) -> Option<&DeflateParams> {
        self.shared.deflate()
    }

    /// The pre-standard draft (hixie-75 or -76) this connection speaks, if
    /// not RFC 6455 ([`Server::legacy_drafts`](crate::Server::legacy_drafts)):
    /// it carries text messages only.
    pub fn legacy_draft(&self) -> Option<Draft> {
        self.shared.legacy()
    }

    /// Starts the close handshake; the connection's stream then ends once
    /// the peer answers (or the close timeout passes), with
    /// [`Disconnect::Local`] carrying this frame. `reason` is cut to 123
    /// bytes at a character boundary.
    ///
    /// # Errors
    /// [`CloseError::AlreadyClosing`] if the close handshake had already
    /// begun or the connection has ended; [`CloseError::CodeNotSendable`]
    /// for 1005, 1006, 1015 or a code out of range.
    pub fn close(&self, code: CloseCode, reason: &str) -> Result<(), CloseError> {
        let mut inner = self.shared.lock();
        if inner.ended.is_some() {
            return Err(CloseError::AlreadyClosing);
        }
        inner.proto.close(code, reason)?;
        inner.wake_driver();
        inner.publish_state();
        Ok(())
    }

    /// The ready state.
    pub fn state(&self) -> ReadyState {
        self.shared.lock().ready_state()
    }

    /// Watches the ready state: the receiver sees every change from now on
    /// (the seed's `readyStateChange`).
    pub fn state_changes(&self) -> watch::Receiver<ReadyState> {
        let mut inner = self.shared.lock();
        let now = inner.ready_state();
        inner
            .watchers
            .get_or_insert_default()
            .state_tx
            .get_or_insert_with(|| watch::Sender::new(now))
            .subscribe()
    }

    /// Bytes queued and not yet written to the socket.
    pub fn buffered_amount(&self) -> usize {
        self.shared.lock().buffered()
    }

    /// Messages dropped under [`SlowClient::Drop`] (counted up to
    /// `u32::MAX`).
    pub fn dropped(&self) -> u64 {
        u64::from(self.shared.lock().dropped)
    }

    /// Waits until the connection has ended entirely: the close handshake
    /// (or the failure, or the timeout) is over and the TCP connection is
    /// closed; returns how it ended. A client that must know the server saw
    /// the end (before it opens the next connection, say) awaits this after
    /// the stream ends.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn closed(&self) -> Disconnect {
        poll_fn(|cx| {
            let mut inner = self.shared.lock();
            if inner.ended.is_some() {
                return Poll::Ready(inner.disconnect().unwrap_or(Disconnect::Reset));
            }
            inner.wait_writer(cx.waker());
            Poll::Pending
        })
        .await
    }

    /// How the connection ended, once it has: as soon as the close
    /// handshake is over (when the stream yields [`Event::Close`] and
    /// [`Connection::recv`] returns `None`), even while the TCP connection
    /// is still being shut down.
    pub fn disconnect(&self) -> Option<Disconnect> {
        self.shared.lock().disconnect()
    }
}

/// Sending with backpressure: `poll_ready` waits while the write queue is
/// at or over `max_backpressure` (so the queue holds at most that plus one
/// message), `poll_flush` until the socket has taken every queued byte,
/// `poll_close` starts the close handshake with 1000 and flushes.
impl Sink<Message> for Client {
    type Error = SendError;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), SendError>> {
        let mut inner = self.shared.lock();
        if inner.ended.is_some() || inner.proto.state() != State::Open {
            return Poll::Ready(Err(SendError::Closed));
        }
        if inner.buffered() < self.shared.settings.max_backpressure {
            return Poll::Ready(Ok(()));
        }
        inner.wait_writer(cx.waker());
        Poll::Pending
    }

    fn start_send(self: Pin<&mut Self>, item: Message) -> Result<(), SendError> {
        self.push(item, true, WhenFull::Force).map(drop)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), SendError>> {
        self.poll_drained(cx, false)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), SendError>> {
        // Already closing is fine: the close frame is queued either way.
        let _ = self.close(CloseCode::NORMAL, "");
        self.poll_drained(cx, true)
    }
}

impl Connection {
    pub(crate) fn new(client: Client) -> Self {
        Self {
            client,
            limited: false,
            done: false,
        }
    }

    /// Whether the message [`Connection::recv`] (or the stream) last
    /// returned was over the server's rate limit
    /// ([`Server::rate_limit`](crate::Server::rate_limit) with
    /// [`RateAction::Notify`](crate::RateAction::Notify)): answer it as the
    /// application's protocol says, rather than act on it. Under the other
    /// actions such messages never reach the handler, and this is `false`.
    pub fn rate_limited(&self) -> bool {
        self.limited
    }

    /// A cloneable handle for sending from other tasks.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Splits the connection into a [`Client`] to send with (a `Sink`,
    /// cloneable) and its reading half (a `Stream`), for a writer and a
    /// reader in different tasks: in the order of `futures`'
    /// `StreamExt::split`, so code written for tokio-tungstenite ports
    /// as is. Dropping the [`ReadHalf`] closes the connection as dropping
    /// the `Connection` does.
    pub fn split(self) -> (Client, ReadHalf) {
        let client = self.client.clone();
        (client, ReadHalf { conn: self })
    }

    /// Receives the next text or binary message; `None` once the connection
    /// is closed, after which [`Connection::disconnect`] says how (or use
    /// the connection as a `Stream` of [`Event`]s, whose last item says it).
    /// Pings are answered automatically and are not returned.
    ///
    /// # Cancel safety
    /// Cancel safe: a message is removed only when it is returned.
    pub async fn recv(&mut self) -> Option<Message> {
        poll_fn(|cx| match self.poll_event(cx) {
            Poll::Ready(Some(Event::Message(m))) => Poll::Ready(Some(m)),
            Poll::Ready(_) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        })
        .await
    }

    /// The next event: a message, or (once) how the connection ended.
    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        if self.done {
            return Poll::Ready(None);
        }
        let client = &self.client;
        let mut inner = client.shared.lock_inbound();
        let queued = inner.proto.buffered_amount();
        while let Some(event) = inner.proto.poll_event() {
            let (m, over) = match event {
                wharf_proto::Event::Message(m) => (m, false),
                wharf_proto::Event::RateLimited(m) => (m, true),
                wharf_proto::Event::Close(_) => {
                    inner.publish_state();
                    continue;
                }
                _ => continue,
            };
            if matches!(m, Message::Text(_) | Message::Binary(_)) {
                let shared = &client.shared;
                shared.stats().received(shared.key(), m.len());
                self.limited = over;
                return Poll::Ready(Some(Event::Message(m)));
            }
        }
        // The queue is empty: the driver may read again, and reaching a
        // close or a violation may have queued a close frame to write.
        if std::mem::take(&mut inner.read_paused) || inner.proto.buffered_amount() != queued {
            client.shared.frames_queued(&mut inner);
        }
        if inner.ended.is_some() || inner.proto.state() == State::Closed {
            inner.publish_state();
            self.done = true;
            self.limited = false;
            let why = inner.disconnect().unwrap_or(Disconnect::Reset);
            return Poll::Ready(Some(Event::Close(why)));
        }
        match &inner.recv_waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => inner.recv_waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

/// The same as the [`Client`] methods of the same names, for the handler's
/// convenience.
impl Connection {
    /// See [`Client::id`].
    pub fn id(&self) -> u64 {
        self.client.id()
    }

    /// See [`Client::peer_addr`].
    pub fn peer_addr(&self) -> SocketAddr {
        self.client.peer_addr()
    }

    /// See [`Client::socket_addr`].
    pub fn socket_addr(&self) -> SocketAddr {
        self.client.socket_addr()
    }

    /// See [`Client::path`].
    pub fn path(&self) -> &str {
        self.client.path()
    }

    /// See [`Client::query`].
    pub fn query(&self) -> Option<&str> {
        self.client.query()
    }

    /// See [`Client::headers`].
    pub fn headers(&self) -> Option<&HeaderMap> {
        self.client.headers()
    }

    /// See [`Client::protocol`].
    pub fn protocol(&self) -> Option<&str> {
        self.client.protocol()
    }

    /// See [`Client::data`].
    pub fn data<T: Clone + Send + Sync + 'static>(&self) -> Option<&T> {
        self.client.data()
    }

    /// See [`Client::hub`].
    pub fn hub(&self) -> &Hub {
        self.client.hub()
    }

    /// See [`Client::join`].
    pub fn join(&self, room: &str) -> bool {
        self.client.join(room)
    }

    /// See [`Client::leave`].
    pub fn leave(&self, room: &str) -> bool {
        self.client.leave(room)
    }

    /// See [`Client::send`].
    ///
    /// # Errors
    /// As for [`Client::send`].
    ///
    /// # Cancel safety
    /// As for [`Client::send`].
    pub async fn send(&self, message: impl Into<Message>) -> Result<(), SendError> {
        self.client.send(message).await
    }

    /// See [`Client::send_uncompressed`].
    ///
    /// # Errors
    /// As for [`Client::send`].
    ///
    /// # Cancel safety
    /// As for [`Client::send`].
    pub async fn send_uncompressed(&self, message: impl Into<Message>) -> Result<(), SendError> {
        self.client.send_uncompressed(message).await
    }

    /// See [`Client::try_send`].
    ///
    /// # Errors
    /// As for [`Client::try_send`].
    pub fn try_send(&self, message: impl Into<Message>) -> Result<(), SendError> {
        self.client.try_send(message)
    }

    /// See [`Client::try_send_uncompressed`].
    ///
    /// # Errors
    /// As for [`Client::try_send`].
    pub fn try_send_uncompressed(&self, message: impl Into<Message>) -> Result<(), SendError> {
        self.client.try_send_uncompressed(message)
    }

    /// See [`Client::close`].
    ///
    /// # Errors
    /// As for [`Client::close`].
    pub fn close(&self, code: CloseCode, reason: &str) -> Result<(), CloseError> {
        self.client.close(code, reason)
    }

    /// See [`Client::deflate`].
    pub fn deflate(&self) -> Option<&DeflateParams> {
        self.client.deflate()
    }

    /// See [`Client::legacy_draft`].
    pub fn legacy_draft(&self) -> Option<Draft> {
        self.client.legacy_draft()
    }

    /// See [`Client::state`].
    pub fn state(&self) -> ReadyState {
        self.client.state()
    }

    /// See [`Client::state_changes`].
    pub fn state_changes(&self) -> watch::Receiver<ReadyState> {
        self.client.state_changes()
    }

    /// See [`Client::buffered_amount`].
    pub fn buffered_amount(&self) -> usize {
        self.client.buffered_amount()
    }

    /// See [`Client::dropped`].
    pub fn dropped(&self) -> u64 {
        self.client.dropped()
    }

    /// See [`Client::disconnect`].
    pub fn disconnect(&self) -> Option<Disconnect> {
        self.client.disconnect()
    }

    /// See [`Client::closed`].
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn closed(&self) -> Disconnect {
        self.client.closed().await
    }
}

/// The messages, then how the connection ended ([`Event::Close`]), then
/// `None`.
impl Stream for Connection {
    type Item = Event;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.get_mut().poll_event(cx)
    }
}

/// As [`Client`]'s.
impl Sink<Message> for Connection {
    type Error = SendError;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), SendError>> {
        Pin::new(&mut self.get_mut().client).poll_ready(cx)
    }

    fn start_send(self: Pin<&mut Self>, item: Message) -> Result<(), SendError> {
        Pin::new(&mut self.get_mut().client).start_send(item)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), SendError>> {
        Pin::new(&mut self.get_mut().client).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), SendError>> {
        Pin::new(&mut self.get_mut().client).poll_close(cx)
    }
}

/// The reading half of a [`Connection`] ([`Connection::split`]): a
/// `Stream` of [`Event`]s and [`ReadHalf::recv`].
pub struct ReadHalf {
    conn: Connection,
}

impl ReadHalf {
    /// See [`Connection::recv`].
    ///
    /// # Cancel safety
    /// Cancel safe: a message is removed only when it is returned.
    pub async fn recv(&mut self) -> Option<Message> {
        self.conn.recv().await
    }

    /// See [`Connection::rate_limited`].
    pub fn rate_limited(&self) -> bool {
        self.conn.rate_limited()
    }

    /// The connection's handle.
    pub fn client(&self) -> &Client {
        &self.conn.client
    }
}

/// As [`Connection`]'s.
impl Stream for ReadHalf {
    type Item = Event;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.get_mut().conn.poll_event(cx)
    }
}

/// The handler is done with the connection: the driver takes what arrives
/// from now on (completing the close handshake), and a connection still
/// open is closed with 1000 (1011 if the handler is panicking).
impl Drop for Connection {
    fn drop(&mut self) {
        let mut inner = self.client.shared.lock();
        inner.receiver = Receiver::Driver;
        while let Some(event) = inner.proto.poll_event() {
            if matches!(event, wharf_proto::Event::Close(_)) {
                inner.publish_state();
            }
        }
        // The driver may be paused on the events just taken, or have a
        // close echo to write, or input left behind them to parse.
        inner.wake_driver();
        if inner.proto.state() == State::Open && inner.ended.is_none() {
            // Dropped while its handler unwinds from a panic: the server
            // failed, not the conversation.
            let _ = if std::thread::panicking() {
                inner
                    .proto
                    .close(CloseCode::INTERNAL_ERROR, "internal error")
            } else {
                inner.proto.close(CloseCode::NORMAL, "")
            };
            inner.wake_driver();
            inner.publish_state();
        }
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("id", &self.id())
            .field("peer", &self.peer_addr())
            .field("path", &self.path())
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Connection").field(&self.client).finish()
    }
}

impl fmt::Debug for ReadHalf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ReadHalf").field(&self.conn.client).finish()
    }
}
#[cfg(test)]
mod tests {
    use super::{Info, Peer};

    #[test]
    fn the_request_target_and_subprotocol_survive_their_one_string() {
        let peer = "127.0.0.1:1".parse().unwrap();
        for (target, protocol) in [
            ("/", None),
            ("/", Some("chat")),
            ("/?", None),
            ("/a/b?c=d", None),
            ("/a/b?c=d", Some("v2.chat")),
        ] {
            let info = Info::new(
                peer,
                target.into(),
                protocol,
                None,
                http::Extensions::new(),
                None,
                None,
                false,
            );
            assert_eq!((info.target(), info.protocol()), (target, protocol));
        }
    }

    #[test]
    fn a_peer_address_survives_its_compact_form() {
        for addr in [
            "127.0.0.1:8080",
            "[::1]:443",
            "[fe80::1%7]:9",
            "[::ffff:10.0.0.1]:1",
            "255.255.255.255:65535",
        ] {
            let addr: std::net::SocketAddr = addr.parse().unwrap();
            assert_eq!(Peer::new(addr).addr(), addr);
        }
    }
}
