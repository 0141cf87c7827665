//! The `wharf` binary's library: configuration, the chat server with its
//! web page, static files, metrics and logging, on top of [`wharf::Server`].
//!
//! [`run`] is the whole program (`main.rs` only parses the arguments);
//! [`serve`] runs the same server on a listener the caller bound, which is
//! how the tests start it in-process on `127.0.0.1:0`.
//!
//! ```text
//! request ──► WebSocket upgrade? ──yes──► mode: chat (rooms, JSON) | echo | broadcast
//!                  │ no
//!                  ▼
//!   /healthz, /metrics, /_wharf/*  ──►  answered here
//!   anything else                  ──►  --static DIR (if set), else the chat page at /
//! ```
//!
//! With `--tls-cert` and `--tls-key` it serves `https://` and `wss://` on
//! its one port (SIGHUP reloads the two files); without, plain HTTP. It
//! keeps no chat history: it relays what is said while you are there.

mod chat;
mod config;
mod edge;
mod metrics;
mod names;
mod page;
mod static_files;
mod tls;

use std::future::Future;
use std::io::IsTerminal as _;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use tokio::net::TcpListener;
use wharf::{
    Body, Client, Connection, DeflateConfig, Disconnect, Hub, Incoming, Limits, RateAction,
    RateLimit, Refuse, Server, Stats,
};

pub use config::{Cli, Config, ConfigError, DeflateMode, Mode, Settings, SlowClientPolicy};
pub use edge::{Edge, EdgeSettings, ForwardedBy, raise_descriptor_limit};

use crate::static_files::{StaticDir, plain};

/// Runs the `wharf` program: resolves the configuration (`cli` over its
/// file over the defaults), starts logging, binds the listener and serves
/// until SIGINT or SIGTERM, then shuts down gracefully (close 1001).
///
/// # Errors
/// An invalid configuration, a listen address that cannot be bound, or a
/// `--static` directory that does not exist.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    raise_descriptor_limit();
    let config = Config::load(&cli)?;
    if cli.print_config {
        print!("{}", config.to_toml());
        return Ok(());
    }
    let filter = tracing_subscriber::EnvFilter::builder()
        .parse(&config.log_level)
        .with_context(|| format!("invalid log level {:?}", config.log_level))?;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
    // Worker 0: the acceptor and its share of the connections; the other
    // workers are started by the server (`Server::workers`).
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?
        .block_on(async move {
            let listener = TcpListener::bind(config.listen)
                .await
                .with_context(|| format!("cannot listen on {}", config.listen))?;
            serve(config, listener, shutdown_signal()).await
        })
}

/// Serves `config` on `listener` until `shutdown` completes, then shuts
/// down gracefully: stops accepting, sends close 1001 to every client and
/// waits for them (up to the close timeout).
///
/// `config.listen` is not used: the listener is already bound.
///
/// # Errors
/// If `config.static_dir` is not a readable directory.
///
/// # Cancel safety
/// Dropping the future stops accepting; open connections run on.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let statics = match &config.static_dir {
        Some(dir) => Some(
            StaticDir::new(dir)
                .with_context(|| format!("cannot serve static files from {}", dir.display()))?,
        ),
        None => None,
    };
    let mut server = Server::new().workers(config.worker_count());
    if let Some(url) = &config.redis {
        let redis =
            wharf::redis::Redis::open(url).with_context(|| format!("invalid Redis URL {url:?}"))?;
        let mut redis = redis
            .prefix(&config.redis_prefix)
            .presence_ttl(config.redis_presence_ttl);
        if let Some(n) = config.redis_node_number {
            redis = redis.node_number(n);
        }
        tracing::info!(
            node = wharf::Backplane::node(&redis),
            "sharing rooms through Redis"
        );
        server = server.backplane(Arc::new(redis));
    }
    let app = Arc::new(App {
        mode: config.mode,
        hub: server.hub(),
        stats: server.stats(),
        statics,
        metrics: config.metrics_on_main(),
        rate_limit_reason: rate_limit_reason(&config),
    });
    let _departures = (config.mode == Mode::Chat && config.redis.is_some())
        .then(|| chat::Departures::start(&app.hub));
    let server = configure(server, &config, app.clone());
    let (server, reloads) = tls::configure(server, &config)?;
    let addr = listener.local_addr().context("listener has no address")?;
    if config.origins().is_any() {
        tracing::warn!(
            "allowed-origin \"*\": any web page may open WebSockets here and act as its visitor"
        );
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let metrics = match config.metrics_listen {
        Some(at) => {
            let listener = TcpListener::bind(at)
                .await
                .with_context(|| format!("cannot listen on {at} for metrics"))?;
            tracing::info!(addr = %at, "metrics listening");
            let mut stop = stop_rx;
            let stopped = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            Some(tokio::spawn(
                metrics_server(app.clone()).serve_with_shutdown(listener, stopped),
            ))
        }
        None => None,
    };
    tracing::info!(
        %addr,
        tls = reloads.is_some(),
        workers = config.worker_count(),
        mode = %config.mode,
        static_dir = app.statics.as_ref().map(|s| s.root().display().to_string()),
        metrics = if app.metrics { "/metrics" } else { "not on this address" },
        "wharf listening"
    );
    config.edge.warn(addr);
    server.serve_with_shutdown(listener, shutdown).await?;
    // The metrics listener outlives the main one's shutdown, so that the
    // drain can be watched.
    let _ = stop_tx.send(true);
    if let Some(task) = metrics {
        let _ = task.await;
    }
    if let Some(reloads) = reloads {
        reloads.abort();
    }
    tracing::info!("wharf stopped");
    Ok(())
}

/// The operator's listener: /metrics and /healthz, nothing else, and no
/// WebSocket.
fn metrics_server(app: Arc<App>) -> Server {
    Server::new()
        .on_upgrade(|_| async {
            Err(Refuse::new(
                StatusCode::NOT_FOUND,
                "no WebSocket here: this is the metrics listener",
            ))
        })
        .on_request(move |req| {
            let app = app.clone();
            async move {
                match req.uri().path() {
                    "/healthz" => app.health(),
                    "/metrics" => app.metrics(),
                    _ => plain(StatusCode::NOT_FOUND, "not found: /metrics or /healthz\n"),
                }
            }
        })
}

/// What the request and connection handlers share.
struct App {
    mode: Mode,
    hub: Hub,
    stats: Stats,
    statics: Option<StaticDir>,
    /// Whether /metrics is served on the main address.
    metrics: bool,
    /// The chat's answer to a message over the rate limit.
    rate_limit_reason: String,
}

/// The rate limit `config` asks for, if any: in chat mode, messages over
/// it are handed to the chat, which answers them with an error; the other
/// modes drop them.
fn rate_limit(config: &Config) -> Option<RateLimit> {
    if config.rate_limit_messages == 0 && config.rate_limit_bytes == 0 {
        return None;
    }
    let action = match config.mode {
        Mode::Chat => RateAction::Notify,
        _ => RateAction::Drop,
    };
    Some(
        RateLimit::new(action)
            .messages(config.rate_limit_messages, config.rate_limit_message_burst)
            .bytes(config.rate_limit_bytes, config.rate_limit_byte_burst as u64),
    )
}

/// The reason of the chat's `rate_limited` error: the limits, in words.
fn rate_limit_reason(config: &Config) -> String {
    let mut limits = Vec::new();
    if config.rate_limit_messages > 0 {
        limits.push(format!(
            "{} messages a second (bursts of {})",
            config.rate_limit_messages, config.rate_limit_message_burst
        ));
    }
    if config.rate_limit_bytes > 0 {
        limits.push(format!(
            "{} bytes a second (bursts of {})",
            config.rate_limit_bytes, config.rate_limit_byte_burst
        ));
    }
    format!(
        "too fast: at most {}; this message was not delivered",
        limits.join(" and ")
    )
}

fn configure(server: Server, config: &Config, app: Arc<App>) -> Server {
    let limits = Limits::default()
        .max_message_size(config.max_message_size)
        .max_frame_size(config.max_frame_size)
        .max_fragments(config.max_fragments);
    let keepalive =
        (!config.ping_interval.is_zero()).then_some((config.ping_interval, config.ping_timeout));
    let slow_client = match config.slow_client {
        SlowClientPolicy::Drop => wharf::SlowClient::Drop,
        SlowClientPolicy::Close => wharf::SlowClient::Close,
    };
    let mut server = server
        .limits(limits)
        .max_backpressure(config.max_backpressure)
        .legacy_drafts(config.legacy_drafts)
        .slow_client(slow_client)
        .deflate(match config.deflate {
            DeflateMode::Off => None,
            DeflateMode::Shared => Some(DeflateConfig::shared()),
            DeflateMode::Dedicated => Some(DeflateConfig::dedicated(15)),
        })
        .handshake_timeout(config.handshake_timeout)
        .close_timeout(config.close_timeout)
        .write_timeout((!config.write_timeout.is_zero()).then_some(config.write_timeout))
        .keepalive(keepalive)
        .allowed_origins(config.origins())
        .allowed_hosts(config.hosts())
        .rate_limit(rate_limit(config));
    server = config.edge.configure(server);
    if config.mode == Mode::Chat {
        server = server
            .protocols([chat::PROTOCOL])
            .on_upgrade(|up| async move {
                // Offering subprotocols without ours means a client for some
                // other protocol (or another version of this one).
                if !up.offered_protocols().is_empty() && up.protocol().is_none() {
                    return Err(Refuse::new(
                        StatusCode::BAD_REQUEST,
                        "unsupported subprotocol: this server speaks wharf.chat.v1",
                    ));
                }
                Ok(up)
            });
    }
    let requests = app.clone();
    let server = server.on_request(move |req| {
        let app = requests.clone();
        async move { app.route(req).await }
    });
    // Echo and broadcast need no state per connection: a message callback
    // serves them, so an open connection holds no handler future.
    match app.mode {
        Mode::Echo => server.on_message(|client, msg| {
            // A refused send (slow client) is counted by the library.
            let _ = client.try_send(msg);
        }),
        Mode::Broadcast => {
            let hub = app.hub.clone();
            server.on_message(move |_, msg| {
                hub.broadcast(msg);
            })
        }
        _ => server.on_connection(move |conn| app.clone().connection(conn)),
    }
}

impl App {
    /// `/healthz`: `ok`, or `degraded: ...` (still 200: this node serves
    /// its own clients) while the Redis backplane is down.
    fn health(&self) -> Response<Body> {
        match self.hub.backplane().and_then(|b| b.status().link) {
            Some(wharf::backplane::Link::Down(reason)) => {
                let mut res = plain(StatusCode::OK, "");
                *res.body_mut() = Body::from(format!("degraded: redis backplane down: {reason}\n"));
                res
            }
            _ => plain(StatusCode::OK, "ok"),
        }
    }

    /// The Prometheus text.
    fn metrics(&self) -> Response<Body> {
        let text = metrics::render(&self.stats.snapshot(), &self.hub);
        let mut res = Response::new(Body::from(text));
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(metrics::CONTENT_TYPE),
        );
        res
    }

    /// Answers a plain HTTP request.
    async fn route(&self, req: Request<Incoming>) -> Response<Body> {
        let path = req.uri().path();
        let head = req.method() == Method::HEAD;
        if req.method() != Method::GET && !head {
            let mut res = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
            res.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return res;
        }
        match path {
            "/healthz" => return self.health(),
            "/metrics" if self.metrics => return self.metrics(),
            "/metrics" => {
                return plain(
                    StatusCode::NOT_FOUND,
                    "not found: metrics are served on the metrics listener (--metrics-listen)\n",
                );
            }
            _ => {}
        }
        if let Some(asset) = page::reserved(path) {
            return asset.response(req.headers(), head);
        }
        if let Some(dir) = &self.statics {
            let chat_page = path == "/" && self.mode == Mode::Chat && !dir.has_index().await;
            if !chat_page {
                return dir.serve(&req).await;
            }
        }
        match (path, self.mode) {
            ("/", Mode::Chat) => page::index().response(req.headers(), head),
            ("/", Mode::Echo) => plain(
                StatusCode::OK,
                "wharf (echo mode): open a WebSocket on any path; every message comes back\n",
            ),
            ("/", _) => plain(
                StatusCode::OK,
                "wharf (broadcast mode): open a WebSocket on any path; every message goes to everyone\n",
            ),
            _ => plain(StatusCode::NOT_FOUND, "not found\n"),
        }
    }

    /// Runs one chat connection, logging its open and its close (at debug
    /// level: `/metrics` counts them). Its future is what every open
    /// connection holds: the chat's larger one is boxed, so it stays small.
    /// (Echo and broadcast have no handler: see `configure`.)
    async fn connection(self: Arc<Self>, conn: Connection) {
        let started = Instant::now();
        let client = conn.client().clone();
        tracing::debug!(
            id = conn.id(),
            peer = %conn.peer_addr(),
            path = conn.path(),
            protocol = conn.protocol().unwrap_or("-"),
            "connection open"
        );
        Box::pin(chat::serve(conn, self.hub.clone(), &self.rate_limit_reason)).await;
        if tracing::enabled!(tracing::Level::DEBUG) {
            let (code, reason) = close_code(&client);
            tracing::debug!(
                id = client.id(),
                peer = %client.peer_addr(),
                duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                code,
                reason,
                why = ?client.disconnect(),
                "connection closed"
            );
        }
    }
}

/// The close code a connection ended with, as far as it is known when its
/// `recv` returns `None`: the code we failed it with, else the one of the
/// close frame that started the close handshake (ours or the peer's), else
/// 1006 (no close frame).
fn close_code(client: &Client) -> (u16, String) {
    match client.disconnect() {
        Some(Disconnect::Peer(frame) | Disconnect::Local(frame)) => {
            (frame.code.0, frame.reason.to_string())
        }
        Some(Disconnect::Protocol(e)) => (e.close_code().0, e.to_string()),
        Some(Disconnect::TimedOut) => (1006, "timed out".to_owned()),
        _ => (1006, String::new()),
    }
}

/// A bound on how often one kind of warning is logged, for events a
/// client can cause at will: at most one line a second, which reports how
/// many were suppressed since the last one.
#[derive(Debug)]
pub(crate) struct LogLimit {
    state: Mutex<(Option<Instant>, u64)>,
}

impl LogLimit {
    /// The interval between two lines of one kind.
    const INTERVAL: Duration = Duration::from_secs(1);

    pub(crate) const fn new() -> Self {
        Self {
            state: Mutex::new((None, 0)),
        }
    }

    /// Whether to log an event that happens at `now`: `Some` with the
    /// number of events suppressed since the last line, or `None` (counted)
    /// to stay silent.
    pub(crate) fn check(&self, now: Instant) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let (last, suppressed) = &mut *state;
        match last {
            Some(t) if now.saturating_duration_since(*t) < Self::INTERVAL => {
                *suppressed += 1;
                None
            }
            _ => {
                *last = Some(now);
                Some(std::mem::take(suppressed))
            }
        }
    }
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = async {
            match signal(SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            () = term => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    tracing::info!("shutdown signal: closing every connection with 1001");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn future_size<Fut>(_: impl Fn(Connection) -> Fut) -> usize {
        size_of::<Fut>()
    }

    /// Every open connection holds its handler's future: in echo and
    /// broadcast mode a small one (the chat's is boxed on its own).
    #[test]
    fn the_connection_handler_stays_small() {
        let app = Arc::new(App {
            mode: Mode::Echo,
            hub: Hub::new(),
            stats: Stats::default(),
            statics: None,
            metrics: false,
            rate_limit_reason: String::new(),
        });
        let size = future_size(move |c| app.clone().connection(c));
        assert!(
            size <= 128,
            "the connection handler's future grew to {size} bytes"
        );
    }

    #[test]
    fn log_limit_allows_one_line_a_second_and_counts_the_rest() {
        let limit = LogLimit::new();
        let t0 = Instant::now();
        assert_eq!(limit.check(t0), Some(0));
        for ms in [1, 500, 999] {
            assert_eq!(limit.check(t0 + Duration::from_millis(ms)), None);
        }
        assert_eq!(limit.check(t0 + Duration::from_millis(1000)), Some(3));
        assert_eq!(limit.check(t0 + Duration::from_millis(1001)), None);
        assert_eq!(limit.check(t0 + Duration::from_secs(5)), Some(1));
    }
}
