//! The default 1 MiB message limit: enforced from the frame header, before
//! any payload is buffered.

use futures_util::StreamExt;
use wharf::{CloseCode, Disconnect, Event};

use crate::util::{MASK, RawClient, connect, echo_server, frame_header, start, within};

#[tokio::test]
async fn fails_frame_announcing_2_mib_with_1009_before_its_payload() {
    let (server, _ended) = echo_server();
    let addr = start(server).await;
    let mut client = RawClient::handshake(addr).await;
    // Only the header: the server must answer without waiting for payload.
    client.write(&frame_header(0x2, 2 << 20, Some(MASK))).await;
    let close = client.read_frame().await;
    assert_eq!(close.close_code(), 1009, "{close:?}");
    client.expect_eof().await;
}

#[tokio::test]
async fn fails_message_one_byte_over_1_mib_with_1009() {
    let (server, _ended) = echo_server();
    let addr = start(server).await;
    let mut ws = connect(addr, "/").await;
    // The server may fail the connection before the whole message is
    // written, so the send itself may error.
    let _ = within("send", ws.send(vec![0; (1 << 20) + 1])).await;
    let close = within("close frame", ws.next()).await;
    let Some(Event::Close(Disconnect::Peer(frame))) = close else {
        panic!("expected a close frame, got {close:?}");
    };
    assert_eq!(frame.code, CloseCode::MESSAGE_TOO_BIG);
}
