//! Serving on a Unix socket: any `Listener` of byte streams.

use futures_util::{SinkExt, StreamExt};
use tokio::net::{UnixListener, UnixStream};
use tokio_tungstenite::tungstenite::Message;
use wharf::Server;

use crate::util::within;

#[tokio::test]
async fn a_unix_socket_serves_websocket_and_http() {
    let dir = std::env::temp_dir().join(format!("wharf-unix-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("wharf.sock");
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).unwrap();
    let server = Server::new().on_connection(|mut conn| async move {
        let _ = conn.try_send(wharf::Message::from(conn.client().peer_addr().to_string()));
        while let Some(msg) = conn.recv().await {
            let _ = conn.try_send(msg);
        }
    });
    tokio::spawn(server.serve(listener));

    let stream = UnixStream::connect(&path).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async("ws://localhost/unix", stream)
        .await
        .unwrap();
    let peer = within("peer", ws.next()).await.unwrap().unwrap();
    assert_eq!(peer, Message::text("0.0.0.0:0"));
    ws.send(Message::text("over a unix socket")).await.unwrap();
    let back = within("echo", ws.next()).await.unwrap().unwrap();
    assert_eq!(back, Message::text("over a unix socket"));
    ws.close(None).await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
