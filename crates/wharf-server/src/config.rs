//! Configuration: command-line flags, environment variables and a TOML file.
//!
//! Every setting has one name, used three ways: the flag `--max-message-size`,
//! the environment variable `WHARF_MAX_MESSAGE_SIZE` and the file key
//! `max-message-size` (`max_message_size` is accepted too). Precedence:
//! command line, then environment, then file, then the built-in default.
//! `docs/CONFIGURATION.md` lists them all.
//!
//! File errors name the file, the line and the key: `toml`'s parser gives
//! byte spans, turned here into line and column numbers.

use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, ValueEnum};
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::edge::{self, Edge, EdgeSettings};

/// The `wharf` command line. Parsing it also reads the `WHARF_*`
/// environment variables; [`Config::load`] then adds the file and the
/// defaults.
#[derive(Debug, Parser)]
#[command(
    name = "wharf",
    version,
    about = "A WebSocket chat server with its own web page, metrics and static files.",
    long_about = "A WebSocket chat server with its own web page (at /), Prometheus \
metrics (/metrics), a health check (/healthz) and optional static files. \
WebSocket upgrades are accepted on any path.\n\n\
Every setting can also come from an environment variable (shown below) or \
from the TOML file given with --config, whose keys are the flag names \
without the dashes (max-message-size = \"1MiB\"). Precedence: command line, \
environment, file, default.\n\n\
Sizes are bytes, optionally with a unit: 512KiB, 1MiB, 2GB. Durations are \
seconds, or a number with a unit: 500ms, 10s, 2m, 1h.",
    after_help = "See docs/CONFIGURATION.md for every setting and docs/PROTOCOL.md for the chat protocol."
)]
#[non_exhaustive]
pub struct Cli {
    /// A TOML configuration file with any of the settings below.
    #[arg(long, short = 'c', env = "WHARF_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Print the effective configuration (as TOML) and exit.
    #[arg(long)]
    pub print_config: bool,

    /// The settings.
    #[command(flatten)]
    pub settings: Settings,
}

/// Every setting, each one optional: one layer of the configuration (the
/// command line with the environment, or the file).
#[derive(Args, Clone, Debug, Default)]
#[non_exhaustive]
pub struct Settings {
    /// The address to listen on (IP:port) [default: 127.0.0.1:3400]
    #[arg(long, env = "WHARF_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    /// A web origin (scheme://host:port, or https://*.domain) whose pages
    /// may open WebSockets here, besides the server's own; repeatable, or
    /// comma-separated; "*" allows every origin [default: same origin only]
    #[arg(long = "allowed-origin", env = "WHARF_ALLOWED_ORIGIN", value_name = "ORIGIN", value_delimiter = ',', value_parser = parse_origin)]
    pub allowed_origin: Option<Vec<String>>,

    /// A name this server answers to in the Host header (name, *.domain or
    /// address; ports aside); repeatable, or comma-separated; "*" for any
    /// [default: localhost, 127.0.0.1 and ::1 on a loopback listen
    /// address, else any]
    #[arg(long = "allowed-host", env = "WHARF_ALLOWED_HOST", value_name = "HOST", value_delimiter = ',', value_parser = parse_host)]
    pub allowed_host: Option<Vec<String>>,

    /// Serve /metrics (and /healthz) on this address instead of the main
    /// one [default: none: /metrics on the main address only when it is
    /// loopback]
    #[arg(long, env = "WHARF_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,

    /// What the server does with WebSocket messages [default: chat]
    #[arg(long, env = "WHARF_MODE", value_enum)]
    pub mode: Option<Mode>,

    /// Serve this directory's files for plain HTTP requests; its index.html,
    /// if any, replaces the chat page at / [default: none]
    #[arg(long = "static", env = "WHARF_STATIC", value_name = "DIR")]
    pub static_dir: Option<PathBuf>,

    /// Share rooms, broadcasts and presence with the other nodes on this
    /// Redis (redis://host:port/db; rediss:// for TLS) [default: none:
    /// this node alone]
    #[arg(long, env = "WHARF_REDIS", value_name = "URL", value_parser = parse_redis)]
    pub redis: Option<String>,

    /// The prefix of every Redis channel and key: nodes that share rooms
    /// use the same one, other apps on that Redis another [default: wharf:]
    #[arg(long, env = "WHARF_REDIS_PREFIX", value_name = "PREFIX", value_parser = parse_redis_prefix)]
    pub redis_prefix: Option<String>,

    /// How long a node's presence lasts in Redis without a refresh: the
    /// members of a node that died leave every count within it (at least
    /// 300ms) [default: 6s]
    #[arg(long, env = "WHARF_REDIS_PRESENCE_TTL", value_name = "DURATION", value_parser = parse_presence_ttl)]
    pub redis_presence_ttl: Option<Duration>,

    /// This node's number in connection ids (1-65535), distinct on every
    /// node of one Redis [default: random]
    #[arg(long, env = "WHARF_REDIS_NODE_NUMBER", value_name = "N", value_parser = parse_node_number)]
    pub redis_node_number: Option<u16>,

    /// The largest WebSocket message accepted; a bigger one closes the
    /// connection with 1009 [default: 64KiB in chat mode, else 1MiB]
    #[arg(long, env = "WHARF_MAX_MESSAGE_SIZE", value_name = "SIZE", value_parser = parse_size)]
    pub max_message_size: Option<usize>,

    /// The largest WebSocket frame accepted; a bigger one closes the
    /// connection with 1009 [default: 64KiB in chat mode, else 1MiB]
    #[arg(long, env = "WHARF_MAX_FRAME_SIZE", value_name = "SIZE", value_parser = parse_size)]
    pub max_frame_size: Option<usize>,

    /// The most frames one message may be split into; more closes the
    /// connection with 1008 [default: 4096]
    #[arg(long, env = "WHARF_MAX_FRAGMENTS", value_name = "COUNT", value_parser = parse_count)]
    pub max_fragments: Option<usize>,

    /// The most bytes queued for one client; past it the slow-client policy
    /// applies [default: 1MiB]
    #[arg(long, env = "WHARF_MAX_BACKPRESSURE", value_name = "SIZE", value_parser = parse_size)]
    pub max_backpressure: Option<usize>,

    /// What to do with a client whose queue is full: close it with 1008, or
    /// drop the message [default: close]
    #[arg(long, env = "WHARF_SLOW_CLIENT", value_enum, value_name = "POLICY")]
    pub slow_client: Option<SlowClientPolicy>,

    /// permessage-deflate (RFC 7692) for clients that offer it: off; shared
    /// (no context takeover, no deflate memory per idle connection); or
    /// dedicated (context takeover: better ratio, up to ~300 KiB per
    /// connection once used) [default: shared]
    #[arg(long, env = "WHARF_DEFLATE", value_enum, value_name = "MODE")]
    pub deflate: Option<DeflateMode>,

    /// Worker threads, one current-thread runtime each (thread per core)
    /// [default: one per CPU this process may run on]
    #[arg(long, env = "WHARF_WORKERS", value_name = "N", value_parser = parse_count)]
    pub workers: Option<usize>,

    /// Also accept the seed's pre-standard drafts, hixie-75 and hixie-76:
    /// text only, no masking, a weaker handshake (see docs/LEGACY.md)
    /// [default: false]
    #[arg(long, env = "WHARF_LEGACY_DRAFTS", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub legacy_drafts: Option<bool>,

    /// How long a client may take to send its request head [default: 10s]
    #[arg(long, env = "WHARF_HANDSHAKE_TIMEOUT", value_name = "DURATION", value_parser = parse_timeout)]
    pub handshake_timeout: Option<Duration>,

    /// How long to wait for the close handshake to finish [default: 10s]
    #[arg(long, env = "WHARF_CLOSE_TIMEOUT", value_name = "DURATION", value_parser = parse_timeout)]
    pub close_timeout: Option<Duration>,

    /// Drop a client whose queued messages wait this long with no byte
    /// written (it stopped reading); 0 or "off" turns it off [default: 30s]
    #[arg(long, env = "WHARF_WRITE_TIMEOUT", value_name = "DURATION", value_parser = parse_interval)]
    pub write_timeout: Option<Duration>,

    /// Ping a connection silent for this long; 0 or "off" turns keepalive
    /// off [default: 30s]
    #[arg(long, env = "WHARF_PING_INTERVAL", value_name = "DURATION", value_parser = parse_interval)]
    pub ping_interval: Option<Duration>,

    /// Close (1001) a pinged connection that stays silent this much longer
    /// [default: 20s]
    #[arg(long, env = "WHARF_PING_TIMEOUT", value_name = "DURATION", value_parser = parse_timeout)]
    pub ping_timeout: Option<Duration>,

    /// Serve TLS (https:// and wss://) with this PEM certificate chain,
    /// server certificate first; needs --tls-key. SIGHUP reloads both
    /// files [default: none: plain HTTP]
    #[arg(long, env = "WHARF_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// The PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1)
    /// [default: none]
    #[arg(long, env = "WHARF_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,

    /// Messages a second each client may send ("5/s"); past the burst, a
    /// chat client gets a `rate_limited` error for each message over it,
    /// other modes drop them; "off" turns it off [default: 5/s in chat mode,
    /// else off]
    #[arg(long, env = "WHARF_RATE_LIMIT_MESSAGES", value_name = "N/s", value_parser = parse_message_rate)]
    pub rate_limit_messages: Option<u32>,

    /// Messages a client may send at once, above the rate [default: 20]
    #[arg(long, env = "WHARF_RATE_LIMIT_MESSAGE_BURST", value_name = "COUNT", value_parser = parse_burst)]
    pub rate_limit_message_burst: Option<u32>,

    /// Payload bytes a second each client may send ("16KiB/s"), as for
    /// messages; "off" turns it off [default: 16KiB/s in chat mode, else off]
    #[arg(long, env = "WHARF_RATE_LIMIT_BYTES", value_name = "SIZE/s", value_parser = parse_byte_rate)]
    pub rate_limit_bytes: Option<u64>,

    /// Payload bytes a client may send at once, above the rate
    /// [default: 64KiB]
    #[arg(long, env = "WHARF_RATE_LIMIT_BYTE_BURST", value_name = "SIZE", value_parser = parse_size)]
    pub rate_limit_byte_burst: Option<usize>,

    /// The log filter: a level (error, warn, info, debug, trace) or tracing
    /// directives such as "info,wharf=debug" [default: info]
    #[arg(long, env = "WHARF_LOG", value_name = "FILTER", value_parser = parse_log_level)]
    pub log_level: Option<String>,

    /// Connection caps, trusted proxies, the PROXY protocol.
    #[command(flatten)]
    pub edge: EdgeSettings,
}

/// What the server does with WebSocket messages.
#[derive(Clone, Copy, Debug, Default, Eq, PartialEq, ValueEnum)]
#[non_exhaustive]
pub enum Mode {
    /// Relay every message unchanged to every client, sender included
    /// (a benchmark target).
    Broadcast,
    /// The chat server: JSON messages in rooms (docs/PROTOCOL.md).
    #[default]
    Chat,
    /// Send every message back to its sender (a benchmark target).
    Echo,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&enum_name(*self))
    }
}

/// What to do with a client whose write queue is full.
#[derive(Clone, Copy, Debug, Default, Eq, PartialEq, ValueEnum)]
#[non_exhaustive]
pub enum SlowClientPolicy {
    /// Close the connection with 1008.
    #[default]
    Close,
    /// Drop the message that does not fit and keep the connection.
    Drop,
}

/// Whether and how to compress (permessage-deflate).
#[derive(Clone, Copy, Debug, Default, Eq, PartialEq, ValueEnum)]
#[non_exhaustive]
pub enum DeflateMode {
    /// Context takeover in both directions, state per connection.
    Dedicated,
    /// Never compress.
    Off,
    /// No context takeover; compressor state shared per thread.
    #[default]
    Shared,
}

/// The effective configuration: every setting resolved.
#[derive(Clone, Debug, Eq, PartialEq)]
#[non_exhaustive]
pub struct Config {
    /// The address to listen on.
    pub listen: SocketAddr,
    /// Origins allowed besides the server's own (`*`: every one).
    pub allowed_origins: Vec<String>,
    /// Host names answered to; empty for the default (see
    /// [`Config::hosts`]).
    pub allowed_hosts: Vec<String>,
    /// Where /metrics is served, if not on the main address.
    pub metrics_listen: Option<SocketAddr>,
    /// What the server does with WebSocket messages.
    pub mode: Mode,
    /// The directory served for plain HTTP requests, if any.
    pub static_dir: Option<PathBuf>,
    /// The Redis that nodes share rooms through, if any.
    pub redis: Option<String>,
    /// The prefix of the Redis channels and keys.
    pub redis_prefix: String,
    /// How long a node's presence lasts without a refresh.
    pub redis_presence_ttl: Duration,
    /// This node's number in connection ids; `None`: random.
    pub redis_node_number: Option<u16>,
    /// The largest message accepted, in bytes.
    pub max_message_size: usize,
    /// The largest frame accepted, in bytes.
    pub max_frame_size: usize,
    /// The most fragments per message.
    pub max_fragments: usize,
    /// The most bytes queued for one client.
    pub max_backpressure: usize,
    /// What happens past `max_backpressure`.
    pub slow_client: SlowClientPolicy,
    /// permessage-deflate.
    pub deflate: DeflateMode,
    /// Worker threads; zero means one per available CPU (see
    /// [`Config::worker_count`]).
    pub workers: usize,
    /// Whether hixie-75 and hixie-76 clients are accepted.
    pub legacy_drafts: bool,
    /// How long a client may take to send its request head.
    pub handshake_timeout: Duration,
    /// How long the close handshake may take.
    pub close_timeout: Duration,
    /// How long queued output may wait unwritten; zero turns it off.
    pub write_timeout: Duration,
    /// Keepalive ping interval; zero turns keepalive off.
    pub ping_interval: Duration,
    /// How long a pinged connection may stay silent.
    pub ping_timeout: Duration,
    /// Messages a second per connection; zero turns the limit off.
    pub rate_limit_messages: u32,
    /// Messages at once above the rate.
    pub rate_limit_message_burst: u32,
    /// Payload bytes a second per connection; zero turns the limit off.
    pub rate_limit_bytes: u64,
    /// Payload bytes at once above the rate.
    pub rate_limit_byte_burst: usize,
    /// The tracing filter.
    pub log_level: String,
    /// Connection caps, trusted proxies, the PROXY protocol.
    pub edge: Edge,
    /// The TLS certificate chain file, if TLS is on.
    pub tls_cert: Option<PathBuf>,
    /// The TLS private key file, if TLS is on.
    pub tls_key: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 3400)),
            allowed_origins: Vec::new(),
            allowed_hosts: Vec::new(),
            metrics_listen: None,
            mode: Mode::Chat,
            static_dir: None,
            redis: None,
            redis_prefix: "wharf:".to_owned(),
            redis_presence_ttl: Duration::from_secs(6),
            redis_node_number: None,
            max_message_size: CHAT_MAX_MESSAGE,
            max_frame_size: CHAT_MAX_MESSAGE,
            max_fragments: 4096,
            max_backpressure: 1 << 20,
            slow_client: SlowClientPolicy::Close,
            deflate: DeflateMode::Shared,
            workers: 0,
            legacy_drafts: false,
            handshake_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(30),
            ping_interval: Duration::from_secs(30),
            ping_timeout: Duration::from_secs(20),
            rate_limit_messages: CHAT_RATE_MESSAGES,
            rate_limit_message_burst: 20,
            rate_limit_bytes: CHAT_RATE_BYTES,
            rate_limit_byte_burst: 64 << 10,
            log_level: "info".to_owned(),
            edge: Edge::default(),
            tls_cert: None,
            tls_key: None,
        }
    }
}

/// A configuration that could not be loaded: an unreadable file, a TOML
/// syntax error, an unknown key or an invalid value. Its message names the
/// file, the line and the key.
#[derive(Debug)]
pub struct ConfigError {
    file: PathBuf,
    line: Option<usize>,
    column: Option<usize>,
    key: Option<String>,
    message: String,
    source: Option<std::io::Error>,
}

impl ConfigError {
    /// The file the error is in.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// The line (from 1) the error is on, when it is in the file's text.
    pub fn line(&self) -> Option<usize> {
        self.line
    }

    /// The key whose value is invalid, if the error is about one.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.file.as_os_str().is_empty() {
            // The command line or the environment.
            f.write_str("invalid configuration")?;
        } else {
            write!(f, "invalid configuration in {}", self.file.display())?;
        }
        if let Some(line) = self.line {
            write!(f, ", line {line}")?;
            if let Some(column) = self.column {
                write!(f, ", column {column}")?;
            }
        }
        if let Some(key) = &self.key {
            write!(f, ", key `{key}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// The file keys, in the order `--print-config` writes them.
/// The chat mode's message and frame limit: its messages are at most a few
/// KiB of JSON (docs/PROTOCOL.md).
const CHAT_MAX_MESSAGE: usize = 64 << 10;
/// The chat mode's rate limits: a person typing sends a message every
/// second or two, at most a few a second in a quick exchange (see
/// docs/CONFIGURATION.md).
const CHAT_RATE_MESSAGES: u32 = 5;
const CHAT_RATE_BYTES: u64 = 16 << 10;

const KEYS: &[&str] = &[
    "listen",
    "allowed-origin",
    "allowed-host",
    "metrics-listen",
    "mode",
    "static",
    "redis",
    "redis-prefix",
    "redis-presence-ttl",
    "redis-node-number",
    "max-message-size",
    "max-frame-size",
    "max-fragments",
    "max-backpressure",
    "slow-client",
    "deflate",
    "workers",
    "legacy-drafts",
    "handshake-timeout",
    "close-timeout",
    "write-timeout",
    "ping-interval",
    "ping-timeout",
    "rate-limit-messages",
    "rate-limit-message-burst",
    "rate-limit-bytes",
    "rate-limit-byte-burst",
    "log-level",
    "tls-cert",
    "tls-key",
];

/// Every file key.
fn keys() -> String {
    [KEYS, edge::KEYS].concat().join(", ")
}

impl Config {
    /// The `Origin` policy: same origin, plus `allowed-origin`.
    pub fn origins(&self) -> wharf::Origins {
        let mut origins = wharf::Origins::same_origin();
        for o in &self.allowed_origins {
            // Checked when the configuration was read.
            if let Ok(more) = origins.clone().allow(o) {
                origins = more;
            }
        }
        origins
    }

    /// The `Host` policy: `allowed-host`, or by default the loopback names
    /// on a loopback listen address (a browser's page of another site
    /// cannot then reach this server through a name it rebinds to
    /// 127.0.0.1), and any name elsewhere (the server's public names are
    /// not known; set them with `allowed-host`).
    pub fn hosts(&self) -> wharf::Hosts {
        let names: Vec<&str> = if !self.allowed_hosts.is_empty() {
            self.allowed_hosts.iter().map(String::as_str).collect()
        } else if self.listen.ip().is_loopback() {
            vec!["localhost", "127.0.0.1", "[::1]"]
        } else {
            vec!["*"]
        };
        wharf::Hosts::only(names).unwrap_or_else(|_| wharf::Hosts::any())
    }

    /// Whether /metrics is served on the main address: only when it is
    /// loopback and no `metrics-listen` is set.
    pub fn metrics_on_main(&self) -> bool {
        self.metrics_listen.is_none() && self.listen.ip().is_loopback()
    }

    /// Resolves the configuration: `cli` (which carries the environment
    /// variables too) over the file it names, if any, over the defaults.
    ///
    /// # Errors
    /// If the file cannot be read or holds an invalid setting.
    pub fn load(cli: &Cli) -> Result<Self, ConfigError> {
        let mut config = Self::default();
        let mut sized = cli.settings.max_message_size.is_some();
        let mut framed = cli.settings.max_frame_size.is_some();
        let mut file_edge = None;
        let mut rated = cli.settings.rate_limit_messages.is_some();
        let mut byte_rated = cli.settings.rate_limit_bytes.is_some();
        if let Some(path) = &cli.config {
            let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
                file: path.clone(),
                line: None,
                column: None,
                key: None,
                message: "cannot read the file".to_owned(),
                source: Some(e),
            })?;
            let file = Self::parse_file(&text, path)?;
            sized |= file.max_message_size.is_some();
            framed |= file.max_frame_size.is_some();
            file_edge = Some(file.edge.clone());
            rated |= file.rate_limit_messages.is_some();
            byte_rated |= file.rate_limit_bytes.is_some();
            config.apply(file);
        }
        config.apply(cli.settings.clone());
        // Caps left unset are derived from what is set.
        config.edge = Edge::resolve(file_edge.as_ref(), &cli.settings.edge);
        // The chat protocol's messages are small; the benchmark modes relay
        // whatever they are sent.
        let default = match config.mode {
            Mode::Chat => CHAT_MAX_MESSAGE,
            Mode::Broadcast | Mode::Echo => 1 << 20,
        };
        if !sized {
            config.max_message_size = default;
        }
        if !framed {
            config.max_frame_size = default;
        }
        if config.tls_cert.is_some() != config.tls_key.is_some() {
            return Err(ConfigError {
                file: cli.config.clone().unwrap_or_default(),
                line: None,
                column: None,
                key: Some(
                    if config.tls_cert.is_some() {
                        "tls-key"
                    } else {
                        "tls-cert"
                    }
                    .to_owned(),
                ),
                message:
                    "--tls-cert and --tls-key go together: give both (TLS) or neither (plain HTTP)"
                        .to_owned(),
                source: None,
            });
        }
        // Rate limits protect the chat's rooms; the benchmark modes relay
        // as fast as they are sent to, unless told otherwise.
        if config.mode != Mode::Chat {
            if !rated {
                config.rate_limit_messages = 0;
            }
            if !byte_rated {
                config.rate_limit_bytes = 0;
            }
        }
        Ok(config)
    }

    /// Parses a TOML configuration file's text into a layer of settings.
    /// `path` names the file in errors, and relative `static` directories
    /// are taken relative to its directory.
    ///
    /// # Errors
    /// On a syntax error, an unknown key or an invalid value.
    pub fn parse_file(text: &str, path: &Path) -> Result<Settings, ConfigError> {
        let error = |span: Option<Range<usize>>, key: Option<&str>, message: String| {
            let (line, column) = match span {
                Some(span) => {
                    let (l, c) = line_column(text, span.start);
                    (Some(l), Some(c))
                }
                None => (None, None),
            };
            ConfigError {
                file: path.to_owned(),
                line,
                column,
                key: key.map(str::to_owned),
                message,
                source: None,
            }
        };
        let table = DeTable::parse(text)
            .map_err(|e| error(e.span(), None, e.message().trim_end().to_owned()))?;
        let mut settings = Settings::default();
        for (key, value) in table.get_ref() {
            let name = key.get_ref().replace('_', "-");
            let at = |message: String| error(Some(value.span()), Some(&name), message);
            match name.as_str() {
                "listen" => settings.listen = Some(string(value, &name, parse_addr).map_err(at)?),
                "allowed-origin" => {
                    settings.allowed_origin = Some(strings(value, parse_origin).map_err(at)?);
                }
                "allowed-host" => {
                    settings.allowed_host = Some(strings(value, parse_host).map_err(at)?);
                }
                "metrics-listen" => {
                    settings.metrics_listen = Some(string(value, &name, parse_addr).map_err(at)?);
                }
                "mode" => {
                    settings.mode = Some(string(value, &name, parse_enum::<Mode>).map_err(at)?)
                }
                "static" => {
                    let dir =
                        PathBuf::from(string(value, &name, |s| Ok(s.to_owned())).map_err(at)?);
                    let base = path.parent().unwrap_or_else(|| Path::new(""));
                    settings.static_dir = Some(base.join(dir));
                }
                "redis" => settings.redis = Some(string(value, &name, parse_redis).map_err(at)?),
                "redis-prefix" => {
                    settings.redis_prefix =
                        Some(string(value, &name, parse_redis_prefix).map_err(at)?);
                }
                "redis-presence-ttl" => {
                    settings.redis_presence_ttl =
                        Some(duration(value, parse_presence_ttl).map_err(at)?);
                }
                "redis-node-number" => {
                    let n = match integer(value) {
                        Some(n) => parse_node_number(&n.map_err(at)?.to_string()),
                        None => Err(format!(
                            "expected an integer, found {}",
                            value.get_ref().type_str()
                        )),
                    };
                    settings.redis_node_number = Some(n.map_err(at)?);
                }
                "max-message-size" => settings.max_message_size = Some(size(value).map_err(at)?),
                "max-frame-size" => settings.max_frame_size = Some(size(value).map_err(at)?),
                "max-fragments" => settings.max_fragments = Some(count(value).map_err(at)?),
                "max-backpressure" => settings.max_backpressure = Some(size(value).map_err(at)?),
                "slow-client" => {
                    settings.slow_client =
                        Some(string(value, &name, parse_enum::<SlowClientPolicy>).map_err(at)?);
                }
                "deflate" => {
                    settings.deflate =
                        Some(string(value, &name, parse_enum::<DeflateMode>).map_err(at)?);
                }
                "workers" => settings.workers = Some(count(value).map_err(at)?),
                "legacy-drafts" => match value.get_ref() {
                    DeValue::Boolean(b) => settings.legacy_drafts = Some(*b),
                    other => {
                        return Err(at(format!(
                            "expected true or false, found {}",
                            other.type_str()
                        )));
                    }
                },
                "handshake-timeout" => {
                    settings.handshake_timeout = Some(duration(value, parse_timeout).map_err(at)?);
                }
                "close-timeout" => {
                    settings.close_timeout = Some(duration(value, parse_timeout).map_err(at)?);
                }
                "write-timeout" => {
                    settings.write_timeout = Some(duration(value, parse_interval).map_err(at)?);
                }
                "ping-interval" => {
                    settings.ping_interval = Some(duration(value, parse_interval).map_err(at)?);
                }
                "ping-timeout" => {
                    settings.ping_timeout = Some(duration(value, parse_timeout).map_err(at)?);
                }
                "tls-cert" | "tls-key" => {
                    let file =
                        PathBuf::from(string(value, &name, |s| Ok(s.to_owned())).map_err(at)?);
                    let base = path.parent().unwrap_or_else(|| Path::new(""));
                    let file = Some(base.join(file));
                    match name.as_str() {
                        "tls-cert" => settings.tls_cert = file,
                        _ => settings.tls_key = file,
                    }
                }
                "rate-limit-messages" => {
                    settings.rate_limit_messages =
                        Some(rate(value, parse_message_rate).map_err(at)?);
                }
                "rate-limit-message-burst" => {
                    settings.rate_limit_message_burst = Some(rate(value, parse_burst).map_err(at)?);
                }
                "rate-limit-bytes" => {
                    settings.rate_limit_bytes = Some(rate(value, parse_byte_rate).map_err(at)?);
                }
                "rate-limit-byte-burst" => {
                    settings.rate_limit_byte_burst = Some(size(value).map_err(at)?);
                }
                "log-level" => {
                    settings.log_level = Some(string(value, &name, parse_log_level).map_err(at)?);
                }
                _ => match settings.edge.parse_key(&name, value) {
                    Some(result) => result.map_err(at)?,
                    None => {
                        return Err(error(
                            Some(key.span()),
                            Some(key.get_ref()),
                            format!("unknown key; the keys are {}", keys()),
                        ));
                    }
                },
            }
        }
        Ok(settings)
    }

    /// The number of worker threads: `workers`, or one per CPU this
    /// process may run on (its affinity mask and cgroup quota), at most 64.
    pub fn worker_count(&self) -> usize {
        match self.workers {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        }
        .min(64)
    }

    /// Lays `layer`'s settings over these.
    pub fn apply(&mut self, layer: Settings) {
        let Settings {
            listen,
            allowed_origin,
            allowed_host,
            metrics_listen,
            mode,
            static_dir,
            redis,
            redis_prefix,
            redis_presence_ttl,
            redis_node_number,
            max_message_size,
            max_frame_size,
            max_fragments,
            max_backpressure,
            slow_client,
            deflate,
            workers,
            legacy_drafts,
            handshake_timeout,
            close_timeout,
            write_timeout,
            ping_interval,
            ping_timeout,
            rate_limit_messages,
            rate_limit_message_burst,
            rate_limit_bytes,
            rate_limit_byte_burst,
            log_level,
            edge,
            tls_cert,
            tls_key,
        } = layer;
        set(&mut self.listen, listen);
        set(&mut self.allowed_origins, allowed_origin);
        set(&mut self.allowed_hosts, allowed_host);
        if metrics_listen.is_some() {
            self.metrics_listen = metrics_listen;
        }
        set(&mut self.mode, mode);
        if static_dir.is_some() {
            self.static_dir = static_dir;
        }
        if redis.is_some() {
            self.redis = redis;
        }
        set(&mut self.redis_prefix, redis_prefix);
        set(&mut self.redis_presence_ttl, redis_presence_ttl);
        if redis_node_number.is_some() {
            self.redis_node_number = redis_node_number;
        }
        set(&mut self.max_message_size, max_message_size);
        set(&mut self.max_frame_size, max_frame_size);
        set(&mut self.max_fragments, max_fragments);
        set(&mut self.max_backpressure, max_backpressure);
        set(&mut self.slow_client, slow_client);
        set(&mut self.deflate, deflate);
        set(&mut self.workers, workers);
        set(&mut self.legacy_drafts, legacy_drafts);
        set(&mut self.handshake_timeout, handshake_timeout);
        set(&mut self.close_timeout, close_timeout);
        set(&mut self.write_timeout, write_timeout);
        set(&mut self.ping_interval, ping_interval);
        set(&mut self.ping_timeout, ping_timeout);
        set(&mut self.rate_limit_messages, rate_limit_messages);
        set(&mut self.rate_limit_message_burst, rate_limit_message_burst);
        set(&mut self.rate_limit_bytes, rate_limit_bytes);
        set(&mut self.rate_limit_byte_burst, rate_limit_byte_burst);
        set(&mut self.log_level, log_level);
        self.edge.apply(edge);
        if tls_cert.is_some() {
            self.tls_cert = tls_cert;
        }
        if tls_key.is_some() {
            self.tls_key = tls_key;
        }
    }

    /// The configuration as a TOML file that [`Config::parse_file`] reads
    /// back to the same settings.
    pub fn to_toml(&self) -> String {
        let mut out = String::new();
        let mut line = |key: &str, value: String| {
            out.push_str(key);
            out.push_str(" = ");
            out.push_str(&value);
            out.push('\n');
        };
        line("listen", quote(&self.listen.to_string()));
        let list = |items: &[String]| {
            let quoted: Vec<String> = items.iter().map(|i| quote(i)).collect();
            format!("[{}]", quoted.join(", "))
        };
        line("allowed-origin", list(&self.allowed_origins));
        line("allowed-host", list(&self.allowed_hosts));
        match self.metrics_listen {
            Some(addr) => line("metrics-listen", quote(&addr.to_string())),
            None => line(
                "# metrics-listen",
                "\"ADDR\"  (none: /metrics on a loopback main address only)".to_owned(),
            ),
        }
        line("mode", quote(&enum_name(self.mode)));
        match &self.static_dir {
            Some(dir) => line("static", quote(&dir.display().to_string())),
            None => line("# static", "\"DIR\"  (none: no static files)".to_owned()),
        }
        match &self.redis {
            Some(url) => line("redis", quote(url)),
            None => line("# redis", "\"URL\"  (none: this node alone)".to_owned()),
        }
        line("redis-prefix", quote(&self.redis_prefix));
        line(
            "redis-presence-ttl",
            quote(&fmt_duration(self.redis_presence_ttl)),
        );
        match self.redis_node_number {
            Some(n) => line("redis-node-number", n.to_string()),
            None => line("# redis-node-number", "N  (none: random)".to_owned()),
        }
        line("max-message-size", self.max_message_size.to_string());
        line("max-frame-size", self.max_frame_size.to_string());
        line("max-fragments", self.max_fragments.to_string());
        line("max-backpressure", self.max_backpressure.to_string());
        line("slow-client", quote(&enum_name(self.slow_client)));
        line("deflate", quote(&enum_name(self.deflate)));
        match self.workers {
            0 => line(
                "# workers",
                format!("N  (none: one per CPU, {} here)", self.worker_count()),
            ),
            n => line("workers", n.to_string()),
        }
        line("legacy-drafts", self.legacy_drafts.to_string());
        line(
            "handshake-timeout",
            quote(&fmt_duration(self.handshake_timeout)),
        );
        line("close-timeout", quote(&fmt_duration(self.close_timeout)));
        let off = |d: Duration| {
            if d.is_zero() {
                "off".to_owned()
            } else {
                fmt_duration(d)
            }
        };
        line("write-timeout", quote(&off(self.write_timeout)));
        line("ping-interval", quote(&off(self.ping_interval)));
        line("ping-timeout", quote(&fmt_duration(self.ping_timeout)));
        let per_second = |n: u64| match n {
            0 => "off".to_owned(),
            n => format!("{n}/s"),
        };
        line(
            "rate-limit-messages",
            quote(&per_second(u64::from(self.rate_limit_messages))),
        );
        line(
            "rate-limit-message-burst",
            self.rate_limit_message_burst.to_string(),
        );
        line(
            "rate-limit-bytes",
            quote(&per_second(self.rate_limit_bytes)),
        );
        line(
            "rate-limit-byte-burst",
            self.rate_limit_byte_burst.to_string(),
        );
        line("log-level", quote(&self.log_level));
        self.edge.to_toml(&mut line);
        for (key, file) in [("tls-cert", &self.tls_cert), ("tls-key", &self.tls_key)] {
            match file {
                Some(file) => line(key, quote(&file.display().to_string())),
                None => line(
                    &format!("# {key}"),
                    "\"FILE\"  (none: plain HTTP)".to_owned(),
                ),
            }
        }
        out
    }
}

fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *slot = v;
    }
}

fn enum_name<E: ValueEnum>(value: E) -> String {
    value
        .to_possible_value()
        .map(|v| v.get_name().to_owned())
        .unwrap_or_default()
}

/// A TOML basic string.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

fn string<T>(
    value: &Spanned<DeValue<'_>>,
    key: &str,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<T, String> {
    match value.get_ref().as_str() {
        Some(s) => parse(s),
        None => Err(format!(
            "expected a string, found {} (write {key} = \"...\")",
            value.get_ref().type_str()
        )),
    }
}

/// A string, or an array of strings, each checked by `parse`.
fn strings(
    value: &Spanned<DeValue<'_>>,
    parse: fn(&str) -> Result<String, String>,
) -> Result<Vec<String>, String> {
    if let Some(s) = value.get_ref().as_str() {
        return Ok(vec![parse(s)?]);
    }
    let Some(items) = value.get_ref().as_array() else {
        return Err(format!(
            "expected a string or an array of strings, found {}",
            value.get_ref().type_str()
        ));
    };
    items
        .iter()
        .map(|item| match item.get_ref().as_str() {
            Some(s) => parse(s),
            None => Err(format!(
                "expected strings in the array, found {}",
                item.get_ref().type_str()
            )),
        })
        .collect()
}

/// An allowed origin: `*`, or a pattern `wharf::Origins` takes.
pub(crate) fn parse_origin(s: &str) -> Result<String, String> {
    wharf::Origins::none()
        .allow(s)
        .map(|_| s.trim().to_owned())
        .map_err(|e| e.to_string())
}

/// An allowed host: `*`, or a pattern `wharf::Hosts` takes.
pub(crate) fn parse_host(s: &str) -> Result<String, String> {
    wharf::Hosts::only([s])
        .map(|_| s.trim().to_owned())
        .map_err(|e| e.to_string())
}

fn integer(value: &Spanned<DeValue<'_>>) -> Option<Result<u64, String>> {
    let i = value.get_ref().as_integer()?;
    Some(
        u64::from_str_radix(&i.as_str().replace('_', ""), i.radix())
            .map_err(|_| format!("{} is not a non-negative integer", i.as_str())),
    )
}

fn size(value: &Spanned<DeValue<'_>>) -> Result<usize, String> {
    match integer(value) {
        Some(n) => parse_size(&n?.to_string()),
        None => match value.get_ref().as_str() {
            Some(s) => parse_size(s),
            None => Err(format!(
                "expected a size (an integer, or a string such as \"1MiB\"), found {}",
                value.get_ref().type_str()
            )),
        },
    }
}

fn count(value: &Spanned<DeValue<'_>>) -> Result<usize, String> {
    match integer(value) {
        Some(n) => parse_count(&n?.to_string()),
        None => Err(format!(
            "expected an integer, found {}",
            value.get_ref().type_str()
        )),
    }
}

fn duration(
    value: &Spanned<DeValue<'_>>,
    parse: fn(&str) -> Result<Duration, String>,
) -> Result<Duration, String> {
    match integer(value) {
        Some(n) => parse(&n?.to_string()),
        None => match value.get_ref().as_str() {
            Some(s) => parse(s),
            None => Err(format!(
                "expected a duration (seconds, or a string such as \"10s\" or \"500ms\"), found {}",
                value.get_ref().type_str()
            )),
        },
    }
}

fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse()
        .map_err(|_| format!("{s:?} is not an IP address and port (such as 127.0.0.1:3400)"))
}

fn parse_redis(s: &str) -> Result<String, String> {
    if !(s.starts_with("redis://") || s.starts_with("rediss://") || s.starts_with("redis+unix://"))
    {
        return Err(format!(
            "{s:?} is not a Redis URL (redis://host:port/db, rediss:// for TLS)"
        ));
    }
    wharf::redis::Redis::open(s)
        .map(|_| s.to_owned())
        .map_err(|e| format!("{s:?} is not a usable Redis URL: {e}"))
}

/// A Redis key prefix: 1 to 64 visible ASCII characters.
fn parse_redis_prefix(s: &str) -> Result<String, String> {
    if s.is_empty() || s.len() > 64 || !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "{s:?} is not a Redis prefix (1 to 64 visible ASCII characters, such as \"chat:\")"
        ));
    }
    Ok(s.to_owned())
}

/// The presence TTL: a duration of at least 300 ms.
fn parse_presence_ttl(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < Duration::from_millis(300) {
        return Err("must be at least 300ms (presence is refreshed every third of it)".to_owned());
    }
    Ok(d)
}

/// A node number: 1 to 65535.
fn parse_node_number(s: &str) -> Result<u16, String> {
    match s.trim().parse::<u16>() {
        Ok(n @ 1..) => Ok(n),
        _ => Err(format!("{s:?} is not a node number (1 to 65535)")),
    }
}

fn parse_enum<E: ValueEnum>(s: &str) -> Result<E, String> {
    E::from_str(s, true).map_err(|_| {
        let names: Vec<String> = E::value_variants()
            .iter()
            .filter_map(|v| v.to_possible_value().map(|p| p.get_name().to_owned()))
            .collect();
        format!("{s:?} is not one of {}", names.join(", "))
    })
}

/// Parses a size: bytes, or a number with a unit (B, KB, KiB, MB, MiB, GB,
/// GiB; case does not matter). Zero is refused.
pub(crate) fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let bad =
        || format!("{s:?} is not a size; use bytes, or a number with a unit: 64KiB, 1MiB, 2GB");
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "kib" | "k" => 1 << 10,
        "mb" => 1_000_000,
        "mib" | "m" => 1 << 20,
        "gb" => 1_000_000_000,
        "gib" | "g" => 1 << 30,
        _ => return Err(bad()),
    };
    let bytes = n
        .checked_mul(scale)
        .and_then(|b| usize::try_from(b).ok())
        .ok_or_else(|| format!("{s:?} is too large"))?;
    if bytes == 0 {
        return Err("must be at least 1 byte".to_owned());
    }
    Ok(bytes)
}

/// A rate setting in a file: an integer, or a string for its parser.
fn rate<T>(
    value: &Spanned<DeValue<'_>>,
    parse: fn(&str) -> Result<T, String>,
) -> Result<T, String> {
    match integer(value) {
        Some(n) => parse(&n?.to_string()),
        None => match value.get_ref().as_str() {
            Some(s) => parse(s),
            None => Err(format!(
                "expected a rate (such as \"5/s\" or \"off\"), found {}",
                value.get_ref().type_str()
            )),
        },
    }
}

/// A rate: `N/s` (or `N`) of what `parse` reads, or `off` (or zero): 0.
fn per_second<T: Default>(s: &str, parse: impl Fn(&str) -> Result<T, String>) -> Result<T, String> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("off") || t == "0" || t == "0/s" {
        return Ok(T::default());
    }
    let n = t.strip_suffix("/s").unwrap_or(t);
    parse(n).map_err(|e| format!("{s:?} is not a rate ({e}); write N/s, such as 5/s, or off"))
}

/// Messages a second: `5/s`, `5`, or `off`.
fn parse_message_rate(s: &str) -> Result<u32, String> {
    per_second(s, |n| {
        n.trim()
            .parse::<u32>()
            .map_err(|_| "not a whole number".to_owned())
    })
}

/// Bytes a second: `16KiB/s`, `16384`, or `off`.
fn parse_byte_rate(s: &str) -> Result<u64, String> {
    per_second(s, |n| parse_size(n).map(|b| b as u64))
}

/// A burst of messages: at least 1.
fn parse_burst(s: &str) -> Result<u32, String> {
    let n = parse_count(s)?;
    u32::try_from(n).map_err(|_| format!("{s:?} is too large"))
}

fn parse_count(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(0) => Err("must be at least 1".to_owned()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{s:?} is not a positive integer")),
    }
}

/// Parses a duration: seconds, or a number with a unit (ms, s, m, h).
fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let bad = || {
        format!("{s:?} is not a duration; use seconds, or a number with a unit: 500ms, 10s, 2m, 1h")
    };
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let ms: u64 = match unit.trim() {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        _ => return Err(bad()),
    };
    n.checked_mul(ms)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("{s:?} is too long"))
}

/// A timeout: a duration that is not zero.
pub(crate) fn parse_timeout(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() {
        return Err("must be longer than zero".to_owned());
    }
    Ok(d)
}

/// The ping interval or write timeout: a duration, where zero or `off`
/// turns it off.
fn parse_interval(s: &str) -> Result<Duration, String> {
    if s.trim().eq_ignore_ascii_case("off") {
        return Ok(Duration::ZERO);
    }
    parse_duration(s)
}

fn parse_log_level(s: &str) -> Result<String, String> {
    tracing_subscriber::EnvFilter::builder()
        .parse(s)
        .map(|_| s.to_owned())
        .map_err(|e| format!("{s:?} is not a log filter: {e}"))
}

fn fmt_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> Result<Settings, ConfigError> {
        Config::parse_file(text, Path::new("/etc/wharf.toml"))
    }

    #[test]
    fn sizes_take_units() {
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("64KiB"), Ok(65_536));
        assert_eq!(parse_size("1 MiB"), Ok(1 << 20));
        assert_eq!(parse_size("2gb"), Ok(2_000_000_000));
        assert!(parse_size("0").is_err());
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("99999999999999GiB").is_err());
    }

    #[test]
    fn durations_take_units() {
        assert_eq!(parse_timeout("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_timeout("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_timeout("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_timeout("0s").is_err());
        assert_eq!(parse_interval("off"), Ok(Duration::ZERO));
        assert!(parse_timeout("soon").is_err());
    }

    #[test]
    fn rates_are_per_second_or_off() {
        assert_eq!(parse_message_rate("5/s"), Ok(5));
        assert_eq!(parse_message_rate(" 12 "), Ok(12));
        assert_eq!(parse_message_rate("off"), Ok(0));
        assert_eq!(parse_message_rate("0"), Ok(0));
        assert!(parse_message_rate("5/min").is_err());
        assert!(parse_message_rate("fast").is_err());
        assert_eq!(parse_byte_rate("16KiB/s"), Ok(16_384));
        assert_eq!(parse_byte_rate("OFF"), Ok(0));
        assert!(parse_byte_rate("16 parsecs/s").is_err());
        assert_eq!(parse_burst("20"), Ok(20));
        assert!(parse_burst("0").is_err());
        let s = file(
            "rate-limit-messages = \"2/s\"\nrate_limit_message_burst = 4\n\
             rate-limit-bytes = \"off\"\nrate-limit-byte-burst = \"1KiB\"\n",
        )
        .unwrap();
        assert_eq!(s.rate_limit_messages, Some(2));
        assert_eq!(s.rate_limit_message_burst, Some(4));
        assert_eq!(s.rate_limit_bytes, Some(0));
        assert_eq!(s.rate_limit_byte_burst, Some(1024));
        let e = file("rate-limit-messages = \"lots\"\n").unwrap_err();
        assert_eq!(e.key(), Some("rate-limit-messages"));
    }

    #[test]
    fn rate_limits_default_on_in_chat_only() {
        let load = |args: &[&str]| {
            let mut argv = vec!["wharf"];
            argv.extend_from_slice(args);
            Config::load(&Cli::parse_from(argv)).unwrap()
        };
        let chat = load(&[]);
        assert_eq!(
            (chat.rate_limit_messages, chat.rate_limit_bytes),
            (5, 16 << 10)
        );
        let echo = load(&["--mode", "echo"]);
        assert_eq!((echo.rate_limit_messages, echo.rate_limit_bytes), (0, 0));
        let echo = load(&["--mode", "echo", "--rate-limit-messages", "100/s"]);
        assert_eq!((echo.rate_limit_messages, echo.rate_limit_bytes), (100, 0));
        let off = load(&["--rate-limit-messages", "off", "--rate-limit-bytes", "off"]);
        assert_eq!((off.rate_limit_messages, off.rate_limit_bytes), (0, 0));
    }

    #[test]
    fn file_settings_are_read() {
        let s = file(
            "listen = \"0.0.0.0:80\"\nmode = \"echo\"\nmax_message_size = \"64KiB\"\n\
             max-fragments = 10\nping-interval = 0\nclose-timeout = \"3s\"\nstatic = \"www\"\n",
        )
        .unwrap();
        assert_eq!(s.listen, Some("0.0.0.0:80".parse().unwrap()));
        assert_eq!(s.mode, Some(Mode::Echo));
        assert_eq!(s.max_message_size, Some(65_536));
        assert_eq!(s.max_fragments, Some(10));
        assert_eq!(s.ping_interval, Some(Duration::ZERO));
        assert_eq!(s.close_timeout, Some(Duration::from_secs(3)));
        assert_eq!(s.static_dir, Some(PathBuf::from("/etc/www")));
    }

    #[test]
    fn errors_name_the_key_and_line() {
        let e = file("mode = \"chat\"\n\nmax-message-size = \"12 parsecs\"\n").unwrap_err();
        assert_eq!(e.line(), Some(3));
        assert_eq!(e.key(), Some("max-message-size"));
        let e = file("listen = 3400\n").unwrap_err();
        assert_eq!((e.line(), e.key()), (Some(1), Some("listen")));
        let e = file("mode = \"chat\"\nmoed = \"echo\"\n").unwrap_err();
        assert_eq!((e.line(), e.key()), (Some(2), Some("moed")));
        let e = file("mode = \"chat\"\nlisten = \n").unwrap_err();
        assert_eq!(e.line(), Some(2), "{e}");
    }

    #[test]
    fn tls_files_come_in_pairs() {
        let s = file("tls-cert = \"cert.pem\"\ntls_key = \"/k.pem\"\n").unwrap();
        assert_eq!(s.tls_cert, Some(PathBuf::from("/etc/cert.pem")));
        assert_eq!(s.tls_key, Some(PathBuf::from("/k.pem")));
        let cli = Cli::try_parse_from(["wharf", "--tls-cert", "c.pem"]).unwrap();
        let e = Config::load(&cli).unwrap_err();
        assert_eq!(e.key(), Some("tls-key"));
        assert!(e.to_string().contains("give both"), "{e}");
        let cli = Cli::try_parse_from(["wharf", "--tls-cert", "c.pem", "--tls-key", "k.pem"]);
        assert!(Config::load(&cli.unwrap()).is_ok());
    }

    #[test]
    fn legacy_drafts_one_name_three_ways() {
        assert!(!Config::default().legacy_drafts, "off by default");
        let s = file("legacy-drafts = true\n").unwrap();
        assert_eq!(s.legacy_drafts, Some(true));
        let e = file("legacy-drafts = \"yes\"\n").unwrap_err();
        assert_eq!(e.key(), Some("legacy-drafts"));
        let cli = Cli::try_parse_from(["wharf", "--legacy-drafts"]).unwrap();
        assert!(Config::load(&cli).unwrap().legacy_drafts);
        let cli = Cli::try_parse_from(["wharf", "--legacy-drafts", "false"]).unwrap();
        assert!(!Config::load(&cli).unwrap().legacy_drafts);
    }

    #[test]
    fn redis_settings_come_three_ways() {
        let s =
            file("redis-prefix = \"chat:\"\nredis_presence_ttl = \"2s\"\nredis-node-number = 12\n")
                .unwrap();
        assert_eq!(s.redis_prefix.as_deref(), Some("chat:"));
        assert_eq!(s.redis_presence_ttl, Some(Duration::from_secs(2)));
        assert_eq!(s.redis_node_number, Some(12));
        let e = file("redis-node-number = 0\n").unwrap_err();
        assert_eq!(e.key(), Some("redis-node-number"));
        let e = file("redis-node-number = 70000\n").unwrap_err();
        assert!(e.to_string().contains("1 to 65535"), "{e}");
        let e = file("redis-presence-ttl = \"100ms\"\n").unwrap_err();
        assert!(e.to_string().contains("at least 300ms"), "{e}");
        let e = file("redis-prefix = \"has space\"\n").unwrap_err();
        assert_eq!(e.key(), Some("redis-prefix"));
        let cli = Cli::try_parse_from([
            "wharf",
            "--redis-prefix",
            "app2:",
            "--redis-presence-ttl",
            "1500ms",
            "--redis-node-number",
            "65535",
        ])
        .unwrap();
        let c = Config::load(&cli).unwrap();
        assert_eq!(c.redis_prefix, "app2:");
        assert_eq!(c.redis_presence_ttl, Duration::from_millis(1500));
        assert_eq!(c.redis_node_number, Some(65535));
        let d = Config::default();
        assert_eq!(
            (
                d.redis_prefix.as_str(),
                d.redis_presence_ttl,
                d.redis_node_number
            ),
            ("wharf:", Duration::from_secs(6), None)
        );
        assert!(Cli::try_parse_from(["wharf", "--redis-node-number", "x"]).is_err());
    }

    #[test]
    fn printed_config_reads_back() {
        let c = Config {
            legacy_drafts: true,
            ping_interval: Duration::ZERO,
            close_timeout: Duration::from_millis(1500),
            static_dir: Some(PathBuf::from("/srv/www")),
            tls_cert: Some(PathBuf::from("/etc/wharf/cert.pem")),
            tls_key: Some(PathBuf::from("/etc/wharf/key.pem")),
            redis_prefix: "chat:".to_owned(),
            redis_presence_ttl: Duration::from_millis(2500),
            redis_node_number: Some(9),
            ..Config::default()
        };
        let mut back = Config::default();
        back.apply(file(&c.to_toml()).unwrap());
        assert_eq!(back, c);
    }
}
