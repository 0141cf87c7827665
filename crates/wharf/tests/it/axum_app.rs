//! wharf inside an axum application (feature `axum`): the extractor's
//! connections share the server's hub and settings, whether wharf serves
//! the `Router` (`Server::on_request_service`) or `axum::serve` does.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use tokio::net::TcpListener;
use wharf::axum::WebSocketUpgrade;
use wharf::{Hub, Server};

use crate::chat_util::{eventually, next_text, send_text};
use crate::util::{RawClient, connect, connect_with, connector, start, upgrade_request, within};

/// A connection that joins `room` and publishes what it receives to every
/// room member: on two routes, two rooms.
fn member(upgrade: WebSocketUpgrade, room: &'static str) -> Response {
    upgrade.on_upgrade(move |mut conn| async move {
        conn.join(room);
        while let Some(msg) = conn.recv().await {
            if msg.as_text() == Some("everyone") {
                conn.hub().broadcast(msg);
            } else {
                conn.hub().publish(room, msg);
            }
        }
    })
}

/// The application: `/chat` and `/feed` upgrade into rooms of one hub,
/// `/count` answers JSON with the hub's size (from axum state).
fn app(hub: Hub) -> Router {
    Router::new()
        .route(
            "/chat",
            get(|up: WebSocketUpgrade| async { member(up, "chat") }),
        )
        .route(
            "/feed",
            get(|up: WebSocketUpgrade| async { member(up, "feed") }),
        )
        .route(
            "/count",
            get(|State(hub): State<Hub>| async move {
                axum::Json(serde_json::json!({ "connections": hub.len() }))
            }),
        )
        .with_state(hub)
}

/// Serves `app` with `axum::serve`, the server's endpoint as an extension.
async fn serve_with_axum(server: &Server, app: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local_addr");
    let app = app.layer(axum::Extension(server.endpoint()));
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });
    addr
}

/// A broadcast from a connection on one route reaches connections made on
/// the other route (and, with `own`, on the server's own route): one hub,
/// whose ids they share and whose rooms they join. `/count` answers JSON
/// from the same hub.
async fn one_hub_across_routes(addr: SocketAddr, hub: &Hub, own: bool) {
    let mut chat = connect(addr, "/chat").await;
    let mut feed = connect(addr, "/feed").await;
    let mut own = match own {
        true => Some(connect(addr, "/own").await),
        false => None,
    };
    let expected = 2 + usize::from(own.is_some());
    eventually("every connection in the hub", || hub.len() == expected).await;
    let ids: HashSet<u64> = hub.clients().iter().map(wharf::Client::id).collect();
    assert_eq!(ids.len(), expected, "distinct ids from one hub");

    send_text(&mut chat, "everyone").await;
    assert_eq!(next_text(&mut chat).await, "everyone");
    assert_eq!(next_text(&mut feed).await, "everyone");
    if let Some(own) = &mut own {
        assert_eq!(next_text(own).await, "everyone");
    }

    // Rooms: what the chat publishes is queued for its room's members in
    // one call, so once the chat has it the feed would have it too.
    send_text(&mut chat, "chat only").await;
    assert_eq!(next_text(&mut chat).await, "chat only");
    send_text(&mut feed, "feed only").await;
    assert_eq!(next_text(&mut feed).await, "feed only");

    let mut http = RawClient::connect(addr).await;
    http.write(b"GET /count HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let res = http.read_response().await;
    assert_eq!(res.status, 200, "{res:?}");
    assert_eq!(res.header("content-type"), Some("application/json"));
    let body: serde_json::Value = serde_json::from_slice(&res.body).expect("json");
    assert_eq!(body["connections"], expected);
}

#[tokio::test]
async fn a_broadcast_reaches_connections_on_two_routes_when_wharf_serves_the_router() {
    let server = Server::new();
    let hub = server.hub();
    let server = server
        .route("/own", |mut conn| async move {
            while conn.recv().await.is_some() {}
        })
        .on_request_service(app(hub.clone()));
    let addr = start(server).await;
    one_hub_across_routes(addr, &hub, true).await;
}

#[tokio::test]
async fn a_broadcast_reaches_connections_on_two_routes_when_axum_serves_the_router() {
    let server = Server::new();
    let hub = server.hub();
    let addr = serve_with_axum(&server, app(hub.clone())).await;
    one_hub_across_routes(addr, &hub, false).await;
}

/// Connections made through the extractor get the server's settings: its
/// subprotocols, its message limit, its connection cap (the client's
/// address known through `ConnectInfo`), its counters.
#[tokio::test]
async fn the_extractor_applies_the_servers_settings_under_axum_serve() {
    let server = Server::new()
        .protocols(["v2", "v1"])
        .limits(wharf::Limits::default().max_message_size(1024))
        .max_connections(Some(1));
    let hub = server.hub();
    let stats = server.stats();
    let addr = serve_with_axum(&server, app(hub.clone())).await;

    let (mut ws, res) = connect_with(connector().protocols(["v1", "v2"]), addr, "/chat").await;
    assert_eq!(
        res.headers()
            .get("sec-websocket-protocol")
            .map(|v| v.as_bytes()),
        Some(&b"v1"[..]),
        "the client's first that the server speaks"
    );
    eventually("the connection in the hub", || hub.len() == 1).await;

    // The cap: a second connection is refused with 503, a reason and
    // Retry-After.
    let mut second = RawClient::connect(addr).await;
    second.write(upgrade_request("/feed", &[]).as_bytes()).await;
    let res = second.read_response().await;
    assert_eq!(res.status, 503, "{res:?}");
    assert!(res.header("retry-after").is_some(), "{res:?}");
    res.one_line_body();

    // The limit: a message over it closes with 1009.
    send_text(&mut ws, &"x".repeat(2048)).await;
    let closed = within("close after a message over the limit", async {
        while ws.recv().await.is_some() {}
        match ws.disconnect() {
            Some(wharf::Disconnect::Peer(f)) => Some(u16::from(f.code)),
            other => panic!("expected a close from the server, got {other:?}"),
        }
    })
    .await;
    assert_eq!(closed, Some(1009));
    drop(ws);
    eventually("the connection gone", || hub.is_empty()).await;
    assert_eq!(stats.snapshot().connections_total, 1);
}

/// Requests the extractor cannot upgrade get a status and a one-line
/// reason: not a handshake; no endpoint (axum serving without the layer).
#[tokio::test]
async fn the_extractor_refuses_with_a_status_and_a_reason() {
    let server = Server::new();
    let addr = serve_with_axum(&server, app(server.hub())).await;
    let mut client = RawClient::connect(addr).await;
    client.write(b"GET /chat HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let res = client.read_response().await;
    assert_eq!(res.status, 400, "{res:?}");
    res.one_line_body();

    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let bare = listener.local_addr().expect("local_addr");
    tokio::spawn(async move { axum::serve(listener, app(Server::new().hub())).await });
    let mut client = RawClient::connect(bare).await;
    client.write(upgrade_request("/chat", &[]).as_bytes()).await;
    let res = client.read_response().await;
    assert_eq!(res.status, 500, "{res:?}");
    assert!(res.one_line_body().contains("wharf::Endpoint"), "{res:?}");
}

/// Served by wharf, an upgrade to a path the router lacks gets the
/// router's 404; a plain request, the router's answer.
#[tokio::test]
async fn wharf_hands_the_router_plain_requests_and_the_upgrades_it_does_not_take() {
    let server = Server::new();
    let hub = server.hub();
    let addr = start(server.on_request_service(app(hub))).await;
    let mut client = RawClient::connect(addr).await;
    client
        .write(upgrade_request("/nowhere", &[]).as_bytes())
        .await;
    let res = client.read_response().await;
    assert_eq!(res.status, 404, "{res:?}");
    // Not upgraded: the connection closes after the answer, as after a
    // refusal.
    assert_eq!(res.header("connection"), Some("close"), "{res:?}");
}

/// An independent client, Python's `websockets`, on one route receives a
/// broadcast sent from the other.
#[tokio::test]
async fn a_python_client_on_one_route_hears_a_broadcast_from_the_other() {
    if !python_websockets() {
        eprintln!("SKIPPED: python3 cannot import websockets (python3 -m pip install websockets)");
        return;
    }
    let server = Server::new();
    let hub = server.hub();
    let addr = start(server.on_request_service(app(hub.clone()))).await;
    let script = r#"
import sys
from websockets.sync.client import connect
with connect(f"ws://127.0.0.1:{sys.argv[1]}/feed", open_timeout=5) as ws:
    print("open", flush=True)
    print(ws.recv(timeout=5), flush=True)
"#;
    let mut child = std::process::Command::new("python3")
        .args(["-c", script, &addr.port().to_string()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    eventually("the python client in the hub", || hub.len() == 1).await;
    let mut chat = connect(addr, "/chat").await;
    eventually("both in the hub", || hub.len() == 2).await;
    send_text(&mut chat, "everyone").await;
    assert_eq!(next_text(&mut chat).await, "everyone");

    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("python client still running after 10 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let out = child.wait_with_output().expect("output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "python client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout, "open\neveryone\n");
}

/// Whether `python3` can import the `websockets` client, installing it
/// with pip once if it cannot.
fn python_websockets() -> bool {
    let importable = || {
        std::process::Command::new("python3")
            .args(["-c", "import websockets.sync.client"])
            .status()
            .is_ok_and(|s| s.success())
    };
    if importable() {
        return true;
    }
    let _ = std::process::Command::new("python3")
        .args(["-m", "pip", "install", "--quiet", "websockets>=13"])
        .status();
    importable()
}
