//! The connection handle an application holds, and the state it shares with
//! the connection's driver task.
//!
//! The driver (`task.rs`) owns the socket; the handle only touches the shared
//! state under a short, never-awaited lock. Sending never blocks: a message
//! is encoded into the write queue, whose size in bytes is bounded by
//! `max_backpressure` (see [`crate::docs::limits`]).

pub(crate) mod task;

use std::fmt;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Waker};

use http::{HeaderMap, Uri};
use wharf_proto::{CloseCode, CloseFrame, Event, Message, ProtocolError, State};

use crate::error::{Disconnect, SendError};

/// One WebSocket connection, as its handler sees it.
///
/// Dropping the `Connection` starts the close handshake with 1000 (normal)
/// if it is still open; queued messages are written first.
pub struct Connection {
    shared: Arc<Shared>,
    info: Arc<Info>,
}

/// What the upgrade request said, kept for the connection's lifetime.
#[derive(Debug)]
pub(crate) struct Info {
    pub(crate) id: u64,
    pub(crate) peer: SocketAddr,
    pub(crate) uri: Uri,
    pub(crate) headers: HeaderMap,
    pub(crate) protocol: Option<String>,
}

/// The state shared by the handle and the driver.
pub(crate) struct Shared {
    inner: Mutex<Inner>,
    max_backpressure: usize,
}

pub(crate) struct Inner {
    /// The core. Its event queue is the inbox: `recv` polls it, and the
    /// driver reads no more from the socket until it is empty.
    pub(crate) proto: wharf_proto::Connection,
    /// Bytes the driver took from the core and has not finished writing.
    pub(crate) writing: usize,
    pub(crate) recv_waker: Option<Waker>,
    pub(crate) driver_waker: Option<Waker>,
    /// Why the connection ended, once the driver is done.
    pub(crate) ended: Option<Disconnect>,
}

impl Shared {
    pub(crate) fn new(proto: wharf_proto::Connection, max_backpressure: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                proto,
                writing: 0,
                recv_waker: None,
                driver_waker: None,
                ended: None,
            }),
            max_backpressure,
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while the lock is held cannot leave `Inner` half-updated in
        // a way that matters more than losing the connection, so recover it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
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

    fn buffered(&self) -> usize {
        self.proto.buffered_amount() + self.writing
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

impl Connection {
    pub(crate) fn new(shared: Arc<Shared>, info: Arc<Info>) -> Self {
        Self { shared, info }
    }

    /// A process-wide unique id, assigned in accept order.
    pub fn id(&self) -> u64 {
        self.info.id
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.info.peer
    }

    /// The upgrade request's URI.
    pub fn uri(&self) -> &Uri {
        &self.info.uri
    }

    /// The upgrade request's path.
    pub fn path(&self) -> &str {
        self.info.uri.path()
    }

    /// The upgrade request's query string, if any.
    pub fn query(&self) -> Option<&str> {
        self.info.uri.query()
    }

    /// The upgrade request's headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.info.headers
    }

    /// The subprotocol agreed in the handshake, if any.
    pub fn protocol(&self) -> Option<&str> {
        self.info.protocol.as_deref()
    }

    /// Receives the next text or binary message; `None` once the connection
    /// is closed, after which [`Connection::close_frame`] and
    /// [`Connection::disconnect`] say how. Pings are answered automatically
    /// and are not returned.
    ///
    /// # Cancel safety
    /// Cancel safe: a message is removed only when it is returned.
    pub async fn recv(&mut self) -> Option<Message> {
        poll_fn(|cx| {
            let mut inner = self.shared.lock();
            while let Some(event) = inner.proto.poll_event() {
                if let Event::Message(m @ (Message::Text(_) | Message::Binary(_))) = event {
                    return Poll::Ready(Some(m));
                }
            }
            // The queue is empty: the driver may read again, and may have a
            // close frame to write.
            inner.wake_driver();
            if inner.ended.is_some() || inner.proto.state() == State::Closed {
                return Poll::Ready(None);
            }
            match &inner.recv_waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => inner.recv_waker = Some(cx.waker().clone()),
            }
            Poll::Pending
        })
        .await
    }

    /// Queues a message; it never waits. The message is encoded here and
    /// written by the connection's driver, in order.
    ///
    /// # Errors
    /// [`SendError::Closed`] once the close handshake has begun;
    /// [`SendError::Backpressure`] when the queue would exceed
    /// `max_backpressure`, in which case the connection is closed with 1008.
    pub fn send(&self, message: impl Into<Message>) -> Result<(), SendError> {
        let message = message.into();
        let mut inner = self.shared.lock();
        let buffered = inner.buffered();
        if buffered > 0 && buffered + message.len() > self.shared.max_backpressure {
            let _ = inner.proto.close(
                CloseCode::POLICY_VIOLATION,
                "slow consumer: send queue full",
            );
            inner.wake_driver();
            return Err(SendError::Backpressure);
        }
        inner.proto.send(message)?;
        inner.wake_driver();
        Ok(())
    }

    /// Starts the close handshake; [`Connection::recv`] returns `None` once
    /// the peer answers (or the close timeout passes).
    ///
    /// # Errors
    /// If the close handshake had already begun, or `code` may not be sent
    /// (1005, 1006, 1015, out of range).
    pub fn close(&self, code: CloseCode, reason: &str) -> Result<(), SendError> {
        let mut inner = self.shared.lock();
        inner.proto.close(code, reason)?;
        inner.wake_driver();
        Ok(())
    }

    /// The ready state.
    pub fn state(&self) -> ReadyState {
        let inner = self.shared.lock();
        if inner.ended.is_some() {
            return ReadyState::Closed;
        }
        match inner.proto.state() {
            State::Open => ReadyState::Open,
            State::Closing => ReadyState::Closing,
            State::Closed => ReadyState::Closed,
        }
    }

    /// Bytes queued and not yet written to the socket.
    pub fn buffered_amount(&self) -> usize {
        self.shared.lock().buffered()
    }

    /// The peer's close frame, once it has sent one.
    pub fn close_frame(&self) -> Option<CloseFrame> {
        self.shared.lock().proto.peer_close().cloned()
    }

    /// The protocol violation that failed the connection, if one did.
    pub fn protocol_error(&self) -> Option<ProtocolError> {
        self.shared.lock().proto.error().cloned()
    }

    /// Why the connection ended, once it has.
    pub fn disconnect(&self) -> Option<Disconnect> {
        self.shared.lock().ended.clone()
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        let mut inner = self.shared.lock();
        if inner.proto.state() == State::Open && inner.ended.is_none() {
            let _ = inner.proto.close(CloseCode::NORMAL, "");
            inner.wake_driver();
        }
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("id", &self.info.id)
            .field("peer", &self.info.peer)
            .field("path", &self.info.uri.path())
            .finish_non_exhaustive()
    }
}
