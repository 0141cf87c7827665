//! Where connections come from: any [`Listener`] of byte streams (TCP, a
//! Unix socket, an application's own), and the stream a connection's task
//! owns ([`Stream`]): the accepted one, or TLS over it.
//!
//! The accept loop only accepts; everything that waits on the peer (the TLS
//! handshake, the first request head) runs in the connection's own task,
//! under the handshake deadline, so a slow or silent client delays nobody
//! else. TCP stays the fast path: a plain connection's task holds the
//! `TcpStream` itself, and only TLS connections pay for a box (the TLS
//! state, about 1 KiB plus buffers, lives there, out of the task).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// A source of connections for [`Server::serve`](crate::Server::serve):
/// `TcpListener` (the usual), `UnixListener`, or an application's own
/// (a socket handed over by systemd, an in-memory transport in a test).
///
/// `accept` must only accept: anything that waits on the peer belongs in
/// the connection's task. A failed `accept` is logged and retried after a
/// pause (the descriptor table may be full).
pub trait Listener: Send + 'static {
    /// A connection's byte stream.
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    /// Waits for the next connection: its stream, and the peer's address
    /// (what [`Client::peer_addr`](crate::Client::peer_addr) and the
    /// upgrade hook see; `0.0.0.0:0` where there is none).
    ///
    /// # Cancel safety
    /// Must be cancel safe: the accept loop drops it to stop.
    fn accept(&mut self) -> impl Future<Output = io::Result<(Self::Io, SocketAddr)>> + Send;
}

/// Accepts TCP connections, with `TCP_NODELAY` set (frames are corked by
/// the connection driver, not by Nagle's algorithm).
impl Listener for TcpListener {
    type Io = TcpStream;

    async fn accept(&mut self) -> io::Result<(TcpStream, SocketAddr)> {
        let (stream, peer) = Self::accept(self).await?;
        let _ = stream.set_nodelay(true);
        Ok((stream, peer))
    }
}

/// Accepts Unix-socket connections; their peer address is `0.0.0.0:0`
/// (a reverse proxy on the same machine: see its forwarded headers).
#[cfg(unix)]
impl Listener for tokio::net::UnixListener {
    type Io = tokio::net::UnixStream;

    async fn accept(&mut self) -> io::Result<(Self::Io, SocketAddr)> {
        let (stream, _) = Self::accept(self).await?;
        Ok((stream, SocketAddr::from(([0, 0, 0, 0], 0))))
    }
}

/// What a connection's stream must be.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// The stream a connection's task owns: what the listener accepted, or TLS
/// over it (boxed: the TLS state is large, and a plain connection's task
/// must not grow by it).
pub(crate) enum Stream<S> {
    Plain(S),
    #[cfg(feature = "tls")]
    Tls(Box<crate::tls::TlsStream<S>>),
    /// A client's TLS (`wharf::connect` to `wss://`).
    #[cfg(feature = "tls")]
    TlsClient(Box<tokio_rustls::client::TlsStream<S>>),
}

macro_rules! each {
    ($self:ident, $io:ident => $e:expr) => {
        match $self.get_mut() {
            Stream::Plain($io) => $e,
            #[cfg(feature = "tls")]
            Stream::Tls($io) => $e,
            #[cfg(feature = "tls")]
            Stream::TlsClient($io) => $e,
        }
    };
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Stream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        each!(self, io => Pin::new(io).poll_read(cx, buf))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Stream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        each!(self, io => Pin::new(io).poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        each!(self, io => Pin::new(io).poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(io) => io.is_write_vectored(),
            #[cfg(feature = "tls")]
            Self::Tls(io) => io.is_write_vectored(),
            #[cfg(feature = "tls")]
            Self::TlsClient(io) => io.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self, io => Pin::new(io).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self, io => Pin::new(io).poll_shutdown(cx))
    }
}
