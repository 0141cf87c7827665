//! The first request of a connection, read and parsed here rather than by
//! hyper: a WebSocket upgrade (nearly every connection of a WebSocket
//! server) is answered directly, and its socket goes to the connection's
//! task without hyper's connection state, its upgrade channel or a task
//! that waits on it. Anything else goes to hyper with the bytes read so far
//! ([`Prefixed`]), and hyper answers it as if it had read them itself, also
//! malformed heads (400). Heads over the limits are refused here, with a
//! one-line reason: [`MAX_HEAD`] and [`MAX_HEADERS`] (431), [`MAX_TARGET`]
//! (414). hyper is given the same limits for the later requests of a
//! keep-alive connection (where its 431 has no body).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::{
    HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri, Version,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::Sleep;
use wharf_proto::handshake;

use crate::upgrade::Refuse;

/// The longest request head (request line and header fields) accepted, on
/// the first request of a connection and on the later ones hyper reads: a
/// longer one gets `431`.
pub(crate) const MAX_HEAD: usize = 16 * 1024;
/// The most header fields a request may have, on both paths; more get
/// `431`.
pub(crate) const MAX_HEADERS: usize = 64;
/// The longest request target (path and query) accepted, on both paths; a
/// longer one gets `414`. A connection keeps its upgrade request's target
/// for its lifetime ([`Client::path`](crate::Client::path)).
pub(crate) const MAX_TARGET: usize = 8 * 1024;

/// What the first request head turned out to be.
#[expect(
    clippy::large_enum_variant,
    reason = "made once per connection and moved once, on the stack"
)]
pub(crate) enum Head {
    /// A request carrying `Upgrade: websocket`, and the bytes that followed
    /// its head (frames a client sent without waiting for the `101`).
    Upgrade(Request<()>, BytesMut),
    /// Anything else, or a head this parser would not take: every byte read,
    /// for hyper.
    Other(Bytes),
    /// A head over a limit: the refusal to send before closing.
    Refused(Refuse),
}

/// What [`parse`] made of the bytes read so far.
enum Parsed {
    /// The head is not complete yet.
    Partial,
    /// An upgrade request, whose head is this many bytes long.
    Upgrade(Request<()>, usize),
    /// Anything else, for hyper.
    Other,
    /// Over a limit.
    Refused(Refuse),
}

/// Reads until the first request head is complete; `None` if the peer
/// closed or failed before sending one. An upgrade request that `takes`
/// refuses (it goes to the application's request service) comes back as
/// [`Head::Other`], for hyper.
///
/// The head is parsed only once a blank line (its possible end) or
/// [`MAX_HEAD`] bytes have arrived, not on every read: a head trickled a
/// byte at a time costs one scan of its bytes, not one parse per byte.
///
/// # Cancel safety
/// Not cancel safe: what was read is lost. The caller cancels it only to
/// drop the connection (handshake timeout, shutdown).
pub(crate) async fn read<S: AsyncRead + Unpin>(
    io: &mut S,
    takes: impl Fn(&Request<()>) -> bool,
) -> Option<Head> {
    let mut buf = BytesMut::with_capacity(1024);
    // Bytes searched for a blank line, and the end of the last one found.
    let mut scanned: usize = 0;
    let mut blank_end = 0;
    loop {
        match io.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
        // A blank line may straddle two reads: look two bytes back.
        let scan_end = buf.len().min(MAX_HEAD);
        let from = scanned.saturating_sub(2).min(scan_end);
        if let Some(end) = last_blank_line_end(&buf[from..scan_end]) {
            blank_end = from + end;
        }
        scanned = buf.len();
        let window = if buf.len() >= MAX_HEAD {
            MAX_HEAD
        } else {
            blank_end
        };
        if window == 0 {
            buf.reserve(1024);
            continue;
        }
        // Frozen, so that header values can be views into it.
        let bytes = buf.split().freeze();
        match parse(&bytes, window) {
            Parsed::Upgrade(req, len) if takes(&req) => {
                return Some(Head::Upgrade(req, BytesMut::from(&bytes[len..])));
            }
            Parsed::Upgrade(..) => return Some(Head::Other(bytes)),
            Parsed::Other => return Some(Head::Other(bytes)),
            Parsed::Refused(refuse) => return Some(Head::Refused(refuse)),
            Parsed::Partial => {
                buf = bytes
                    .try_into_mut()
                    .unwrap_or_else(|b| BytesMut::from(&b[..]));
                // Under MAX_HEAD here: `parse` refuses a longer head.
                buf.reserve(1024);
            }
        }
    }
}

/// Where the last blank line (`\n\n` or `\n\r\n`) in `bytes` ends.
fn last_blank_line_end(bytes: &[u8]) -> Option<usize> {
    let mut end = None;
    let mut i = 0;
    while let Some(at) = bytes[i..].iter().position(|&b| b == b'\n') {
        let nl = i + at;
        match bytes.get(nl + 1..) {
            Some([b'\n', ..]) => end = Some(nl + 2),
            Some([b'\r', b'\n', ..]) => end = Some(nl + 3),
            _ => {}
        }
        i = nl + 1;
    }
    end
}

/// Parses the first `window` bytes of a first request: up to the end of the
/// last blank line read, or [`MAX_HEAD`] bytes. The outcome depends on the
/// bytes alone, not on how they were split into reads.
fn parse(bytes: &Bytes, window: usize) -> Parsed {
    let window = &bytes[..window.min(MAX_HEAD)];
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let status = req.parse(window);
    // The target is known as soon as the request line is (also in a
    // partial head).
    if req.path.is_some_and(|p| p.len() > MAX_TARGET) {
        return Parsed::Refused(target_too_long());
    }
    match status {
        Ok(httparse::Status::Complete(len)) => {
            let upgrade = req.headers.iter().any(|h| {
                h.name.eq_ignore_ascii_case("upgrade")
                    && handshake::lists_token(h.value, "websocket")
            });
            match upgrade.then(|| request(&req, bytes)).flatten() {
                Some(r) => Parsed::Upgrade(r, len),
                None => Parsed::Other,
            }
        }
        Ok(httparse::Status::Partial) if window.len() < MAX_HEAD => Parsed::Partial,
        // No request line in MAX_HEAD bytes: its target is longer than
        // MAX_TARGET.
        Ok(httparse::Status::Partial) if req.path.is_none() && req.method.is_some() => {
            Parsed::Refused(target_too_long())
        }
        Ok(httparse::Status::Partial) => Parsed::Refused(head_too_large()),
        Err(httparse::Error::TooManyHeaders) => Parsed::Refused(Refuse::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "too many header fields",
        )),
        Err(_) => Parsed::Other,
    }
}

/// The refusal of a request target over [`MAX_TARGET`].
pub(crate) fn target_too_long() -> Refuse {
    Refuse::new(StatusCode::URI_TOO_LONG, "request target too long")
}

/// The refusal of a request head over [`MAX_HEAD`].
fn head_too_large() -> Refuse {
    Refuse::new(
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "request head too large",
    )
}

/// The request as `http` types; header values are views into `head`, not
/// copies. `None` for what hyper should judge (a method, target or header
/// `http` does not take).
fn request(req: &httparse::Request<'_, '_>, head: &Bytes) -> Option<Request<()>> {
    let method = Method::from_bytes(req.method?.as_bytes()).ok()?;
    let uri = Uri::from_maybe_shared(head.slice_ref(req.path?.as_bytes())).ok()?;
    let version = match req.version? {
        0 => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let mut headers = HeaderMap::with_capacity(req.headers.len());
    for h in req.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).ok()?;
        let value = HeaderValue::from_maybe_shared(head.slice_ref(h.value)).ok()?;
        headers.append(name, value);
    }
    let mut out = Request::new(());
    *out.method_mut() = method;
    *out.uri_mut() = uri;
    *out.version_mut() = version;
    *out.headers_mut() = headers;
    Some(out)
}

/// Writes a response head and `body` (a refusal's one-line reason; empty
/// for a `101`).
pub(crate) async fn respond<S: AsyncWrite + Unpin>(
    io: &mut S,
    res: &Response<()>,
    body: &[u8],
) -> io::Result<()> {
    let status = res.status();
    let mut out = Vec::with_capacity(256 + body.len());
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in res.headers() {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !status.is_informational() {
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(body.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\nconnection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    io.write_all(&out).await
}

/// A socket whose first bytes were already read: they are read again
/// first, so that hyper sees the whole stream. With a write timeout, a
/// write (or flush) that stays pending with no byte taken for that long
/// fails with `TimedOut`, and hyper drops the connection: a peer that stops
/// reading its responses cannot hold it.
pub(crate) struct Prefixed<S> {
    prefix: Bytes,
    io: S,
    stall: Option<Stall>,
}

/// The write-progress deadline of a [`Prefixed`].
struct Stall {
    timeout: Duration,
    /// Armed when a write first stays pending, disarmed by any progress.
    armed: bool,
    sleep: Pin<Box<Sleep>>,
}

impl<S> Prefixed<S> {
    pub(crate) fn new(prefix: Bytes, io: S) -> Self {
        Self {
            prefix,
            io,
            stall: None,
        }
    }

    /// Fails writes that make no progress for `timeout` (`None`: never).
    pub(crate) fn write_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.stall = timeout.map(|timeout| Stall {
            timeout,
            armed: false,
            sleep: Box::pin(tokio::time::sleep(timeout)),
        });
        self
    }

    /// The socket, and what is left of the prefix.
    pub(crate) fn into_parts(self) -> (S, Bytes) {
        (self.io, self.prefix)
    }

    /// Passes on a write's outcome: a ready one is progress; a pending one
    /// arms the deadline, or fails once it has passed.
    fn progress<T>(
        &mut self,
        cx: &mut Context<'_>,
        poll: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        let Some(stall) = &mut self.stall else {
            return poll;
        };
        if poll.is_ready() {
            stall.armed = false;
            return poll;
        }
        if !stall.armed {
            stall.armed = true;
            let deadline = tokio::time::Instant::now() + stall.timeout;
            stall.sleep.as_mut().reset(deadline);
        }
        match stall.sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no write progress within the write timeout",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.prefix.is_empty() {
            return Pin::new(&mut self.io).poll_read(cx, buf);
        }
        let n = self.prefix.len().min(buf.remaining());
        buf.put_slice(&self.prefix[..n]);
        self.prefix.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.io).poll_write(cx, buf);
        self.progress(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.progress(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.io).poll_flush(cx);
        self.progress(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.io).poll_shutdown(cx);
        self.progress(cx, poll)
    }
}

/// The fuzz target of the first-request parser
/// (`fuzz/fuzz_targets/request_head.rs`), also run over the committed seeds
/// by this crate's tests; not an API.
///
/// `data[0]` chooses a read size, the rest is what a client sends. The
/// input is read with that size, byte by byte and whole; the outcome must
/// be the same each time and keep the limits: an accepted upgrade's head is
/// at most [`MAX_HEAD`] bytes with at most [`MAX_HEADERS`] headers and a
/// target of at most [`MAX_TARGET`], the bytes after it are kept exactly,
/// everything read goes to hyper otherwise, and a refusal is 414 or 431
/// with a one-line reason. Returns the outcome: `upgrade`, `other`, `414`,
/// `431` or `none` (the input ended first).
#[doc(hidden)]
pub fn fuzz_request_head(data: &[u8]) -> &'static str {
    let Some((&size, input)) = data.split_first() else {
        return "none";
    };
    let size = 1 + usize::from(size) * 67;
    let bytewise = drive(input, 1);
    let whole = drive(input, input.len().max(1));
    let sized = drive(input, size);
    assert_eq!(bytewise.0, whole.0, "byte by byte and whole");
    assert_eq!(bytewise.0, sized.0, "byte by byte and in reads of {size}");
    let kind = match &bytewise.0 {
        Outcome::None => "none",
        Outcome::Other => "other",
        Outcome::Upgrade { .. } => "upgrade",
        Outcome::Refused(414) => "414",
        Outcome::Refused(431) => "431",
        Outcome::Refused(status) => panic!("refused with {status}"),
    };
    // Read byte by byte, the head is decided where it ends.
    let head_len = bytewise.1;
    if let Outcome::Upgrade {
        target, headers, ..
    } = &bytewise.0
    {
        assert!(head_len <= MAX_HEAD, "an upgrade head of {head_len} bytes");
        assert!(target.len() <= MAX_TARGET, "a target of {}", target.len());
        assert!(headers.len() <= MAX_HEADERS, "{} headers", headers.len());
    }
    for (outcome, consumed, kept) in [bytewise, whole, sized] {
        match outcome {
            Outcome::Upgrade { .. } => {
                assert_eq!(kept, input[head_len..consumed], "the bytes after the head");
            }
            Outcome::Other => assert_eq!(kept, input[..consumed], "the bytes for hyper"),
            _ => {}
        }
    }
    kind
}

/// What [`read`] made of an input, comparably.
#[derive(Debug, PartialEq)]
enum Outcome {
    None,
    Other,
    Refused(u16),
    Upgrade {
        method: Method,
        target: String,
        version: Version,
        headers: Vec<(HeaderName, HeaderValue)>,
    },
}

/// Runs [`read`] over `input` in reads of `size`: the outcome, how many
/// bytes were read, and the bytes kept (after an upgrade's head, or all of
/// them for hyper).
fn drive(input: &[u8], size: usize) -> (Outcome, usize, Vec<u8>) {
    let mut reader = Chunks { rest: input, size };
    let head = {
        let future = std::pin::pin!(read(&mut reader, |_| true));
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match future.poll(&mut cx) {
            Poll::Ready(head) => head,
            Poll::Pending => unreachable!("the reader is always ready"),
        }
    };
    let consumed = input.len() - reader.rest.len();
    match head {
        None => (Outcome::None, consumed, Vec::new()),
        Some(Head::Other(bytes)) => (Outcome::Other, consumed, bytes.to_vec()),
        Some(Head::Refused(refuse)) => {
            let reason = &refuse.reason;
            assert!(
                !reason.is_empty() && !reason.contains(['\r', '\n']),
                "{reason:?}"
            );
            (
                Outcome::Refused(refuse.status.as_u16()),
                consumed,
                Vec::new(),
            )
        }
        Some(Head::Upgrade(req, rest)) => {
            let outcome = Outcome::Upgrade {
                method: req.method().clone(),
                target: req.uri().to_string(),
                version: req.version(),
                headers: req
                    .headers()
                    .iter()
                    .map(|(n, v)| (n.clone(), v.clone()))
                    .collect(),
            };
            (outcome, consumed, rest.to_vec())
        }
    }
}

/// A reader that is always ready, giving `size` bytes at a time.
struct Chunks<'a> {
    rest: &'a [u8],
    size: usize,
}

impl AsyncRead for Chunks<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let n = self.size.min(self.rest.len()).min(buf.remaining());
        buf.put_slice(&self.rest[..n]);
        self.rest = &self.rest[n..];
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn head_of(input: &[u8]) -> Option<Head> {
        let (mut client, mut server) = tokio::io::duplex(64 * 1024);
        client.write_all(input).await.unwrap();
        drop(client.shutdown().await);
        read(&mut server, |_| true).await
    }

    #[tokio::test]
    async fn parses_an_upgrade_and_keeps_the_bytes_after_it() {
        let input = b"GET /chat?room=1 HTTP/1.1\r\nHost: x\r\nUpgrade: WebSocket\r\n\
                      Connection: Upgrade\r\nSec-WebSocket-Key: k\r\n\r\n\x81\x80abcd";
        let Some(Head::Upgrade(req, rest)) = head_of(input).await else {
            panic!("an upgrade");
        };
        assert_eq!(req.method(), Method::GET);
        assert_eq!(req.uri().path(), "/chat");
        assert_eq!(req.uri().query(), Some("room=1"));
        assert_eq!(req.headers()["sec-websocket-key"], "k");
        assert_eq!(&rest[..], b"\x81\x80abcd");
    }

    #[tokio::test]
    async fn leaves_other_requests_and_bad_heads_to_hyper_whole() {
        for input in [
            &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nUpgrade: h2c\r\n\r\n",
            b"NOT HTTP AT ALL\r\n\r\n",
            b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nBad\x01Header: x\r\n\r\n",
        ] {
            let Some(Head::Other(read)) = head_of(input).await else {
                panic!("{input:?} goes to hyper");
            };
            assert_eq!(&read[..], input);
        }
    }

    #[tokio::test]
    async fn refuses_a_head_over_the_limits() {
        let mut input = b"GET / HTTP/1.1\r\n".to_vec();
        while input.len() <= MAX_HEAD {
            input.extend_from_slice(b"X-Filler: 0123456789abcdef0123456789abcdef0123456789\r\n");
        }
        let Some(Head::Refused(r)) = head_of(&input).await else {
            panic!("an oversized head is refused");
        };
        assert_eq!(r.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);

        let lines = "X-H: 1\r\n".repeat(MAX_HEADERS + 1);
        let input = format!("GET / HTTP/1.1\r\n{lines}\r\n");
        let Some(Head::Refused(r)) = head_of(input.as_bytes()).await else {
            panic!("too many headers are refused");
        };
        assert_eq!(r.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);

        for target_len in [MAX_TARGET + 1, 2 * MAX_HEAD] {
            let input = format!("GET /{} HTTP/1.1\r\n\r\n", "t".repeat(target_len));
            let Some(Head::Refused(r)) = head_of(input.as_bytes()).await else {
                panic!("a {target_len}-byte target is refused");
            };
            assert_eq!(r.status, StatusCode::URI_TOO_LONG);
        }
        let input = format!("GET /{} HTTP/1.1\r\n\r\n", "t".repeat(MAX_TARGET - 1));
        assert!(
            matches!(head_of(input.as_bytes()).await, Some(Head::Other(_))),
            "a target at the limit is taken"
        );
        assert!(
            head_of(b"GET / HTTP/1.1\r\nHost").await.is_none(),
            "closed mid-head"
        );
    }

    #[tokio::test]
    async fn prefixed_reads_the_prefix_first() {
        let (mut client, server) = tokio::io::duplex(1024);
        client.write_all(b" world").await.unwrap();
        drop(client);
        let mut io = Prefixed::new(Bytes::from_static(b"hello"), server);
        let mut all = String::new();
        io.read_to_string(&mut all).await.unwrap();
        assert_eq!(all, "hello world");
        assert!(io.into_parts().1.is_empty(), "prefix consumed");
    }

    /// The committed seeds of the `request_head` fuzz target, each named
    /// for its outcome: `upgrade_*`, `other_*`, `414_*`, `431_*`, `none_*`.
    #[test]
    fn request_head_fuzz_seeds() {
        crate::fuzz_seeds::check("request_head", fuzz_request_head);
    }
}
