//! fastwebsockets 0.10 behind hyper 1 with its `upgrade` feature: echo is
//! its `echo_server` example (`FragmentCollector`, `read_frame`,
//! `write_frame`, inside `tokio::task::unconstrained`). Broadcast splits the
//! socket (`unstable-split`); the writer task writes every queued frame
//! into a `BufWriter`, then flushes once.

use bytes::Bytes;
use fastwebsockets::upgrade::{self, UpgradeFut};
use fastwebsockets::{
    FragmentCollector, FragmentCollectorRead, Frame, OpCode, Payload, WebSocketError,
};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::BufWriter;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::{Mode, Registry};

type Shared = std::sync::Arc<Registry<Bytes>>;

pub(super) async fn serve(listener: TcpListener, mode: Mode) -> anyhow::Result<()> {
    let registry = Registry::new();
    loop {
        let s = super::accept(&listener).await;
        let registry = registry.clone();
        tokio::spawn(async move {
            let service = service_fn(move |mut req| {
                let registry = registry.clone();
                async move {
                    let (response, fut) = upgrade::upgrade(&mut req)?;
                    tokio::spawn(tokio::task::unconstrained(async move {
                        let _ = match mode {
                            Mode::Echo => echo(fut).await,
                            Mode::Broadcast => broadcast(fut, registry).await,
                        };
                    }));
                    Ok::<_, WebSocketError>(response)
                }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(s), service)
                .with_upgrades()
                .await;
        });
    }
}

async fn echo(fut: UpgradeFut) -> Result<(), WebSocketError> {
    let mut ws = FragmentCollector::new(fut.await?);
    loop {
        let frame = ws.read_frame().await?;
        match frame.opcode {
            OpCode::Close => break,
            OpCode::Text | OpCode::Binary => ws.write_frame(frame).await?,
            _ => {}
        }
    }
    Ok(())
}

async fn broadcast(fut: UpgradeFut, registry: Shared) -> Result<(), WebSocketError> {
    let ws = fut.await?;
    let (rx, mut tx) = ws.split(|s| {
        let (r, w) = tokio::io::split(s);
        (r, BufWriter::new(w))
    });
    let mut rx = FragmentCollectorRead::new(rx);
    let (queue, mut queued) = mpsc::unbounded_channel::<Bytes>();
    let id = registry.join(queue);
    let writer = tokio::spawn(async move {
        let mut batch = Vec::with_capacity(64);
        while queued.recv_many(&mut batch, 64).await > 0 {
            for payload in batch.drain(..) {
                let frame = Frame::binary(Payload::Borrowed(&payload));
                if tx.write_frame(frame).await.is_err() {
                    return;
                }
            }
            if tx.flush().await.is_err() {
                return;
            }
        }
    });
    loop {
        // Obligated replies (pong, close echo) are dropped: the load
        // generator sends neither pings nor closes.
        let Ok(frame) = rx
            .read_frame::<_, WebSocketError>(&mut |_| async { Ok(()) })
            .await
        else {
            break;
        };
        match frame.opcode {
            OpCode::Close => break,
            OpCode::Text | OpCode::Binary => {
                registry.broadcast(&Bytes::copy_from_slice(&frame.payload));
            }
            _ => {}
        }
    }
    registry.leave(id);
    writer.abort();
    Ok(())
}
