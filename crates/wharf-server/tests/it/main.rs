//! Integration tests for the `wharf` binary: one test binary; the server
//! runs in-process on `127.0.0.1:0` (or, for the command line, as the real
//! binary), the peers are wharf's own client and a raw TCP client, with
//! independent ones beside them (tokio-tungstenite in `chat`, Python
//! `websockets` in `rate_limit`), and every wait is bounded.

mod chat;
mod cluster;
mod config;
mod edge;
mod metrics;
mod modes;
mod policy;
mod rate_limit;
mod shutdown;
mod static_files;
mod util;
