//! Plain HTTP and WebSocket on one port.

use wharf::Message;

use crate::util::{RawClient, connect, echo_server, frame, start, upgrade_request, within};

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";

#[tokio::test]
async fn serves_plain_http_and_websocket_on_one_port() {
    let (server, _ended) = echo_server();
    let addr = start(server).await;

    // Two requests on one keep-alive connection, both answered by the
    // application's request handler.
    let mut http = RawClient::connect(addr).await;
    for _ in 0..2 {
        http.write(GET).await;
        let res = http.read_response().await;
        assert_eq!(res.status, 200, "{res:?}");
        assert_eq!(res.header("content-type"), Some("text/plain"));
        assert_eq!(res.body, b"okay");
    }

    // Then a WebSocket client on the same port.
    let mut ws = connect(addr, "/").await;
    within("send", ws.send("hello")).await.expect("send");
    let echoed = within("echo", ws.recv()).await.expect("a message");
    assert_eq!(echoed, Message::from("hello"));
}

#[tokio::test]
async fn answers_plain_requests_with_426_by_default() {
    let addr = start(wharf::Server::new()).await;
    let mut http = RawClient::connect(addr).await;
    http.write(GET).await;
    let res = http.read_response().await;
    assert_eq!(res.status, 426, "{res:?}");
    assert_eq!(res.header("upgrade"), Some("websocket"));
    res.one_line_body();
}

/// The first request of a connection is read by wharf itself; a plain one
/// goes on to hyper, and an upgrade later on the same keep-alive connection
/// is answered by hyper and still becomes a working WebSocket, with a frame
/// sent right behind the upgrade request.
#[tokio::test]
async fn upgrades_after_a_plain_request_on_the_same_connection() {
    let (server, _ended) = echo_server();
    let addr = start(server).await;
    let mut raw = RawClient::connect(addr).await;
    raw.write(GET).await;
    assert_eq!(raw.read_response().await.status, 200);
    let mut request = upgrade_request("/", &[]).into_bytes();
    request.extend_from_slice(&frame(0x1, b"right behind", Some([1, 2, 3, 4])));
    raw.write(&request).await;
    let res = raw.read_response().await;
    assert_eq!(res.status, 101, "{res:?}");
    let echoed = raw.read_frame().await;
    assert_eq!(
        (echoed.opcode, &echoed.payload[..]),
        (0x1, &b"right behind"[..])
    );
}
