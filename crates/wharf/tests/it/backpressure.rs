//! A handler that never calls `recv` pushes back on its peer through TCP
//! instead of buffering without bound.

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::sync::oneshot;
use wharf::Server;

use crate::util::{MASK, RawClient, frame, start};

/// Stop writing once this much was accepted without the peer stalling.
const BOUND: usize = 64 << 20;

#[tokio::test]
async fn stops_reading_while_the_handler_does_not_receive() {
    let (done_tx, done_rx) = oneshot::channel::<()>();
    let done_rx = std::sync::Mutex::new(Some(done_rx));
    let server = Server::new().on_connection(move |conn| {
        let done = done_rx.lock().expect("lock").take();
        async move {
            // Hold the connection open without receiving until the test ends.
            if let Some(done) = done {
                let _ = done.await;
            }
            drop(conn);
        }
    });
    let addr = start(server).await;
    let mut client = RawClient::handshake(addr).await;
    let message = frame(0x2, &[0x5a; 64 * 1024], Some(MASK));

    let mut written = 0;
    let stalled = loop {
        let write = client.stream.write_all(&message);
        match tokio::time::timeout(Duration::from_secs(1), write).await {
            Err(_) => break true,
            Ok(result) => result.expect("write"),
        }
        written += message.len();
        if written >= BOUND {
            break false;
        }
    };
    assert!(
        stalled,
        "the server accepted {written} bytes without pushing back"
    );
    drop(done_tx);
}
