//! [`Endpoint`]: a server's handle for applications that route requests
//! themselves (axum, hyper). Their upgrades take the path of an upgrade
//! that hyper read on wharf's own listener (`Server::accept`): the caps,
//! `decide`, the `101` from `hyper_response`, then `start` once hyper hands
//! the socket back; only the connection's handler is the application's.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, Version, header};
use hyper::upgrade::{OnUpgrade, Upgraded};
use wharf_proto::handshake;

use super::{Answer, ConnectionHandler, Decision, Meta, Server, Via, caps};
use crate::body::Body;
use crate::conn::Connection;
use crate::conn::task::Settings;
use crate::error::{Error, ErrorKind};
use crate::forwarded::Remote;
use crate::hub::Hub;
use crate::legacy::Opening;
use crate::stats::Stats;
use crate::upgrade::{PendingConnection, Refuse, validate_parts};

/// Starts a connection on a socket that hyper handed back: `start::<S>`,
/// for the stream type `S` of the listener that accepted it.
pub(super) type Starter =
    fn(&Arc<Settings>, Upgraded, Meta, Option<&ConnectionHandler>) -> Option<Connection>;

/// A handle on a [`Server`] for applications that route requests
/// themselves: a WebSocket upgrade made through it is decided as the
/// server's own are (handshake checks, allowed origins and hosts, the
/// upgrade hook, connection caps) and its connection gets the server's
/// settings (limits, deflate, keepalive, backpressure, rate limit) and
/// joins the server's [`Hub`]: it has an id from it, joins its rooms and
/// receives its broadcasts.
///
/// Where to get one:
/// - a request that wharf hands to a request service
///   ([`Server::on_request_service`]) carries one in its extensions;
/// - for a hyper or axum server of the application's own
///   (`axum::serve`), [`Server::endpoint`], then put it where handlers find
///   it (with axum: `.layer(axum::Extension(endpoint))`). Such a server has
///   its own accept loop: wharf's handshake timeout, PROXY protocol, TLS
///   and trusted proxies do not apply to it, and its connections are
///   counted under the caps only when the client's address is known
///   before the upgrade (axum's `ConnectInfo`).
///
/// Cloning is cheap (a reference count).
#[derive(Clone)]
pub struct Endpoint {
    server: Arc<Server>,
    start: Starter,
}

impl Endpoint {
    pub(super) fn new(server: Arc<Server>, start: Starter) -> Self {
        Self { server, start }
    }

    /// The server's hub: its connections, rooms and broadcasts.
    pub fn hub(&self) -> Hub {
        self.server.hub()
    }

    /// The server's counters.
    pub fn stats(&self) -> Stats {
        self.server.stats()
    }

    /// Upgrades a request that the application routed itself (in a hyper
    /// service or an axum handler), into this server's hub and with its
    /// settings; the upgrade hook runs, but the connection is the
    /// caller's: it awaits the [`PendingConnection`] (after sending the
    /// response) and handles the [`Connection`] itself. RFC 6455 only:
    /// the pre-standard drafts go through wharf's own handlers.
    ///
    /// The request is read when this is called (hyper's upgrade handle is
    /// taken from it); the future owns what it needs.
    ///
    /// ```no_run
    /// # async fn service(mut req: http::Request<hyper::body::Incoming>) -> http::Response<wharf::Body> {
    /// let Some(endpoint) = req.extensions().get::<wharf::Endpoint>().cloned() else {
    ///     return http::Response::new("no wharf here".into());
    /// };
    /// match endpoint.upgrade(&mut req).await {
    ///     Ok((response, pending)) => {
    ///         tokio::spawn(async move {
    ///             if let Ok(mut conn) = pending.await {
    ///                 while let Some(msg) = conn.recv().await {
    ///                     let _ = conn.try_send(msg);
    ///                 }
    ///             }
    ///         });
    ///         response
    ///     }
    ///     Err(refusal) => refusal.into_response(),
    /// }
    /// # }
    /// ```
    ///
    /// # Errors
    /// If the request is not a valid WebSocket handshake, or the server
    /// refuses it (policy, upgrade hook, caps): the refusal (status and
    /// one-line reason); send [`Refuse::into_response`] instead.
    pub fn upgrade<B>(
        &self,
        req: &mut Request<B>,
    ) -> impl Future<Output = Result<(Response<Body>, PendingConnection), Refuse>> + Send + 'static
    {
        let on_upgrade = req.extensions_mut().remove::<OnUpgrade>();
        let remote = req.extensions().get::<Remote>().cloned();
        let asked = Asked::new(req.method(), req.uri(), req.version(), req.headers())
            .with(remote, on_upgrade);
        let endpoint = self.clone();
        async move {
            let accepted = endpoint.accept(asked, Via::Pending).await?;
            let (response, start) = accepted.respond(None);
            let inner = Box::pin(async move {
                let conn = start.await?;
                Ok(conn.expect("an RFC 6455 connection without a handler is returned"))
            });
            Ok((
                response.map(|()| Body::empty()),
                PendingConnection { inner },
            ))
        }
    }

    /// Decides an upgrade the application routed: the caps (when the
    /// client is known), then `decide`.
    pub(crate) async fn accept(&self, asked: Asked, via: Via) -> Result<Accepted, Refuse> {
        let upgrade = asked
            .head
            .headers
            .get_all(header::UPGRADE)
            .iter()
            .any(|v| handshake::lists_token(v.as_bytes(), "websocket"));
        if !upgrade {
            // Not an upgrade at all (which `decide` never sees): RFC 6455's
            // refusal, not a legacy draft's.
            let refuse = validate_parts(&asked.head).err().unwrap_or_else(|| {
                Refuse::new(StatusCode::BAD_REQUEST, "not a WebSocket upgrade request")
            });
            self.server
                .settings
                .stats
                .counters()
                .refused(refuse.status.as_u16(), &refuse.reason);
            return Err(refuse);
        }
        let Some(on_upgrade) = asked.on_upgrade else {
            // A refusal that says what is wrong with the request comes
            // first; a valid one cannot be upgraded on this connection.
            Opening::validate(&asked.head, false)?;
            return Err(Refuse::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "this connection cannot be upgraded (not served by hyper with upgrades)",
            ));
        };
        let slot = match &asked.remote {
            Some(remote) => Some(self.server.admit(remote).map_err(|refuse| {
                refuse.with_header(
                    header::RETRY_AFTER,
                    HeaderValue::from(caps::RETRY_AFTER_SECS),
                )
            })?),
            None => None,
        };
        let known = asked.remote.is_some();
        let remote = asked
            .remote
            .unwrap_or_else(|| Remote::direct(SocketAddr::from(([0, 0, 0, 0], 0))));
        match self.server.decide(asked.head, remote, via).await {
            Decision::Refuse(refuse) => Err(refuse),
            Decision::Accept(answer, mut meta) => {
                meta.slot = slot;
                if !known {
                    // The socket's peer, once hyper hands it back.
                    meta.remote = None;
                }
                Ok(Accepted {
                    #[cfg(feature = "axum")]
                    offered: answer.hs.offered(),
                    endpoint: self.clone(),
                    answer,
                    meta,
                    on_upgrade,
                })
            }
        }
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("hub", &self.server.settings.hub)
            .finish_non_exhaustive()
    }
}

/// What an upgrade the application routed needs from its request: a copy
/// of its head (for the upgrade hook), the client if wharf or the
/// application's server says who it is, and hyper's upgrade handle.
pub(crate) struct Asked {
    head: Parts,
    remote: Option<Remote>,
    on_upgrade: Option<OnUpgrade>,
}

impl Asked {
    /// A copy of a request's head.
    pub(crate) fn new(method: &Method, uri: &Uri, version: Version, headers: &HeaderMap) -> Self {
        let mut head = Request::new(());
        method.clone_into(head.method_mut());
        uri.clone_into(head.uri_mut());
        *head.version_mut() = version;
        headers.clone_into(head.headers_mut());
        Self {
            head: head.into_parts().0,
            remote: None,
            on_upgrade: None,
        }
    }

    /// With the client wharf resolved, and hyper's upgrade handle.
    pub(crate) fn with(mut self, remote: Option<Remote>, on_upgrade: Option<OnUpgrade>) -> Self {
        self.remote = remote;
        self.on_upgrade = on_upgrade;
        self
    }

    /// The client's address as the application's server reports it, when
    /// wharf's own [`Remote`] is not there.
    #[cfg(feature = "axum")]
    pub(crate) fn or_peer(mut self, peer: Option<SocketAddr>) -> Self {
        if self.remote.is_none() {
            self.remote = peer.map(Remote::direct);
        }
        self
    }
}

/// An upgrade the application routed, accepted: what the application may
/// still choose (subprotocol, data), then the `101` and the connection's
/// start ([`Accepted::respond`]).
pub(crate) struct Accepted {
    endpoint: Endpoint,
    answer: Answer,
    meta: Meta,
    on_upgrade: OnUpgrade,
    /// The subprotocols offered, for the application to choose from.
    #[cfg(feature = "axum")]
    offered: Vec<String>,
}

impl Accepted {
    #[cfg(feature = "axum")]
    /// The subprotocols the client offered, in its order of preference.
    pub(crate) fn offered(&self) -> &[String] {
        &self.offered
    }

    #[cfg(feature = "axum")]
    /// The subprotocol chosen so far (the server's list, the hook).
    pub(crate) fn protocol(&self) -> Option<&str> {
        self.meta.protocol.as_deref()
    }

    #[cfg(feature = "axum")]
    /// Chooses the subprotocol; `false`, changing nothing, if the client
    /// did not offer it.
    pub(crate) fn set_protocol(&mut self, protocol: Option<&str>) -> bool {
        match protocol {
            Some(p) if !self.offered.iter().any(|o| o == p) => false,
            p => {
                self.meta.protocol = p.map(str::to_owned);
                true
            }
        }
    }

    #[cfg(feature = "axum")]
    /// The client's address, if known before the upgrade.
    pub(crate) fn peer_addr(&self) -> Option<SocketAddr> {
        self.meta.remote.as_ref().map(Remote::addr)
    }

    #[cfg(feature = "axum")]
    /// Attaches data to the connection.
    pub(crate) fn insert<T: Clone + Send + Sync + 'static>(&mut self, data: T) {
        self.meta.data.insert(data);
    }

    /// The `101`, and a future that starts the connection once hyper hands
    /// the socket back: on its own task running `handler`, or, without
    /// one, returned for the caller (an RFC 6455 connection; a -76 one
    /// needs its handler).
    pub(crate) fn respond(
        mut self,
        handler: Option<ConnectionHandler>,
    ) -> (
        Response<()>,
        impl Future<Output = Result<Option<Connection>, Error>> + Send + 'static,
    ) {
        let response = self
            .endpoint
            .server
            .hyper_response(&self.answer, &mut self.meta);
        let Self {
            endpoint,
            meta,
            on_upgrade,
            ..
        } = self;
        let start = async move {
            let upgraded = on_upgrade
                .await
                .map_err(|e| Error::new(ErrorKind::Upgrade, e))?;
            let settings = &endpoint.server.settings;
            Ok((endpoint.start)(settings, upgraded, meta, handler.as_ref()))
        };
        (response, start)
    }
}
