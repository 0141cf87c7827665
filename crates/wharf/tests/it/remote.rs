//! The client's address: from a trusted proxy's `X-Forwarded-*` headers or
//! `Forwarded`, from a PROXY protocol header, or the socket's own; what the
//! upgrade hook, the connection and plain requests see.

use std::net::SocketAddr;

use http::Response;
use tokio::sync::mpsc;
use wharf::{Body, Cidr, ForwardedHeader, Remote, Server};

use crate::util::{RawClient, start, upgrade_request, within};

/// What a server saw of a connection: the hook's `Remote`, then the
/// client's `peer_addr` and `socket_addr`.
type Seen = (Remote, SocketAddr, SocketAddr);

fn observing(server: Server) -> (Server, mpsc::UnboundedReceiver<Seen>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let server = server
        .on_upgrade(|mut up| async move {
            let remote = up.remote().clone();
            up.insert(remote);
            Ok(up)
        })
        .on_connection(move |conn| {
            let remote = conn.data::<Remote>().expect("the hook ran").clone();
            let _ = tx.send((remote, conn.peer_addr(), conn.socket_addr()));
            async move { drop(conn) }
        });
    (server, rx)
}

async fn seen(rx: &mut mpsc::UnboundedReceiver<Seen>) -> Seen {
    within("connection", rx.recv()).await.expect("a connection")
}

#[tokio::test]
async fn a_trusted_proxy_names_the_client_the_hook_and_the_connection_see() {
    let server = Server::new().trusted_proxies(["127.0.0.0/8".parse().unwrap()]);
    let (server, mut rx) = observing(server);
    let addr = start(server).await;
    let mut c = RawClient::connect(addr).await;
    let headers = [
        "X-Forwarded-For: 6.6.6.6, 198.51.100.7",
        "X-Forwarded-Proto: https",
        "X-Forwarded-Host: chat.example",
        "Forwarded: for=203.0.113.1",
    ];
    c.write(upgrade_request("/", &headers).as_bytes()).await;
    assert_eq!(c.read_response().await.status, 101);
    let (remote, peer, socket) = seen(&mut rx).await;
    assert_eq!(remote.addr(), "198.51.100.7:0".parse().unwrap());
    assert_eq!(
        (remote.proto(), remote.host()),
        (Some("https"), Some("chat.example"))
    );
    assert_eq!(remote.socket_addr().ip().to_string(), "127.0.0.1");
    assert_eq!(peer, remote.addr());
    assert_eq!(socket, remote.socket_addr());
}

#[tokio::test]
async fn forwarded_is_read_only_when_chosen() {
    let server = Server::new()
        .trusted_proxies(["127.0.0.1".parse().unwrap()])
        .forwarded_header(ForwardedHeader::Forwarded);
    let (server, mut rx) = observing(server);
    let addr = start(server).await;
    let mut c = RawClient::connect(addr).await;
    let headers = [
        "Forwarded: for=\"[2001:db8::5]:4711\";proto=https",
        "X-Forwarded-For: 198.51.100.7",
    ];
    c.write(upgrade_request("/", &headers).as_bytes()).await;
    assert_eq!(c.read_response().await.status, 101);
    let (remote, peer, _) = seen(&mut rx).await;
    assert_eq!(peer, "[2001:db8::5]:4711".parse().unwrap());
    assert_eq!(remote.proto(), Some("https"));
}

#[tokio::test]
async fn without_trusted_proxies_the_socket_is_the_client() {
    let (server, mut rx) = observing(Server::new());
    let addr = start(server).await;
    let mut c = RawClient::connect(addr).await;
    let local = c.stream.local_addr().unwrap();
    c.write(upgrade_request("/", &["X-Forwarded-For: 198.51.100.7"]).as_bytes())
        .await;
    assert_eq!(c.read_response().await.status, 101);
    let (remote, peer, socket) = seen(&mut rx).await;
    assert_eq!((peer, socket), (local, local));
    assert_eq!(remote.proto(), None);
}

#[tokio::test]
async fn plain_requests_carry_their_remote() {
    let server = Server::new()
        .trusted_proxies(["127.0.0.1".parse().unwrap()])
        .on_request(|req| async move {
            let remote = req.extensions().get::<Remote>().expect("remote");
            Response::new(Body::from(remote.addr().to_string()))
        });
    let addr = start(server).await;
    let mut c = RawClient::connect(addr).await;
    c.write(b"GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 198.51.100.9\r\n\r\n")
        .await;
    assert_eq!(c.read_response().await.one_line_body(), "198.51.100.9:0");
}

/// With trusted proxies named, a PROXY header is believed only from them:
/// anyone else who reaches the port cannot claim to be any client.
#[tokio::test]
async fn the_proxy_protocol_is_taken_only_from_trusted_proxies() {
    let trusted: Cidr = "127.0.0.2/32".parse().unwrap();
    let (server, mut rx) = observing(
        Server::new()
            .proxy_protocol(true)
            .trusted_proxies([trusted]),
    );
    let addr = start(server).await;
    let mut bytes = b"PROXY TCP4 203.0.113.5 127.0.0.1 5555 80\r\n".to_vec();
    bytes.extend_from_slice(upgrade_request("/", &[]).as_bytes());
    // From 127.0.0.1, no trusted proxy: closed unanswered.
    let mut c = RawClient::connect(addr).await;
    c.write(&bytes).await;
    within("closed unanswered", c.expect_eof()).await;
    // From 127.0.0.2, the proxy: served, as the client it names.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let stream = socket.connect(addr).await.expect("connect from 127.0.0.2");
    let mut c = RawClient::from_stream(stream);
    c.write(&bytes).await;
    assert_eq!(c.read_response().await.status, 101);
    let (_, peer, socket) = seen(&mut rx).await;
    assert_eq!(peer, "203.0.113.5:5555".parse().unwrap());
    assert_eq!(socket.ip().to_string(), "127.0.0.2");
}

#[tokio::test]
async fn the_proxy_protocol_names_the_client_and_its_absence_closes() {
    let (server, mut rx) = observing(Server::new().proxy_protocol(true));
    let addr = start(server).await;
    // Version 1, then the request in the same write.
    let mut c = RawClient::connect(addr).await;
    let mut bytes = b"PROXY TCP4 203.0.113.5 127.0.0.1 5555 80\r\n".to_vec();
    bytes.extend_from_slice(upgrade_request("/", &[]).as_bytes());
    c.write(&bytes).await;
    assert_eq!(c.read_response().await.status, 101);
    let (_, peer, socket) = seen(&mut rx).await;
    assert_eq!(peer, "203.0.113.5:5555".parse().unwrap());
    assert_eq!(socket.ip().to_string(), "127.0.0.1");
    // Version 2, IPv6.
    let mut c = RawClient::connect(addr).await;
    let mut v2 = b"\r\n\r\n\0\r\nQUIT\n\x21\x21\x00\x24".to_vec();
    v2.extend_from_slice(
        &"2001:db8::9"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    v2.extend_from_slice(&[0; 16]);
    v2.extend_from_slice(&[0x1f, 0x90, 0, 80]);
    c.write(&v2).await;
    c.write(upgrade_request("/", &[]).as_bytes()).await;
    assert_eq!(c.read_response().await.status, 101);
    assert_eq!(seen(&mut rx).await.1, "[2001:db8::9]:8080".parse().unwrap());
    // No header: closed unanswered.
    let mut c = RawClient::connect(addr).await;
    c.write(upgrade_request("/", &[]).as_bytes()).await;
    c.expect_eof().await;
}

#[tokio::test]
async fn the_same_origin_is_the_host_a_trusted_proxy_reports() {
    let proxied = ["127.0.0.1".parse().unwrap()];
    let (server, mut rx) = observing(Server::new().trusted_proxies(proxied));
    let addr = start(server).await;
    // The proxy rewrote Host to its upstream's name; the page's own origin
    // is the public one.
    let headers = [
        "Origin: https://chat.example",
        "X-Forwarded-For: 198.51.100.7",
        "X-Forwarded-Host: chat.example",
        "X-Forwarded-Proto: https",
    ];
    let mut c = RawClient::connect(addr).await;
    c.write(upgrade_request("/", &headers).as_bytes()).await;
    assert_eq!(c.read_response().await.status, 101);
    assert_eq!(seen(&mut rx).await.0.host(), Some("chat.example"));
    // Another page is still refused.
    let mut c = RawClient::connect(addr).await;
    let forged = [
        "Origin: https://evil.example",
        "X-Forwarded-Host: chat.example",
    ];
    c.write(upgrade_request("/", &forged).as_bytes()).await;
    assert_eq!(c.read_response().await.status, 403);
    // From an untrusted peer, X-Forwarded-Host is not read.
    let (server, _rx) = observing(Server::new());
    let addr = start(server).await;
    let mut c = RawClient::connect(addr).await;
    c.write(upgrade_request("/", &headers).as_bytes()).await;
    assert_eq!(c.read_response().await.status, 403);
}
