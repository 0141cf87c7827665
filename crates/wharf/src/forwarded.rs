//! The client's real address behind reverse proxies: `Forwarded`
//! (RFC 7239) and `X-Forwarded-For`, with `X-Forwarded-Proto` and
//! `X-Forwarded-Host`, believed only from trusted proxies.
//!
//! The addresses a request passed through form a chain: the ones in the
//! header, left to right, then the socket's peer (or the address a PROXY
//! protocol header gave). Walking it from the right, every hop that is a
//! trusted proxy is skipped; the first that is not is the client. So a
//! client that forges the header can only add entries to the *left* of the
//! address our own proxy appended, which are never read. If every hop is
//! trusted, the left-most one is the client. An entry that is not an
//! address (`unknown`, an obfuscated `_name`, garbage) stops the walk: the
//! client is then the last hop known, a proxy. From a peer that is not
//! trusted, nothing is read.
//!
//! Only the header the proxies are said to set is read
//! ([`ForwardedHeader`]): a proxy that maintains `X-Forwarded-For` passes a
//! client's own `Forwarded` through untouched (and the reverse), so
//! reading whichever is present would believe a forgery.
//!
//! The scheme and host the client asked for (for a page's own URL, and the
//! Origin policy) come from the same hop: `proto=` and `host=` of the
//! chosen `Forwarded` element, or the `X-Forwarded-Proto` and
//! `X-Forwarded-Host` entry at the chosen hop's position when those headers
//! list one entry per hop, else their last entry (what our own proxy said).

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use http::HeaderMap;
use http::uri::Authority;

/// A block of IP addresses (`10.0.0.0/8`, `2001:db8::/32`; a bare address
/// is a block of one), for [`Server::trusted_proxies`](crate::Server::trusted_proxies).
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// The block of the addresses whose first `prefix` bits are `addr`'s.
    ///
    /// # Errors
    /// If `prefix` is longer than the address (32 or 128 bits).
    pub fn new(addr: IpAddr, prefix: u8) -> Result<Self, CidrError> {
        let bits = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > bits {
            return Err(CidrError(()));
        }
        Ok(Self { addr, prefix })
    }

    /// Whether `ip` is in this block; an IPv4-mapped IPv6 address counts as
    /// its IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => prefix_eq(
                u128::from(net.to_bits()) << 96,
                u128::from(ip.to_bits()) << 96,
                self.prefix,
            ),
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_eq(net.to_bits(), ip.to_bits(), self.prefix)
            }
            _ => false,
        }
    }
}

fn prefix_eq(a: u128, b: u128, prefix: u8) -> bool {
    prefix == 0 || (a ^ b) >> (128 - u32::from(prefix)) == 0
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s.trim(), None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| CidrError(()))?;
        let prefix = match prefix {
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse().map_err(|_| CidrError(()))?
            }
            Some(_) => return Err(CidrError(())),
            None if addr.is_ipv4() => 32,
            None => 128,
        };
        Self::new(addr, prefix)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// A string that is not an IP address with an optional `/prefix` within
/// its length.
#[derive(Clone, Debug, Eq, PartialEq, thiserror::Error)]
#[error("not an IP address or CIDR block (such as 10.0.0.0/8 or ::1)")]
pub struct CidrError(());

/// Which header trusted proxies put the client's address in
/// ([`Server::forwarded_header`](crate::Server::forwarded_header)); the
/// other one is never read.
#[derive(Clone, Copy, Debug, Default, Eq, PartialEq)]
#[non_exhaustive]
pub enum ForwardedHeader {
    /// `Forwarded` (RFC 7239), with its `proto=` and `host=` parameters.
    Forwarded,
    /// `X-Forwarded-For`, with `X-Forwarded-Proto` and `X-Forwarded-Host`:
    /// what nginx, haproxy and most load balancers set.
    #[default]
    XForwardedFor,
}

/// Where a request came from: the client's address as far as trusted
/// proxies vouch for it, and the socket's own peer. Upgrades have it as
/// [`Upgrade::remote`](crate::Upgrade::remote); plain requests carry it in
/// their extensions (`req.extensions().get::<wharf::Remote>()`).
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct Remote {
    addr: SocketAddr,
    socket: SocketAddr,
    proto: Option<&'static str>,
    host: Option<Authority>,
}

impl Remote {
    /// A peer with no proxy in front of it.
    pub(crate) fn direct(addr: SocketAddr) -> Self {
        Self {
            addr,
            socket: addr,
            proto: None,
            host: None,
        }
    }

    /// The client's address: the socket's peer, or what a trusted proxy
    /// said (then the port is the one it gave, or 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address at the other end of the socket (a proxy, when there is
    /// one; with the PROXY protocol, the proxy itself).
    pub fn socket_addr(&self) -> SocketAddr {
        self.socket
    }

    /// The scheme the client used (`http`, `https`, `ws` or `wss`), when a
    /// trusted proxy said.
    pub fn proto(&self) -> Option<&str> {
        self.proto
    }

    /// The host (and port) the client asked for, when a trusted proxy said.
    pub fn host(&self) -> Option<&str> {
        self.host.as_ref().map(Authority::as_str)
    }
}

/// Resolves a request's [`Remote`]: `peer` is the socket's peer, or the
/// source a PROXY protocol header gave; `socket` the socket's peer.
pub(crate) fn resolve(
    trusted: &[Cidr],
    header: ForwardedHeader,
    peer: SocketAddr,
    socket: SocketAddr,
    headers: &HeaderMap,
) -> Remote {
    let mut remote = Remote {
        addr: peer,
        socket,
        proto: None,
        host: None,
    };
    if !is_trusted(trusted, peer.ip()) {
        return remote;
    }
    if header == ForwardedHeader::Forwarded {
        let hops = joined(headers, "forwarded").and_then(|v| forwarded(&v));
        if let Some(hop) = hops.and_then(|h| {
            let i = choose(trusted, &h, |h| h.addr)?;
            h.into_iter().nth(i)
        }) {
            remote.addr = hop.addr.unwrap_or(peer);
            remote.proto = hop.proto;
            remote.host = hop.host;
        }
        return remote;
    }
    let Some(xff) = joined(headers, "x-forwarded-for") else {
        return remote;
    };
    let hops: Vec<Option<SocketAddr>> = list(&xff).map(node).collect();
    let Some(i) = choose(trusted, &hops, |h| *h) else {
        return remote;
    };
    remote.addr = hops[i].unwrap_or(peer);
    // The entry of the chosen hop, counted from the right.
    let from_right = hops.len() - 1 - i;
    let pick = |name: &str| {
        let value = joined(headers, name)?;
        let entries: Vec<&str> = list(&value).collect();
        let at = if entries.len() == hops.len() {
            entries.len() - 1 - from_right
        } else {
            entries.len().checked_sub(1)?
        };
        Some(entries[at].to_owned())
    };
    remote.proto = pick("x-forwarded-proto").and_then(|p| scheme(&p));
    remote.host = pick("x-forwarded-host").and_then(|h| authority(&h));
    remote
}

fn is_trusted(trusted: &[Cidr], ip: IpAddr) -> bool {
    trusted.iter().any(|c| c.contains(ip))
}

/// The index of the client among `hops` (left to right, the socket's peer
/// after them): the right-most one not trusted; the left-most if all are;
/// the one right of the first entry that is not an address. `None` if
/// there are no hops (or the right-most is not an address: then the peer).
fn choose<T>(
    trusted: &[Cidr],
    hops: &[T],
    addr: impl Fn(&T) -> Option<SocketAddr>,
) -> Option<usize> {
    let mut chosen = None;
    for (i, hop) in hops.iter().enumerate().rev() {
        let Some(a) = addr(hop) else {
            // Whatever is left of it cannot be told apart from a forgery.
            return chosen;
        };
        chosen = Some(i);
        if !is_trusted(trusted, a.ip()) {
            break;
        }
    }
    chosen
}

/// Every value of header `name`, joined with commas (a list split over
/// lines is one list, RFC 9110 §5.3); `None` if absent or not visible ASCII.
fn joined(headers: &HeaderMap, name: &str) -> Option<String> {
    let mut out = String::new();
    for v in headers.get_all(name) {
        let v = v.to_str().ok()?;
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(v);
    }
    (!out.is_empty()).then_some(out)
}

/// The non-empty comma-separated entries of a list, trimmed.
fn list(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|s| !s.is_empty())
}

/// One `Forwarded` element: who connected (`for`), with what scheme
/// (`proto`), asking for what host (`host`).
#[derive(Debug, Default)]
struct Hop {
    addr: Option<SocketAddr>,
    proto: Option<&'static str>,
    host: Option<Authority>,
}

/// A `Forwarded` value's elements, or `None` if it does not parse: then it
/// is not believed at all.
fn forwarded(value: &str) -> Option<Vec<Hop>> {
    let mut hops = Vec::new();
    for element in split_quoted(value, b',') {
        let mut hop = Hop::default();
        let mut has_for = false;
        for pair in split_quoted(element, b';') {
            let pair = pair.trim();
            if pair.is_empty() {
                continue;
            }
            let (name, raw) = pair.split_once('=')?;
            let v = unquote(raw.trim())?;
            match name.trim().to_ascii_lowercase().as_str() {
                "for" => {
                    has_for = true;
                    hop.addr = node(&v);
                }
                "proto" => hop.proto = scheme(&v),
                "host" => hop.host = authority(&v),
                _ => {}
            }
        }
        // An element without `for` says nothing about who connected.
        if !has_for {
            return None;
        }
        hops.push(hop);
    }
    (!hops.is_empty()).then_some(hops)
}

/// Splits on `sep` outside quoted strings.
fn split_quoted(s: &str, sep: u8) -> impl Iterator<Item = &str> {
    let bytes = s.as_bytes();
    let mut start = 0;
    let mut quoted = false;
    let mut escaped = false;
    let mut parts = Vec::new();
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            _ if escaped => escaped = false,
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            _ if b == sep && !quoted => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts.into_iter().filter(|p| !p.trim().is_empty())
}

/// A token or a quoted string's content; `None` for an unterminated quote.
fn unquote(v: &str) -> Option<String> {
    let Some(inner) = v.strip_prefix('"') else {
        return Some(v.to_owned());
    };
    let inner = inner.strip_suffix('"')?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        out.push(if c == '\\' { chars.next()? } else { c });
    }
    Some(out)
}

/// A node: `192.0.2.1`, `192.0.2.1:80`, `[2001:db8::1]`, `[2001:db8::1]:80`
/// or a bare IPv6 address (`X-Forwarded-For` from some proxies). `None`
/// for `unknown`, an obfuscated identifier, or anything else.
fn node(s: &str) -> Option<SocketAddr> {
    let s = s.trim();
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Some(a);
    }
    if let Some(v6) = s.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        return v6
            .parse::<IpAddr>()
            .ok()
            .filter(IpAddr::is_ipv6)
            .map(|ip| SocketAddr::new(ip, 0));
    }
    s.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 0))
}

fn scheme(s: &str) -> Option<&'static str> {
    ["http", "https", "ws", "wss"]
        .into_iter()
        .find(|p| p.eq_ignore_ascii_case(s.trim()))
}

/// A host and optional port, without user information.
fn authority(s: &str) -> Option<Authority> {
    let a: Authority = s.trim().parse().ok()?;
    (!a.as_str().contains('@') && !a.host().is_empty()).then_some(a)
}

/// Runs the `Forwarded` and `X-Forwarded-*` parsing on arbitrary bytes,
/// for the fuzz target: the first byte picks the trusted blocks (bits 0
/// to 3) and the header read (bit 4: `X-Forwarded-For`), the rest is split
/// into header lines. Whom it took for the client: `"peer"` or
/// `"forwarded"`.
#[doc(hidden)]
pub fn fuzz_forwarded(data: &[u8]) -> &'static str {
    let Some((&pick, rest)) = data.split_first() else {
        return "peer";
    };
    let header = match pick & 0x10 {
        0 => ForwardedHeader::Forwarded,
        _ => ForwardedHeader::XForwardedFor,
    };
    let trusted: Vec<Cidr> = ["127.0.0.0/8", "10.0.0.0/8", "::1", "2001:db8::/32"]
        .iter()
        .enumerate()
        .filter(|(i, _)| pick & (1 << i) != 0)
        .filter_map(|(_, c)| c.parse().ok())
        .collect();
    let mut headers = HeaderMap::new();
    let names = [
        "forwarded",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
    ];
    for (i, line) in rest.split(|&b| b == b'\n').enumerate() {
        if let Ok(v) = http::HeaderValue::from_bytes(line) {
            headers.append(names[i % names.len()], v);
        }
    }
    let peer = SocketAddr::from(([127, 0, 0, 1], 1));
    let remote = resolve(&trusted, header, peer, peer, &headers);
    if !is_trusted(&trusted, peer.ip()) {
        assert_eq!(remote, Remote::direct(peer));
    }
    if let Ok(s) = std::str::from_utf8(rest) {
        let _ = s.parse::<Cidr>();
    }
    if remote.addr() == peer {
        "peer"
    } else {
        "forwarded"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted(list: &[&str]) -> Vec<Cidr> {
        list.iter().map(|c| c.parse().unwrap()).collect()
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    fn client(proxies: &[&str], peer: &str, pairs: &[(&'static str, &str)]) -> Remote {
        let peer: SocketAddr = peer.parse().unwrap();
        let header = match pairs.iter().any(|(k, _)| *k == "forwarded") {
            true => ForwardedHeader::Forwarded,
            false => ForwardedHeader::XForwardedFor,
        };
        resolve(&trusted(proxies), header, peer, peer, &headers(pairs))
    }

    fn ip(r: &Remote) -> String {
        r.addr().ip().to_string()
    }

    #[test]
    fn cidrs_parse_and_match() {
        let c: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(c.contains("10.1.200.3".parse().unwrap()));
        assert!(c.contains("::ffff:10.1.0.1".parse().unwrap()));
        assert!(!c.contains("10.2.0.1".parse().unwrap()));
        assert!(!c.contains("::1".parse().unwrap()));
        let one: Cidr = "::1".parse().unwrap();
        assert_eq!(one.to_string(), "::1/128");
        assert!(one.contains("::1".parse().unwrap()));
        assert!(
            "0.0.0.0/0"
                .parse::<Cidr>()
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        for bad in [
            "10.0.0.0/33",
            "10.0.0.0/",
            "10.0.0/8",
            "::/129",
            "x",
            "1.2.3.4/+8",
            "",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn headers_from_an_untrusted_peer_are_ignored() {
        let r = client(
            &["10.0.0.0/8"],
            "203.0.113.9:5000",
            &[("x-forwarded-for", "1.2.3.4")],
        );
        assert_eq!(r, Remote::direct("203.0.113.9:5000".parse().unwrap()));
        let r = client(&[], "127.0.0.1:5000", &[("forwarded", "for=1.2.3.4")]);
        assert_eq!(ip(&r), "127.0.0.1");
    }

    #[test]
    fn the_right_most_untrusted_address_is_the_client() {
        let p = &["10.0.0.0/8"];
        let h = [("x-forwarded-for", "6.6.6.6, 198.51.100.2, 10.0.0.7")];
        let r = client(p, "10.0.0.1:80", &h);
        assert_eq!(ip(&r), "198.51.100.2");
        assert_eq!(r.socket_addr(), "10.0.0.1:80".parse().unwrap());
        // Split over two lines, the same list.
        let h = [
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "198.51.100.2"),
        ];
        assert_eq!(ip(&client(p, "10.0.0.1:80", &h)), "198.51.100.2");
        // All trusted: the left-most.
        let h = [("x-forwarded-for", "10.9.9.9, 10.0.0.7")];
        assert_eq!(ip(&client(p, "10.0.0.1:80", &h)), "10.9.9.9");
        // Garbage stops the walk at the last hop known.
        let h = [("x-forwarded-for", "1.1.1.1, nonsense, 10.0.0.7")];
        assert_eq!(ip(&client(p, "10.0.0.1:80", &h)), "10.0.0.7");
        let h = [("x-forwarded-for", "unknown")];
        assert_eq!(ip(&client(p, "10.0.0.1:80", &h)), "10.0.0.1");
        // Ports and brackets.
        let h = [("x-forwarded-for", "[2001:db8::7]:4711")];
        assert_eq!(
            client(p, "10.0.0.1:80", &h).addr(),
            "[2001:db8::7]:4711".parse().unwrap()
        );
        let h = [("x-forwarded-for", "2001:db8::7")];
        assert_eq!(ip(&client(p, "10.0.0.1:80", &h)), "2001:db8::7");
    }

    #[test]
    fn forwarded_elements_give_address_scheme_and_host() {
        let p = &["127.0.0.1", "192.0.2.43"];
        let h = [(
            "forwarded",
            "for=6.6.6.6;proto=http, for=\"[2001:db8:cafe::17]:4711\";proto=https;host=chat.example:8443, For=192.0.2.43",
        )];
        let r = client(p, "127.0.0.1:9", &h);
        assert_eq!(r.addr(), "[2001:db8:cafe::17]:4711".parse().unwrap());
        assert_eq!(r.proto(), Some("https"));
        assert_eq!(r.host(), Some("chat.example:8443"));
        // Only the header configured is read.
        let peer: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let h = headers(&[
            ("forwarded", "for=198.51.100.1"),
            ("x-forwarded-for", "198.51.100.2"),
        ]);
        let t = trusted(p);
        let r = resolve(&t, ForwardedHeader::Forwarded, peer, peer, &h);
        assert_eq!(ip(&r), "198.51.100.1");
        let r = resolve(&t, ForwardedHeader::XForwardedFor, peer, peer, &h);
        assert_eq!(ip(&r), "198.51.100.2");
        let h = headers(&[("forwarded", "for=198.51.100.1")]);
        let r = resolve(&t, ForwardedHeader::XForwardedFor, peer, peer, &h);
        assert_eq!(r, Remote::direct(peer));
        // An obfuscated or unknown node stops the walk.
        let h = [("forwarded", "for=198.51.100.1, for=_hidden")];
        assert_eq!(ip(&client(p, "127.0.0.1:9", &h)), "127.0.0.1");
        // A malformed value is not believed.
        for bad in ["for=\"1.2.3.4", "proto=https", "for", ";;,"] {
            let h = [("forwarded", bad)];
            assert_eq!(
                client(p, "127.0.0.1:9", &h),
                Remote::direct("127.0.0.1:9".parse().unwrap()),
                "{bad}"
            );
        }
    }

    #[test]
    fn x_forwarded_proto_and_host_follow_the_chosen_hop() {
        let p = &["127.0.0.1", "10.0.0.0/8"];
        let h = [
            ("x-forwarded-for", "198.51.100.2"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "chat.example"),
        ];
        let r = client(p, "127.0.0.1:9", &h);
        assert_eq!((r.proto(), r.host()), (Some("https"), Some("chat.example")));
        let h = [
            ("x-forwarded-for", "198.51.100.2, 10.0.0.5"),
            ("x-forwarded-proto", "https, http"),
            ("x-forwarded-host", "a@b, inner:8080"),
        ];
        let r = client(p, "127.0.0.1:9", &h);
        assert_eq!(ip(&r), "198.51.100.2");
        assert_eq!((r.proto(), r.host()), (Some("https"), None));
        let h = [
            ("x-forwarded-for", "198.51.100.2, 10.0.0.5"),
            ("x-forwarded-proto", "gopher"),
        ];
        assert_eq!(client(p, "127.0.0.1:9", &h).proto(), None);
    }

    #[test]
    fn forwarded_fuzz_seeds() {
        crate::fuzz_seeds::check("forwarded", fuzz_forwarded);
    }
}
