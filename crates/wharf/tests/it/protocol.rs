//! Protocol violations from a raw client after a valid handshake: the
//! server fails the connection with the matching close code, then closes
//! TCP.

use tokio::sync::mpsc;
use wharf::{ProtocolError, Server};

use crate::util::{MASK, RawClient, frame, start, within};

/// A server whose handler reports the protocol error that ended each
/// connection.
fn reporting_server() -> (Server, mpsc::UnboundedReceiver<Option<ProtocolError>>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let server = Server::new().on_connection(move |mut conn| {
        let tx = tx.clone();
        async move {
            while let Some(msg) = conn.recv().await {
                let _ = conn.try_send(msg);
            }
            let _ = tx.send(match conn.disconnect() {
                Some(wharf::Disconnect::Protocol(e)) => Some(e),
                _ => None,
            });
        }
    });
    (server, rx)
}

/// Sends `bytes` after a handshake and expects a close frame with `code`,
/// then the end of the stream.
async fn expect_failure(bytes: &[u8], code: u16) -> Option<ProtocolError> {
    let (server, mut errors) = reporting_server();
    let addr = start(server).await;
    let mut client = RawClient::handshake(addr).await;
    client.write(bytes).await;
    let close = client.read_frame().await;
    assert_eq!(close.close_code(), code, "{close:?}");
    client.expect_eof().await;
    within("handler returns", errors.recv())
        .await
        .expect("handler reported")
}

#[tokio::test]
async fn fails_unmasked_frame_with_1002() {
    let error = expect_failure(&frame(0x1, b"hello", None), 1002).await;
    assert_eq!(error, Some(ProtocolError::MaskMissing));
}

#[tokio::test]
async fn fails_invalid_utf8_text_with_1007() {
    // "Hello" followed by a lone continuation byte and a truncated sequence.
    let error = expect_failure(&frame(0x1, b"Hello\x80\xe2\x82", Some(MASK)), 1007).await;
    assert_eq!(error, Some(ProtocolError::TextNotUtf8));
}

#[tokio::test]
async fn echoes_valid_frames_before_a_violation() {
    let (server, _errors) = reporting_server();
    let addr = start(server).await;
    let mut client = RawClient::handshake(addr).await;
    let mut bytes = frame(0x2, &[1, 2, 3], Some(MASK));
    bytes.extend(frame(0x1, b"x", None));
    client.write(&bytes).await;
    let echoed = client.read_frame().await;
    assert_eq!((echoed.opcode, &echoed.payload[..]), (0x2, &[1, 2, 3][..]));
    assert_eq!(client.read_frame().await.close_code(), 1002);
    client.expect_eof().await;
}
