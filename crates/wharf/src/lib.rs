//! # wharf
//!
//! A strict, fast WebSocket server on tokio and hyper: plain HTTP requests
//! and WebSocket upgrades on one port, a connection handle per client.
//! The protocol itself lives in the sans-IO `wharf-proto` crate.
//!
//! ```no_run
//! # async fn run() -> Result<(), wharf::Error> {
//! wharf::Server::new()
//!     .on_request(|_req| async { http::Response::new("okay".into()) })
//!     .on_connection(|mut conn| async move {
//!         while let Some(msg) = conn.recv().await {
//!             let _ = conn.send(msg);
//!         }
//!     })
//!     .listen("127.0.0.1:3400")
//!     .await
//! # }
//! ```

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
