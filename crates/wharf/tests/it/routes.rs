//! Connection handlers by path (`Server::route`), chosen by the upgrade
//! hook (`Upgrade::handle_with`), and upgrades an application makes
//! through the server's `Endpoint`, on wharf's own first-request path and
//! on hyper's (a keep-alive connection's later request).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{Request, Response};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use wharf::{Body, Connection, Incoming, Server};

use crate::chat_util::{eventually, next_text, send_text};
use crate::util::{RawClient, connect, start, upgrade_request};

/// A handler that greets with `name`, then echoes.
fn greeter(name: &'static str) -> impl Fn(Connection) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    move |mut conn| {
        Box::pin(async move {
            let _ = conn.try_send(name);
            while let Some(msg) = conn.recv().await {
                let _ = conn.try_send(msg);
            }
        })
    }
}

fn routed() -> Server {
    Server::new()
        .route("/a", greeter("a"))
        .route("/b", greeter("b"))
}

/// Upgrades `path` on a connection whose first request was a plain one,
/// so that hyper reads the upgrade; returns its status and body.
async fn upgrade_after_plain_request(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut client = RawClient::connect(addr).await;
    client.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let res = client.read_response().await;
    assert_eq!(res.status, 426, "the default request handler: {res:?}");
    client.write(upgrade_request(path, &[]).as_bytes()).await;
    let res = client.read_response().await;
    let body = String::from_utf8(res.body.clone()).expect("utf-8");
    (res.status, body)
}

#[tokio::test]
async fn each_path_runs_its_route() {
    let addr = start(routed()).await;
    for path in ["/a", "/b", "/a?x=1"] {
        let mut ws = connect(addr, path).await;
        let name = &path[1..2];
        assert_eq!(next_text(&mut ws).await, name, "{path}");
        send_text(&mut ws, "echo").await;
        assert_eq!(next_text(&mut ws).await, "echo", "{path}");
    }
    // Also when hyper read the upgrade.
    let (status, _) = upgrade_after_plain_request(addr, "/b").await;
    assert_eq!(status, 101);
}

#[tokio::test]
async fn a_path_without_a_route_gets_404_and_a_reason() {
    let addr = start(routed()).await;
    let mut client = RawClient::connect(addr).await;
    client.write(upgrade_request("/c", &[]).as_bytes()).await;
    let res = client.read_response().await;
    assert_eq!(res.status, 404, "{res:?}");
    assert_eq!(res.one_line_body(), "no WebSocket endpoint at this path");
    client.expect_eof().await;

    let (status, body) = upgrade_after_plain_request(addr, "/c").await;
    assert_eq!(status, 404);
    assert_eq!(body, "no WebSocket endpoint at this path");
}

#[tokio::test]
async fn on_connection_takes_the_paths_without_a_route() {
    let addr = start(routed().on_connection(greeter("default"))).await;
    let mut ws = connect(addr, "/c").await;
    assert_eq!(next_text(&mut ws).await, "default");
    let mut ws = connect(addr, "/a").await;
    assert_eq!(next_text(&mut ws).await, "a");
}

#[tokio::test]
async fn the_upgrade_hook_chooses_the_handler() {
    let server = routed().on_upgrade(|mut up| async move {
        if up.query() == Some("hooked") {
            up.handle_with(greeter("hooked"));
        }
        Ok(up)
    });
    let addr = start(server).await;
    let mut ws = connect(addr, "/a?hooked").await;
    assert_eq!(next_text(&mut ws).await, "hooked");
    // A path with no route, given a handler by the hook: not a 404.
    let mut ws = connect(addr, "/elsewhere?hooked").await;
    assert_eq!(next_text(&mut ws).await, "hooked");
    let mut ws = connect(addr, "/a").await;
    assert_eq!(next_text(&mut ws).await, "a");
}

/// A hyper server of the application's own, upgrading through the
/// server's endpoint: the connection is in the server's hub (no private
/// hub per upgrade) and hears its broadcasts.
#[tokio::test]
async fn an_upgrade_through_the_endpoint_joins_the_servers_hub() {
    let server = Server::new();
    let hub = server.hub();
    let endpoint = server.endpoint();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local_addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let endpoint = endpoint.clone();
            let service = service_fn(move |mut req: Request<Incoming>| {
                let endpoint = endpoint.clone();
                async move {
                    Ok::<_, Infallible>(match endpoint.upgrade(&mut req).await {
                        Ok((response, pending)) => {
                            tokio::spawn(async move {
                                if let Ok(mut conn) = pending.await {
                                    while conn.recv().await.is_some() {}
                                }
                            });
                            response
                        }
                        Err(refusal) => refusal.into_response(),
                    })
                }
            });
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    let mut first = connect(addr, "/").await;
    let mut second = connect(addr, "/").await;
    eventually("both in the server's hub", || hub.len() == 2).await;
    assert_eq!(hub.broadcast("to all"), 2);
    assert_eq!(next_text(&mut first).await, "to all");
    assert_eq!(next_text(&mut second).await, "to all");
}

/// A tower service that always fails.
#[derive(Clone)]
struct Failing;

impl tower_service::Service<Request<Incoming>> for Failing {
    type Response = Response<Body>;
    type Error = std::io::Error;
    type Future = std::future::Ready<Result<Response<Body>, std::io::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request<Incoming>) -> Self::Future {
        std::future::ready(Err(std::io::Error::other("broken")))
    }
}

#[tokio::test]
async fn a_failing_service_answers_500_with_a_reason_and_keeps_the_connection() {
    let addr = start(Server::new().on_request_service(Failing)).await;
    let mut client = RawClient::connect(addr).await;
    for _ in 0..2 {
        client.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
        let res = client.read_response().await;
        assert_eq!(res.status, 500, "{res:?}");
        assert_eq!(res.one_line_body(), "the request service failed");
    }
}
