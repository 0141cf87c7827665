//! The PROXY protocol (HAProxy's, versions 1 and 2): a header a proxy sends
//! before anything else on the connection, naming the client it accepted.
//!
//! [`parse`] is sans-IO and says how many more bytes it needs at least;
//! [`read`] reads exactly that many each time, so nothing past the header
//! leaves the socket and the next stage (TLS, the request head) sees its
//! bytes untouched, whatever the stream type. A version 2 header takes two
//! reads; a version 1 line a few (its length is not known in advance).
//!
//! Accepted: v1 `TCP4`, `TCP6` and `UNKNOWN`; v2 `PROXY` over TCP or UDP,
//! IPv4 or IPv6, and `LOCAL` (the proxy's own health checks: the socket's
//! address stands). v2 TLVs are skipped. Refused, closing the connection: a
//! missing or malformed header, a v1 line over 107 bytes, a v2 header over
//! [`MAX_V2`] bytes, Unix-socket or unspecified families with `PROXY`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::io::{AsyncRead, AsyncReadExt};

/// The version 2 signature.
const V2_SIG: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// The longest version 1 line, CRLF included (the specification's bound).
const MAX_V1: usize = 107;
/// The longest version 2 header accepted (16 bytes and the addresses and
/// TLVs); the format allows 64 KiB, proxies send a few hundred bytes.
pub(crate) const MAX_V2: usize = 16 + 2048;
/// The shortest header of either version (`PROXY UNKNOWN\r\n`).
const MIN_HEADER: usize = 15;

/// What a PROXY header said.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub(crate) enum Header {
    /// The connection is the proxy's own (v2 `LOCAL`, v1 `UNKNOWN`).
    Local,
    /// The proxy accepted a connection from `source` to `destination`.
    Proxied {
        source: SocketAddr,
        destination: SocketAddr,
    },
}

/// What [`parse`] made of the bytes so far.
#[derive(Debug, Eq, PartialEq)]
pub(crate) enum Parsed {
    /// A whole header, this many bytes long.
    Complete(Header, usize),
    /// At least this many more bytes are needed.
    Incomplete(usize),
    /// Not a valid PROXY header.
    Invalid(&'static str),
}

/// Parses a PROXY header at the start of `buf`.
pub(crate) fn parse(buf: &[u8]) -> Parsed {
    let n = buf.len().min(V2_SIG.len());
    if buf[..n] == V2_SIG[..n] {
        return parse_v2(buf);
    }
    let n = buf.len().min(6);
    if buf[..n] == b"PROXY "[..n] {
        return parse_v1(buf);
    }
    Parsed::Invalid("no PROXY protocol header")
}

fn parse_v2(buf: &[u8]) -> Parsed {
    if buf.len() < 16 {
        return Parsed::Incomplete(16 - buf.len());
    }
    let version = buf[12] >> 4;
    let command = buf[12] & 0x0f;
    if version != 2 {
        return Parsed::Invalid("unknown PROXY protocol version");
    }
    let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    let total = 16 + len;
    if total > MAX_V2 {
        return Parsed::Invalid("PROXY protocol header too long");
    }
    if buf.len() < total {
        return Parsed::Incomplete(total - buf.len());
    }
    let body = &buf[16..total];
    let header = match command {
        0 => Header::Local,
        1 => {
            let family = buf[13] >> 4;
            let transport = buf[13] & 0x0f;
            if !matches!(transport, 1 | 2) {
                return Parsed::Invalid("unsupported PROXY protocol transport");
            }
            match family {
                1 if body.len() >= 12 => {
                    let ip = |at: usize| {
                        IpAddr::from(<[u8; 4]>::try_from(&body[at..at + 4]).unwrap_or_default())
                    };
                    let port = |at: usize| u16::from_be_bytes([body[at], body[at + 1]]);
                    Header::Proxied {
                        source: SocketAddr::new(ip(0), port(8)),
                        destination: SocketAddr::new(ip(4), port(10)),
                    }
                }
                2 if body.len() >= 36 => {
                    let ip = |at: usize| {
                        IpAddr::from(<[u8; 16]>::try_from(&body[at..at + 16]).unwrap_or_default())
                    };
                    let port = |at: usize| u16::from_be_bytes([body[at], body[at + 1]]);
                    Header::Proxied {
                        source: SocketAddr::new(ip(0), port(32)),
                        destination: SocketAddr::new(ip(16), port(34)),
                    }
                }
                1 | 2 => return Parsed::Invalid("PROXY protocol addresses truncated"),
                _ => return Parsed::Invalid("unsupported PROXY protocol address family"),
            }
        }
        _ => return Parsed::Invalid("unknown PROXY protocol command"),
    };
    Parsed::Complete(header, total)
}

fn parse_v1(buf: &[u8]) -> Parsed {
    let Some(cr) = buf.iter().position(|&b| b == b'\r') else {
        if buf.len() >= MAX_V1 {
            return Parsed::Invalid("PROXY protocol line too long");
        }
        if buf.iter().any(|&b| !(0x20..0x7f).contains(&b)) {
            return Parsed::Invalid("malformed PROXY protocol line");
        }
        return Parsed::Incomplete(v1_needed(buf));
    };
    if cr + 2 > MAX_V1 {
        return Parsed::Invalid("PROXY protocol line too long");
    }
    // Checked before waiting for the `\n`, as it is for a line without
    // its `\r` yet: the outcome must not depend on how the bytes arrive.
    if buf[..cr].iter().any(|&b| !(0x20..0x7f).contains(&b)) {
        return Parsed::Invalid("malformed PROXY protocol line");
    }
    match buf.get(cr + 1) {
        None => return Parsed::Incomplete(1),
        Some(b'\n') => {}
        Some(_) => return Parsed::Invalid("malformed PROXY protocol line"),
    }
    let Ok(line) = std::str::from_utf8(&buf[6..cr]) else {
        return Parsed::Invalid("malformed PROXY protocol line");
    };
    let fields: Vec<&str> = line.split(' ').collect();
    let header = match fields.as_slice() {
        ["UNKNOWN", ..] => Header::Local,
        [proto @ ("TCP4" | "TCP6"), src, dst, sport, dport] => {
            let v4 = *proto == "TCP4";
            let (Some(src), Some(dst), Some(sport), Some(dport)) =
                (ip(src, v4), ip(dst, v4), port(sport), port(dport))
            else {
                return Parsed::Invalid("malformed PROXY protocol line");
            };
            Header::Proxied {
                source: SocketAddr::new(src, sport),
                destination: SocketAddr::new(dst, dport),
            }
        }
        _ => return Parsed::Invalid("malformed PROXY protocol line"),
    };
    Parsed::Complete(header, cr + 2)
}

/// The fewest bytes that can still complete a v1 line with no `\r` yet:
/// for `TCP4`/`TCP6`, a space and a character for each field still
/// missing, then CRLF; otherwise one byte at a time.
fn v1_needed(buf: &[u8]) -> usize {
    let tcp = buf.len() >= 10 && matches!(&buf[6..10], b"TCP4" | b"TCP6");
    if !tcp {
        return MIN_HEADER.saturating_sub(buf.len()).max(1);
    }
    let spaces = buf.iter().filter(|&&b| b == b' ').count();
    let open_field = usize::from(buf.last() == Some(&b' '));
    (5usize.saturating_sub(spaces) * 2 + 2 + open_field).max(2)
}

fn ip(s: &str, v4: bool) -> Option<IpAddr> {
    if v4 {
        s.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
    } else {
        s.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
    }
}

/// A port in decimal, without a sign or leading zeros.
fn port(s: &str) -> Option<u16> {
    let canonical = !s.is_empty()
        && s.len() <= 5
        && s.bytes().all(|b| b.is_ascii_digit())
        && (s == "0" || !s.starts_with('0'));
    canonical.then(|| s.parse().ok()).flatten()
}

/// Reads a PROXY header from `io`, byte-exact: `Ok(header)`, or `Err` with
/// a reason if the peer closed, failed or sent something else.
///
/// # Cancel safety
/// Not cancel safe: what was read is lost. The caller cancels it only to
/// drop the connection (handshake deadline, eviction, shutdown).
pub(crate) async fn read<S: AsyncRead + Unpin>(io: &mut S) -> Result<Header, &'static str> {
    let mut buf = Vec::with_capacity(64);
    let mut want = MIN_HEADER;
    loop {
        let at = buf.len();
        buf.resize(at + want, 0);
        if io.read_exact(&mut buf[at..]).await.is_err() {
            return Err("connection ended before the PROXY protocol header");
        }
        match parse(&buf) {
            Parsed::Complete(header, len) => {
                debug_assert_eq!(len, buf.len(), "reads never pass the header");
                return Ok(header);
            }
            Parsed::Incomplete(more) => want = more,
            Parsed::Invalid(why) => return Err(why),
        }
    }
}

/// Parses arbitrary bytes as a PROXY header and checks the parser's
/// promises, for the fuzz target: reading what it asks for never passes
/// the header's end, and the outcome does not depend on how the bytes
/// arrived. What the whole input is: `"complete"`, `"incomplete"` or
/// `"invalid"`.
#[doc(hidden)]
pub fn fuzz_proxy_header(data: &[u8]) -> &'static str {
    let whole = parse(data);
    let mut len = MIN_HEADER.min(data.len());
    let stepwise = loop {
        match parse(&data[..len]) {
            Parsed::Incomplete(more) if len + more <= data.len() => len += more,
            other => break other,
        }
    };
    match (&whole, &stepwise) {
        (Parsed::Complete(h, n), Parsed::Complete(h2, n2)) => {
            assert_eq!((h, n), (h2, n2));
            assert_eq!(*n, len, "a read passed the header");
        }
        (Parsed::Invalid(_), Parsed::Invalid(_)) | (_, Parsed::Incomplete(_)) => {}
        (Parsed::Incomplete(_), _) => panic!("a prefix ended what the whole input leaves open"),
        _ => panic!("outcome depends on chunking: {whole:?} vs {stepwise:?}"),
    }
    match whole {
        Parsed::Complete(..) => "complete",
        Parsed::Incomplete(_) => "incomplete",
        Parsed::Invalid(_) => "invalid",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(command: u8, family: u8, body: &[u8]) -> Vec<u8> {
        let mut out = V2_SIG.to_vec();
        out.push(0x20 | command);
        out.push(family);
        out.extend_from_slice(&u16::try_from(body.len()).unwrap().to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    fn proxied(src: &str, dst: &str) -> Header {
        Header::Proxied {
            source: src.parse().unwrap(),
            destination: dst.parse().unwrap(),
        }
    }

    #[test]
    fn v1_lines_parse() {
        let line = b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\nGET /";
        assert_eq!(
            parse(line),
            Parsed::Complete(proxied("192.0.2.1:56324", "198.51.100.2:443"), 45)
        );
        let line = b"PROXY TCP6 2001:db8::1 ::1 1 65535\r\n";
        assert_eq!(
            parse(line),
            Parsed::Complete(proxied("[2001:db8::1]:1", "[::1]:65535"), line.len())
        );
        assert_eq!(
            parse(b"PROXY UNKNOWN\r\n"),
            Parsed::Complete(Header::Local, 15)
        );
        assert_eq!(
            parse(b"PROXY UNKNOWN ::1 ::1 1 2\r\n"),
            Parsed::Complete(Header::Local, 27)
        );
    }

    #[test]
    fn v1_errors_are_refused() {
        for bad in [
            &b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\n"[..],
            b"PROXY TCP4 ::1 ::1 1 2\r\n",
            b"PROXY TCP6 1.2.3.4 1.2.3.4 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 1.2.3.4 01 2\r\n",
            b"PROXY TCP4 1.2.3.4 1.2.3.4 1 65536\r\n",
            b"PROXY TCP4 1.2.3.4 1.2.3.4 1 2 3\r\n",
            b"PROXY TCP4  1.2.3.4 1.2.3.4 1 2\r\n",
            b"PROXY UDP4 1.2.3.4 1.2.3.4 1 2\r\n",
            b"GET / HTTP/1.1\r\n",
            b"PROXY\tTCP4",
        ] {
            assert!(
                matches!(parse(bad), Parsed::Invalid(_)),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = [b"PROXY TCP4 ".as_slice(), &[b'1'; 120]].concat();
        assert!(matches!(parse(&long), Parsed::Invalid(_)));
    }

    #[test]
    fn v2_headers_parse() {
        let mut body = vec![192, 0, 2, 1, 198, 51, 100, 2];
        body.extend_from_slice(&56324u16.to_be_bytes());
        body.extend_from_slice(&443u16.to_be_bytes());
        body.extend_from_slice(&[0x04, 0, 1, 0]); // a TLV, skipped
        let h = v2(1, 0x11, &body);
        assert_eq!(
            parse(&h),
            Parsed::Complete(proxied("192.0.2.1:56324", "198.51.100.2:443"), h.len())
        );
        let mut body = [0u8; 36].to_vec();
        body[15] = 1;
        body[31] = 2;
        body[32..34].copy_from_slice(&7u16.to_be_bytes());
        let h = v2(1, 0x21, &body);
        assert_eq!(
            parse(&h),
            Parsed::Complete(proxied("[::1]:7", "[::2]:0"), h.len())
        );
        let h = v2(0, 0x00, &[]);
        assert_eq!(parse(&h), Parsed::Complete(Header::Local, 16));
        assert_eq!(parse(&h[..5]), Parsed::Incomplete(11));
        let h = v2(1, 0x11, &[0; 12]);
        assert_eq!(parse(&h[..20]), Parsed::Incomplete(8));
    }

    #[test]
    fn v2_errors_are_refused() {
        for bad in [
            v2(1, 0x11, &[0; 8]),
            v2(1, 0x31, &[0; 216]),
            v2(1, 0x00, &[]),
            v2(1, 0x13, &[0; 12]),
            v2(2, 0x11, &[0; 12]),
            v2(1, 0x11, &[0; MAX_V2]),
        ] {
            assert!(matches!(parse(&bad), Parsed::Invalid(_)), "{bad:?}");
        }
        let mut v3 = v2(1, 0x11, &[0; 12]);
        v3[12] = 0x31;
        assert!(matches!(parse(&v3), Parsed::Invalid(_)));
    }

    #[tokio::test]
    async fn reads_stop_exactly_at_the_header_end() {
        let lines: [&[u8]; 3] = [
            b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n",
            b"PROXY UNKNOWN\r\n",
            b"PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n",
        ];
        let v2h = v2(1, 0x11, &[10, 0, 0, 1, 10, 0, 0, 2, 0, 1, 0, 2]);
        for header in lines.iter().copied().chain([v2h.as_slice()]) {
            let mut input = header.to_vec();
            input.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
            let mut io = &input[..];
            read(&mut io).await.unwrap();
            assert_eq!(io, b"GET / HTTP/1.1\r\n\r\n");
            fuzz_proxy_header(&input);
        }
        let mut io = &b"GET / HTTP/1.1\r\n\r\n"[..];
        assert!(read(&mut io).await.is_err());
        let mut io = &b"PROXY TCP4 1.2"[..];
        assert!(read(&mut io).await.is_err());
    }

    #[test]
    fn proxy_header_fuzz_seeds() {
        crate::fuzz_seeds::check("proxy_header", fuzz_proxy_header);
    }
}
