//! The server: one listener, plain HTTP and WebSocket upgrades on one port.
//!
//! The first request head of every accepted socket is read by wharf
//! (`head`): a WebSocket upgrade is validated by
//! `wharf_proto::Handshake`, offered to the upgrade hook and answered `101`
//! there, and the socket goes to the connection driver. Anything else, and
//! every later request on a keep-alive connection, is served by hyper
//! (HTTP/1.1), with the same head limits; an upgrade that hyper read is
//! answered the same way, and its socket taken back from hyper
//! (`Upgraded::downcast`, with the bytes hyper read past the request head).
//! Every other request goes to the application's request handler. Plain
//! HTTP writes that make no progress for the write timeout drop the
//! connection; a graceful shutdown waits for the responses in flight.
//!
//! Which handler a connection gets: the upgrade hook's choice
//! ([`Upgrade::handle_with`]), else the route of its path
//! ([`Server::route`]), else [`Server::on_connection`]. A server given a
//! request *service* ([`Server::on_request_service`]) hands it the upgrades
//! that no route or `on_connection` takes, on hyper's path (`head` lets
//! them through): the application upgrades them through an [`Endpoint`]
//! (`endpoint.rs`), with the same `decide` and `start_io` as wharf's own.

mod endpoint;
mod service;

pub use endpoint::Endpoint;
#[cfg(feature = "axum")]
pub(crate) use endpoint::{Accepted, Asked};

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper::upgrade::Upgraded;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use wharf_proto::{
    CloseCode, DeflateConfig, DeflateParams, Draft, Handshake, Limits, Message, handshake,
};

use crate::body::Body;
use crate::caps::{self, AcceptErrors, Caps, Full, HttpSlot, Slot};
use crate::conn::task::{Driver, Hook, Keepalive, Lifecycle, OnMessage, Settings, Task};
use crate::conn::{Client, Connection, Info, Receiver, Shared, SlowClient};
use crate::error::{Error, ErrorKind};
use crate::forwarded::{self, Cidr, ForwardedHeader, Remote};
use crate::head::{self, Head, Prefixed};
use crate::hub::Hub;
use crate::legacy::{self, Challenge, Opening};
use crate::listener::{Io, Listener, Stream};
use crate::policy::{Hosts, Origins};
use crate::proxy_protocol;
use crate::stats::{Counters, Stats};
use crate::upgrade::{Refuse, Upgrade, add_headers, is_addable};
use crate::worker::Workers;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type RequestHandler = Arc<dyn Fn(Request<Incoming>) -> BoxFuture<Response<Body>> + Send + Sync>;
type UpgradeHandler = Arc<dyn Fn(Upgrade) -> BoxFuture<Result<Upgrade, Refuse>> + Send + Sync>;
/// A connection handler, shared by the connections it runs on.
#[derive(Clone)]
pub(crate) enum ConnectionHandler {
    /// A future run on each connection's [`Connection`], in its task.
    Task(Arc<dyn Fn(Connection) -> BoxFuture<()> + Send + Sync>),
    /// No future: the driver hands each message to the server's message
    /// callback ([`Server::on_message`]), or discards it if there is none.
    Messages,
}

/// `handler` as a [`ConnectionHandler`].
pub(crate) fn connection_handler<F, Fut>(handler: F) -> ConnectionHandler
where
    F: Fn(Connection) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    ConnectionHandler::Task(Arc::new(move |conn| Box::pin(handler(conn))))
}

/// Held by every connection still in its HTTP phase (see
/// [`Server::serve_with_shutdown`]); never sent on.
type InFlight = mpsc::Sender<Infallible>;

/// A WebSocket server, configured by its builder methods and started with
/// [`Server::listen`], [`Server::serve`] or [`Server::serve_with_shutdown`].
///
/// ```no_run
/// # async fn run() -> Result<(), wharf::Error> {
/// let server = wharf::Server::new();
/// let hub = server.hub();
/// server
///     .on_request(|_req| async { http::Response::new("okay".into()) })
///     .on_connection(move |mut conn| {
///         let hub = hub.clone();
///         async move {
///             while let Some(msg) = conn.recv().await {
///                 hub.broadcast(msg);
///             }
///         }
///     })
///     .listen("127.0.0.1:3400")
///     .await
/// # }
/// ```
#[derive(Clone)]
pub struct Server {
    settings: Arc<Settings>,
    handshake_timeout: Duration,
    trusted_proxies: Vec<Cidr>,
    forwarded_header: ForwardedHeader,
    proxy_protocol: bool,
    protocols: Vec<String>,
    origins: Origins,
    hosts: Hosts,
    on_request: RequestHandler,
    /// The request handler is a service ([`Server::on_request_service`]):
    /// it also gets the upgrades no connection handler takes.
    service: bool,
    on_upgrade: Option<UpgradeHandler>,
    /// `None`: the default, which discards messages (and with routes, a
    /// `404` for the paths they do not name).
    on_connection: Option<ConnectionHandler>,
    /// Connection handlers by exact path.
    routes: HashMap<Box<str>, ConnectionHandler>,
    legacy_drafts: bool,
    #[cfg(feature = "tls")]
    tls: Option<crate::tls::Tls>,
}

impl Default for Server {
    fn default() -> Self {
        Self::new()
    }
}

impl Server {
    /// A server with the default settings (see [`crate::docs::limits`]):
    /// plain HTTP requests get `426 Upgrade Required`, every valid upgrade is
    /// accepted, and messages are received and discarded.
    pub fn new() -> Self {
        Self {
            settings: Arc::new(Settings {
                limits: Limits::default(),
                max_backpressure: 1 << 20,
                slow_client: SlowClient::Close,
                deflate: None,
                close_timeout: Duration::from_secs(10),
                keepalive: Some(Keepalive {
                    interval: Duration::from_secs(30),
                    timeout: Duration::from_secs(20),
                }),
                write_timeout: Some(Duration::from_secs(30)),
                keep_headers: false,
                rate_limit: None,
                stats: Stats::default(),
                hub: Hub::new(),
                caps: Caps::new(256),
                on_message: None,
                on_open: None,
                on_close: None,
            }),
            handshake_timeout: Duration::from_secs(10),
            trusted_proxies: Vec::new(),
            forwarded_header: ForwardedHeader::XForwardedFor,
            proxy_protocol: false,
            protocols: Vec::new(),
            origins: Origins::default(),
            hosts: Hosts::default(),
            on_request: Arc::new(|_| Box::pin(async { upgrade_required() })),
            service: false,
            on_upgrade: None,
            on_connection: None,
            routes: HashMap::new(),
            legacy_drafts: false,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }

    /// Also accepts the seed's pre-standard drafts, hixie-75 and hixie-76
    /// (default off; see [`crate::docs::legacy`]): their clients become
    /// ordinary connections, in the same hub and rooms, that carry text
    /// only. Off, a legacy handshake is refused with `426` and a reason.
    #[must_use]
    pub fn legacy_drafts(mut self, on: bool) -> Self {
        self.legacy_drafts = on;
        self
    }

    /// The hub of this server's connections (the seed's `server.clients`).
    pub fn hub(&self) -> Hub {
        self.settings.hub.clone()
    }

    /// Shares this server's rooms and broadcasts with other nodes through
    /// `backplane` (see [`crate::backplane`]); call it after [`Server::workers`]
    /// (which makes a new hub) and before serving. A
    /// second backplane is ignored (a warning is logged).
    #[must_use]
    pub fn backplane(self, backplane: Arc<dyn crate::Backplane>) -> Self {
        if !self.settings.hub.set_backplane(backplane) {
            tracing::warn!("a backplane was already attached to this hub; the new one is ignored");
        }
        self
    }

    /// This server's counters (connections, messages, bytes, refusals,
    /// slow clients), for a metrics endpoint.
    pub fn stats(&self) -> Stats {
        self.settings.stats.clone()
    }

    /// Serves on `n` worker threads (thread per core; 1 to 64, default 1):
    /// the runtime that runs [`Server::serve`] and `n - 1` threads of its
    /// own, each a tokio current-thread runtime. Accepted connections go to
    /// the workers in turn and stay on theirs; the hub keeps a shard per
    /// worker, and a broadcast crosses to another worker once, not once per
    /// receiver. `1` serves on the caller's runtime alone, whatever its
    /// kind. See `ARCHITECTURE.md` for what was measured.
    ///
    /// # Panics
    /// If the hub was already handed out ([`Server::hub`]) or given a
    /// backplane ([`Server::backplane`]): the hub is built for the number of
    /// workers, so call this first.
    #[must_use]
    pub fn workers(mut self, n: usize) -> Self {
        assert!(
            !self.settings.hub.is_shared(),
            "Server::workers must be called before Server::hub (the hub has a shard per worker)"
        );
        assert!(
            self.settings.hub.backplane().is_none(),
            "Server::workers must be called before Server::backplane (the hub has a shard per worker)"
        );
        Arc::make_mut(&mut self.settings).hub = Hub::with_shards(n);
        self
    }

    /// Frame, message and fragment limits for incoming data.
    #[must_use]
    pub fn limits(mut self, limits: Limits) -> Self {
        Arc::make_mut(&mut self.settings).limits = limits;
        self
    }

    /// The most bytes a connection's write queue may hold (default 1 MiB);
    /// past it, the [`SlowClient`] policy applies.
    #[must_use]
    pub fn max_backpressure(mut self, bytes: usize) -> Self {
        Arc::make_mut(&mut self.settings).max_backpressure = bytes;
        self
    }

    /// Offers permessage-deflate (RFC 7692) to clients that ask, with these
    /// settings; `None` (the default) turns it off. See [`DeflateConfig`]
    /// for the shared and dedicated memory modes.
    #[must_use]
    pub fn deflate(mut self, config: Option<DeflateConfig>) -> Self {
        Arc::make_mut(&mut self.settings).deflate = config;
        self
    }

    /// What to do with a client whose write queue is full (default: close it
    /// with 1008).
    #[must_use]
    pub fn slow_client(mut self, policy: SlowClient) -> Self {
        Arc::make_mut(&mut self.settings).slow_client = policy;
        self
    }

    /// How long to wait for the peer's close frame, and then for its FIN,
    /// after the close handshake starts (default 10 s). At shutdown, plain
    /// HTTP responses in flight get as long to finish.
    #[must_use]
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        Arc::make_mut(&mut self.settings).close_timeout = timeout;
        self
    }

    /// How long queued output may wait with no byte taken by the socket
    /// (default 30 s): a peer that stops reading, or holds its TCP window at
    /// zero, is then dropped with its queue
    /// ([`Disconnect::TimedOut`](crate::Disconnect::TimedOut), counted in
    /// `write_timeouts`). Plain HTTP responses too: one the socket takes no
    /// byte of for this long drops its connection. `None` turns it off.
    #[must_use]
    pub fn write_timeout(mut self, timeout: Option<Duration>) -> Self {
        Arc::make_mut(&mut self.settings).write_timeout = timeout;
        self
    }

    /// How long a client may take to send a request head (default 10 s);
    /// slower connections are dropped (slowloris). For a connection's first
    /// request it runs from accept until the head is complete, whichever
    /// path reads it; each later head on a keep-alive connection gets as
    /// long again.
    #[must_use]
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Pings a connection that has sent nothing for `interval`, and drops it
    /// (close 1001, [`Disconnect::TimedOut`](crate::Disconnect::TimedOut)) if it then sends nothing for
    /// `timeout` more. Default 30 s and 20 s; `None` turns keepalive off.
    #[must_use]
    pub fn keepalive(mut self, keepalive: Option<(Duration, Duration)>) -> Self {
        Arc::make_mut(&mut self.settings).keepalive =
            keepalive.map(|(interval, timeout)| Keepalive { interval, timeout });
        self
    }

    /// Limits the messages each connection receives: messages and bytes a
    /// second, each with a burst (default: `None`, no limit). Past it, the
    /// limit's [`RateAction`](crate::RateAction): close 1008 "rate limit
    /// exceeded", drop the message, or hand it on marked
    /// ([`Connection::rate_limited`]). Counted in
    /// [`Snapshot::rate_limited`](crate::Snapshot::rate_limited). A message
    /// is charged at the time its bytes were read.
    #[must_use]
    pub fn rate_limit(mut self, limit: Option<wharf_proto::RateLimit>) -> Self {
        Arc::make_mut(&mut self.settings).rate_limit = limit;
        self
    }

    /// Keeps every connection's upgrade request headers for
    /// [`Client::headers`] (default: off). They cost a few hundred bytes per
    /// connection for as long as it lives; without them, read headers in
    /// [`Server::on_upgrade`] and attach what the connection needs with
    /// [`Upgrade::insert`].
    #[must_use]
    pub fn keep_headers(mut self, keep: bool) -> Self {
        Arc::make_mut(&mut self.settings).keep_headers = keep;
        self
    }

    /// The web pages allowed to open WebSocket connections, by their
    /// `Origin` (default: the same origin as the request's `Host`;
    /// requests without `Origin`, from clients that are not browsers, are
    /// always allowed). Others get `403`, before the upgrade hook runs.
    #[must_use]
    pub fn allowed_origins(mut self, origins: Origins) -> Self {
        self.origins = origins;
        self
    }

    /// The names this server answers to, by the `Host` header (default:
    /// any). Others get `403`, plain requests and upgrades alike: the
    /// defence against DNS rebinding for a server bound to a private or
    /// loopback address.
    #[must_use]
    pub fn allowed_hosts(mut self, hosts: Hosts) -> Self {
        self.hosts = hosts;
        self
    }

    /// The most connections open at once, WebSocket and plain HTTP
    /// (default: `None`, no cap). Past it an upgrade gets `503` with
    /// `Retry-After` and a one-line reason; a plain request is still
    /// answered, and its connection closed after the response. See
    /// [`crate::docs::limits`].
    #[must_use]
    pub fn max_connections(mut self, max: Option<usize>) -> Self {
        Arc::make_mut(&mut self.settings).caps.max_connections = max;
        self
    }

    /// The most connections open at once from one client address (an IPv6
    /// client: from one /64), as [`Server::max_connections`] counts them
    /// and with the same outcome (default: `None`, no cap). The address is
    /// the client's, as trusted proxies report it
    /// ([`Server::trusted_proxies`]).
    #[must_use]
    pub fn max_connections_per_ip(mut self, max: Option<usize>) -> Self {
        Arc::make_mut(&mut self.settings).caps.max_per_ip = max;
        self
    }

    /// The most handshakes in flight: connections accepted whose first
    /// request head is not complete yet (default 256). A new connection
    /// past it drops the oldest one, whose socket is closed without an
    /// answer: idle sockets cannot hold descriptors that others need.
    #[must_use]
    pub fn max_handshakes(mut self, max: usize) -> Self {
        Arc::make_mut(&mut self.settings).caps.max_handshakes = max.max(1);
        self
    }

    /// Peers (reverse proxies, load balancers) whose forwarding headers
    /// are believed (default: none): `X-Forwarded-For` with
    /// `X-Forwarded-Proto` and `X-Forwarded-Host`, or `Forwarded`
    /// ([`Server::forwarded_header`]). The client is the right-most
    /// address in the chain that is not a trusted proxy; logs,
    /// [`Client::peer_addr`], [`Upgrade::peer_addr`] and the per-address
    /// cap see it. See [`Remote`]. Under [`Server::proxy_protocol`], they
    /// are also the only peers whose PROXY header is believed.
    #[must_use]
    pub fn trusted_proxies<I: IntoIterator<Item = Cidr>>(mut self, proxies: I) -> Self {
        self.trusted_proxies = proxies.into_iter().collect();
        self
    }

    /// Which header the trusted proxies set with the client's address
    /// (default: `X-Forwarded-For`, with `X-Forwarded-Proto` and
    /// `X-Forwarded-Host`); the other is never read, since a proxy passes a
    /// client's copy of the header it does not manage through unchanged.
    #[must_use]
    pub fn forwarded_header(mut self, header: ForwardedHeader) -> Self {
        self.forwarded_header = header;
        self
    }

    /// Expects a PROXY protocol header (version 1 or 2) first on every
    /// connection (default: off), and takes the client's address from it.
    /// A missing or malformed header closes the connection; the header must
    /// arrive within the handshake timeout. With trusted proxies
    /// ([`Server::trusted_proxies`]), a connection from any other address
    /// is closed before its header is read: nobody else can claim to be
    /// any client. Without them, every peer's header is believed (a
    /// warning says so when the server starts): turn it on only when every
    /// peer that can reach the listener is a proxy that sends it.
    #[must_use]
    pub fn proxy_protocol(mut self, on: bool) -> Self {
        self.proxy_protocol = on;
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

    /// Serves TLS (`https://` and `wss://`) on every connection, with
    /// `tls`'s configuration as it is at each handshake (see
    /// [`crate::tls`]); `None` (the default) serves plain HTTP.
    #[cfg(feature = "tls")]
    #[must_use]
    pub fn tls(mut self, tls: Option<crate::tls::Tls>) -> Self {
        self.tls = tls;
        self
    }

    /// The handler for every request that is not a WebSocket upgrade (the
    /// seed's `request` event). Each request carries its [`Remote`] in its
    /// extensions.
    #[must_use]
    pub fn on_request<F, Fut>(mut self, handler: F) -> Self
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<Body>> + Send + 'static,
    {
        self.on_request = Arc::new(move |req| Box::pin(handler(req)));
        self.service = false;
        self
    }

    /// Serves plain requests with a tower `Service`, such as an axum
    /// `Router`, in place of [`Server::on_request`]; keep-alive, limits and
    /// timeouts are the server's, as for `on_request`. Each request carries
    /// its [`Remote`] and this server's [`Endpoint`] in its extensions.
    ///
    /// The service also gets the upgrade requests that no connection
    /// handler takes (no [`Server::route`] for their path and no
    /// [`Server::on_connection`]), to upgrade them itself: with
    /// `wharf::axum::WebSocketUpgrade` (feature `axum`) or
    /// [`Endpoint::upgrade`], into this server's hub, with its settings.
    ///
    /// A service that fails gets a `500` with a one-line reason (logged).
    /// It must be `Clone` (cloned per request, as hyper does) and `Sync`;
    /// a `Router` is both.
    ///
    /// ```no_run
    /// # #[cfg(feature = "axum")]
    /// # async fn run() -> Result<(), wharf::Error> {
    /// use axum::routing::get;
    /// use wharf::axum::WebSocketUpgrade;
    ///
    /// async fn chat(upgrade: WebSocketUpgrade) -> axum::response::Response {
    ///     upgrade.on_upgrade(|mut conn| async move {
    ///         conn.join("chat");
    ///         while let Some(msg) = conn.recv().await {
    ///             conn.hub().publish("chat", msg);
    ///         }
    ///     })
    /// }
    ///
    /// let app = axum::Router::new()
    ///     .route("/", get(|| async { "hello" }))
    ///     .route("/chat", get(chat));
    /// wharf::Server::new()
    ///     .on_request_service(app)
    ///     .listen("127.0.0.1:3400")
    ///     .await
    /// # }
    /// ```
    #[must_use]
    pub fn on_request_service<S, B>(mut self, service: S) -> Self
    where
        S: tower_service::Service<Request<Incoming>, Response = Response<B>>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
        S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
        B: hyper::body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        self.on_request = service::handler(service);
        self.service = true;
        self
    }

    /// The connection handler for upgrades to `path` (exactly: the path
    /// without its query), in place of [`Server::on_connection`]. Once a
    /// server has routes, an upgrade to a path that none names and that
    /// `on_connection` does not take is refused with `404` and a reason
    /// (or, with [`Server::on_request_service`], goes to the service). The
    /// upgrade hook runs first, and may choose another handler
    /// ([`Upgrade::handle_with`]). A second route for a path replaces the
    /// first.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), wharf::Error> {
    /// let server = wharf::Server::new();
    /// let hub = server.hub();
    /// server
    ///     .route("/echo", |mut conn| async move {
    ///         while let Some(msg) = conn.recv().await {
    ///             let _ = conn.try_send(msg);
    ///         }
    ///     })
    ///     .route("/chat", move |mut conn| {
    ///         let hub = hub.clone();
    ///         async move {
    ///             while let Some(msg) = conn.recv().await {
    ///                 hub.broadcast(msg);
    ///             }
    ///         }
    ///     })
    ///     .listen("127.0.0.1:3400")
    ///     .await
    /// # }
    /// ```
    #[must_use]
    pub fn route<F, Fut>(mut self, path: &str, handler: F) -> Self
    where
        F: Fn(Connection) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.routes.insert(path.into(), connection_handler(handler));
        self
    }

    /// A hook run on every valid upgrade request before it is answered:
    /// inspect headers, cookies and query, choose a subprotocol, attach data
    /// for the connection, or refuse with a status and reason.
    #[must_use]
    pub fn on_upgrade<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(Upgrade) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Upgrade, Refuse>> + Send + 'static,
    {
        self.on_upgrade = Some(Arc::new(move |up| Box::pin(hook(up))));
        self
    }

    /// The handler run for every accepted WebSocket connection (the seed's
    /// `client` and `open` events) that no route ([`Server::route`]) or
    /// upgrade hook ([`Upgrade::handle_with`]) gives another. The
    /// connection is registered with the hub before the handler starts and
    /// removed once it has ended. Without one, messages are received and
    /// discarded. What the handler broadcasts or publishes in one poll
    /// (while it takes every message `recv` has ready) is delivered
    /// together when the poll ends, as for [`Server::on_message`]'s runs.
    #[must_use]
    pub fn on_connection<F, Fut>(mut self, handler: F) -> Self
    where
        F: Fn(Connection) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.on_connection = Some(connection_handler(handler));
        Arc::make_mut(&mut self.settings).on_message = None;
        self
    }

    /// Serves connections with a callback per message instead of a handler
    /// per connection (the seed's `message` event; uWebSockets' `message`
    /// handler): `callback` gets the connection's [`Client`] and each text
    /// or binary message, in order. It replaces [`Server::on_connection`]
    /// (the last of the two called wins); routes ([`Server::route`]) and
    /// the upgrade hook's [`Upgrade::handle_with`] still take handlers.
    ///
    /// A connection served this way holds no future of its own: it is the
    /// leanest way to serve many connections that mostly wait (about 110
    /// bytes less per connection, `wharf::docs::limits`), and each message
    /// costs no task wake-up. The callback runs on the connection's worker
    /// thread, inside its driver, so it must not block: it replies with
    /// [`Client::try_send`], publishes through the hub, or spawns a task
    /// for anything that waits. While it runs, the connection reads
    /// nothing more: a slow callback pushes back on its own peer. A panic in
    /// it closes the connection with 1011 and discards the messages after
    /// it. Under [`RateAction::Notify`](crate::RateAction::Notify), messages over the
    /// rate limit are counted and not passed to it.
    ///
    /// Messages read together (a publisher's burst) reach the callback as a
    /// run, and what it broadcasts or publishes during the run is held back
    /// until the run ends, then delivered together: each receiver takes the
    /// run's frames at once, joined in one buffer when they are small.
    /// Anything else the callback itself does to a connection or to the
    /// hub's rooms (a send, a close, a join) lets what is held go first, so
    /// every receiver still gets each sender's messages in order, and a
    /// member the callback adds gets only what it publishes after. (A
    /// broadcast held back returns how many receivers it will be handed
    /// to, counting one that `broadcast_except` or `publish_except` skips.)
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), wharf::Error> {
    /// // An echo server.
    /// wharf::Server::new()
    ///     .on_message(|client, message| {
    ///         let _ = client.try_send(message);
    ///     })
    ///     .listen("127.0.0.1:9001")
    ///     .await
    /// # }
    /// ```
    #[must_use]
    pub fn on_message<F>(mut self, callback: F) -> Self
    where
        F: Fn(&Client, Message) + Send + Sync + 'static,
    {
        Arc::make_mut(&mut self.settings).on_message = Some(OnMessage(Arc::new(callback)));
        self.on_connection = Some(ConnectionHandler::Messages);
        self
    }

    /// With [`Server::on_message`]: called once for each connection it
    /// serves, as the connection opens (after the `101`, in the hub,
    /// before its first message), on the connection's worker thread (the
    /// seed's `open` event). What it sends goes out first. A panic in it
    /// closes the connection with 1011.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), wharf::Error> {
    /// wharf::Server::new()
    ///     .on_open(|client| {
    ///         let _ = client.try_send(format!("welcome, {}", client.id()));
    ///     })
    ///     .on_message(|client, message| {
    ///         let _ = client.try_send(message);
    ///     })
    ///     .on_close(|client, why| println!("{} left: {why:?}", client.id()))
    ///     .listen("127.0.0.1:9001")
    ///     .await
    /// # }
    /// ```
    #[must_use]
    pub fn on_open<F>(mut self, callback: F) -> Self
    where
        F: Fn(&Client) + Send + Sync + 'static,
    {
        Arc::make_mut(&mut self.settings).on_open = Some(Hook(Arc::new(callback)));
        self
    }

    /// With [`Server::on_message`]: called once for each connection it
    /// served, when the connection has ended, with how it ended (the
    /// seed's `close` event). The connection has left the hub by then, so
    /// a broadcast from here reaches the others only. A panic in it is
    /// logged and counted.
    #[must_use]
    pub fn on_close<F>(mut self, callback: F) -> Self
    where
        F: Fn(&Client, &crate::Disconnect) + Send + Sync + 'static,
    {
        Arc::make_mut(&mut self.settings).on_close = Some(Hook(Arc::new(callback)));
        self
    }

    /// A handle on this server as it is configured now, for applications
    /// that route requests themselves (axum, hyper): upgrades through it
    /// join this server's hub, with its settings. Take it after the
    /// builder calls that configure what it should see. See [`Endpoint`].
    pub fn endpoint(&self) -> Endpoint {
        Endpoint::new(Arc::new(self.clone()), start::<TcpStream>)
    }

    /// Whether wharf's own handlers take an upgrade to `path`, rather than
    /// the request service.
    fn takes_upgrade(&self, path: &str) -> bool {
        !self.service || self.on_connection.is_some() || self.routes.contains_key(path)
    }

    /// Binds `addr` and serves forever.
    ///
    /// # Errors
    /// If the address cannot be bound.
    ///
    /// # Cancel safety
    /// Dropping the future stops accepting; connections already accepted run
    /// on in their own tasks.
    pub async fn listen(self, addr: impl ToSocketAddrs) -> Result<(), Error> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(Error::with(ErrorKind::Listen))?;
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
    pub async fn serve<L: Listener>(self, listener: L) -> Result<(), Error> {
        self.serve_with_shutdown(listener, std::future::pending())
            .await
    }

    /// Serves connections from `listener` until `signal` completes, then
    /// shuts down gracefully: stops accepting, lets plain HTTP connections
    /// finish the response in flight (and closes idle ones), flushes every
    /// queued message, sends close 1001 to every client and waits for them
    /// to close and for the HTTP responses to finish, up to the close
    /// timeout (plus a second), before returning.
    ///
    /// # Errors
    /// As for [`Server::serve`].
    ///
    /// # Cancel safety
    /// As for [`Server::listen`].
    pub async fn serve_with_shutdown<L: Listener>(
        self,
        mut listener: L,
        signal: impl Future<Output = ()> + Send,
    ) -> Result<(), Error> {
        let workers = Workers::start(&self.settings.hub)?;
        if self.proxy_protocol && self.trusted_proxies.is_empty() {
            tracing::warn!(
                "PROXY protocol on with no trusted proxy: every peer's header is believed; \
                 name the proxies (trusted_proxies) so that nobody else can claim any address"
            );
        }
        let server = Arc::new(self);
        let (stop_tx, stop_rx) = watch::channel(false);
        // Every connection still in its HTTP phase holds a sender: the
        // receiver sees the channel close once they all have ended.
        let (in_flight, mut http_done) = mpsc::channel::<Infallible>(1);
        let mut errors = AcceptErrors::new();
        tokio::pin!(signal);
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        errors.reset();
                        // Registered here, in accept order, so that the
                        // oldest handshake is the one dropped.
                        let (handshake, _) = server.settings.caps.handshake();
                        let server = server.clone();
                        let stop = stop_rx.clone();
                        workers.spawn(Lifecycle::<Stream<L::Io>>::Opening(Box::pin(
                            server.serve_http(stream, peer, stop, in_flight.clone(), handshake),
                        )));
                    }
                    Err(e) => {
                        let pause = errors.on_error(&e, &server.settings.caps);
                        if !pause.is_zero() {
                            tokio::select! {
                                () = tokio::time::sleep(pause) => {}
                                () = &mut signal => break,
                            }
                        }
                    }
                },
                () = &mut signal => break,
            }
        }
        drop(listener);
        drop(in_flight);
        tracing::info!(connections = server.settings.hub.len(), "shutting down");
        let _ = stop_tx.send(true);
        server
            .settings
            .hub
            .close_all(CloseCode::GOING_AWAY, "server shutting down");
        let grace = server.settings.close_timeout + Duration::from_secs(1);
        let drained = async {
            tokio::join!(server.settings.hub.wait_empty(), http_done.recv());
        };
        if tokio::time::timeout(grace, drained).await.is_err() {
            tracing::warn!(
                connections = server.settings.hub.len(),
                http_connections = http_done.sender_strong_count(),
                "shutdown deadline passed"
            );
        }
        Ok(())
    }

    /// Whether this server's connections are TLS (a legacy `101` names
    /// `wss://` then).
    fn is_tls(&self) -> bool {
        #[cfg(feature = "tls")]
        if self.tls.is_some() {
            return true;
        }
        false
    }

    /// The agreed permessage-deflate parameters, and their
    /// `Sec-WebSocket-Extensions` value.
    fn negotiate(&self, hs: &Handshake) -> (Option<HeaderValue>, Option<DeflateParams>) {
        match self
            .settings
            .deflate
            .as_ref()
            .and_then(|c| hs.negotiate_deflate(c))
        {
            Some((params, value)) => (Some(value), Some(params)),
            None => (None, None),
        }
    }

    /// Serves one TCP connection: its first request head is read here, and
    /// a WebSocket upgrade is answered without hyper (see `head`); anything
    /// else goes to hyper. The handshake timeout runs from here until the
    /// first request head is complete, on both paths.
    /// The connection's task then becomes the WebSocket connection's
    /// (`Task`), without a second spawn. `_in_flight` is held until the
    /// HTTP part ends, for the graceful shutdown to wait on. With the PROXY
    /// protocol on, its header is read first, under the same deadline.
    /// `handshake` counts the connection among the handshakes in flight
    /// until the head is complete; if it is dropped for a newer one, so is
    /// the connection. Then the TLS handshake, if this server has TLS, under
    /// the same deadline.
    async fn serve_http<S: Io>(
        self: Arc<Self>,
        mut io: S,
        socket: SocketAddr,
        mut stop: watch::Receiver<bool>,
        _in_flight: InFlight,
        mut handshake: caps::Handshake,
    ) -> Option<Task<Stream<S>>> {
        let deadline = Instant::now() + self.handshake_timeout;
        let first = {
            let opening = async {
                let peer = match self.proxy_protocol {
                    true => self.read_proxy_header(&mut io, socket).await?,
                    false => socket,
                };
                let mut stream = self.secure(io, peer).await?;
                let head =
                    head::read(&mut stream, |req| self.takes_upgrade(req.uri().path())).await?;
                Some((peer, stream, head))
            };
            tokio::select! {
                r = tokio::time::timeout_at(deadline, opening) => r,
                _ = stop.wait_for(|s| *s) => return None,
                () = handshake.evicted() => {
                    tracing::debug!(%socket, "handshake dropped for a newer one");
                    return None;
                }
            }
        };
        drop(handshake);
        match first {
            Ok(Some((peer, stream, Head::Upgrade(req, rest)))) => {
                self.accept_direct(stream, req, rest, peer, socket).await
            }
            Ok(Some((peer, stream, Head::Other(read)))) => {
                let io = Prefixed::new(read, stream).write_timeout(self.settings.write_timeout);
                self.serve_hyper(io, peer, socket, deadline, stop).await;
                None
            }
            Ok(Some((peer, stream, Head::Refused(refuse)))) => {
                tracing::debug!(%peer, status = %refuse.status, reason = %refuse.reason, "request head refused");
                self.refuse_direct(stream, &refuse).await;
                None
            }
            // Closed, failed or timed out before a whole request head (or
            // a TLS session).
            Ok(None) | Err(_) => None,
        }
    }

    /// The stream the connection is served on: TLS over `io` once its
    /// handshake completes, if this server has TLS; `None` if it failed.
    #[cfg_attr(not(feature = "tls"), expect(clippy::unused_async))]
    async fn secure<S: Io>(&self, io: S, peer: SocketAddr) -> Option<Stream<S>> {
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.tls {
            return match tls.accept(io).await {
                Ok(tls) => Some(Stream::Tls(Box::new(tls))),
                Err(why) => {
                    tracing::debug!(%peer, why, "no TLS session");
                    None
                }
            };
        }
        let _ = peer;
        Some(Stream::Plain(io))
    }

    /// Reads the PROXY protocol header: the client's address, or the
    /// socket's for the proxy's own connections; `None` (logged) closes the
    /// connection.
    async fn read_proxy_header<S: Io>(
        &self,
        stream: &mut S,
        socket: SocketAddr,
    ) -> Option<SocketAddr> {
        if !self.trusted_proxies.is_empty()
            && !self.trusted_proxies.iter().any(|c| c.contains(socket.ip()))
        {
            tracing::debug!(%socket, "PROXY protocol from an address that is no trusted proxy; closing");
            return None;
        }
        match proxy_protocol::read(stream).await {
            Ok(proxy_protocol::Header::Proxied { source, .. }) => Some(source),
            Ok(proxy_protocol::Header::Local) => Some(socket),
            Err(why) => {
                tracing::debug!(%socket, why, "PROXY protocol header refused; closing");
                None
            }
        }
    }

    /// Serves the rest of a connection with hyper, its first request head
    /// already in `stream`'s prefix: that request must be read by
    /// `deadline`, each later one within the handshake timeout; heads are
    /// held to the same limits as the first one (see `head`). The
    /// connection is counted under the caps from its first request on
    /// (`HttpSlot`).
    async fn serve_hyper<S: Io>(
        self: Arc<Self>,
        stream: Prefixed<Stream<S>>,
        peer: SocketAddr,
        socket: SocketAddr,
        deadline: Instant,
        mut stop: watch::Receiver<bool>,
    ) {
        let server = self.clone();
        let first_read = Arc::new(AtomicBool::new(false));
        let seen = first_read.clone();
        let slot = Arc::new(HttpSlot::default());
        let service = hyper::service::service_fn(move |req| {
            seen.store(true, Ordering::Relaxed);
            let server = server.clone();
            let slot = slot.clone();
            async move { Ok::<_, Infallible>(server.dispatch::<S>(req, peer, socket, &slot).await) }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(self.handshake_timeout)
            .max_headers(head::MAX_HEADERS)
            .max_header_size(head::MAX_HEAD)
            // -75 clients compare the `101`'s first lines byte for byte.
            .title_case_headers(self.legacy_drafts)
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        tokio::pin!(conn);
        let first_deadline = tokio::time::sleep_until(deadline);
        tokio::pin!(first_deadline);
        let mut waiting_first = true;
        let result = loop {
            tokio::select! {
                r = conn.as_mut() => break r,
                () = &mut first_deadline, if waiting_first => {
                    waiting_first = false;
                    if !first_read.load(Ordering::Relaxed) {
                        tracing::debug!(%peer, "handshake timeout in hyper");
                        return;
                    }
                }
                () = async { let _ = stop.wait_for(|s| *s).await; } => {
                    // The response in flight finishes, within the close
                    // timeout; an idle connection closes at once.
                    conn.as_mut().graceful_shutdown();
                    match tokio::time::timeout(self.settings.close_timeout, conn.as_mut()).await {
                        Ok(r) => break r,
                        Err(_) => {
                            tracing::debug!(%peer, "http response cut by the shutdown deadline");
                            return;
                        }
                    }
                }
            }
        };
        if let Err(e) = result {
            tracing::debug!(%peer, error = %e, "http connection ended with an error");
        }
    }

    /// Answers an upgrade request read by `head`: for a `101`, the
    /// connection's task, which the caller's task becomes.
    async fn accept_direct<S: Io>(
        self: Arc<Self>,
        mut stream: Stream<S>,
        req: Request<()>,
        mut rest: BytesMut,
        peer: SocketAddr,
        socket: SocketAddr,
    ) -> Option<Task<Stream<S>>> {
        let (parts, ()) = req.into_parts();
        let remote = forwarded::resolve(
            &self.trusted_proxies,
            self.forwarded_header,
            peer,
            socket,
            &parts.headers,
        );
        let slot = match self.admit(&remote) {
            Ok(slot) => slot,
            Err(refuse) => {
                let response = caps::retry_after(handshake::refusal(refuse.status, ()));
                self.respond_and_close(stream, &response, &refuse).await;
                return None;
            }
        };
        match self.decide(parts, remote, Via::Server).await {
            Decision::Accept(answer, mut meta) => {
                meta.slot = Some(slot);
                let mut out = Vec::with_capacity(256);
                let protocol = meta.protocol.as_deref();
                match &answer.hs {
                    Opening::Rfc6455(hs) => {
                        hs.write_response(protocol, answer.extensions.as_ref(), &mut out);
                        write_extra_headers(&mut out, &meta.response_headers);
                    }
                    Opening::Legacy(hs) => {
                        let deadline = Instant::now() + self.handshake_timeout;
                        let key3 = match hs.body_len() {
                            0 => None,
                            _ => Some(legacy::read_key3(&mut stream, &mut rest, deadline).await?),
                        };
                        let extra = legacy::addable(&meta.response_headers);
                        hs.write_response(self.is_tls(), protocol, &extra, key3.as_ref(), &mut out);
                    }
                }
                stream.write_all(&out).await.ok()?;
                // A transport that buffers (TLS) sends it now.
                stream.flush().await.ok()?;
                let handler = meta.handler.take();
                let peer = meta.remote.as_ref().map(Remote::addr);
                let (shared, handler, _) = open(&self.settings, peer, meta, handler.as_ref());
                Some(Task::new(Driver::new(stream, shared, rest), handler))
            }
            Decision::Refuse(refuse) => {
                self.refuse_direct(stream, &refuse).await;
                None
            }
        }
    }

    /// Sends a refusal (status and one-line reason, `Connection: close`) on
    /// a connection whose first request wharf read, and closes it. The write
    /// is bounded by the close timeout.
    async fn refuse_direct<S: Io>(&self, stream: Stream<S>, refuse: &Refuse) {
        let mut response = handshake::refusal(refuse.status, ());
        if let Some(headers) = refuse.headers() {
            add_headers(response.headers_mut(), headers.clone());
        }
        self.respond_and_close(stream, &response, refuse).await;
    }

    /// Sends `response` with `refuse`'s reason as its body, and closes.
    async fn respond_and_close<S: Io>(
        &self,
        mut stream: Stream<S>,
        response: &Response<()>,
        refuse: &Refuse,
    ) {
        let written = tokio::time::timeout(
            self.settings.close_timeout,
            head::respond(&mut stream, response, refuse.reason.as_bytes()),
        )
        .await;
        if let Ok(Ok(())) = written {
            let _ = stream.shutdown().await;
        }
    }

    /// A request that hyper read (any but a connection's first): upgrades
    /// to [`Server::accept`], the rest to the request handler with its
    /// [`Remote`] (and for a service an [`Endpoint`]) in its extensions, but a target over
    /// the limit gets `414` and the connection closes. The connection's
    /// first request counts it under the caps; past them, the response
    /// closes it. An upgrade that goes to the request service (see
    /// [`Server::takes_upgrade`]) is counted when the service upgrades it;
    /// if it does not, the response closes the connection, as a refusal's
    /// does.
    async fn dispatch<S: Io>(
        self: Arc<Self>,
        mut req: Request<Incoming>,
        peer: SocketAddr,
        socket: SocketAddr,
        slot: &HttpSlot,
    ) -> Response<Body> {
        let remote = forwarded::resolve(
            &self.trusted_proxies,
            self.forwarded_header,
            peer,
            socket,
            req.headers(),
        );
        if target_len(req.uri()) > head::MAX_TARGET {
            tracing::debug!(peer = %remote.addr(), "request target too long");
            return closing(head::target_too_long().into_response());
        }
        if handshake::is_upgrade_request(&req) {
            // The upgrade is counted on its own, as a WebSocket connection.
            slot.release();
            if self.takes_upgrade(req.uri().path()) {
                return self.accept::<S>(req, remote).await;
            }
            req.extensions_mut().insert(remote);
            let endpoint = Endpoint::new(self.clone(), start::<S>);
            req.extensions_mut().insert(endpoint);
            let res = (self.on_request)(req).await;
            return match res.status() {
                StatusCode::SWITCHING_PROTOCOLS => res,
                _ => closing(res),
            };
        }
        if let Err(refuse) = self.hosts.check(req.headers()) {
            tracing::debug!(peer = %remote.addr(), host = ?req.headers().get(header::HOST), "request refused: host not allowed");
            return closing(refuse.into_response());
        }
        let over = !slot.admit(|| self.settings.caps.admit(remote.addr().ip()));
        req.extensions_mut().insert(remote);
        if self.service {
            let endpoint = Endpoint::new(self.clone(), start::<S>);
            req.extensions_mut().insert(endpoint);
        }
        let res = (self.on_request)(req).await;
        if over { closing(res) } else { res }
    }

    /// Counts a connection from `remote` as open, or the refusal of a cap
    /// (logged and counted).
    fn admit(&self, remote: &Remote) -> Result<Slot, Refuse> {
        self.settings
            .caps
            .admit(remote.addr().ip())
            .map_err(|full| {
                let refuse = full.refuse();
                let peer = remote.addr();
                match full {
                    Full::Server => tracing::debug!(%peer, "upgrade refused: connection cap"),
                    Full::Address => tracing::debug!(%peer, "upgrade refused: per-address cap"),
                }
                self.settings
                    .stats
                    .counters()
                    .refused(refuse.status.as_u16(), &refuse.reason);
                refuse
            })
    }

    /// An upgrade request that hyper read: the decision, and for a `101`
    /// a task that takes the socket back from hyper once it is sent. A
    /// refusal closes the connection (`Connection: close`): what follows
    /// the refused request on it is not read as another request.
    async fn accept<S: Io>(
        self: Arc<Self>,
        mut req: Request<Incoming>,
        remote: Remote,
    ) -> Response<Body> {
        let slot = match self.admit(&remote) {
            Ok(slot) => slot,
            Err(refuse) => return closing(caps::retry_after(refuse.into_response())),
        };
        let peer = remote.addr();
        let on_upgrade = hyper::upgrade::on(&mut req);
        let (parts, _) = req.into_parts();
        match self.decide(parts, remote, Via::Server).await {
            Decision::Refuse(refuse) => closing(refuse.into_response()),
            Decision::Accept(answer, mut meta) => {
                meta.slot = Some(slot);
                let response = self.hyper_response(&answer, &mut meta);
                // This task lives only until hyper hands the socket back;
                // the connection then gets a task of its own, sized for what
                // it keeps.
                tokio::spawn(async move {
                    match on_upgrade.await {
                        Ok(upgraded) => {
                            let handler = meta.handler.take();
                            start::<S>(&self.settings, upgraded, meta, handler.as_ref());
                        }
                        Err(e) => tracing::debug!(%peer, error = %e, "upgrade failed"),
                    }
                });
                response.map(|()| Body::empty())
            }
        }
    }

    /// The `101` for an upgrade that hyper read, with the hook's headers;
    /// notes in `meta` the -76 answer owed once the socket is taken back.
    fn hyper_response(&self, answer: &Answer, meta: &mut Meta) -> Response<()> {
        let protocol = meta.protocol.as_deref();
        let mut response = match &answer.hs {
            Opening::Rfc6455(hs) => hs.response(protocol, answer.extensions.as_ref()),
            Opening::Legacy(hs) => legacy::hyper_response(hs, self.is_tls(), protocol),
        };
        meta.challenge = Challenge::owed(&answer.hs, self.handshake_timeout);
        add_headers(response.headers_mut(), meta.response_headers.clone());
        response
    }

    /// Validates an upgrade request and runs the upgrade hook: the `101`
    /// and what the connection will know, or the refusal (counted). For
    /// wharf's own paths ([`Via::Server`]) also the connection's handler:
    /// the hook's choice, the route's, `on_connection`, the default; `404`
    /// when routes exist and none of them takes it.
    async fn decide(&self, parts: http::request::Parts, remote: Remote, via: Via) -> Decision {
        let peer = remote.addr();
        let legacy = self.legacy_drafts && via != Via::Pending;
        let hs = match Opening::validate(&parts, legacy) {
            Ok(hs) => hs,
            Err(refusal) => {
                tracing::debug!(%peer, status = %refusal.status, reason = %refusal.reason, "handshake refused");
                self.settings
                    .stats
                    .counters()
                    .refused(refusal.status.as_u16(), &refusal.reason);
                return Decision::Refuse(refusal);
            }
        };
        if let Err(refusal) = self
            .hosts
            .check(&parts.headers)
            .and_then(|()| self.origins.check(&parts.headers, remote.host()))
        {
            let origin = parts.headers.get(header::ORIGIN);
            tracing::debug!(%peer, ?origin, host = ?parts.headers.get(header::HOST), reason = %refusal.reason, "upgrade refused by policy");
            self.settings
                .stats
                .counters()
                .refused(refusal.status.as_u16(), &refusal.reason);
            return Decision::Refuse(refusal);
        }
        let offered = hs.offered();
        let mut up = Upgrade {
            remote,
            protocol: offered.iter().find(|p| self.protocols.contains(p)).cloned(),
            offered,
            parts,
            data: http::Extensions::new(),
            response_headers: http::HeaderMap::new(),
            handler: None,
        };
        if let Some(hook) = &self.on_upgrade {
            up = match hook(up).await {
                Ok(up) => up,
                Err(refuse) => {
                    tracing::debug!(%peer, status = %refuse.status, reason = %refuse.reason, "upgrade refused");
                    self.settings
                        .stats
                        .counters()
                        .refused(refuse.status.as_u16(), &refuse.reason);
                    return Decision::Refuse(refuse);
                }
            };
        }
        let handler = match via {
            Via::Server => match self.own_handler(up.handler, up.parts.uri.path()) {
                Ok(handler) => Some(handler),
                Err(refuse) => {
                    tracing::debug!(%peer, path = up.parts.uri.path(), "upgrade refused: no handler for its path");
                    self.settings
                        .stats
                        .counters()
                        .refused(refuse.status.as_u16(), &refuse.reason);
                    return Decision::Refuse(refuse);
                }
            },
            Via::Application | Via::Pending => None,
        };
        let (extensions, deflate) = match &hs {
            Opening::Rfc6455(hs) => self.negotiate(hs),
            Opening::Legacy(_) => (None, None),
        };
        let meta = Meta {
            remote: Some(up.remote),
            slot: None,
            target: request_target(&up.parts.uri),
            headers: self.kept_headers(&up.parts.headers),
            protocol: up.protocol,
            data: up.data,
            deflate,
            response_headers: up.response_headers,
            legacy: hs.draft(),
            challenge: None,
            handler,
        };
        Decision::Accept(Answer { hs, extensions }, meta)
    }

    /// The handler of a connection on wharf's own paths: the hook's
    /// `chosen` one, else `path`'s route, else `on_connection`, else the
    /// default (which discards messages) when there are no routes.
    fn own_handler(
        &self,
        chosen: Option<ConnectionHandler>,
        path: &str,
    ) -> Result<ConnectionHandler, Refuse> {
        if let Some(handler) = chosen
            .or_else(|| self.routes.get(path).cloned())
            .or_else(|| self.on_connection.clone())
        {
            return Ok(handler);
        }
        if self.routes.is_empty() {
            return Ok(discard());
        }
        Err(Refuse::new(
            StatusCode::NOT_FOUND,
            "no WebSocket endpoint at this path",
        ))
    }
}

/// The default connection handler: its messages are discarded, by the
/// driver (no handler future, no message callback).
fn discard() -> ConnectionHandler {
    ConnectionHandler::Messages
}

/// Who asked for a [`Server::decide`].
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub(crate) enum Via {
    /// wharf's own paths: the connection gets one of the server's handlers.
    Server,
    /// An application's upgrade with a handler of its own (the axum
    /// extractor).
    #[cfg_attr(
        not(feature = "axum"),
        expect(dead_code, reason = "the axum extractor's")
    )]
    Application,
    /// An application's upgrade whose [`Connection`] it awaits
    /// ([`Endpoint::upgrade`]): RFC 6455 only, as a -76 answer needs a
    /// handler to follow it.
    Pending,
}

/// What [`Server::decide`] made of an upgrade request.
#[expect(
    clippy::large_enum_variant,
    reason = "made once per upgrade and moved once, on the stack"
)]
enum Decision {
    Accept(Answer, Meta),
    Refuse(Refuse),
}

/// What the `101` is made from (with the subprotocol, in `Meta`).
struct Answer {
    hs: Opening,
    extensions: Option<HeaderValue>,
}

/// What is known of a connection before its socket is taken back.
struct Meta {
    /// The client and the socket's peer, when wharf accepted the socket.
    remote: Option<Remote>,
    /// The connection's count under the caps, handed to it in [`open`].
    slot: Option<Slot>,
    target: Box<str>,
    headers: Option<http::HeaderMap>,
    protocol: Option<String>,
    data: http::Extensions,
    deflate: Option<DeflateParams>,
    /// Added to the `101` by the upgrade hook.
    response_headers: http::HeaderMap,
    /// The pre-standard draft the connection speaks, if any.
    legacy: Option<Draft>,
    /// A -76 answer owed once hyper hands the socket back.
    challenge: Option<Box<Challenge>>,
    /// The connection's handler, for [`Via::Server`].
    handler: Option<ConnectionHandler>,
}

/// Writes the upgrade hook's headers into a `101` that
/// `Handshake::write_response` wrote (before its final blank line).
fn write_extra_headers(out: &mut Vec<u8>, headers: &http::HeaderMap) {
    if headers.is_empty() {
        return;
    }
    out.truncate(out.len() - 2);
    for (name, value) in headers.iter().filter(|(n, _)| is_addable(n)) {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Takes the socket back from hyper and starts the connection
/// ([`start_io`]): one of ours (`S`, from our listener), an application's
/// own TCP socket, or whatever hyper had (behind its `Upgraded`).
fn start<S: Io>(
    settings: &Arc<Settings>,
    upgraded: Upgraded,
    meta: Meta,
    handler: Option<&ConnectionHandler>,
) -> Option<Connection> {
    match upgraded.downcast::<TokioIo<Prefixed<Stream<S>>>>() {
        Ok(parts) => {
            // What hyper read and did not parse, then what it did not read
            // of the prefix (nothing, in practice: it reads before parsing).
            let (io, unread) = parts.io.into_inner().into_parts();
            let mut read_buf = BytesMut::from(&parts.read_buf[..]);
            read_buf.extend_from_slice(&unread);
            start_io(settings, io, read_buf, None, meta, handler)
        }
        // An application's own hyper or axum server (`Endpoint`).
        Err(upgraded) => match upgraded.downcast::<TokioIo<TcpStream>>() {
            Ok(parts) => {
                let tcp = parts.io.into_inner();
                let peer = tcp.peer_addr().ok();
                let read_buf = BytesMut::from(&parts.read_buf[..]);
                start_io(settings, tcp, read_buf, peer, meta, handler)
            }
            Err(upgraded) => start_io(
                settings,
                TokioIo::new(upgraded),
                BytesMut::new(),
                None,
                meta,
                handler,
            ),
        },
    }
}

/// Registers the connection with the hub and spawns its task: the driver,
/// and `handler` run on the [`Connection`]. Without a handler, the
/// connection is returned for the caller to handle. The task removes the
/// connection from the hub when the driver ends. `read_buf` holds the bytes
/// already read past the upgrade request; `socket_peer` is the peer's
/// address where the request did not give one.
fn start_io<I: Io>(
    settings: &Arc<Settings>,
    io: I,
    read_buf: BytesMut,
    socket_peer: Option<SocketAddr>,
    mut meta: Meta,
    handler: Option<&ConnectionHandler>,
) -> Option<Connection> {
    if let Some(challenge) = meta.challenge.take() {
        let (settings, handler) = (settings.clone(), handler.cloned());
        tokio::spawn(async move {
            let (io, rest) = legacy::answer(io, read_buf, &challenge).await?;
            start_io(&settings, io, rest, socket_peer, meta, handler.as_ref())
        });
        return None;
    }
    let peer = meta.remote.as_ref().map(Remote::addr).or(socket_peer);
    let (shared, handler, conn) = open(settings, peer, meta, handler);
    tokio::spawn(Task::new(Driver::new(io, shared, read_buf), handler));
    conn
}

/// The future a connection handler returned.
type Handling = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Creates a connection's shared state and registers it with the hub; then
/// starts `handler` on it, or returns the [`Connection`] for the caller.
fn open(
    settings: &Arc<Settings>,
    peer: Option<SocketAddr>,
    meta: Meta,
    handler: Option<&ConnectionHandler>,
) -> (Arc<Shared>, Option<Handling>, Option<Connection>) {
    Counters::add(&settings.stats.counters().connections_total, 1);
    let now = std::time::Instant::now();
    let mut proto = wharf_proto::Connection::server(settings.limits)
        .with_timeouts(settings.timeouts(), now)
        .with_deferred_inflation();
    if let Some(limit) = settings.rate_limit {
        proto = proto.with_rate_limit(limit, now);
    }
    if let Some(params) = meta.deflate {
        proto = proto.with_deflate(params);
    }
    if let Some(draft) = meta.legacy {
        proto = proto.with_legacy(draft);
        let version = usize::from(draft == Draft::Hixie76);
        Counters::add(&settings.stats.counters().connections_legacy[version], 1);
    }
    let peer = peer.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
    tracing::debug!(%peer, target = &*meta.target, "connection open");
    let socket = meta.remote.as_ref().map(Remote::socket_addr);
    let counted = meta.slot.map(Slot::hand_over).is_some();
    let info = Info::new(
        peer,
        meta.target,
        meta.protocol.as_deref(),
        meta.headers,
        meta.data,
        meta.deflate,
        socket.filter(|s| *s != peer),
        counted,
    )
    .with_legacy(meta.legacy)
    .with_callback(
        matches!(handler, Some(ConnectionHandler::Messages)) && settings.on_message.is_some(),
    );
    let id = settings.hub.next_id(settings.hub.current_shard());
    let shared = Arc::new(Shared::new(proto, id, info, settings.clone()));
    let client = Client::new(shared.clone());
    settings.hub.insert(client);
    match handler {
        Some(ConnectionHandler::Task(handler)) => {
            let conn = Connection::new(Client::new(shared.clone()));
            (shared, Some(handler(conn)), None)
        }
        Some(ConnectionHandler::Messages) => {
            {
                let mut inner = shared.lock();
                inner.receiver = match settings.on_message {
                    Some(_) => Receiver::Callback,
                    None => Receiver::Driver,
                };
            }
            crate::conn::task::opened(&shared, &Client::new(shared.clone()));
            (shared, None, None)
        }
        None => {
            let conn = Connection::new(Client::new(shared.clone()));
            (shared, None, Some(conn))
        }
    }
}

/// The request target (path and query) of an upgrade, owned: the parsed
/// request is a view into hyper's read buffer (8 KiB and more), which a
/// connection that kept it would keep alive for its lifetime.
fn request_target(uri: &http::Uri) -> Box<str> {
    uri.path_and_query().map_or("/", |pq| pq.as_str()).into()
}

impl Server {
    /// A copy of `headers` whose values own their bytes (see
    /// [`request_target`]), if this server keeps headers.
    fn kept_headers(&self, headers: &http::HeaderMap) -> Option<http::HeaderMap> {
        if !self.settings.keep_headers {
            return None;
        }
        let mut out = http::HeaderMap::with_capacity(headers.len());
        for (name, value) in headers {
            let mut copy =
                HeaderValue::from_bytes(value.as_bytes()).unwrap_or_else(|_| value.clone());
            copy.set_sensitive(value.is_sensitive());
            out.append(name.clone(), copy);
        }
        Some(out)
    }
}

/// The length of a request target as it was sent (path and query, or the
/// whole of an absolute or authority form).
fn target_len(uri: &http::Uri) -> usize {
    match uri.path_and_query() {
        Some(pq) if uri.scheme().is_none() => pq.as_str().len(),
        _ => uri.to_string().len(),
    }
}

/// `res`, marked to close its connection once sent (hyper then closes it).
fn closing(mut res: Response<Body>) -> Response<Body> {
    res.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    res
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
            .field("settings", &self.settings)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("forwarded_header", &self.forwarded_header)
            .field("proxy_protocol", &self.proxy_protocol)
            .field("protocols", &self.protocols)
            .field("hub", &self.settings.hub)
            .finish_non_exhaustive()
    }
}
