//! Raw TCP echo: the physical reference. It echoes bytes as they come and
//! does no WebSocket work at all.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub(super) async fn serve(listener: TcpListener) -> anyhow::Result<()> {
    loop {
        let s = super::accept(&listener).await;
        tokio::spawn(async move {
            let _ = echo(s).await;
        });
    }
}

async fn echo(mut s: TcpStream) -> std::io::Result<()> {
    // The buffer is allocated on the first readable event, so an idle
    // connection costs no more than its socket and task.
    s.readable().await?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        s.write_all(&buf[..n]).await?;
    }
}
