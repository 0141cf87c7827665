//! The upgrade hook (refuse, attach data, choose a subprotocol) and
//! `Endpoint::upgrade` inside an application's own hyper server.

use std::convert::Infallible;
use std::net::SocketAddr;

use http::{Request, Response, StatusCode};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use wharf::{Body, Endpoint, Incoming, Refuse, Server};

use crate::chat_util::{next_text, send_text};
use crate::util::{
    RawClient, SAMPLE_KEY, connect, connect_with, connector, start, upgrade_request, within,
};

/// Data the hook attaches to a connection.
#[derive(Clone, Debug)]
struct User(String);

/// The value of `name` in a query string.
fn param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find_map(|(k, v)| (k == name).then_some(v))
}

/// A server whose hook wants `token=secret` and attaches the `user`; the
/// handler sends the user's name.
fn token_server() -> Server {
    Server::new()
        .on_upgrade(|mut up| async move {
            if param(up.query(), "token") != Some("secret") {
                return Err(Refuse::new(StatusCode::UNAUTHORIZED, "missing token"));
            }
            let name = param(up.query(), "user").unwrap_or("anonymous").to_owned();
            up.insert(User(name));
            Ok(up)
        })
        .on_connection(|mut conn| async move {
            let name = conn
                .data::<User>()
                .map_or_else(|| "<no user>".to_owned(), |u| u.0.clone());
            let _ = conn.try_send(name);
            while conn.recv().await.is_some() {}
        })
}

#[tokio::test]
async fn hook_refuses_without_token_with_its_status_and_reason() {
    let addr = start(token_server()).await;
    for path in ["/?user=ann", "/?token=guess&user=ann"] {
        let mut client = RawClient::connect(addr).await;
        client.write(upgrade_request(path, &[]).as_bytes()).await;
        let res = client.read_response().await;
        assert_eq!(res.status, 401, "{path}: {res:?}");
        assert_eq!(res.body, b"missing token", "{path}");
    }
}

#[tokio::test]
async fn hook_attaches_data_that_the_handler_reads() {
    let addr = start(token_server()).await;
    let mut ws = connect(addr, "/?token=secret&user=ann").await;
    assert_eq!(next_text(&mut ws).await, "ann");
}

/// What the hook saw and did.
#[derive(Debug)]
struct HookSaw {
    offered: Vec<String>,
    unoffered_accepted: bool,
    after_unoffered: Option<String>,
    offered_accepted: bool,
}

/// A server that sends back what its connection kept of the request: the
/// path, the query and the `x-team` header (or `<none>` without headers).
fn request_echo_server(keep_headers: bool) -> Server {
    Server::new()
        .keep_headers(keep_headers)
        .on_connection(|mut conn| async move {
            let team = match conn.headers() {
                None => "<none>",
                Some(h) => h
                    .get("x-team")
                    .map_or("<absent>", |v| v.to_str().unwrap_or("<binary>")),
            }
            .to_owned();
            let _ = conn.try_send(format!(
                "{} {} {team}",
                conn.path(),
                conn.query().unwrap_or("<no query>")
            ));
            while conn.recv().await.is_some() {}
        })
}

#[tokio::test]
async fn connection_keeps_path_and_query_and_headers_only_when_asked() {
    for (keep, team) in [(false, "<none>"), (true, "blue")] {
        let addr = start(request_echo_server(keep)).await;
        let with_team = connector().header("x-team", "blue");
        let (mut ws, _) = connect_with(with_team, addr, "/room/7?a=1&b=2").await;
        assert_eq!(next_text(&mut ws).await, format!("/room/7 a=1&b=2 {team}"));
    }
    let addr = start(request_echo_server(false)).await;
    let mut ws = connect(addr, "/plain").await;
    assert_eq!(next_text(&mut ws).await, "/plain <no query> <none>");
}

#[tokio::test]
async fn hook_chooses_an_offered_subprotocol_only() {
    let (hook_tx, mut hook_rx) = mpsc::unbounded_channel();
    let (conn_tx, mut conn_rx) = mpsc::unbounded_channel();
    let server = Server::new()
        .on_upgrade(move |mut up| {
            let hook_tx = hook_tx.clone();
            async move {
                let offered = up.offered_protocols().to_vec();
                let unoffered_accepted = up.set_protocol(Some("zzz"));
                let after_unoffered = up.protocol().map(str::to_owned);
                let offered_accepted = up.set_protocol(Some("b"));
                let _ = hook_tx.send(HookSaw {
                    offered,
                    unoffered_accepted,
                    after_unoffered,
                    offered_accepted,
                });
                Ok(up)
            }
        })
        .on_connection(move |conn| {
            let conn_tx = conn_tx.clone();
            async move {
                let _ = conn_tx.send(conn.protocol().map(str::to_owned));
            }
        });
    let addr = start(server).await;
    let (_ws, res) = connect_with(connector().protocols(["a", "b"]), addr, "/").await;
    assert_eq!(
        res.headers()
            .get("sec-websocket-protocol")
            .map(|v| v.as_bytes()),
        Some(&b"b"[..])
    );

    let saw = within("hook reports", hook_rx.recv())
        .await
        .expect("hook ran");
    assert_eq!(saw.offered, ["a", "b"], "{saw:?}");
    assert!(!saw.unoffered_accepted, "{saw:?}");
    assert_eq!(saw.after_unoffered, None, "{saw:?}");
    assert!(saw.offered_accepted, "{saw:?}");
    let protocol = within("handler reports", conn_rx.recv())
        .await
        .expect("handler ran");
    assert_eq!(protocol.as_deref(), Some("b"));
}

/// A hyper service that upgrades with `endpoint` and echoes, or answers
/// with the refusal.
async fn echo_service(
    endpoint: Endpoint,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    Ok(match endpoint.upgrade(&mut req).await {
        Ok((response, pending)) => {
            tokio::spawn(async move {
                if let Ok(mut conn) = pending.await {
                    while let Some(msg) = conn.recv().await {
                        let _ = conn.try_send(msg);
                    }
                }
            });
            response
        }
        Err(refusal) => refusal.into_response(),
    })
}

/// Serves `echo_service` with a plain hyper accept loop on a loopback port.
async fn start_hyper() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local_addr");
    let endpoint = Server::new().endpoint();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let endpoint = endpoint.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| echo_service(endpoint.clone(), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn upgrade_works_inside_a_plain_hyper_server() {
    let addr = start_hyper().await;
    let mut ws = connect(addr, "/echo").await;
    for text in ["hello", "again"] {
        send_text(&mut ws, text).await;
        assert_eq!(next_text(&mut ws).await, text);
    }
}

#[tokio::test]
async fn upgrade_inside_hyper_refuses_non_upgrade_requests() {
    let addr = start_hyper().await;
    let mut client = RawClient::connect(addr).await;

    client.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let res = client.read_response().await;
    assert_eq!(res.status, 400, "plain GET: {res:?}");
    res.one_line_body();

    // Same keep-alive connection: an upgrade request without a key.
    let no_key =
        upgrade_request("/", &[]).replace(&format!("Sec-WebSocket-Key: {SAMPLE_KEY}\r\n"), "");
    assert!(!no_key.contains("Sec-WebSocket-Key"));
    client.write(no_key.as_bytes()).await;
    let res = client.read_response().await;
    assert_eq!(res.status, 400, "no key: {res:?}");
    res.one_line_body();
}
