//! # wharf-proto
//!
//! The sans-IO core of wharf: RFC 6455 framing, masking, UTF-8 validation,
//! fragmentation, the close handshake, ping/pong and opening-handshake
//! validation, as a deterministic state machine.
//!
//! It does **no I/O**, reads **no clock**, draws **no randomness** (client mask
//! keys come from a source you inject) and holds at most what its [`Limits`]
//! allow. It contains no `unsafe` code. The `wharf` crate drives it on tokio.
//!
//! ```text
//!  socket ──bytes──► receive(&mut BytesMut) ──► poll_event()  ──► application
//!    ▲                                                                 │
//!    └──write_vectored── poll_transmit() ◄── send / ping / close ◄─────┘
//!                            (pongs and the close echo are queued here too)
//! ```
//!
//! ```
//! use bytes::BytesMut;
//! use wharf_proto::{Connection, Event, Limits, Message};
//!
//! let mut server = Connection::server(Limits::default());
//! // A masked text frame "Hello" (RFC 6455 §5.7).
//! let mut input = BytesMut::from(&[0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58][..]);
//! server.receive(&mut input).unwrap();
//! let Some(Event::Message(Message::Text(text))) = server.poll_event() else { panic!() };
//! assert_eq!(text, "Hello");
//! server.send(Message::Text(text)).unwrap();
//! let frame = server.poll_transmit().unwrap();
//! assert_eq!(frame.to_vec(), b"\x81\x05Hello");
//! ```
//!
//! permessage-deflate (RFC 7692) is built in: negotiate it with
//! [`Handshake::negotiate_deflate`] and turn it on with
//! [`Connection::with_deflate`]. The seed's pre-standard drafts (hixie-75
//! and -76) are in [`legacy`], opt-in: [`Connection::with_legacy`]. There
//! are no cargo features.

#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod close;
mod connection;
pub mod deflate;
mod error;
pub mod frame;
pub mod handshake;
pub mod legacy;
mod limits;
pub mod mask;
mod message;
mod rate;
mod timer;
mod utf8;

pub use close::{CloseCode, CloseFrame, MAX_REASON_LEN};
pub use connection::{Connection, Event, Inflation, MAX_EVENTS, MAX_PONGS, Role, SendError, State};
pub use deflate::{DeflateConfig, DeflateParams};
pub use error::ProtocolError;
pub use frame::{OpCode, Transmit};
pub use handshake::{Accepted, ClientHandshake, Handshake, Reject, ResponseError};
pub use legacy::{Draft, LegacyHandshake};
pub use limits::Limits;
pub use message::{Message, Utf8Bytes};
pub use rate::{RateAction, RateLimit, RateLimiter};
pub use timer::{Expired, Timeouts};
pub use utf8::{InvalidUtf8, Utf8Validator};

#[cfg(test)]
mod tests;
