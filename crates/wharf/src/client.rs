//! The client: [`connect`] and its builder, [`Connector`], on the same core,
//! driver and [`Connection`] as the server.
//!
//! Opening a connection: the TCP connection (through an HTTP `CONNECT`
//! proxy if one is set), TLS for `wss://` (feature `tls`), the upgrade
//! request (RFC 6455 §4.1) and the check of its response
//! ([`wharf_proto::ClientHandshake`]), all under one handshake deadline.
//! Then the connection's driver is spawned on the current tokio runtime, as
//! for a server's connection; the [`Connection`] is not in any hub.
//!
//! Masking keys (§5.3) and the handshake key come from `rand`'s thread
//! generator: a CSPRNG per thread, seeded from the operating system.
//!
//! The close handshake keeps the roles of §7.1.1: after it, the server
//! closes TCP first; the client waits for that (within the close timeout)
//! before it lets the socket go.

use std::borrow::Cow;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::{Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode, Uri};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use wharf_proto::{ClientHandshake, DeflateConfig, Limits, ResponseError};

use crate::caps::Caps;
use crate::conn::task::{Driver, Keepalive, Settings, Task};
use crate::conn::{Client, Connection, Info, Shared, SlowClient};
use crate::hub::Hub;
use crate::listener::Stream;
use crate::stats::Stats;

/// The longest response head (status line and headers) read, from the
/// server or a proxy.
const MAX_HEAD: usize = 16 * 1024;
/// The most response headers parsed.
const MAX_HEADERS: usize = 64;
/// The most bytes of a refusal's body kept in [`ConnectError::response`].
const MAX_BODY: usize = 4 * 1024;

/// Connects to a `ws://` or `wss://` URL with the default settings (see
/// [`Connector`]); returns the open connection and the server's `101`.
///
/// ```no_run
/// # async fn run() -> Result<(), wharf::ConnectError> {
/// let (mut conn, response) = wharf::connect("ws://127.0.0.1:8080/chat").await?;
/// println!("upgraded: {}", response.status());
/// conn.send("hello").await.ok();
/// while let Some(message) = conn.recv().await {
///     println!("{message:?}");
/// }
/// # Ok(())
/// # }
/// ```
///
/// # Errors
/// A [`ConnectError`] saying what failed: the URL, the TCP connection, TLS,
/// the deadline, a refusal (with its status and response) or a response
/// that breaks the handshake's rules.
///
/// # Cancel safety
/// Dropping the future drops the connection being opened.
pub async fn connect(url: &str) -> Result<(Connection, Response<()>), ConnectError> {
    Connector::new().connect(url).await
}

/// The client's settings, reused for every connection it opens.
///
/// ```no_run
/// use std::time::Duration;
/// use wharf::{Connector, DeflateConfig, Limits};
///
/// # async fn run() -> Result<(), wharf::ConnectError> {
/// let connector = Connector::new()
///     .protocols(["wharf.chat.v1"])
///     .header("origin", "https://example.com")
///     .deflate(Some(DeflateConfig::shared()))
///     .limits(Limits::default().max_message_size(4 << 20))
///     .handshake_timeout(Duration::from_secs(5));
/// let (conn, _) = connector.connect("ws://127.0.0.1:8080/").await?;
/// assert_eq!(conn.protocol(), Some("wharf.chat.v1"));
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Connector {
    settings: Arc<Settings>,
    handshake_timeout: Duration,
    protocols: Vec<String>,
    headers: HeaderMap,
    /// The first header given to [`Connector::header`] that is not valid
    /// HTTP: every `connect` fails with it.
    bad_header: Option<Box<str>>,
    proxy: Option<Proxy>,
    #[cfg(feature = "tls")]
    tls: Option<Arc<rustls::ClientConfig>>,
}

/// An HTTP proxy reached with `CONNECT` (RFC 9110 §9.3.6).
#[derive(Clone, Debug)]
struct Proxy {
    /// `host:port`.
    addr: String,
    auth: Option<HeaderValue>,
}

impl Default for Connector {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connector")
            .field("limits", &self.settings.limits)
            .field("deflate", &self.settings.deflate)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("protocols", &self.protocols)
            .field("proxy", &self.proxy.as_ref().map(|p| &p.addr))
            .finish_non_exhaustive()
    }
}

impl Connector {
    /// The defaults: [`Limits::default`], no permessage-deflate, 1 MiB of
    /// `max_backpressure` with [`SlowClient::Close`], keepalive 30 s + 20 s,
    /// 10 s handshake and close timeouts, a 30 s write timeout, no proxy,
    /// and for `wss://` the system's root certificates.
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
                caps: Caps::new(1),
                on_message: None,
                on_open: None,
                on_close: None,
            }),
            handshake_timeout: Duration::from_secs(10),
            protocols: Vec::new(),
            headers: HeaderMap::new(),
            bad_header: None,
            proxy: None,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }

    /// Offers these subprotocols, most preferred first; the one the server
    /// chose is [`Client::protocol`](crate::Client::protocol).
    #[must_use]
    pub fn protocols<S: Into<String>>(mut self, protocols: impl IntoIterator<Item = S>) -> Self {
        self.protocols = protocols.into_iter().map(Into::into).collect();
        self
    }

    /// Adds a header to the upgrade request (`Origin`, `Authorization`,
    /// cookies...). Headers the handshake sets itself (`Host`, `Upgrade`,
    /// `Connection`, `Sec-WebSocket-*`) are not replaced. A name or value
    /// that is not valid HTTP makes every `connect` fail with
    /// [`ConnectErrorKind::Request`], naming the header.
    #[must_use]
    pub fn header(mut self, name: &str, value: &str) -> Self {
        match (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            (Ok(n), Ok(v)) => {
                self.headers.append(n, v);
            }
            _ => {
                let shown: String = name.chars().take(64).collect();
                self.bad_header.get_or_insert_with(|| shown.into());
            }
        }
        self
    }

    /// Fails on a header that could not be added.
    fn check_request(&self) -> Result<(), ConnectError> {
        match &self.bad_header {
            None => Ok(()),
            Some(name) => Err(ConnectError::new(
                ConnectErrorKind::Request,
                format!("header {name:?}: its name or value is not valid HTTP"),
            )),
        }
    }

    /// Offers permessage-deflate (RFC 7692) under `config`, read from the
    /// client's side: `context_takeover: false` ([`DeflateConfig::shared`])
    /// asks both ends to reset per message; `server_max_window_bits` below
    /// 15 asks the server for that window at most; `client_max_window_bits`
    /// at 15 lets the server pick ours (8 included), below 15 caps it.
    /// Default `None`.
    #[must_use]
    pub fn deflate(mut self, config: Option<DeflateConfig>) -> Self {
        Arc::make_mut(&mut self.settings).deflate = config;
        self
    }

    /// Frame and message size limits for what the server sends
    /// ([`crate::docs::limits`]).
    #[must_use]
    pub fn limits(mut self, limits: Limits) -> Self {
        Arc::make_mut(&mut self.settings).limits = limits;
        self
    }

    /// The most bytes queued for sending before [`Connector::slow_client`]
    /// applies. Default 1 MiB.
    #[must_use]
    pub fn max_backpressure(mut self, bytes: usize) -> Self {
        Arc::make_mut(&mut self.settings).max_backpressure = bytes;
        self
    }

    /// What a send past `max_backpressure` does. Default
    /// [`SlowClient::Close`].
    #[must_use]
    pub fn slow_client(mut self, policy: SlowClient) -> Self {
        Arc::make_mut(&mut self.settings).slow_client = policy;
        self
    }

    /// Pings after `interval` of silence from the server and gives up after
    /// `timeout` more. Default 30 s and 20 s; `None` turns it off.
    #[must_use]
    pub fn keepalive(mut self, keepalive: Option<(Duration, Duration)>) -> Self {
        Arc::make_mut(&mut self.settings).keepalive =
            keepalive.map(|(interval, timeout)| Keepalive { interval, timeout });
        self
    }

    /// The deadline for opening a connection: name resolution, TCP, the
    /// proxy, TLS and the upgrade together. Default 10 s.
    #[must_use]
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// How long the close handshake, and then the server's closing of TCP,
    /// may take. Default 10 s.
    #[must_use]
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        Arc::make_mut(&mut self.settings).close_timeout = timeout;
        self
    }

    /// How long queued output may wait with no byte written. Default 30 s;
    /// `None`: no limit.
    #[must_use]
    pub fn write_timeout(mut self, timeout: Option<Duration>) -> Self {
        Arc::make_mut(&mut self.settings).write_timeout = timeout;
        self
    }

    /// Connects through the HTTP proxy at `url` (`http://host:port`, with
    /// `user:password@` for basic authentication) using `CONNECT`.
    ///
    /// # Errors
    /// A [`ConnectErrorKind::Url`] error if `url` is not of that form.
    pub fn proxy(mut self, url: &str) -> Result<Self, ConnectError> {
        let bad = || ConnectError::new(ConnectErrorKind::Url, "a proxy URL is http://host:port");
        let rest = url.strip_prefix("http://").ok_or_else(bad)?;
        let rest = rest.trim_end_matches('/');
        let (auth, addr) = match rest.rsplit_once('@') {
            Some((user, addr)) => {
                let value = format!("Basic {}", STANDARD.encode(user));
                (Some(HeaderValue::try_from(value).map_err(|_| bad())?), addr)
            }
            None => (None, rest),
        };
        if addr.is_empty() || addr.contains('/') {
            return Err(bad());
        }
        let addr = if has_port(addr) {
            addr.to_owned()
        } else {
            format!("{addr}:80")
        };
        self.proxy = Some(Proxy { addr, auth });
        Ok(self)
    }

    /// The TLS configuration for `wss://` (default: rustls on *ring* with
    /// the system's root certificates, ALPN `http/1.1`).
    #[cfg(feature = "tls")]
    #[must_use]
    pub fn tls_config(mut self, config: Arc<rustls::ClientConfig>) -> Self {
        self.tls = Some(config);
        self
    }

    /// Connects to `url` (`ws://` or `wss://`); returns the open
    /// connection and the server's `101` response.
    ///
    /// # Errors
    /// See [`connect`].
    ///
    /// # Cancel safety
    /// Dropping the future drops the connection being opened.
    pub async fn connect(&self, url: &str) -> Result<(Connection, Response<()>), ConnectError> {
        self.check_request()?;
        let target = Target::parse(url)?;
        self.deadline(async {
            let tcp = match &self.proxy {
                Some(proxy) => self.tunnel(proxy, &target).await?,
                None => TcpStream::connect((target.host.as_str(), target.port))
                    .await
                    .map_err(|e| ConnectError::io("cannot connect", e))?,
            };
            let _ = tcp.set_nodelay(true);
            let peer = tcp.peer_addr().ok();
            self.open(tcp, &target, peer).await
        })
        .await
    }

    /// Opens a WebSocket connection to `url` over `io`, a stream already
    /// connected to its server (or anything that carries bytes to it): the
    /// URL gives the `Host`, the target, and whether to run TLS over `io`.
    ///
    /// # Errors
    /// See [`connect`] (no TCP or proxy step here).
    ///
    /// # Cancel safety
    /// Dropping the future drops `io`.
    pub async fn connect_on<S>(
        &self,
        io: S,
        url: &str,
    ) -> Result<(Connection, Response<()>), ConnectError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        self.check_request()?;
        let target = Target::parse(url)?;
        self.deadline(self.open(io, &target, None)).await
    }

    async fn deadline<T>(
        &self,
        opening: impl Future<Output = Result<T, ConnectError>>,
    ) -> Result<T, ConnectError> {
        tokio::time::timeout(self.handshake_timeout, opening)
            .await
            .unwrap_or_else(|_| {
                Err(ConnectError::new(
                    ConnectErrorKind::TimedOut,
                    "the connection did not open within the handshake timeout",
                ))
            })
    }

    /// A tunnel to the target through `proxy`.
    async fn tunnel(&self, proxy: &Proxy, target: &Target) -> Result<TcpStream, ConnectError> {
        let mut tcp = TcpStream::connect(proxy.addr.as_str())
            .await
            .map_err(|e| ConnectError::io("cannot connect to the proxy", e))?;
        let authority = format!("{}:{}", target.host_header_host(), target.port);
        let mut req = format!("CONNECT {authority} HTTP/1.1\r\nhost: {authority}\r\n").into_bytes();
        if let Some(auth) = &proxy.auth {
            req.extend_from_slice(b"proxy-authorization: ");
            req.extend_from_slice(auth.as_bytes());
            req.extend_from_slice(b"\r\n");
        }
        req.extend_from_slice(b"\r\n");
        tcp.write_all(&req)
            .await
            .map_err(|e| ConnectError::io("cannot write to the proxy", e))?;
        let mut buf = BytesMut::with_capacity(1024);
        let (head, len) = read_head(&mut tcp, &mut buf).await?;
        if !head.status().is_success() {
            let status = head.status();
            return Err(ConnectError {
                kind: ConnectErrorKind::Proxy,
                text: format!("the proxy refused CONNECT: {status}").into(),
                response: Some(Box::new(head.map(|()| Bytes::new()))),
                source: None,
            });
        }
        if buf.len() > len {
            return Err(ConnectError::new(
                ConnectErrorKind::Proxy,
                "the proxy sent data before the tunnel was used",
            ));
        }
        Ok(tcp)
    }

    /// TLS if the URL says so, then the upgrade.
    async fn open<S>(
        &self,
        io: S,
        target: &Target,
        peer: Option<SocketAddr>,
    ) -> Result<(Connection, Response<()>), ConnectError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        if !target.tls {
            return self.upgrade(Stream::Plain(io), target, peer).await;
        }
        #[cfg(feature = "tls")]
        {
            let config = match &self.tls {
                Some(c) => c.clone(),
                None => default_tls()?,
            };
            let name =
                rustls_pki_types::ServerName::try_from(target.host.clone()).map_err(|_| {
                    ConnectError::new(
                        ConnectErrorKind::Url,
                        "the host is not a valid TLS server name",
                    )
                })?;
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, io)
                .await
                .map_err(|e| ConnectError::tls("the TLS handshake failed", e))?;
            self.upgrade(Stream::TlsClient(Box::new(tls)), target, peer)
                .await
        }
        #[cfg(not(feature = "tls"))]
        {
            drop((io, peer));
            Err(ConnectError::new(
                ConnectErrorKind::Tls,
                "wss:// needs wharf's `tls` feature",
            ))
        }
    }

    /// The opening handshake over `io`, then the connection's driver.
    async fn upgrade<S>(
        &self,
        mut io: Stream<S>,
        target: &Target,
        peer: Option<SocketAddr>,
    ) -> Result<(Connection, Response<()>), ConnectError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let mut hs = ClientHandshake::new(rand::random()).protocols(self.protocols.iter().cloned());
        if let Some(config) = self.settings.deflate {
            hs = hs.deflate(config);
        }
        let mut req = Vec::with_capacity(256);
        hs.write_request(&target.host_header(), &target.path, &self.headers, &mut req);
        io.write_all(&req)
            .await
            .map_err(|e| ConnectError::io("cannot send the upgrade request", e))?;
        io.flush()
            .await
            .map_err(|e| ConnectError::io("cannot send the upgrade request", e))?;
        let mut buf = BytesMut::with_capacity(4096);
        let (head, len) = read_head(&mut io, &mut buf).await?;
        let accepted = match hs.from_response(&head) {
            Ok(a) => a,
            Err(ResponseError::Status(status)) => {
                let _ = buf.split_to(len);
                let body = read_body(&mut io, &head, buf).await;
                return Err(ConnectError {
                    kind: ConnectErrorKind::Refused,
                    text: format!("the server refused the upgrade: {status}").into(),
                    response: Some(Box::new(head.map(|()| body))),
                    source: None,
                });
            }
            Err(rule) => {
                return Err(ConnectError {
                    kind: ConnectErrorKind::Response,
                    text: "the upgrade response breaks the protocol".into(),
                    response: Some(Box::new(head.map(|()| Bytes::new()))),
                    source: Some(Box::new(rule)),
                });
            }
        };
        let rest = buf.split_off(len);
        let settings = &self.settings;
        let now = std::time::Instant::now();
        let mut proto = wharf_proto::Connection::client(settings.limits, rand::random::<[u8; 4]>)
            .with_timeouts(settings.timeouts(), now)
            .with_deferred_inflation();
        if let Some(params) = accepted.deflate() {
            proto = proto.with_deflate(params);
        }
        let peer = peer.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        tracing::debug!(%peer, url = %target.path, "client connection open");
        let info = Info::new(
            peer,
            target.path.as_str().into(),
            accepted.protocol(),
            None,
            http::Extensions::new(),
            accepted.deflate(),
            None,
            false,
        );
        let id = settings.hub.next_id(settings.hub.current_shard());
        let shared = Arc::new(Shared::new(proto, id, info, settings.clone()));
        tokio::spawn(Task::new(Driver::new(io, shared.clone(), rest), None));
        Ok((Connection::new(Client::new(shared)), head))
    }
}

/// Where a URL points.
#[derive(Debug)]
struct Target {
    tls: bool,
    /// Without brackets for an IPv6 address.
    host: String,
    port: u16,
    /// Path and query, `/` at least.
    path: String,
    /// Whether the URL gave the port.
    explicit_port: bool,
}

impl Target {
    fn parse(url: &str) -> Result<Self, ConnectError> {
        let bad = |why: &'static str| ConnectError::new(ConnectErrorKind::Url, why);
        let uri: Uri = url.parse().map_err(|_| bad("not a valid URL"))?;
        let tls = match uri.scheme_str() {
            Some(s) if s.eq_ignore_ascii_case("ws") => false,
            Some(s) if s.eq_ignore_ascii_case("wss") => true,
            _ => return Err(bad("the URL's scheme must be ws or wss")),
        };
        let authority = uri.authority().ok_or_else(|| bad("the URL has no host"))?;
        if authority.as_str().contains('@') {
            return Err(bad(
                "credentials in the URL are not supported: use a header",
            ));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        if host.is_empty() {
            return Err(bad("the URL has no host"));
        }
        let path = uri.path_and_query().map_or("/", |pq| pq.as_str());
        Ok(Self {
            tls,
            host: host.to_owned(),
            port: authority.port_u16().unwrap_or(if tls { 443 } else { 80 }),
            path: if path.is_empty() { "/" } else { path }.to_owned(),
            explicit_port: authority.port_u16().is_some(),
        })
    }

    fn host_header_host(&self) -> Cow<'_, str> {
        if self.host.contains(':') {
            format!("[{}]", self.host).into()
        } else {
            Cow::Borrowed(&self.host)
        }
    }

    /// The `Host` header: the port only when the URL gave it.
    fn host_header(&self) -> String {
        let host = self.host_header_host();
        if self.explicit_port {
            format!("{host}:{}", self.port)
        } else {
            host.into_owned()
        }
    }
}

fn has_port(addr: &str) -> bool {
    match addr.rsplit_once(':') {
        Some((host, port)) => {
            !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) && !host.ends_with(':')
        }
        None => false,
    }
}

/// Reads until a response head is complete (at most `MAX_HEAD` bytes);
/// returns it and its length in `buf`.
async fn read_head<S: AsyncRead + Unpin>(
    io: &mut S,
    buf: &mut BytesMut,
) -> Result<(Response<()>, usize), ConnectError> {
    loop {
        match parse_head(buf)? {
            Some(done) => return Ok(done),
            None if buf.len() >= MAX_HEAD => {
                return Err(ConnectError::new(
                    ConnectErrorKind::Response,
                    "the response head is over 16 KiB",
                ));
            }
            None => {}
        }
        buf.reserve(1024);
        let n = io
            .read_buf(buf)
            .await
            .map_err(|e| ConnectError::io("cannot read the response", e))?;
        if n == 0 {
            return Err(ConnectError::new(
                ConnectErrorKind::Io,
                "the connection closed before a response",
            ));
        }
    }
}

/// Parses a response head: `Ok(None)` while incomplete.
fn parse_head(buf: &[u8]) -> Result<Option<(Response<()>, usize)>, ConnectError> {
    let bad = || {
        ConnectError::new(
            ConnectErrorKind::Response,
            "the response head is not valid HTTP/1.1",
        )
    };
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut res = httparse::Response::new(&mut headers);
    let len = match res.parse(&buf[..buf.len().min(MAX_HEAD)]) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(ConnectError::new(
                ConnectErrorKind::Response,
                "the response has over 64 headers",
            ));
        }
        Err(_) => return Err(bad()),
    };
    let mut out = Response::new(());
    *out.status_mut() = res
        .code
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or_else(bad)?;
    *out.version_mut() = match res.version {
        Some(0) => http::Version::HTTP_10,
        _ => http::Version::HTTP_11,
    };
    let map = out.headers_mut();
    for h in res.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| bad())?;
        let value = HeaderValue::from_bytes(h.value).map_err(|_| bad())?;
        map.append(name, value);
    }
    Ok(Some((out, len)))
}

/// The body of a refusal, as far as it is cheap to have: what its
/// `Content-Length` says, up to `MAX_BODY`, read within the deadline
/// already running; else what arrived with the head.
async fn read_body<S: AsyncRead + Unpin>(
    io: &mut S,
    head: &Response<()>,
    mut buf: BytesMut,
) -> Bytes {
    let want = head
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.trim().parse::<usize>().ok())
        .unwrap_or(0)
        .min(MAX_BODY);
    while buf.len() < want {
        buf.reserve(want - buf.len());
        match io.read_buf(&mut buf).await {
            Ok(n) if n > 0 => {}
            _ => break,
        }
    }
    buf.truncate(MAX_BODY.max(want).min(buf.len()));
    buf.freeze()
}

/// The default TLS configuration: the system's roots, made once.
#[cfg(feature = "tls")]
fn default_tls() -> Result<Arc<rustls::ClientConfig>, ConnectError> {
    static CONFIG: std::sync::OnceLock<Result<Arc<rustls::ClientConfig>, String>> =
        std::sync::OnceLock::new();
    let made = CONFIG.get_or_init(|| {
        let mut roots = rustls::RootCertStore::empty();
        let found = rustls_native_certs::load_native_certs();
        let (added, _) = roots.add_parsable_certificates(found.certs);
        if added == 0 {
            return Err("no root certificate found in the system's store".to_owned());
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    });
    made.clone()
        .map_err(|why| ConnectError::new(ConnectErrorKind::Tls, why))
}

/// Why a connection could not be opened.
///
/// [`ConnectError::kind`] says which step failed; a refusal carries the
/// server's response ([`ConnectError::status`], [`ConnectError::response`]
/// with up to 4 KiB of its body, the reason a server such as wharf gives);
/// a response that breaks the handshake's rules names the rule
/// ([`ConnectError::rule`]).
#[derive(Debug)]
pub struct ConnectError {
    kind: ConnectErrorKind,
    text: Cow<'static, str>,
    response: Option<Box<Response<Bytes>>>,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

/// The step at which opening a connection failed.
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
#[non_exhaustive]
pub enum ConnectErrorKind {
    /// Name resolution, the TCP connection, or reading or writing it.
    Io,
    /// The HTTP proxy refused `CONNECT` (its response is kept) or broke
    /// the protocol.
    Proxy,
    /// The server answered the upgrade with another status than `101`.
    Refused,
    /// The server's response breaks RFC 6455 §4.1 or RFC 7692 §7.1:
    /// [`ConnectError::rule`] says which rule.
    Response,
    /// The handshake timeout passed.
    TimedOut,
    /// TLS failed, or `wss://` without the `tls` feature.
    Tls,
    /// The URL is not a `ws://` or `wss://` URL with a host (or the proxy
    /// URL not `http://host:port`).
    Url,
    /// A header given to [`Connector::header`] is not valid HTTP.
    Request,
}

impl ConnectError {
    fn new(kind: ConnectErrorKind, text: impl Into<Cow<'static, str>>) -> Self {
        Self {
            kind,
            text: text.into(),
            response: None,
            source: None,
        }
    }

    fn io(text: &'static str, e: std::io::Error) -> Self {
        Self {
            source: Some(Box::new(e)),
            ..Self::new(ConnectErrorKind::Io, text)
        }
    }

    #[cfg(feature = "tls")]
    fn tls(text: &'static str, e: std::io::Error) -> Self {
        Self {
            source: Some(Box::new(e)),
            ..Self::new(ConnectErrorKind::Tls, text)
        }
    }

    /// The step that failed.
    pub fn kind(&self) -> ConnectErrorKind {
        self.kind
    }

    /// The status of a refusal (the server's, or the proxy's).
    pub fn status(&self) -> Option<StatusCode> {
        match self.kind {
            ConnectErrorKind::Refused | ConnectErrorKind::Proxy => {
                self.response.as_ref().map(|r| r.status())
            }
            _ => None,
        }
    }

    /// The response that ended the attempt, if one did: a refusal (with up
    /// to 4 KiB of its body), a `101` that breaks the rules (without body),
    /// or a proxy's refusal.
    pub fn response(&self) -> Option<&Response<Bytes>> {
        self.response.as_deref()
    }

    /// The rule of RFC 6455 §4.1 or RFC 7692 §7.1 the response broke.
    pub fn rule(&self) -> Option<&ResponseError> {
        self.source.as_ref()?.downcast_ref()
    }
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)?;
        if let Some(rule) = self.rule() {
            write!(f, ": {rule}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConnectError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// Parses `data` as a server's response to an upgrade request (the first
/// byte picks the offer: deflate or not, subprotocols or not) and checks it,
/// for the `response_head` fuzz target. Returns the outcome's name.
#[doc(hidden)]
pub fn fuzz_response_head(data: &[u8]) -> &'static str {
    let Some((&pick, input)) = data.split_first() else {
        return "none";
    };
    let mut hs = ClientHandshake::new(*b"the sample nonce");
    if pick & 1 != 0 {
        hs = hs.deflate(DeflateConfig::dedicated(15));
    }
    if pick & 2 != 0 {
        hs = hs.deflate(DeflateConfig::shared());
    }
    if pick & 4 != 0 {
        hs = hs.protocols(["chat", "superchat"]);
    }
    match parse_head(input) {
        Ok(None) => "none",
        Err(e) => {
            assert_eq!(e.kind(), ConnectErrorKind::Response);
            "invalid"
        }
        Ok(Some((head, len))) => {
            assert!(len <= input.len().min(MAX_HEAD));
            match hs.from_response(&head) {
                Ok(accepted) => {
                    if let Some(p) = accepted.deflate() {
                        assert!((8..=15).contains(&p.client_max_window_bits));
                        assert!((8..=15).contains(&p.server_max_window_bits));
                        // The agreement must be usable by a client.
                        let _ = wharf_proto::Connection::client(Limits::default(), || [0; 4])
                            .with_deflate(p);
                    }
                    "accepted"
                }
                Err(ResponseError::Status(_)) => "refused",
                Err(_) => "rejected",
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let t = Target::parse("ws://example.com/chat?room=a").unwrap();
        assert_eq!((t.tls, t.host.as_str(), t.port), (false, "example.com", 80));
        assert_eq!(
            (t.path.as_str(), t.host_header()),
            ("/chat?room=a", "example.com".into())
        );
        let t = Target::parse("wss://[::1]:9443").unwrap();
        assert_eq!((t.tls, t.host.as_str(), t.port), (true, "::1", 9443));
        assert_eq!(
            (t.path.as_str(), t.host_header()),
            ("/", "[::1]:9443".into())
        );
        for bad in [
            "http://x/",
            "ws://",
            "example.com",
            "ws://u:p@x/",
            "ws ://x",
        ] {
            assert_eq!(
                Target::parse(bad).unwrap_err().kind(),
                ConnectErrorKind::Url,
                "{bad}"
            );
        }
    }

    #[test]
    fn parses_proxy_urls() {
        let c = Connector::new().proxy("http://proxy:3128").unwrap();
        let p = c.proxy.unwrap();
        assert_eq!((p.addr.as_str(), p.auth), ("proxy:3128", None));
        let c = Connector::new()
            .proxy("http://Aladdin:open sesame@[::1]")
            .unwrap();
        let p = c.proxy.unwrap();
        assert_eq!(p.addr, "[::1]:80");
        // RFC 7617 §2's example credentials.
        assert_eq!(p.auth.unwrap(), "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
        assert!(Connector::new().proxy("socks5://x:1").is_err());
    }

    #[test]
    fn response_head_fuzz_seeds() {
        crate::fuzz_seeds::check("response_head", fuzz_response_head);
    }
}
