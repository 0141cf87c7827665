//! The binary's defaults for who may connect: same-origin pages only, the
//! loopback names only on a loopback address (DNS rebinding), `/metrics`
//! only on a loopback address or on its own listener.

use wharf_server::Mode;

use crate::util::{config, raw, start};

const UPGRADE: &str = "GET /chat HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                       Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";

fn upgrade(host: &str, origin: Option<&str>) -> String {
    let mut req = format!("{UPGRADE}Host: {host}\r\n");
    if let Some(o) = origin {
        req.push_str(&format!("Origin: {o}\r\n"));
    }
    req + "\r\n"
}

#[tokio::test]
async fn a_page_of_another_site_cannot_join_the_chat() {
    let server = start(config(Mode::Chat)).await;
    let host = format!("127.0.0.1:{}", server.addr.port());
    let res = server
        .raw(&upgrade(&host, Some("http://evil.example")))
        .await;
    assert_eq!(res.status, 403);
    assert!(
        res.body_text().contains("origin not allowed"),
        "{}",
        res.body_text()
    );
    let own = format!("http://{host}");
    assert_eq!(server.raw(&upgrade(&host, Some(&own))).await.status, 101);
    // Not a browser: no Origin.
    assert_eq!(server.raw(&upgrade(&host, None)).await.status, 101);
    server.stop().await;

    let mut open = config(Mode::Chat);
    open.allowed_origins = vec!["*".into()];
    let server = start(open).await;
    let res = server
        .raw(&upgrade("localhost", Some("http://evil.example")))
        .await;
    assert_eq!(res.status, 101);
    server.stop().await;
}

#[tokio::test]
async fn a_rebound_name_gets_nothing_from_a_loopback_server() {
    let server = start(config(Mode::Chat)).await;
    for path in ["/", "/metrics", "/healthz"] {
        let req = format!("GET {path} HTTP/1.1\r\nHost: attacker.example:3400\r\n\r\n");
        let res = server.raw(&req).await;
        assert_eq!(res.status, 403, "{path}");
        let req = format!("GET {path} HTTP/1.1\r\nHost: localhost:3400\r\n\r\n");
        assert_eq!(server.raw(&req).await.status, 200, "{path}");
    }
    let res = server.raw(&upgrade("attacker.example", None)).await;
    assert_eq!(res.status, 403);
    server.stop().await;
    // Named hosts replace the default.
    let mut named = config(Mode::Chat);
    named.allowed_hosts = vec!["chat.example.com".into()];
    let server = start(named).await;
    let ok = "GET /healthz HTTP/1.1\r\nHost: chat.example.com\r\n\r\n";
    assert_eq!(server.raw(ok).await.status, 200);
    let no = "GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n";
    assert_eq!(server.raw(no).await.status, 403);
    server.stop().await;
}

#[tokio::test]
async fn metrics_stay_off_a_public_address_unless_given_their_own() {
    // Configured for every interface (the test listener is still loopback).
    let mut public = config(Mode::Echo);
    public.listen = "0.0.0.0:3400".parse().unwrap();
    let server = start(public).await;
    let res = server.request("GET", "/metrics", &[]).await;
    assert_eq!(res.status, 404);
    assert!(res.body_text().contains("metrics-listen"));
    assert_eq!(server.request("GET", "/healthz", &[]).await.status, 200);
    server.stop().await;

    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut own = config(Mode::Echo);
    own.metrics_listen = Some(format!("127.0.0.1:{port}").parse().unwrap());
    let server = start(own).await;
    assert_eq!(server.request("GET", "/metrics", &[]).await.status, 404);
    let at = format!("127.0.0.1:{port}").parse().unwrap();
    let req = "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    let res = raw(at, req).await;
    assert_eq!(res.status, 200);
    assert!(res.body_text().contains("wharf_connections_open"));
    let ws = upgrade("localhost", None);
    assert_eq!(
        raw(at, &ws).await.status,
        404,
        "no WebSocket on the metrics listener"
    );
    server.stop().await;
}
