//! The settings of the network edge: connection caps, handshakes in
//! flight, trusted proxies and the PROXY protocol (one part of
//! [`Settings`](crate::Settings) and [`Config`](crate::Config), kept here
//! so that the rest of `config.rs` does not grow with them).
//!
//! The caps' defaults are derived from the process's descriptor limit,
//! which [`raise_descriptor_limit`] first raises to the hard limit:
//! `max-handshakes` is an eighth of it (16 to 256), `max-connections` what
//! is left after those and 32 descriptors for the process itself (the
//! listener, the runtime, files being served), and
//! `max-connections-per-ip` half of `max-connections`. So the caps answer
//! before the kernel does (a `503` rather than a refused accept), idle
//! sockets cannot take the descriptors `/healthz` needs, and one address
//! cannot take more than half the server.

use std::net::SocketAddr;

use clap::Args;
use clap::ValueEnum;
use toml::Spanned;
use toml::de::DeValue;
use wharf::{Cidr, ForwardedHeader, Server};

/// Descriptors kept for the process itself (listener, runtime, stdio,
/// static files being read) when the caps are derived.
const RESERVED_FDS: u64 = 32;
/// The largest descriptor limit taken into account (also for "unlimited").
const MAX_FDS: u64 = u32::MAX as u64;
/// The descriptor limit assumed where it cannot be read.
const FALLBACK_FDS: u64 = 1024;

/// The edge settings of one configuration layer (flags and environment, or
/// the file), each optional.
#[derive(Args, Clone, Debug, Default)]
#[non_exhaustive]
pub struct EdgeSettings {
    /// The most connections open at once, WebSocket and HTTP; past it an
    /// upgrade gets 503 and a plain request is answered, then closed; 0 or
    /// "off" for no cap [default: from the descriptor limit]
    #[arg(long, env = "WHARF_MAX_CONNECTIONS", value_name = "COUNT", value_parser = parse_cap)]
    pub max_connections: Option<usize>,

    /// The most connections open at once from one client address (IPv6: one
    /// /64), with the same outcome; 0 or "off" for no cap [default: half of
    /// max-connections]
    #[arg(long, env = "WHARF_MAX_CONNECTIONS_PER_IP", value_name = "COUNT", value_parser = parse_cap)]
    pub max_connections_per_ip: Option<usize>,

    /// The most connections accepted whose first request is not complete;
    /// past it the oldest is dropped [default: from the descriptor limit,
    /// 16 to 256]
    #[arg(long, env = "WHARF_MAX_HANDSHAKES", value_name = "COUNT", value_parser = parse_positive)]
    pub max_handshakes: Option<usize>,

    /// A proxy whose Forwarded / X-Forwarded-For headers are believed
    /// (address or CIDR block; repeat the flag, or separate with commas)
    /// [default: none]
    #[arg(long = "trusted-proxy", env = "WHARF_TRUSTED_PROXY", value_name = "CIDR", value_delimiter = ',', value_parser = parse_cidr)]
    pub trusted_proxy: Vec<Cidr>,

    /// Which header the trusted proxies set with the client's address:
    /// x-forwarded-for (with X-Forwarded-Proto and -Host), or forwarded
    /// (RFC 7239); the other is ignored [default: x-forwarded-for]
    #[arg(
        long,
        env = "WHARF_FORWARDED_HEADER",
        value_enum,
        value_name = "HEADER"
    )]
    pub forwarded_header: Option<ForwardedBy>,

    /// Expect a PROXY protocol header (v1 or v2) first on every connection,
    /// and take the client's address from it [default: false]
    #[arg(long, env = "WHARF_PROXY_PROTOCOL", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub proxy_protocol: Option<bool>,
}

/// The header trusted proxies put the client's address in.
#[derive(Clone, Copy, Debug, Default, Eq, PartialEq, ValueEnum)]
#[non_exhaustive]
pub enum ForwardedBy {
    /// `Forwarded` (RFC 7239).
    Forwarded,
    /// `X-Forwarded-For`, `X-Forwarded-Proto`, `X-Forwarded-Host`.
    #[default]
    XForwardedFor,
}

/// The edge settings, resolved.
#[derive(Clone, Debug, Eq, PartialEq)]
#[non_exhaustive]
pub struct Edge {
    /// The most connections open at once; 0 for no cap.
    pub max_connections: usize,
    /// The most connections open at once from one address; 0 for no cap.
    pub max_connections_per_ip: usize,
    /// The most handshakes in flight.
    pub max_handshakes: usize,
    /// The proxies whose forwarding headers are believed.
    pub trusted_proxies: Vec<Cidr>,
    /// The header they set.
    pub forwarded_header: ForwardedBy,
    /// Whether every connection starts with a PROXY protocol header.
    pub proxy_protocol: bool,
}

impl Default for Edge {
    /// The defaults for the current descriptor limit.
    fn default() -> Self {
        Self::derived(descriptor_limit(), &EdgeSettings::default())
    }
}

/// The file keys, in the order `--print-config` writes them.
pub(crate) const KEYS: &[&str] = &[
    "max-connections",
    "max-connections-per-ip",
    "max-handshakes",
    "trusted-proxy",
    "forwarded-header",
    "proxy-protocol",
];

impl Edge {
    /// The settings of `layer`, and the defaults derived from `fds`
    /// descriptors for those it leaves unset.
    pub(crate) fn derived(fds: u64, layer: &EdgeSettings) -> Self {
        let handshakes = layer
            .max_handshakes
            .unwrap_or_else(|| usize::try_from((fds / 8).clamp(16, 256)).unwrap_or(256));
        let connections = layer.max_connections.unwrap_or_else(|| {
            let left = fds.saturating_sub(RESERVED_FDS + handshakes as u64).max(16);
            usize::try_from(left).unwrap_or(usize::MAX)
        });
        let per_ip = layer
            .max_connections_per_ip
            .unwrap_or_else(|| connections.div_ceil(2));
        Self {
            max_connections: connections,
            max_connections_per_ip: per_ip,
            max_handshakes: handshakes,
            trusted_proxies: layer.trusted_proxy.clone(),
            forwarded_header: layer.forwarded_header.unwrap_or_default(),
            proxy_protocol: layer.proxy_protocol.unwrap_or(false),
        }
    }

    /// Resolves the layers (`file`, then `cli` over it) against the current
    /// descriptor limit.
    pub(crate) fn resolve(file: Option<&EdgeSettings>, cli: &EdgeSettings) -> Self {
        let mut merged = file.cloned().unwrap_or_default();
        merged.apply(cli.clone());
        Self::derived(descriptor_limit(), &merged)
    }

    /// Lays the settings `layer` sets over these (already resolved).
    pub(crate) fn apply(&mut self, layer: EdgeSettings) {
        let Self {
            max_connections,
            max_connections_per_ip,
            max_handshakes,
            trusted_proxies,
            forwarded_header,
            proxy_protocol,
        } = self;
        *max_connections = layer.max_connections.unwrap_or(*max_connections);
        *max_connections_per_ip = layer
            .max_connections_per_ip
            .unwrap_or(*max_connections_per_ip);
        *max_handshakes = layer.max_handshakes.unwrap_or(*max_handshakes);
        if !layer.trusted_proxy.is_empty() {
            *trusted_proxies = layer.trusted_proxy;
        }
        *forwarded_header = layer.forwarded_header.unwrap_or(*forwarded_header);
        *proxy_protocol = layer.proxy_protocol.unwrap_or(*proxy_protocol);
    }

    /// Applies these settings to `server`.
    pub(crate) fn configure(&self, server: Server) -> Server {
        let cap = |n: usize| (n > 0).then_some(n);
        server
            .max_connections(cap(self.max_connections))
            .max_connections_per_ip(cap(self.max_connections_per_ip))
            .max_handshakes(self.max_handshakes)
            .trusted_proxies(self.trusted_proxies.iter().copied())
            .forwarded_header(match self.forwarded_header {
                ForwardedBy::Forwarded => ForwardedHeader::Forwarded,
                ForwardedBy::XForwardedFor => ForwardedHeader::XForwardedFor,
            })
            .proxy_protocol(self.proxy_protocol)
    }

    /// Logs what an operator should know at start: caps past the
    /// descriptor limit, or a trusted proxy that trusts everyone.
    pub(crate) fn warn(&self, listen: SocketAddr) {
        let fds = descriptor_limit();
        let wanted = self.max_connections as u64 + self.max_handshakes as u64 + RESERVED_FDS;
        if self.max_connections == 0 || wanted > fds {
            tracing::warn!(
                fds,
                max_connections = self.max_connections,
                max_handshakes = self.max_handshakes,
                "the connection caps exceed the descriptor limit: past it, accepts pause"
            );
        }
        if self
            .trusted_proxies
            .iter()
            .any(|c| c.to_string().ends_with("/0"))
        {
            tracing::warn!(%listen, "a trusted proxy is /0: any client can claim any address");
        }
    }

    /// The `--print-config` lines of these settings.
    pub(crate) fn to_toml(&self, line: &mut impl FnMut(&str, String)) {
        let cap = |n: usize| {
            if n == 0 {
                "\"off\"".to_owned()
            } else {
                n.to_string()
            }
        };
        line("max-connections", cap(self.max_connections));
        line("max-connections-per-ip", cap(self.max_connections_per_ip));
        line("max-handshakes", self.max_handshakes.to_string());
        let list: Vec<String> = self
            .trusted_proxies
            .iter()
            .map(|c| format!("\"{c}\""))
            .collect();
        line("trusted-proxy", format!("[{}]", list.join(", ")));
        let by = self
            .forwarded_header
            .to_possible_value()
            .map(|v| v.get_name().to_owned())
            .unwrap_or_default();
        line("forwarded-header", format!("\"{by}\""));
        line("proxy-protocol", self.proxy_protocol.to_string());
    }
}

impl EdgeSettings {
    /// Lays `layer`'s settings over these.
    pub(crate) fn apply(&mut self, layer: Self) {
        let Self {
            max_connections,
            max_connections_per_ip,
            max_handshakes,
            trusted_proxy,
            forwarded_header,
            proxy_protocol,
        } = layer;
        if max_connections.is_some() {
            self.max_connections = max_connections;
        }
        if max_connections_per_ip.is_some() {
            self.max_connections_per_ip = max_connections_per_ip;
        }
        if max_handshakes.is_some() {
            self.max_handshakes = max_handshakes;
        }
        if !trusted_proxy.is_empty() {
            self.trusted_proxy = trusted_proxy;
        }
        if forwarded_header.is_some() {
            self.forwarded_header = forwarded_header;
        }
        if proxy_protocol.is_some() {
            self.proxy_protocol = proxy_protocol;
        }
    }

    /// Reads file key `name` into these settings: `None` if it is not an
    /// edge key, else whether its value is valid.
    pub(crate) fn parse_key(
        &mut self,
        name: &str,
        value: &Spanned<DeValue<'_>>,
    ) -> Option<Result<(), String>> {
        let count = |parse: fn(&str) -> Result<usize, String>| match value.get_ref() {
            DeValue::Integer(i) => parse(i.as_str()),
            DeValue::String(s) => parse(s),
            other => Err(format!("expected an integer, found {}", other.type_str())),
        };
        let result = match name {
            "max-connections" => count(parse_cap).map(|n| self.max_connections = Some(n)),
            "max-connections-per-ip" => {
                count(parse_cap).map(|n| self.max_connections_per_ip = Some(n))
            }
            "max-handshakes" => count(parse_positive).map(|n| self.max_handshakes = Some(n)),
            "trusted-proxy" => cidrs(value).map(|c| self.trusted_proxy = c),
            "forwarded-header" => match value.get_ref() {
                DeValue::String(s) => ForwardedBy::from_str(s, true)
                    .map(|h| self.forwarded_header = Some(h))
                    .map_err(|_| format!("{s:?} is not one of x-forwarded-for, forwarded")),
                other => Err(format!("expected a string, found {}", other.type_str())),
            },
            "proxy-protocol" => match value.get_ref() {
                DeValue::Boolean(b) => {
                    self.proxy_protocol = Some(*b);
                    Ok(())
                }
                other => Err(format!(
                    "expected true or false, found {}",
                    other.type_str()
                )),
            },
            _ => return None,
        };
        Some(result)
    }
}

/// A CIDR block, or an array of them.
fn cidrs(value: &Spanned<DeValue<'_>>) -> Result<Vec<Cidr>, String> {
    match value.get_ref() {
        DeValue::String(s) => s.split(',').map(parse_cidr).collect(),
        DeValue::Array(items) => items
            .iter()
            .map(|item| match item.get_ref() {
                DeValue::String(s) => parse_cidr(s),
                other => Err(format!(
                    "expected strings such as \"10.0.0.0/8\", found {}",
                    other.type_str()
                )),
            })
            .collect(),
        other => Err(format!(
            "expected a string or an array of strings, found {}",
            other.type_str()
        )),
    }
}

fn parse_cidr(s: &str) -> Result<Cidr, String> {
    s.trim()
        .parse()
        .map_err(|_| format!("{s:?} is not an IP address or CIDR block (such as 10.0.0.0/8)"))
}

/// A cap: a count, or 0 or `off` for none.
fn parse_cap(s: &str) -> Result<usize, String> {
    let t = s.trim().replace('_', "");
    if t.eq_ignore_ascii_case("off") {
        return Ok(0);
    }
    t.parse()
        .map_err(|_| format!("{s:?} is not a count (or \"off\")"))
}

fn parse_positive(s: &str) -> Result<usize, String> {
    match parse_cap(s) {
        Ok(0) => Err("must be at least 1".to_owned()),
        other => other,
    }
}

/// The process's descriptor limit (the soft one), or 1024 where it cannot
/// be read; a limit over `u32::MAX` counts as that.
pub(crate) fn descriptor_limit() -> u64 {
    #[cfg(unix)]
    {
        use rustix::process::{Resource, getrlimit};
        getrlimit(Resource::Nofile)
            .current
            .map_or(MAX_FDS, |n| n.min(MAX_FDS))
    }
    #[cfg(not(unix))]
    {
        FALLBACK_FDS
    }
}

/// Raises the soft descriptor limit to the hard one, as servers usually
/// do: the soft limit's common default (1024) is a safety net for
/// programs that leak descriptors, not a server's capacity. Returns the
/// limit in force.
pub fn raise_descriptor_limit() -> u64 {
    #[cfg(unix)]
    {
        use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
        let limit = getrlimit(Resource::Nofile);
        if limit.current != limit.maximum {
            let raised = Rlimit {
                current: limit.maximum,
                maximum: limit.maximum,
            };
            if let Err(e) = setrlimit(Resource::Nofile, raised) {
                tracing::debug!(error = %e, "cannot raise the descriptor limit");
            }
        }
    }
    let _ = FALLBACK_FDS;
    descriptor_limit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_are_derived_from_the_descriptor_limit() {
        let none = EdgeSettings::default();
        let e = Edge::derived(256, &none);
        assert_eq!(
            (
                e.max_handshakes,
                e.max_connections,
                e.max_connections_per_ip
            ),
            (32, 192, 96)
        );
        let e = Edge::derived(1024, &none);
        assert_eq!((e.max_handshakes, e.max_connections), (128, 864));
        let e = Edge::derived(10_500, &none);
        assert_eq!((e.max_handshakes, e.max_connections), (256, 10_212));
        let e = Edge::derived(20, &none);
        assert_eq!((e.max_handshakes, e.max_connections), (16, 16));
        let set = EdgeSettings {
            max_connections: Some(0),
            max_handshakes: Some(10),
            ..EdgeSettings::default()
        };
        let e = Edge::derived(256, &set);
        assert_eq!(
            (
                e.max_connections,
                e.max_connections_per_ip,
                e.max_handshakes
            ),
            (0, 0, 10)
        );
    }

    #[test]
    fn caps_parse() {
        assert_eq!(parse_cap("off"), Ok(0));
        assert_eq!(parse_cap("10_000"), Ok(10_000));
        assert!(parse_cap("-1").is_err());
        assert!(parse_positive("0").is_err());
        assert!(parse_cidr("10.0.0.0/8").is_ok());
        assert!(parse_cidr("10.0.0.0/40").is_err());
    }

    #[test]
    fn file_keys_are_read_and_errors_name_them() {
        let path = std::path::Path::new("/etc/wharf.toml");
        let s = crate::Config::parse_file(
            "max-connections = \"off\"\nmax_connections_per_ip = 10\nmax-handshakes = 64\n\
             trusted-proxy = [\"127.0.0.1\", \"10.0.0.0/8\"]\nforwarded-header = \"forwarded\"\n\
             proxy-protocol = true\n",
            path,
        )
        .unwrap();
        let e = &s.edge;
        assert_eq!(
            (
                e.max_connections,
                e.max_connections_per_ip,
                e.max_handshakes
            ),
            (Some(0), Some(10), Some(64))
        );
        assert_eq!(e.trusted_proxy.len(), 2);
        assert_eq!(e.forwarded_header, Some(ForwardedBy::Forwarded));
        assert_eq!(e.proxy_protocol, Some(true));
        let one = crate::Config::parse_file("trusted-proxy = \"::1\"\n", path).unwrap();
        assert_eq!(one.edge.trusted_proxy, vec!["::1".parse::<Cidr>().unwrap()]);
        for (text, line) in [
            ("mode = \"echo\"\ntrusted-proxy = [\"10.0.0.0/99\"]\n", 2),
            ("proxy-protocol = \"yes\"\n", 1),
            ("max-handshakes = 0\n", 1),
            ("forwarded-header = \"via\"\n", 1),
        ] {
            let err = crate::Config::parse_file(text, path).unwrap_err();
            assert_eq!(err.line(), Some(line), "{err}");
            assert!(err.key().is_some(), "{err}");
        }
    }

    #[test]
    fn printed_edge_settings_read_back() {
        let mut c = crate::Config::default();
        c.edge.max_connections = 0;
        c.edge.trusted_proxies = vec!["10.0.0.0/8".parse().unwrap()];
        c.edge.forwarded_header = ForwardedBy::Forwarded;
        c.edge.proxy_protocol = true;
        let mut back = crate::Config::default();
        back.apply(
            crate::Config::parse_file(&c.to_toml(), std::path::Path::new("x.toml")).unwrap(),
        );
        assert_eq!(back, c);
    }
}
