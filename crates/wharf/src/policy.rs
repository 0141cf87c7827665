//! Which web pages may open a WebSocket here (`Origin`), and which names
//! this server answers to (`Host`): checked before the upgrade hook, and
//! for plain requests too (`Host`).
//!
//! A browser sends `Origin` with every WebSocket handshake, and lets any
//! page a visitor opens connect anywhere: without a check, a site the
//! visitor happens to read can join their chat and read it (cross-site
//! WebSocket hijacking). Clients that are not browsers send no `Origin`,
//! and are not concerned: they could send any value they like. The `Host`
//! check defeats DNS rebinding (a hostile name that resolves to
//! `127.0.0.1` reaching a server that trusts its loopback bind).

use std::fmt;
use std::sync::Arc;

use http::{HeaderMap, StatusCode, header};

use crate::upgrade::Refuse;

/// The pages whose scripts may open a WebSocket: by default, pages of the
/// same origin as the request's `Host` (scheme aside, and with default
/// ports made explicit). Requests without `Origin` (not from a browser)
/// are always let through. Refused: `403` with the reason.
///
/// ```
/// let origins = wharf::Origins::same_origin()
///     .allow("https://app.example.com").unwrap()
///     .allow("https://*.example.org").unwrap();
/// assert!(origins.allows("https://a.b.example.org", "ws.example.com"));
/// assert!(!origins.allows("https://evil.example", "ws.example.com"));
/// ```
#[derive(Clone)]
pub struct Origins {
    any: bool,
    same_origin: bool,
    patterns: Vec<Pattern>,
    predicate: Option<Predicate>,
}

/// A test of an `Origin` value.
type Predicate = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// The names this server answers to, in the `Host` header (ports aside):
/// by default any. Refused: `403` with the reason, for upgrades and plain
/// requests alike.
///
/// ```
/// let hosts = wharf::Hosts::only(["localhost", "127.0.0.1", "[::1]"]).unwrap();
/// assert!(hosts.allows("localhost:3400"));
/// assert!(!hosts.allows("attacker.example:3400"));
/// ```
#[derive(Clone, Debug)]
pub struct Hosts {
    /// `None`: any host.
    patterns: Option<Vec<Pattern>>,
}

/// An origin or host pattern that could not be parsed.
#[derive(Clone, Debug, Eq, PartialEq, thiserror::Error)]
#[error("invalid pattern {pattern:?}: {why}")]
pub struct InvalidPattern {
    pattern: String,
    why: &'static str,
}

/// `scheme://host[:port]` (for origins) or `host` (for hosts), where the
/// host may start with `*.` for any subdomain.
#[derive(Clone, Debug, Eq, PartialEq)]
struct Pattern {
    /// Lower case; `None` for hosts, which match any scheme.
    scheme: Option<String>,
    /// Lower case, without the `*.` of a wildcard.
    host: String,
    wildcard: bool,
    /// `None` for hosts, which match any port; for origins, the scheme's
    /// default when not written.
    port: Option<u16>,
}

impl Origins {
    /// Every origin: the check is off. For servers whose clients are not
    /// browsers, or that authenticate every connection by other means.
    pub fn any() -> Self {
        Self {
            any: true,
            same_origin: false,
            patterns: Vec::new(),
            predicate: None,
        }
    }

    /// Pages of the same origin as the request's `Host` (the default).
    pub fn same_origin() -> Self {
        Self {
            any: false,
            same_origin: true,
            patterns: Vec::new(),
            predicate: None,
        }
    }

    /// No origin but those allowed afterwards: not even the same origin.
    pub fn none() -> Self {
        Self {
            any: false,
            same_origin: false,
            patterns: Vec::new(),
            predicate: None,
        }
    }

    /// Also allows `pattern`: an exact origin (`https://chat.example.com`,
    /// `http://localhost:8080`), a wildcard for every subdomain
    /// (`https://*.example.com`, which does not match `example.com`
    /// itself), or `*` for every origin.
    ///
    /// # Errors
    /// If `pattern` is none of these.
    pub fn allow(mut self, pattern: &str) -> Result<Self, InvalidPattern> {
        if pattern.trim() == "*" {
            self.any = true;
            return Ok(self);
        }
        self.patterns.push(Pattern::origin(pattern)?);
        Ok(self)
    }

    /// Also allows the origins for which `predicate` says yes (it sees the
    /// `Origin` header as sent).
    #[must_use]
    pub fn allow_if(mut self, predicate: impl Fn(&str) -> bool + Send + Sync + 'static) -> Self {
        self.predicate = Some(Arc::new(predicate));
        self
    }

    /// Whether every origin is allowed.
    pub fn is_any(&self) -> bool {
        self.any
    }

    /// Whether a page of `origin` may connect to a request for `host`.
    pub fn allows(&self, origin: &str, host: &str) -> bool {
        if self.any {
            return true;
        }
        let parsed = parse_origin(origin);
        if let Some((scheme, name, port)) = &parsed {
            if self.same_origin && same_origin(scheme, name, *port, host) {
                return true;
            }
            if self
                .patterns
                .iter()
                .any(|p| p.matches(Some(scheme), name, Some(*port)))
            {
                return true;
            }
        }
        self.predicate.as_ref().is_some_and(|p| p(origin))
    }

    /// The refusal for a request, if its `Origin` is not allowed. The same
    /// origin is the host a trusted proxy reported (`forwarded_host`,
    /// see [`Remote::host`](crate::Remote::host)), else the `Host` header.
    pub(crate) fn check(
        &self,
        headers: &HeaderMap,
        forwarded_host: Option<&str>,
    ) -> Result<(), Refuse> {
        if self.any {
            return Ok(());
        }
        let Some(origin) = headers.get(header::ORIGIN) else {
            return Ok(());
        };
        let host = forwarded_host
            .or_else(|| headers.get(header::HOST).and_then(|h| h.to_str().ok()))
            .unwrap_or("");
        match origin.to_str() {
            Ok(origin) if self.allows(origin, host) => Ok(()),
            _ => Err(Refuse::new(
                StatusCode::FORBIDDEN,
                "origin not allowed: this server accepts WebSocket connections from its own pages only",
            )),
        }
    }
}

impl Default for Origins {
    fn default() -> Self {
        Self::same_origin()
    }
}

impl fmt::Debug for Origins {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Origins")
            .field("any", &self.any)
            .field("same_origin", &self.same_origin)
            .field("patterns", &self.patterns)
            .field("predicate", &self.predicate.is_some())
            .finish()
    }
}

impl Hosts {
    /// Any host (the default).
    pub fn any() -> Self {
        Self { patterns: None }
    }

    /// Only these names (each `name`, `*.domain`, an IPv4 address or a
    /// bracketed IPv6 address; ports are not compared); `*` among them
    /// means any.
    ///
    /// # Errors
    /// If a name is not a valid host pattern.
    pub fn only<I, S>(names: I) -> Result<Self, InvalidPattern>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut patterns = Vec::new();
        for name in names {
            let name = name.as_ref().trim();
            if name == "*" {
                return Ok(Self::any());
            }
            patterns.push(Pattern::host(name)?);
        }
        Ok(Self {
            patterns: Some(patterns),
        })
    }

    /// Whether any host is allowed.
    pub fn is_any(&self) -> bool {
        self.patterns.is_none()
    }

    /// Whether a request with this `Host` header value is answered.
    pub fn allows(&self, host: &str) -> bool {
        let Some(patterns) = &self.patterns else {
            return true;
        };
        let Some((name, _)) = split_host(host) else {
            return false;
        };
        patterns.iter().any(|p| p.matches(None, &name, None))
    }

    /// The refusal for a request, if its `Host` is not allowed.
    pub(crate) fn check(&self, headers: &HeaderMap) -> Result<(), Refuse> {
        if self.patterns.is_none() {
            return Ok(());
        }
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        match host {
            Some(host) if self.allows(host) => Ok(()),
            _ => Err(Refuse::new(
                StatusCode::FORBIDDEN,
                "host not allowed: this server does not answer to that name",
            )),
        }
    }
}

impl Default for Hosts {
    fn default() -> Self {
        Self::any()
    }
}

impl Pattern {
    fn origin(text: &str) -> Result<Self, InvalidPattern> {
        let bad = |why| InvalidPattern {
            pattern: text.to_owned(),
            why,
        };
        let (scheme, rest) = text
            .trim()
            .split_once("://")
            .ok_or_else(|| bad("an origin is scheme://host[:port]"))?;
        let scheme = scheme.to_ascii_lowercase();
        let default =
            default_port(&scheme).ok_or_else(|| bad("the scheme must be http or https"))?;
        if rest.contains('/') {
            return Err(bad("an origin has no path"));
        }
        let (host, wildcard) = strip_wildcard(rest);
        let (name, port) = split_host(host).ok_or_else(|| bad("not a host name or address"))?;
        Ok(Self {
            scheme: Some(scheme),
            host: name,
            wildcard,
            port: Some(port.unwrap_or(default)),
        })
    }

    fn host(text: &str) -> Result<Self, InvalidPattern> {
        let bad = |why| InvalidPattern {
            pattern: text.to_owned(),
            why,
        };
        let (host, wildcard) = strip_wildcard(text.trim());
        let (name, port) = split_host(host).ok_or_else(|| bad("not a host name or address"))?;
        if port.is_some() {
            return Err(bad("hosts are matched without their port"));
        }
        Ok(Self {
            scheme: None,
            host: name,
            wildcard,
            port: None,
        })
    }

    fn matches(&self, scheme: Option<&str>, host: &str, port: Option<u16>) -> bool {
        if self.scheme.is_some() && self.scheme.as_deref() != scheme {
            return false;
        }
        if self.port.is_some() && self.port != port {
            return false;
        }
        if self.wildcard {
            host.len() > self.host.len() + 1
                && host.ends_with(&self.host)
                && host.as_bytes()[host.len() - self.host.len() - 1] == b'.'
        } else {
            host == self.host
        }
    }
}

fn strip_wildcard(host: &str) -> (&str, bool) {
    match host.strip_prefix("*.") {
        Some(rest) => (rest, true),
        None => (host, false),
    }
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    }
}

/// `scheme://host[:port]` as a browser sends it in `Origin`: lower-case
/// scheme and host, the port made explicit.
fn parse_origin(origin: &str) -> Option<(String, String, u16)> {
    let (scheme, rest) = origin.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default = default_port(&scheme)?;
    let (host, port) = split_host(rest)?;
    Some((scheme, host, port.unwrap_or(default)))
}

/// A `Host` header value (or an origin's authority): the lower-case name
/// (IPv6 addresses keep their brackets) and the port, if written. `None`
/// for anything that is not a plausible host.
fn split_host(authority: &str) -> Option<(String, Option<u16>)> {
    let (name, port) = if authority.starts_with('[') {
        let end = authority.find(']')?;
        let (name, rest) = authority.split_at(end + 1);
        match rest {
            "" => (name, None),
            _ => (name, Some(rest.strip_prefix(':')?)),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (authority, None),
        }
    };
    let port = match port {
        Some(p) => Some(p.parse::<u16>().ok()?),
        None => None,
    };
    let valid = !name.is_empty()
        && name.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'[' | b']' | b':')
        });
    valid.then(|| (name.to_ascii_lowercase(), port))
}

/// Whether an origin is the request's own: same host and port, the
/// `Host` header's port defaulting to the origin scheme's.
fn same_origin(scheme: &str, name: &str, port: u16, host: &str) -> bool {
    let Some((host_name, host_port)) = split_host(host) else {
        return false;
    };
    let default = default_port(scheme).unwrap_or(0);
    host_name == name && host_port.unwrap_or(default) == port
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_origin_compares_host_and_port() {
        let o = Origins::same_origin();
        assert!(o.allows("http://localhost:3400", "localhost:3400"));
        assert!(o.allows("https://Chat.Example.com", "chat.example.com"));
        assert!(o.allows("http://[::1]:3400", "[::1]:3400"));
        assert!(!o.allows("http://localhost:3401", "localhost:3400"));
        assert!(!o.allows("http://evil.example", "chat.example.com"));
        assert!(!o.allows("null", "localhost:3400"));
        assert!(!o.allows("http://localhost:3400", "attacker.example:3400"));
    }

    #[test]
    fn patterns_exact_wildcard_and_any() {
        let o = Origins::none()
            .allow("https://app.example.com")
            .unwrap()
            .allow("http://*.example.org:8080")
            .unwrap();
        assert!(o.allows("https://app.example.com:443", "x"));
        assert!(!o.allows("http://app.example.com", "x"));
        assert!(o.allows("http://a.b.example.org:8080", "x"));
        assert!(!o.allows("http://example.org:8080", "x"));
        assert!(!o.allows("http://badexample.org:8080", "x"));
        assert!(!o.allows("http://a.example.org", "x"));
        assert!(Origins::none().allow("*").unwrap().allows("null", "x"));
        assert!(
            Origins::none()
                .allow_if(|o| o == "null")
                .allows("null", "x")
        );
        for bad in [
            "example.com",
            "ftp://x",
            "https://x/path",
            "https://x:99999",
            "https://",
        ] {
            assert!(Origins::none().allow(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hosts_ignore_ports_and_refuse_strangers() {
        let h = Hosts::only(["localhost", "127.0.0.1", "[::1]", "*.example.com"]).unwrap();
        for ok in [
            "localhost",
            "localhost:3400",
            "127.0.0.1:1",
            "[::1]:3400",
            "a.example.com",
        ] {
            assert!(h.allows(ok), "{ok}");
        }
        for no in [
            "attacker.example",
            "example.com",
            "127.0.0.2",
            "",
            "local host",
            "[::1",
        ] {
            assert!(!h.allows(no), "{no}");
        }
        assert!(Hosts::only(["*"]).unwrap().is_any());
        assert!(Hosts::only(["localhost:80"]).is_err());
    }
}
