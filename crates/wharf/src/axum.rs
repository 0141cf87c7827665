//! axum integration (feature `axum`): [`WebSocketUpgrade`], an extractor in
//! the style of axum's own, whose connections are wharf's: in the server's
//! [`Hub`](crate::Hub) (ids, rooms, broadcasts), with its settings (limits,
//! deflate, keepalive, backpressure, rate limit, caps, counters).
//!
//! The extractor finds the server through the [`Endpoint`] in the
//! request's extensions:
//! - a `Router` served by wharf ([`Server::on_request_service`]) needs
//!   nothing more: wharf puts it there, and hands the router the upgrades
//!   that no route of its own ([`Server::route`]) or
//!   [`Server::on_connection`] takes;
//! - a `Router` served by `axum::serve` gets it from a layer:
//!   `.layer(axum::Extension(server.endpoint()))`, where `server` is the
//!   configured [`Server`] (which need not serve anything itself). Serve
//!   with `into_make_service_with_connect_info::<SocketAddr>()` for the
//!   connection caps to see the client's address.
//!
//! ```no_run
//! use axum::Router;
//! use axum::response::Response;
//! use axum::routing::get;
//! use wharf::axum::WebSocketUpgrade;
//!
//! async fn chat(upgrade: WebSocketUpgrade) -> Response {
//!     upgrade.on_upgrade(|mut conn| async move {
//!         conn.join("chat");
//!         while let Some(msg) = conn.recv().await {
//!             conn.hub().publish("chat", msg);
//!         }
//!     })
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let app = Router::new().route("/chat", get(chat));
//!
//! // Served by wharf: nothing to set up.
//! let server = wharf::Server::new().on_request_service(app.clone());
//! # let _ = server;
//!
//! // Or served by axum: the server's endpoint as an extension.
//! let server = wharf::Server::new().max_backpressure(256 << 10);
//! let app = app.layer(axum::Extension(server.endpoint()));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3400").await?;
//! axum::serve(listener, app).await?;
//! # Ok(())
//! # }
//! ```
//!
//! [`Server`]: crate::Server
//! [`Server::on_request_service`]: crate::Server::on_request_service
//! [`Server::route`]: crate::Server::route
//! [`Server::on_connection`]: crate::Server::on_connection

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use ::axum::extract::{ConnectInfo, FromRequestParts};
use ::axum::response::{IntoResponse, Response};
use http::StatusCode;
use http::request::Parts;

use hyper::upgrade::OnUpgrade;

use crate::conn::Connection;
use crate::forwarded::Remote;
use crate::server::{Accepted, Asked, ConnectionHandler, Endpoint, Via};
use crate::upgrade::Refuse;

/// An extractor for a WebSocket upgrade request, decided by the server
/// whose [`Endpoint`] the request carries (see the [module](self) docs):
/// a request that is not a valid handshake, or that the server refuses
/// (allowed origins and hosts, its upgrade hook, connection caps), is
/// rejected with the refusal's status and one-line reason.
///
/// Answer it with [`WebSocketUpgrade::on_upgrade`]; choose a subprotocol
/// first if need be.
pub struct WebSocketUpgrade {
    accepted: Accepted,
}

impl WebSocketUpgrade {
    /// The subprotocols the client offered, in its order of preference.
    pub fn offered_protocols(&self) -> &[String] {
        self.accepted.offered()
    }

    /// The subprotocol that will be agreed: the first offered one of the
    /// server's [`Server::protocols`](crate::Server::protocols), or the
    /// upgrade hook's choice, or the handler's since.
    pub fn protocol(&self) -> Option<&str> {
        self.accepted.protocol()
    }

    /// Chooses the subprotocol (`None` for none). Returns `false`,
    /// changing nothing, if the client did not offer it.
    pub fn set_protocol(&mut self, protocol: Option<&str>) -> bool {
        self.accepted.set_protocol(protocol)
    }

    /// Chooses the first subprotocol, in the client's order of preference,
    /// that is one of `supported`; none if none is (as axum's extractor
    /// does).
    #[must_use]
    pub fn protocols<I, P>(mut self, supported: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: AsRef<str>,
    {
        let supported: Vec<P> = supported.into_iter().collect();
        let chosen = self
            .accepted
            .offered()
            .iter()
            .find(|o| supported.iter().any(|s| s.as_ref() == o.as_str()))
            .cloned();
        self.accepted.set_protocol(chosen.as_deref());
        self
    }

    /// The client's address, when known before the upgrade: served by
    /// wharf (the client a trusted proxy vouched for), or by axum with
    /// `ConnectInfo<SocketAddr>`.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.accepted.peer_addr()
    }

    /// Attaches data to the connection, read back with
    /// [`Client::data`](crate::Client::data).
    pub fn insert<T: Clone + Send + Sync + 'static>(&mut self, data: T) {
        self.accepted.insert(data);
    }

    /// The `101` response to return from the handler; once it is sent,
    /// `handler` runs on the [`Connection`], registered in the server's
    /// hub, on the connection's own task (with its driver, as a
    /// [`Server::on_connection`](crate::Server::on_connection) handler
    /// does).
    pub fn on_upgrade<F, Fut>(self, handler: F) -> Response
    where
        F: FnOnce(Connection) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        // A connection handler is `Fn`: this one runs once.
        let once = Mutex::new(Some(handler));
        let handler = ConnectionHandler::Task(Arc::new(move |conn| {
            match once.lock().unwrap_or_else(PoisonError::into_inner).take() {
                Some(handler) => Box::pin(handler(conn)),
                None => Box::pin(async {}),
            }
        }));
        let (response, start) = self.accepted.respond(Some(handler));
        // Lives until hyper hands the socket back.
        tokio::spawn(async move {
            if let Err(e) = start.await {
                tracing::debug!(error = %e, "upgrade failed");
            }
        });
        response.map(|()| ::axum::body::Body::empty())
    }
}

impl<S: Send + Sync> FromRequestParts<S> for WebSocketUpgrade {
    type Rejection = Refuse;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Refuse> {
        let Some(endpoint) = parts.extensions.get::<Endpoint>().cloned() else {
            return Err(Refuse::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "no wharf::Endpoint for this request: serve the router with \
                 Server::on_request_service, or add .layer(Extension(server.endpoint()))",
            ));
        };
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|info| info.0);
        let remote = parts.extensions.get::<Remote>().cloned();
        let on_upgrade = parts.extensions.remove::<OnUpgrade>();
        let asked = Asked::new(&parts.method, &parts.uri, parts.version, &parts.headers)
            .with(remote, on_upgrade)
            .or_peer(peer);
        let accepted = endpoint.accept(asked, Via::Application).await?;
        Ok(Self { accepted })
    }
}

impl fmt::Debug for WebSocketUpgrade {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebSocketUpgrade")
            .field("offered", &self.offered_protocols())
            .field("protocol", &self.protocol())
            .finish_non_exhaustive()
    }
}

/// A refusal as axum's response: its status, one-line reason and headers.
impl IntoResponse for Refuse {
    fn into_response(self) -> Response {
        // The inherent `Refuse::into_response`, not this one.
        Self::into_response(self).map(::axum::body::Body::new)
    }
}
