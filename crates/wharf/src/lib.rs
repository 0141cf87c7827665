#![doc = include_str!("../../../README.md")]

#[cfg(feature = "axum")]
pub mod axum;
mod body;
mod caps;
mod client;
mod conn;
pub mod docs;
mod error;
mod forwarded;
#[cfg(test)]
mod fuzz_seeds;
mod head;
mod hub;
mod legacy;
mod listener;
mod policy;
mod proxy_protocol;
#[cfg(feature = "redis")]
pub mod redis;
mod server;
mod stats;
#[cfg(feature = "tls")]
pub mod tls;

/// Scale-out: the seam between a [`Hub`] and a message bus shared by many
/// nodes, and what crosses it. The Redis implementation is
/// `wharf::redis::Redis` (feature `redis`).
pub mod backplane {
    pub use crate::hub::backplane::{Backplane, Inbox, LOCAL_BITS, Link, Status, Target, node_of};
}
mod upgrade;
mod worker;

pub use body::Body;
#[doc(hidden)]
pub use client::fuzz_response_head;
pub use client::{ConnectError, ConnectErrorKind, Connector, connect};
pub use conn::{Client, Connection, Event, ReadHalf, ReadyState, SlowClient};
pub use error::{CloseError, Disconnect, Error, ErrorKind, SendError};
#[doc(hidden)]
pub use forwarded::fuzz_forwarded;
pub use forwarded::{Cidr, CidrError, ForwardedHeader, Remote};
#[doc(hidden)]
pub use head::fuzz_request_head;
pub use hub::{Backplane, Departure, Hub, Member};
pub use listener::Listener;
pub use policy::{Hosts, InvalidPattern, Origins};
#[doc(hidden)]
pub use proxy_protocol::fuzz_proxy_header;
pub use server::{Endpoint, Server};
pub use stats::{Snapshot, Stats};
pub use upgrade::{PendingConnection, Refuse, Upgrade};
pub use wharf_proto::{
    CloseCode, CloseFrame, DeflateConfig, DeflateParams, Draft, Limits, Message, ProtocolError,
    RateAction, RateLimit, RateLimiter, Utf8Bytes,
};
pub use {http, hyper::body::Incoming};
