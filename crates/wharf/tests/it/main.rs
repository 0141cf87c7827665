//! Integration tests for `wharf`: one binary, every test against a real
//! server on a loopback port and a real peer (tokio-tungstenite, or a raw TCP
//! client writing bytes by hand), every wait bounded by a timeout.

mod auto_traits;
#[cfg(feature = "axum")]
mod axum_app;
mod backpressure;
mod bounds;
mod chat_util;
mod client;
mod deflate;
mod echo;
mod http;
mod http_limits;
mod hub;
mod hub_flood;
mod keepalive;
mod legacy;
mod limits;
mod on_message;
mod policy;
mod protocol;
mod rate_limit;
mod remote;
mod routes;
mod shutdown;
mod slow_client;
mod stream;
#[cfg(feature = "tls")]
mod tls;
#[cfg(unix)]
mod unix;
mod upgrade;
mod upgrade_hook;
mod util;
mod workers;
