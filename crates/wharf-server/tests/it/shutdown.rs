//! The graceful shutdown and plain HTTP: a response in flight when the
//! signal comes is finished (within the close timeout) before `serve`
//! returns and the process would exit.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use wharf_server::Mode;

use crate::util::{TempDir, config};

/// The size of the file downloaded: larger than what loopback socket
/// buffers hold, so that most of it is still to be sent at the signal.
const FILE: usize = 32 << 20;

#[tokio::test]
async fn a_download_in_flight_finishes_after_the_shutdown_signal() {
    let tmp = TempDir::new("shutdown-download");
    std::fs::write(tmp.path().join("big.bin"), vec![7u8; FILE]).expect("write file");
    let mut c = config(Mode::Echo);
    c.static_dir = Some(tmp.path().to_path_buf());
    c.close_timeout = Duration::from_secs(5);

    // The server on a runtime of its own, dropped once `serve` returns, as
    // in the binary: whatever it did not finish by then is cut.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("local_addr");
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let server = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            wharf_server::serve(c, listener, async {
                let _ = stop_rx.await;
            })
            .await
        })
    });

    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(b"GET /big.bin HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .expect("write");
    let mut got = Vec::new();
    let mut chunk = vec![0; 256 * 1024];
    let mut stop = Some(stop_tx);
    let read = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            let n = tcp.read(&mut chunk).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            got.extend_from_slice(&chunk[..n]);
            if got.len() > 1 << 20
                && let Some(tx) = stop.take()
            {
                let _ = tx.send(());
            }
            // A slow reader: about 12 MB/s.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(read.is_ok(), "the download neither finished nor was cut");
    let head_end = got
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head")
        + 4;
    let head = String::from_utf8_lossy(&got[..head_end]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains(&format!("content-length: {FILE}")), "{head}");
    assert_eq!(
        got.len() - head_end,
        FILE,
        "the download was cut by the shutdown"
    );
    server
        .join()
        .expect("server thread")
        .expect("serve returns");
}
