//! The upgrade: deciding before the `101`. (A request that an application
//! routed itself, with hyper or axum, is upgraded through an
//! [`Endpoint`](crate::Endpoint).)

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::request::Parts;
use http::{Extensions, HeaderMap, HeaderName, HeaderValue, Response, StatusCode, Uri, header};
use wharf_proto::{Handshake, Reject, handshake};

use crate::body::Body;
use crate::conn::Connection;
use crate::error::Error;
use crate::forwarded::Remote;
use crate::server::{ConnectionHandler, connection_handler};

/// A valid upgrade request, before it is answered: inspect it, choose a
/// subprotocol, attach data for the connection, or refuse it.
pub struct Upgrade {
    pub(crate) remote: Remote,
    pub(crate) parts: Parts,
    pub(crate) offered: Vec<String>,
    pub(crate) protocol: Option<String>,
    pub(crate) data: Extensions,
    /// Headers for the `101`.
    pub(crate) response_headers: HeaderMap,
    /// The handler chosen by the hook ([`Upgrade::handle_with`]).
    pub(crate) handler: Option<ConnectionHandler>,
}

impl Upgrade {
    /// The client's address: the socket's peer, or the client a trusted
    /// proxy vouched for (see [`Upgrade::remote`]).
    pub fn peer_addr(&self) -> SocketAddr {
        self.remote.addr()
    }

    /// Where the request came from: the client's address, the socket's
    /// peer, and the scheme and host a trusted proxy reported.
    pub fn remote(&self) -> &Remote {
        &self.remote
    }

    /// The request URI.
    pub fn uri(&self) -> &Uri {
        &self.parts.uri
    }

    /// The request path.
    pub fn path(&self) -> &str {
        self.parts.uri.path()
    }

    /// The query string, if any.
    pub fn query(&self) -> Option<&str> {
        self.parts.uri.query()
    }

    /// The request headers (cookies, `Origin`, authorization, ...).
    pub fn headers(&self) -> &HeaderMap {
        &self.parts.headers
    }

    /// The subprotocols the client offered, in its order of preference.
    pub fn offered_protocols(&self) -> &[String] {
        &self.offered
    }

    /// The subprotocol that will be agreed: the server's choice so far.
    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }

    /// Chooses the subprotocol (`None` for none). Returns `false`, changing
    /// nothing, if the client did not offer it.
    pub fn set_protocol(&mut self, protocol: Option<&str>) -> bool {
        match protocol {
            Some(p) if !self.offered.iter().any(|o| o == p) => false,
            p => {
                self.protocol = p.map(str::to_owned);
                true
            }
        }
    }

    /// Attaches data to the connection, read back with
    /// [`Client::data`](crate::Client::data).
    pub fn insert<T: Clone + Send + Sync + 'static>(&mut self, data: T) {
        self.data.insert(data);
    }

    /// Headers to add to the `101` (a `Set-Cookie`, say). Those the
    /// handshake itself writes (`Upgrade`, `Connection`,
    /// `Sec-WebSocket-*`, `Content-Length`, `Transfer-Encoding`) are not
    /// sent from here.
    pub fn response_headers_mut(&mut self) -> &mut HeaderMap {
        &mut self.response_headers
    }

    /// Runs `handler` on this connection, in place of the one its path's
    /// route ([`Server::route`](crate::Server::route)) or
    /// [`Server::on_connection`](crate::Server::on_connection) would run:
    /// the hook routes by anything the request says (a header, the query,
    /// a cookie). Ignored when the application upgrades the request itself
    /// (through an [`Endpoint`](crate::Endpoint)), whose handler is its
    /// own.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), wharf::Error> {
    /// wharf::Server::new()
    ///     .on_upgrade(|mut up| async move {
    ///         if up.query() == Some("echo") {
    ///             up.handle_with(|mut conn| async move {
    ///                 while let Some(msg) = conn.recv().await {
    ///                     let _ = conn.try_send(msg);
    ///                 }
    ///             });
    ///         }
    ///         Ok(up)
    ///     })
    ///     .listen("127.0.0.1:3400")
    ///     .await
    /// # }
    /// ```
    pub fn handle_with<F, Fut>(&mut self, handler: F)
    where
        F: Fn(Connection) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.handler = Some(connection_handler(handler));
    }
}

/// Whether a header may be added by the application to a `101` or a
/// refusal: not one that the handshake or the framing of the response
/// depends on.
pub(crate) fn is_addable(name: &HeaderName) -> bool {
    !(name == header::UPGRADE
        || name == header::CONNECTION
        || name == header::CONTENT_LENGTH
        || name == header::TRANSFER_ENCODING
        || name.as_str().starts_with("sec-websocket-"))
}

impl fmt::Debug for Upgrade {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upgrade")
            .field("remote", &self.remote)
            .field("uri", &self.parts.uri)
            .field("offered", &self.offered)
            .field("protocol", &self.protocol)
            .field("handler", &self.handler.is_some())
            .finish_non_exhaustive()
    }
}

/// A refused upgrade: the status and the one-line reason sent as the body,
/// with any headers added (`WWW-Authenticate`, `Retry-After`).
#[derive(Clone, Debug, Eq, PartialEq)]
#[non_exhaustive]
pub struct Refuse {
    /// The response status.
    pub status: StatusCode,
    /// One line saying why.
    pub reason: Cow<'static, str>,
    /// Headers to send with it; boxed, as few refusals have any.
    headers: Option<Box<HeaderMap>>,
}

impl Refuse {
    /// A refusal with `status` and `reason`.
    pub fn new(status: StatusCode, reason: impl Into<Cow<'static, str>>) -> Self {
        Self {
            status,
            reason: reason.into(),
            headers: None,
        }
    }

    /// Adds a header to the refusal, such as `WWW-Authenticate` or
    /// `Retry-After` (those that frame the response or the handshake are
    /// not sent: see [`Upgrade::response_headers_mut`]).
    #[must_use]
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.get_or_insert_default().append(name, value);
        self
    }

    /// The headers added with [`Refuse::with_header`].
    pub fn headers(&self) -> Option<&HeaderMap> {
        self.headers.as_deref()
    }

    /// The response: the status, the reason as a `text/plain` body, the
    /// added headers, and `Sec-WebSocket-Version: 13` on a 426 or
    /// `Allow: GET` on a 405.
    pub fn into_response(self) -> Response<Body> {
        let mut res = handshake::refusal(self.status, Body::from(self.reason.into_owned()));
        if let Some(headers) = self.headers {
            add_headers(res.headers_mut(), *headers);
        }
        res
    }
}

/// Adds the application's `extra` headers to a response's, but those it
/// may not set (see [`is_addable`]).
pub(crate) fn add_headers(to: &mut HeaderMap, extra: HeaderMap) {
    let mut last = None;
    for (name, value) in extra {
        // `HeaderMap::into_iter` names only the first of repeated values.
        if let Some(name) = name {
            last = Some(name);
        }
        if let Some(name) = last.as_ref().filter(|n| is_addable(n)) {
            to.append(name.clone(), value);
        }
    }
}

impl From<Reject> for Refuse {
    fn from(r: Reject) -> Self {
        Self::new(r.status, r.reason)
    }
}

/// The connection of an upgrade answered with `101`: awaiting it completes
/// the upgrade, starts the connection's driver on its own task and yields
/// the [`Connection`].
pub struct PendingConnection {
    pub(crate) inner: Pin<Box<dyn Future<Output = Result<Connection, Error>> + Send>>,
}

impl Future for PendingConnection {
    type Output = Result<Connection, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl fmt::Debug for PendingConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingConnection").finish_non_exhaustive()
    }
}

/// Validates an RFC 6455 opening handshake, and what wharf asks beyond it
/// ([`check_bounds`]).
pub(crate) fn validate_parts(parts: &Parts) -> Result<Handshake, Refuse> {
    let hs =
        Handshake::validate(&parts.method, parts.version, &parts.headers).map_err(Refuse::from)?;
    check_bounds(&parts.uri, &parts.headers)?;
    Ok(hs)
}

/// What wharf asks of an upgrade request beyond RFC 6455: no body (`400`),
/// since the bytes after the head are frames, and a target the connection
/// can keep (`414` past [`MAX_TARGET`](crate::head::MAX_TARGET)).
pub(crate) fn check_bounds(uri: &Uri, headers: &HeaderMap) -> Result<(), Refuse> {
    let body = headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get_all(header::CONTENT_LENGTH)
            .iter()
            .any(|v| v.as_bytes() != b"0");
    if body {
        return Err(Refuse::new(
            StatusCode::BAD_REQUEST,
            "an upgrade request must not have a body",
        ));
    }
    let target = uri.path_and_query().map_or(0, |pq| pq.as_str().len());
    if target > crate::head::MAX_TARGET {
        return Err(crate::head::target_too_long());
    }
    Ok(())
}
