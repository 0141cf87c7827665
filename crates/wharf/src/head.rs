//! The first request of a connection, read and parsed here rather than by
//! hyper: a WebSocket upgrade (nearly every connection of a WebSocket
//! server) is answered directly, and its socket goes to the connection's
//! task without hyper's connection state, its upgrade channel or a task
//! that waits on it. Anything else goes to hyper with the bytes read so far
//! ([`Prefixed`]), and hyper answers it as if it had read them itself, also
//! malformed or oversized heads (400, 431).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, Uri, Version};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use wharf_proto::handshake;

/// The longest request head parsed here; a longer one goes to hyper, which
/// refuses it.
const MAX_HEAD: usize = 16 * 1024;
/// The most headers parsed here; more go to hyper.
const MAX_HEADERS: usize = 64;

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
}

/// Reads until the first request head is complete; `None` if the peer
/// closed or failed before sending one.
pub(crate) async fn read<S: AsyncRead + Unpin>(io: &mut S) -> Option<Head> {
    let mut buf = BytesMut::with_capacity(1024);
    loop {
        match io.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
        // Frozen, so that header values can be views into it.
        let bytes = buf.split().freeze();
        let parsed = {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(&bytes) {
                Ok(httparse::Status::Complete(len)) => {
                    let upgrade = req.headers.iter().any(|h| {
                        h.name.eq_ignore_ascii_case("upgrade")
                            && handshake::lists_token(h.value, "websocket")
                    });
                    Some(
                        upgrade
                            .then(|| request(&req, &bytes))
                            .flatten()
                            .map(|r| (r, len)),
                    )
                }
                Ok(httparse::Status::Partial) if bytes.len() < MAX_HEAD => None,
                _ => Some(None),
            }
        };
        match parsed {
            Some(Some((req, len))) => {
                return Some(Head::Upgrade(req, BytesMut::from(&bytes[len..])));
            }
            Some(None) => return Some(Head::Other(bytes)),
            None => {
                buf = bytes
                    .try_into_mut()
                    .unwrap_or_else(|b| BytesMut::from(&b[..]));
                buf.reserve(1024);
            }
        }
    }
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
/// first, so that hyper sees the whole stream.
pub(crate) struct Prefixed<S> {
    prefix: Bytes,
    io: S,
}

impl<S> Prefixed<S> {
    pub(crate) fn new(prefix: Bytes, io: S) -> Self {
        Self { prefix, io }
    }

    /// The socket, and what is left of the prefix.
    pub(crate) fn into_parts(self) -> (S, Bytes) {
        (self.io, self.prefix)
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
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn head_of(input: &[u8]) -> Option<Head> {
        let (mut client, mut server) = tokio::io::duplex(64 * 1024);
        client.write_all(input).await.unwrap();
        drop(client.shutdown().await);
        read(&mut server).await
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
    async fn gives_up_on_a_head_that_never_ends() {
        let mut input = b"GET / HTTP/1.1\r\n".to_vec();
        while input.len() <= MAX_HEAD {
            input.extend_from_slice(b"X-Filler: 0123456789abcdef0123456789abcdef\r\n");
        }
        let Some(Head::Other(read)) = head_of(&input).await else {
            panic!("an oversized head goes to hyper (431)");
        };
        assert_eq!(&read[..], &input[..read.len()]);
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
}
