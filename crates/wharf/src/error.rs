//! Errors, and why connections end.

use std::io;

use wharf_proto::{CloseFrame, ProtocolError};

/// An error from the server itself (not from one connection).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Binding or configuring the listening socket failed.
    #[error("cannot listen")]
    Listen(#[source] io::Error),
    /// Starting a worker thread or its runtime failed.
    #[error("cannot start a worker")]
    Runtime(#[source] io::Error),
    /// The HTTP connection ended before a `101` upgrade completed.
    #[error("the upgrade did not complete")]
    Upgrade(#[source] hyper::Error),
}

/// Why a send was refused.
#[derive(Clone, Copy, Debug, Eq, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The close handshake has begun or the connection has ended.
    #[error("the connection is closing or closed")]
    Closed,
    /// The message would have pushed the write queue past
    /// `max_backpressure`; the connection is being closed with 1008.
    #[error("the send queue is full; the connection is being closed")]
    Backpressure,
    /// The message would have pushed the write queue past
    /// `max_backpressure` and was dropped (`SlowClient::Drop`).
    #[error("the send queue is full; the message was dropped")]
    Dropped,
    /// A ping or pong payload was over 125 bytes.
    #[error("control frame payload over 125 bytes")]
    ControlTooLong,
    /// The close code may not be sent.
    #[error("this close code may not be sent")]
    CodeNotSendable,
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
            wharf_proto::SendError::CodeNotSendable(_) => Self::CodeNotSendable,
            wharf_proto::SendError::NotInDraft => Self::NotInDraft,
            _ => Self::Closed,
        }
    }
}

/// How a connection ended.
#[derive(Clone, Debug, Eq, PartialEq)]
#[non_exhaustive]
pub enum Disconnect {
    /// The peer sent a close frame (first, or in answer to ours).
    Closed(CloseFrame),
    /// We failed the connection for a protocol violation or exceeded limit,
    /// sending the matching close code.
    Protocol(ProtocolError),
    /// The transport ended without a close handshake, or failed.
    Reset,
    /// The peer did not answer our close frame in time.
    TimedOut,
}
