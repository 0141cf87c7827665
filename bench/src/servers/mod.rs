//! The servers under test, one per library, each an echo or broadcast
//! server on a tokio current-thread runtime, written the way each library's
//! own examples write them; and the `wharf` binary itself (`wharf-binary`),
//! which the runner starts as a process of its own (`runner::ServerProc`),
//! not from here.
//!
//! Broadcast sends every message to every connected client, the sender
//! included. wharf uses its hub (encode once, share the frame); the peers do
//! the natural thing: a shared list of per-connection unbounded channels,
//! each drained by a writer task that writes what it finds and flushes once.
//!
//! A server process started by the runner (`wharf-bench server ...`) prints
//! `listening ADDR`, then answers `stats` on stdin with its allocation
//! counters, and exits when stdin closes, so none outlives its runner.

mod fastws;
mod raw;
mod sockudo;
mod tokio_ws;
mod tungstenite;
mod wharf;

use std::io::{BufRead, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::bail;
use futures_util::{FutureExt, Sink, SinkExt, Stream, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::{self, UnboundedSender};

/// A server implementation under test.
#[derive(Clone, Copy, Debug, Eq, Hash, Ord, PartialEq, PartialOrd)]
pub(crate) enum Target {
    /// The `wharf` binary (crates/wharf-server), default settings.
    WharfBinary,
    /// The library on a current-thread runtime, keepalive off.
    WharfLib,
    Raw,
    SockudoWs,
    Tungstenite,
    Fastwebsockets,
    TokioWebsockets,
}

impl Target {
    /// Every target, the `wharf` binary first (ratios are relative to it).
    pub(crate) const ALL: [Self; 7] = [
        Self::WharfBinary,
        Self::WharfLib,
        Self::Raw,
        Self::SockudoWs,
        Self::Tungstenite,
        Self::Fastwebsockets,
        Self::TokioWebsockets,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::WharfBinary => "wharf-binary",
            Self::WharfLib => "wharf-lib",
            Self::Raw => "raw-tcp",
            Self::SockudoWs => "sockudo-ws",
            Self::Tungstenite => "tokio-tungstenite",
            Self::Fastwebsockets => "fastwebsockets",
            Self::TokioWebsockets => "tokio-websockets",
        }
    }

    /// A target by name or a prefix of it (the first in [`Self::ALL`]
    /// order: `wharf` is the binary).
    pub(crate) fn parse(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|t| t.name() == s || t.name().starts_with(s))
    }
}

/// What the server does with a message.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub(crate) enum Mode {
    Echo,
    Broadcast,
}

impl Mode {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Echo => "echo",
            Self::Broadcast => "broadcast",
        }
    }
}

/// permessage-deflate as offered by the server (`wharf-lib` only; for
/// `wharf-binary`, which offers `shared` as shipped, it says whether the
/// load generator offers it).
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub(crate) enum Deflate {
    Off,
    Shared,
    Dedicated,
}

impl Deflate {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Shared => "shared",
            Self::Dedicated => "dedicated",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        [Self::Off, Self::Shared, Self::Dedicated]
            .into_iter()
            .find(|d| d.name() == s)
    }
}

const BINARY_HERE: &str = "wharf-binary is the `wharf` program itself (crates/wharf-server), \
                           which the runner starts; run it directly instead";

/// Runs one server process: binds `addr`, prints it, serves forever.
///
/// # Errors
/// If the runtime cannot start or the address cannot be bound.
/// `workers` applies to `wharf-lib` alone (`Server::workers`).
pub(crate) fn run(
    target: Target,
    mode: Mode,
    deflate: Deflate,
    addr: &str,
    workers: usize,
) -> anyhow::Result<()> {
    if target == Target::WharfBinary {
        bail!(BINARY_HERE);
    }
    crate::proc::raise_nofile();
    if target == Target::SockudoWs {
        // Calibrates its clock (up to 200 ms) before the runtime starts.
        sockudo_ws::init_clock();
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let listener = TcpListener::bind(addr).await?;
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening {}", listener.local_addr()?)?;
        out.flush()?;
        drop(out);
        std::thread::spawn(answer_stats);
        if target == Target::WharfLib {
            return wharf::serve(listener, mode, deflate, workers).await;
        }
        serve(target, mode, deflate, listener).await
    })
}

/// Serves `listener` with `target` until an error.
///
/// # Errors
/// If the combination is not supported (raw TCP has no broadcast), or
/// the server fails.
pub(crate) async fn serve(
    target: Target,
    mode: Mode,
    deflate: Deflate,
    listener: TcpListener,
) -> anyhow::Result<()> {
    if deflate != Deflate::Off && target != Target::WharfLib {
        bail!(
            "{} is benchmarked without permessage-deflate",
            target.name()
        );
    }
    match target {
        Target::WharfBinary => bail!(BINARY_HERE),
        Target::WharfLib => wharf::serve(listener, mode, deflate, 1).await,
        Target::SockudoWs => sockudo::serve(listener, mode).await,
        Target::Raw if mode == Mode::Broadcast => bail!("raw TCP has no broadcast mode"),
        Target::Raw => raw::serve(listener).await,
        Target::Tungstenite => tungstenite::serve(listener, mode).await,
        Target::Fastwebsockets => fastws::serve(listener, mode).await,
        Target::TokioWebsockets => tokio_ws::serve(listener, mode).await,
    }
}

/// The stats side channel: `stats` on stdin → `allocs N bytes M live
/// BLOCKS LIVE_BYTES` on stdout; end of input ends the process.
fn answer_stats() {
    let stdin = std::io::stdin();
    let mut line = String::with_capacity(64);
    loop {
        line.clear();
        match stdin.lock().read_line(&mut line) {
            Ok(0) | Err(_) => std::process::exit(0),
            Ok(_) => {}
        }
        if line.trim() == "stats" {
            let t = crate::alloc::totals();
            let mut out = std::io::stdout().lock();
            let _ = writeln!(
                out,
                "allocs {} bytes {} live {} {}",
                t.allocs, t.bytes, t.live_blocks, t.live_bytes
            );
            let _ = out.flush();
        }
    }
}

/// Accepts the next connection with `TCP_NODELAY`, pausing briefly on
/// errors (such as running out of file descriptors) instead of failing.
async fn accept(listener: &TcpListener) -> TcpStream {
    loop {
        match listener.accept().await {
            Ok((s, _)) => {
                let _ = s.set_nodelay(true);
                return s;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// Echoes over any `Stream` + `Sink` of messages (tokio-tungstenite,
/// tokio-websockets) with `feed`, flushing once no further message is
/// already readable, so that a burst costs one write (the usual way to drive
/// a `Sink`; `send` would flush, and write, once per message). `is_data`
/// says which messages are text or binary.
pub(crate) async fn echo_sink<S, M, E>(mut ws: S, is_data: fn(&M) -> bool)
where
    S: Stream<Item = Result<M, E>> + Sink<M> + Unpin,
{
    while let Some(Ok(msg)) = ws.next().await {
        if is_data(&msg) && ws.feed(msg).await.is_err() {
            return;
        }
        while let Some(Some(Ok(msg))) = ws.next().now_or_never() {
            if is_data(&msg) && ws.feed(msg).await.is_err() {
                return;
            }
        }
        if ws.flush().await.is_err() {
            return;
        }
    }
}

/// Broadcast over any `Stream` + `Sink` of messages: the stream is split, a
/// writer task feeds every queued message and then flushes once, and every
/// data message read goes to every registered connection.
async fn broadcast_sink<S, M, E>(ws: S, registry: &Registry<M>, is_data: fn(&M) -> bool)
where
    S: Stream<Item = Result<M, E>> + Sink<M> + Send + 'static,
    M: Clone + Send + 'static,
{
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let id = registry.join(tx);
    let writer = tokio::spawn(async move {
        let mut batch = Vec::with_capacity(64);
        while rx.recv_many(&mut batch, 64).await > 0 {
            for msg in batch.drain(..) {
                if sink.feed(msg).await.is_err() {
                    return;
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
    });
    while let Some(Ok(msg)) = stream.next().await {
        if is_data(&msg) {
            registry.broadcast(&msg);
        }
    }
    registry.leave(id);
    writer.abort();
}

/// The peers' broadcast registry: one unbounded channel per connection.
#[derive(Debug)]
struct Registry<T> {
    peers: Mutex<Peers<T>>,
}

#[derive(Debug)]
struct Peers<T> {
    last_id: u64,
    list: Vec<(u64, UnboundedSender<T>)>,
}

impl<T: Clone> Registry<T> {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            peers: Mutex::new(Peers {
                last_id: 0,
                list: Vec::new(),
            }),
        })
    }

    fn join(&self, tx: UnboundedSender<T>) -> u64 {
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        peers.last_id += 1;
        let id = peers.last_id;
        peers.list.push((id, tx));
        id
    }

    fn leave(&self, id: u64) {
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        peers.list.retain(|(i, _)| *i != id);
    }

    fn broadcast(&self, msg: &T) {
        let peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        for (_, tx) in &peers.list {
            let _ = tx.send(msg.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::client::{FrameReader, binary_frames, connect, request};

    /// Starts `target` in `mode` on a thread of its own; returns its address.
    fn start(target: Target, mode: Mode) -> SocketAddr {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = std_listener.local_addr().unwrap();
        std_listener.set_nonblocking(true).unwrap();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = TcpListener::from_std(std_listener).unwrap();
                let _ = serve(target, mode, Deflate::Off, listener).await;
            });
        });
        addr
    }

    async fn replies(s: &mut TcpStream, reader: &mut FrameReader, want: usize) -> usize {
        let mut got = 0;
        let mut buf = vec![0u8; 1 << 16];
        while got < want {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "connection closed");
            reader
                .feed(&buf[..n], |f| got += usize::from(f.is_data()))
                .unwrap();
        }
        got
    }

    #[test]
    fn every_target_echoes_and_broadcasts() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        for target in Target::ALL {
            if target == Target::WharfBinary {
                // Another program: the runner's smoke run covers it.
                continue;
            }
            let addr = start(target, Mode::Echo);
            rt.block_on(async {
                if target == Target::Raw {
                    let mut s = TcpStream::connect(addr).await.unwrap();
                    s.write_all(b"hello").await.unwrap();
                    let mut buf = [0u8; 5];
                    s.read_exact(&mut buf).await.unwrap();
                    assert_eq!(&buf, b"hello");
                    return;
                }
                let (mut s, up) = connect(addr, &request(false), true).await.unwrap();
                assert!(up.leftover.is_empty());
                let mut reader = FrameReader::default();
                for size in [32, 1024, 65536] {
                    s.write_all(&binary_frames(size, 4, 1)).await.unwrap();
                    assert_eq!(replies(&mut s, &mut reader, 4).await, 4, "{target:?}");
                }
            });
            if target == Target::Raw {
                continue;
            }
            let addr = start(target, Mode::Broadcast);
            rt.block_on(async {
                let (mut a, _) = connect(addr, &request(false), true).await.unwrap();
                let (mut b, _) = connect(addr, &request(false), true).await.unwrap();
                // Both are registered once a message from each went round.
                tokio::time::sleep(Duration::from_millis(50)).await;
                a.write_all(&binary_frames(32, 3, 2)).await.unwrap();
                let (mut ra, mut rb) = (FrameReader::default(), FrameReader::default());
                assert_eq!(replies(&mut a, &mut ra, 3).await, 3, "{target:?}");
                assert_eq!(replies(&mut b, &mut rb, 3).await, 3, "{target:?}");
            });
        }
    }
}
