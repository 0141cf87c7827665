//! The server: one listener, plain HTTP and WebSocket upgrades on one port.
//!
//! Every accepted socket is served by hyper (HTTP/1.1, keep-alive). A request
//! whose `Upgrade` header names `websocket` is validated by
//! `wharf_proto::Handshake`; a valid one is answered `101` and its socket taken
//! back from hyper (`Upgraded::downcast`, with the bytes hyper read past the
//! request head) for a connection driver. Every other request goes to the
//! application's request handler.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper::upgrade::Upgraded;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use wharf_proto::{Handshake, Limits, Reject, handshake};

use crate::body::Body;
use crate::conn::task::Driver;
use crate::conn::{Connection, Info, Shared};
use crate::error::Error;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type RequestHandler = Arc<dyn Fn(Request<Incoming>) -> BoxFuture<Response<Body>> + Send + Sync>;
type ConnectionHandler = Arc<dyn Fn(Connection) -> BoxFuture<()> + Send + Sync>;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A WebSocket server, configured by its builder methods and started with
/// [`Server::listen`] or [`Server::serve`].
///
/// ```no_run
/// # async fn run() -> Result<(), wharf::Error> {
/// wharf::Server::new()
///     .on_request(|_req| async { http::Response::new("okay".into()) })
///     .on_connection(|mut conn| async move {
///         while let Some(msg) = conn.recv().await {
///             let _ = conn.send(msg);
///         }
///     })
///     .listen("127.0.0.1:3400")
///     .await
/// # }
/// ```
#[derive(Clone)]
pub struct Server {
    limits: Limits,
    max_backpressure: usize,
    close_timeout: Duration,
    handshake_timeout: Duration,
    protocols: Vec<String>,
    on_request: RequestHandler,
    on_connection: ConnectionHandler,
}

impl Default for Server {
    fn default() -> Self {
        Self::new()
    }
}

impl Server {
    /// A server with the default limits and handlers: plain HTTP requests
    /// get `426 Upgrade Required`, and messages are received and discarded.
    pub fn new() -> Self {
        Self {
            limits: Limits::default(),
            max_backpressure: 1 << 20,
            close_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            protocols: Vec::new(),
            on_request: Arc::new(|_| Box::pin(async { upgrade_required() })),
            on_connection: Arc::new(|mut conn| {
                Box::pin(async move { while conn.recv().await.is_some() {} })
            }),
        }
    }

    /// Frame, message and fragment limits for incoming data.
    #[must_use]
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The most bytes a connection's write queue may hold (default 1 MiB). A
    /// send past it closes the connection with 1008.
    #[must_use]
    pub fn max_backpressure(mut self, bytes: usize) -> Self {
        self.max_backpressure = bytes;
        self
    }

    /// How long to wait for the peer's close frame, and then for its FIN,
    /// after we start closing (default 10 s).
    #[must_use]
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.close_timeout = timeout;
        self
    }

    /// How long a client may take to send a request head (default 10 s);
    /// slower connections are dropped.
    #[must_use]
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Subprotocols this server speaks. The first one the client offers is
    /// chosen; with none in common, the handshake succeeds without one.
    #[must_use]
    pub fn protocols<I, P>(mut self, protocols: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: Into<String>,
    {
        self.protocols = protocols.into_iter().map(Into::into).collect();
        self
    }

    /// The handler for every request that is not a WebSocket upgrade (the
    /// seed's `request` event).
    #[must_use]
    pub fn on_request<F, Fut>(mut self, handler: F) -> Self
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<Body>> + Send + 'static,
    {
        self.on_request = Arc::new(move |req| Box::pin(handler(req)));
        self
    }

    /// The handler run for every accepted WebSocket connection (the seed's
    /// `client` and `open` events). The connection lives until it is closed
    /// and the handler has returned.
    #[must_use]
    pub fn on_connection<F, Fut>(mut self, handler: F) -> Self
    where
        F: Fn(Connection) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.on_connection = Arc::new(move |conn| Box::pin(handler(conn)));
        self
    }

    /// Binds `addr` and serves forever.
    ///
    /// # Errors
    /// If the address cannot be bound.
    ///
    /// # Cancel safety
    /// Dropping the future stops accepting; connections already accepted
    /// run on in their own tasks.
    pub async fn listen(self, addr: impl ToSocketAddrs) -> Result<(), Error> {
        let listener = TcpListener::bind(addr).await.map_err(Error::Listen)?;
        self.serve(listener).await
    }

    /// Serves connections from `listener` forever.
    ///
    /// # Errors
    /// None yet: accept errors (such as running out of file descriptors) are
    /// logged and retried after a pause.
    ///
    /// # Cancel safety
    /// As for [`Server::listen`].
    pub async fn serve(self, listener: TcpListener) -> Result<(), Error> {
        let server = Arc::new(self);
        loop {
            match listener.accept().await {
                Ok((stream, peer)) => {
                    let server = server.clone();
                    tokio::spawn(async move { server.serve_http(stream, peer).await });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed; pausing");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    async fn serve_http(self: Arc<Self>, stream: TcpStream, peer: SocketAddr) {
        let _ = stream.set_nodelay(true);
        let server = self.clone();
        let service = hyper::service::service_fn(move |req| {
            let server = server.clone();
            async move { Ok::<_, Infallible>(server.dispatch(req, peer).await) }
        });
        let result = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(self.handshake_timeout)
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades()
            .await;
        if let Err(e) = result {
            tracing::debug!(%peer, error = %e, "http connection ended with an error");
        }
    }

    async fn dispatch(self: Arc<Self>, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        if handshake::is_upgrade_request(&req) {
            self.upgrade(req, peer)
        } else {
            (self.on_request)(req).await
        }
    }

    fn upgrade(self: Arc<Self>, mut req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        let hs = match Handshake::from_request(&req) {
            Ok(hs) => hs,
            Err(reject) => {
                tracing::debug!(%peer, status = %reject.status, reason = reject.reason, "handshake refused");
                return reject_response(&reject);
            }
        };
        let supported: Vec<&str> = self.protocols.iter().map(String::as_str).collect();
        let protocol = hs.select_protocol(&supported).map(str::to_owned);
        let response = hs.response(protocol.as_deref()).map(|()| Body::empty());
        let on_upgrade = hyper::upgrade::on(&mut req);
        let (parts, _) = req.into_parts();
        let info = Arc::new(Info {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            peer,
            uri: parts.uri,
            headers: parts.headers,
            protocol,
        });
        tokio::spawn(async move {
            match on_upgrade.await {
                Ok(upgraded) => self.run_connection(upgraded, info).await,
                Err(e) => tracing::debug!(%peer, error = %e, "upgrade failed"),
            }
        });
        response
    }

    async fn run_connection(self: Arc<Self>, upgraded: Upgraded, info: Arc<Info>) {
        let shared = Arc::new(Shared::new(
            wharf_proto::Connection::server(self.limits),
            self.max_backpressure,
        ));
        let handler = (self.on_connection)(Connection::new(shared.clone(), info.clone()));
        tracing::debug!(id = info.id, peer = %info.peer, path = info.uri.path(), "connection open");
        let why = match upgraded.downcast::<TokioIo<TcpStream>>() {
            Ok(parts) => {
                let read_buf = BytesMut::from(&parts.read_buf[..]);
                let driver =
                    Driver::new(parts.io.into_inner(), shared, read_buf, self.close_timeout);
                tokio::join!(driver.run(), handler).0
            }
            Err(upgraded) => {
                let driver = Driver::new(
                    TokioIo::new(upgraded),
                    shared,
                    BytesMut::new(),
                    self.close_timeout,
                );
                tokio::join!(driver.run(), handler).0
            }
        };
        tracing::debug!(id = info.id, peer = %info.peer, ?why, "connection closed");
    }
}

fn reject_response(reject: &Reject) -> Response<Body> {
    reject.to_response().map(Body::from)
}

fn upgrade_required() -> Response<Body> {
    let mut res = Response::new(Body::from("this endpoint speaks WebSocket"));
    *res.status_mut() = StatusCode::UPGRADE_REQUIRED;
    res.headers_mut()
        .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    res.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    res
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("limits", &self.limits)
            .field("max_backpressure", &self.max_backpressure)
            .field("close_timeout", &self.close_timeout)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("protocols", &self.protocols)
            .finish_non_exhaustive()
    }
}
