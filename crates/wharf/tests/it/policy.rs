//! Who may connect: the `Origin` policy (cross-site WebSocket hijacking),
//! the `Host` policy (DNS rebinding), and the headers an upgrade hook adds
//! to a `101` or a refusal. Both request paths: a connection's first
//! request (read by wharf) and a later one on a keep-alive connection
//! (read by hyper).

use http::{HeaderValue, StatusCode, header};
use wharf::{Hosts, Origins, Refuse, Server};

use crate::util::{RawClient, RawResponse, echo_server, start, upgrade_request};

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";

/// Sends `request` as a connection's first request, or (`second`) after a
/// plain GET on the same connection; returns the answer to it.
async fn ask(server: Server, request: &str, second: bool) -> RawResponse {
    let addr = start(server).await;
    let mut raw = RawClient::connect(addr).await;
    if second {
        raw.write(GET).await;
        raw.read_response().await;
    }
    raw.write(request.as_bytes()).await;
    raw.read_response().await
}

fn echo() -> Server {
    echo_server().0
}

#[tokio::test]
async fn a_page_of_another_origin_is_refused_by_default_on_both_paths() {
    for second in [false, true] {
        let evil = upgrade_request("/", &["Origin: http://evil.example"]);
        let res = ask(echo(), &evil, second).await;
        assert_eq!(res.status, 403, "{res:?}");
        assert!(
            res.one_line_body().contains("origin not allowed"),
            "{res:?}"
        );
        // The page's own origin, and a client that is not a browser.
        let own = upgrade_request("/", &["Origin: http://localhost"]);
        assert_eq!(ask(echo(), &own, second).await.status, 101);
        assert_eq!(
            ask(echo(), &upgrade_request("/", &[]), second).await.status,
            101
        );
        // Same host, another port: another origin.
        let port = upgrade_request("/", &["Origin: http://localhost:8080"]);
        assert_eq!(ask(echo(), &port, second).await.status, 403);
    }
}

#[tokio::test]
async fn allowed_origins_take_patterns_and_any() {
    let origins = Origins::same_origin()
        .allow("https://*.example.com")
        .unwrap();
    let sub = upgrade_request("/", &["Origin: https://app.example.com"]);
    let server = echo().allowed_origins(origins.clone());
    assert_eq!(ask(server, &sub, false).await.status, 101);
    let apex = upgrade_request("/", &["Origin: https://example.com"]);
    let server = echo().allowed_origins(origins);
    assert_eq!(ask(server, &apex, false).await.status, 403);
    let evil = upgrade_request("/", &["Origin: http://evil.example"]);
    let server = echo().allowed_origins(Origins::any());
    assert_eq!(ask(server, &evil, false).await.status, 101);
}

#[tokio::test]
async fn a_stranger_host_is_refused_for_upgrades_and_plain_requests() {
    let hosts = || Hosts::only(["localhost", "127.0.0.1"]).unwrap();
    for second in [false, true] {
        let rebound =
            upgrade_request("/", &[]).replace("Host: localhost", "Host: attacker.example");
        let res = ask(echo().allowed_hosts(hosts()), &rebound, second).await;
        assert_eq!(res.status, 403, "{res:?}");
        assert!(res.one_line_body().contains("host not allowed"));
        let ok = upgrade_request("/", &[]).replace("Host: localhost", "Host: 127.0.0.1:3400");
        assert_eq!(
            ask(echo().allowed_hosts(hosts()), &ok, second).await.status,
            101
        );
    }
    let get = "GET /metrics HTTP/1.1\r\nHost: attacker.example\r\n\r\n";
    let res = ask(echo().allowed_hosts(hosts()), get, false).await;
    assert_eq!(res.status, 403, "{res:?}");
    let res = ask(echo().allowed_hosts(hosts()), get, true).await;
    assert_eq!(res.status, 403, "{res:?}");
}

#[tokio::test]
async fn the_upgrade_hook_adds_headers_to_the_101_and_to_refusals() {
    let hooked = || {
        echo().on_upgrade(|mut up| async move {
            if up.query() == Some("deny") {
                return Err(Refuse::new(StatusCode::UNAUTHORIZED, "log in first")
                    .with_header(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))
                    .with_header(header::RETRY_AFTER, HeaderValue::from_static("30"))
                    // Not sendable from a hook: dropped.
                    .with_header(header::CONTENT_LENGTH, HeaderValue::from_static("999")));
            }
            let h = up.response_headers_mut();
            h.insert(
                header::SET_COOKIE,
                HeaderValue::from_static("session=abc; HttpOnly"),
            );
            h.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
            Ok(up)
        })
    };
    for second in [false, true] {
        let res = ask(hooked(), &upgrade_request("/", &[]), second).await;
        assert_eq!(res.status, 101, "{res:?}");
        assert_eq!(res.header("set-cookie"), Some("session=abc; HttpOnly"));
        assert_eq!(res.header("upgrade"), Some("websocket"));
        let res = ask(hooked(), &upgrade_request("/?deny", &[]), second).await;
        assert_eq!(res.status, 401, "{res:?}");
        assert_eq!(res.header("www-authenticate"), Some("Bearer"));
        assert_eq!(res.header("retry-after"), Some("30"));
        assert_eq!(res.one_line_body(), "log in first");
    }
}
