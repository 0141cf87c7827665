//! Errors, and why connections end.

use std::error::Error as StdError;
use std::fmt;

use wharf_proto::{CloseCode, CloseFrame, ProtocolError};

/// An error from the server itself (not from one connection): what failed,
/// as an [`ErrorKind`], and the underlying cause as its
/// [`source`](StdError::source).
///
/// ```no_run
/// # async fn run() {
/// if let Err(e) = wharf::Server::new().listen("127.0.0.1:80").await {
///     if e.kind() == wharf::ErrorKind::Listen {
///         eprintln!("{e}: {:?}", e.source_ref()); // cannot listen: Some(Os { code: 13, .. })
///     }
/// }
/// # }
/// ```
pub struct Error {
    kind: ErrorKind,
    source: Option<Box<dyn StdError + Send + Sync>>,
}

/// What kind of operation an [`Error`] comes from.
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Binding or configuring the listening socket failed.
    Listen,
    /// Starting a worker thread or its runtime failed.
    Runtime,
    /// The HTTP connection ended before a `101` upgrade completed.
    Upgrade,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, source: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        Self {
            kind,
            source: Some(source.into()),
        }
    }

    /// Wraps a cause under `kind`: for `map_err`.
    pub(crate) fn with(kind: ErrorKind) -> impl FnOnce(std::io::Error) -> Self {
        move |e| Self::new(kind, e)
    }

    /// What failed.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The underlying cause, if any (an I/O error, say): the same as
    /// [`source`](StdError::source), without importing the trait.
    pub fn source_ref(&self) -> Option<&(dyn StdError + Send + Sync + 'static)> {
        self.source.as_deref()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.kind {
            ErrorKind::Listen => "cannot listen",
            ErrorKind::Runtime => "cannot start a worker",
            ErrorKind::Upgrade => "the upgrade did not complete",
        })
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.kind);
        if let Some(source) = &self.source {
            d.field("source", source);
        }
        d.finish()
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}

/// Why a message was not queued.
#[derive(Clone, Copy, Debug, Eq, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The close handshake has begun or the connection has ended.
    #[error("the connection is closing or closed")]
    Closed,
    /// `try_send`: the message would have pushed the write queue past
    /// `max_backpressure`; the connection is being closed with 1008
    /// ([`SlowClient::Close`](crate::SlowClient::Close)).
    #[error("the send queue is full; the connection is being closed")]
    Backpressure,
    /// `try_send`: the message would have pushed the write queue past
    /// `max_backpressure` and was dropped
    /// ([`SlowClient::Drop`](crate::SlowClient::Drop)).
    #[error("the send queue is full; the message was dropped")]
    Dropped,
    /// A ping or pong payload was over 125 bytes.
    #[error("control frame payload over 125 bytes")]
    ControlTooLong,
    /// A binary message to a connection in a legacy draft
    /// ([`Client::legacy_draft`](crate::Client::legacy_draft)), which
    /// carries text only; counted as skipped.
    #[error("a legacy-draft connection carries text messages only")]
    NotInDraft,
}

impl From<wharf_proto::SendError> for SendError {
    fn from(e: wharf_proto::SendError) -> Self {
        match e {
            wharf_proto::SendError::ControlTooLong => Self::ControlTooLong,
            wharf_proto::SendError::NotInDraft => Self::NotInDraft,
            _ => Self::Closed,
        }
    }
}

/// Why [`Client::close`](crate::Client::close) did not start a close
/// handshake.
#[derive(Clone, Copy, Debug, Eq, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum CloseError {
    /// The close handshake had already begun (from either side), or the
    /// connection has ended.
    #[error("the connection is already closing or closed")]
    AlreadyClosing,
    /// The code may not be sent in a close frame (1005, 1006, 1015, or
    /// out of the ranges RFC 6455 §7.4 allows).
    #[error("close code {0} may not be sent")]
    CodeNotSendable(CloseCode),
}

impl From<wharf_proto::SendError> for CloseError {
    fn from(e: wharf_proto::SendError) -> Self {
        match e {
            wharf_proto::SendError::CodeNotSendable(code) => Self::CodeNotSendable(code),
            _ => Self::AlreadyClosing,
        }
    }
}

/// How a connection ended: the last item of a [`Connection`](crate::Connection)'s
/// stream ([`Event::Close`](crate::Event::Close)), and
/// [`Client::disconnect`](crate::Client::disconnect).
///
/// A normal close is not an error: [`Disconnect::is_normal`] tells a
/// completed close handshake with 1000 or 1001 from the rest.
#[derive(Clone, Debug, Eq, PartialEq)]
#[non_exhaustive]
pub enum Disconnect {
    /// The peer started the close handshake with this frame, and it was
    /// answered.
    Peer(CloseFrame),
    /// This side started the close handshake with this frame
    /// ([`Client::close`](crate::Client::close), the `Connection` dropped,
    /// the server shutting down, the slow-client policy), and the peer
    /// answered.
    Local(CloseFrame),
    /// This side failed the connection for a protocol violation or an
    /// exceeded limit, sending the matching close code.
    Protocol(ProtocolError),
    /// The transport ended without a close handshake, or failed.
    Reset,
    /// A deadline passed: the peer did not answer a ping or our close
    /// frame in time, or did not read what was written to it.
    TimedOut,
}

impl Disconnect {
    /// Whether the close handshake completed with 1000 (normal) or 1001
    /// (going away), from either side.
    pub fn is_normal(&self) -> bool {
        match self {
            Self::Peer(f) | Self::Local(f) => {
                matches!(f.code, CloseCode::NORMAL | CloseCode::GOING_AWAY)
            }
            _ => false,
        }
    }

    /// The close frame that started the close handshake, from either side.
    pub fn close_frame(&self) -> Option<&CloseFrame> {
        match self {
            Self::Peer(f) | Self::Local(f) => Some(f),
            _ => None,
        }
    }
}

impl fmt::Display for Disconnect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Peer(c) => write!(f, "closed by the peer with {} {:?}", c.code, &*c.reason),
            Self::Local(c) => write!(f, "closed by this side with {} {:?}", c.code, &*c.reason),
            Self::Protocol(e) => write!(f, "failed: {e}"),
            Self::Reset => f.write_str("reset without a close handshake"),
            Self::TimedOut => f.write_str("timed out"),
        }
    }
}
