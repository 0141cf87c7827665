#![doc = include_str!("../../../README.md")]

mod body;
mod conn;
pub mod docs;
mod error;
mod server;

pub use body::Body;
pub use conn::{Connection, ReadyState};
pub use error::{Disconnect, Error, SendError};
pub use server::Server;
pub use wharf_proto::{CloseCode, CloseFrame, Limits, Message, ProtocolError, Utf8Bytes};
pub use {http, hyper::body::Incoming};
