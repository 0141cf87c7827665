//! The hub: the seed's chat room with many clients, rooms, broadcast to
//! all but one, and ready-state changes, all through real clients.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use wharf::{Hub, Member, ReadyState, Server};

use crate::chat_util::{close, eventually, next_text, parse_welcome, send_text};
use crate::util::{Ws, connect, connect_tungstenite, start, within};

/// How many clients join the chat.
const CHATTERS: usize = 20;
/// How many messages each of them sends.
const MESSAGES: usize = 5;

/// The server of `examples/chat.rs`, without the logging: everyone gets
/// `New Connection: <id>` when a client connects, `<id>: <message>` for
/// every message and `Connection Closed: <id>` when it leaves.
fn chat_server() -> (Server, Hub) {
    chat_server_on(Server::new())
}

/// The same chat on `server`, as configured.
pub(crate) fn chat_server_on(server: Server) -> (Server, Hub) {
    let hub = server.hub();
    let handler_hub = hub.clone();
    let server = server.on_connection(move |mut conn| {
        let hub = handler_hub.clone();
        async move {
            let id = conn.id();
            hub.broadcast(format!("New Connection: {id}"));
            while let Some(msg) = conn.recv().await {
                let text = msg.as_text().unwrap_or("<binary>").to_owned();
                hub.broadcast(format!("{id}: {text}"));
            }
            hub.broadcast(format!("Connection Closed: {id}"));
        }
    });
    (server, hub)
}

#[tokio::test]
async fn chat_delivers_joins_messages_and_leaves_to_everyone_exactly_once() {
    let (server, hub) = chat_server();
    let addr = start(server).await;

    // Joins, one at a time: a client's first message is its own join, and
    // everyone already there gets that join next.
    let mut chatters: Vec<(u64, Ws)> = Vec::new();
    for n in 1..=CHATTERS {
        let mut ws = connect(addr, "/").await;
        let join = next_text(&mut ws).await;
        let id: u64 = join
            .strip_prefix("New Connection: ")
            .and_then(|id| id.parse().ok())
            .unwrap_or_else(|| panic!("expected the client's own join first, got {join:?}"));
        for (_, other) in &mut chatters {
            assert_eq!(next_text(other).await, join);
        }
        assert_eq!(hub.len(), n, "hub size after {n} joins");
        chatters.push((id, ws));
    }

    // Everyone sends at once; everyone gets every message exactly once,
    // each sender's in the order sent.
    let tasks: Vec<_> = chatters
        .into_iter()
        .map(|(id, mut ws)| {
            tokio::spawn(async move {
                for k in 0..MESSAGES {
                    send_text(&mut ws, &format!("m{k}")).await;
                }
                let mut got = Vec::with_capacity(CHATTERS * MESSAGES);
                for _ in 0..CHATTERS * MESSAGES {
                    got.push(next_text(&mut ws).await);
                }
                (id, ws, got)
            })
        })
        .collect();
    let mut chatters = Vec::new();
    for task in tasks {
        chatters.push(
            within("chatter finishes", task)
                .await
                .expect("chatter task"),
        );
    }
    let ids: Vec<u64> = chatters.iter().map(|(id, _, _)| *id).collect();
    for (id, _, got) in &chatters {
        let mut by_sender: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
        for text in got {
            let (sender, k) = text
                .split_once(": m")
                .and_then(|(s, k)| Some((s.parse().ok()?, k.parse().ok()?)))
                .unwrap_or_else(|| panic!("client {id} got an unexpected {text:?}"));
            by_sender.entry(sender).or_default().push(k);
        }
        let mut senders: Vec<u64> = by_sender.keys().copied().collect();
        let mut expected = ids.clone();
        expected.sort_unstable();
        senders.sort_unstable();
        assert_eq!(senders, expected, "client {id}: senders heard");
        for (sender, ks) in by_sender {
            assert_eq!(
                ks,
                (0..MESSAGES).collect::<Vec<_>>(),
                "client {id}: messages from {sender}, in order, once each"
            );
        }
    }

    // Leaves, one at a time: everyone still there gets that leave next.
    let mut chatters: Vec<(u64, Ws)> = chatters.into_iter().map(|(id, ws, _)| (id, ws)).collect();
    while chatters.len() > 1 {
        let (id, ws) = chatters.remove(0);
        close(ws).await;
        for (_, other) in &mut chatters {
            assert_eq!(next_text(other).await, format!("Connection Closed: {id}"));
        }
        let left = chatters.len();
        eventually(&format!("hub shrinks to {left}"), || hub.len() == left).await;
        assert!(hub.get(id).is_none(), "{id} is still in the hub");
    }

    // Nothing else is on its way to the last client: its own message is
    // the next thing it reads.
    let (id, mut ws) = chatters.pop().expect("one client left");
    send_text(&mut ws, "last").await;
    assert_eq!(next_text(&mut ws).await, format!("{id}: last"));
    close(ws).await;
    eventually("hub empties", || hub.is_empty()).await;
}

/// Joins each connection to the room named by its path and sends it
/// `id:<id>`; each message is published to that room as `<id>: <message>`,
/// except `leave`, which leaves the room and answers `left:<was member>`.
fn rooms_server() -> (Server, Hub) {
    let server = Server::new();
    let hub = server.hub();
    let handler_hub = hub.clone();
    let server = server.on_connection(move |mut conn| {
        let hub = handler_hub.clone();
        async move {
            let room = conn.path().to_owned();
            conn.join(&room);
            let _ = conn.try_send(format!("id:{}", conn.id()));
            while let Some(msg) = conn.recv().await {
                match msg.as_text() {
                    Some("leave") => {
                        let left = conn.leave(&room);
                        let _ = conn.try_send(format!("left:{left}"));
                    }
                    Some(text) => {
                        hub.publish(&room, format!("{}: {text}", conn.id()));
                    }
                    None => {}
                }
            }
        }
    });
    (server, hub)
}

async fn welcomed(addr: SocketAddr, path: &str) -> (u64, Ws) {
    let mut ws = connect(addr, path).await;
    let id = parse_welcome(&next_text(&mut ws).await);
    (id, ws)
}

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort_unstable();
    v
}

#[tokio::test]
async fn rooms_publish_to_their_members_only_and_forget_leavers() {
    let (server, hub) = rooms_server();
    let addr = start(server).await;
    let (a1, mut ws_a1) = welcomed(addr, "/a").await;
    let (a2, mut ws_a2) = welcomed(addr, "/a").await;
    let (b1, mut ws_b1) = welcomed(addr, "/b").await;

    assert_eq!(hub.room_len("/a"), 2);
    assert_eq!(hub.room_len("/b"), 1);
    assert_eq!(hub.room_len("/c"), 0);
    assert_eq!(sorted(hub.members("/a")), sorted(vec![a1, a2]));
    assert_eq!(hub.members("/b"), vec![b1]);
    assert_eq!(sorted(hub.rooms()), vec!["/a".to_owned(), "/b".to_owned()]);
    assert_eq!(hub.rooms_of(a2), vec!["/a".to_owned()]);

    // A message in /a reaches both /a members...
    send_text(&mut ws_a1, "hello").await;
    assert_eq!(next_text(&mut ws_a1).await, format!("{a1}: hello"));
    assert_eq!(next_text(&mut ws_a2).await, format!("{a1}: hello"));
    // ...and not /b: its own message is the next thing it reads.
    send_text(&mut ws_b1, "probe").await;
    assert_eq!(next_text(&mut ws_b1).await, format!("{b1}: probe"));

    // After leaving, a2 gets no more of /a.
    send_text(&mut ws_a2, "leave").await;
    assert_eq!(next_text(&mut ws_a2).await, "left:true");
    assert_eq!(hub.room_len("/a"), 1);
    assert_eq!(hub.members("/a"), vec![a1]);
    assert!(hub.rooms_of(a2).is_empty());
    send_text(&mut ws_a1, "after").await;
    assert_eq!(next_text(&mut ws_a1).await, format!("{a1}: after"));
    send_text(&mut ws_a2, "leave").await;
    assert_eq!(
        next_text(&mut ws_a2).await,
        "left:false",
        "a2 left /a and must not get its messages"
    );

    // Disconnecting empties rooms; an empty room is gone.
    close(ws_b1).await;
    eventually("/b loses its member", || hub.room_len("/b") == 0).await;
    assert_eq!(hub.rooms(), vec!["/a".to_owned()]);
    close(ws_a1).await;
    eventually("/a loses its member", || hub.room_len("/a") == 0).await;
    assert!(hub.rooms().is_empty(), "rooms left: {:?}", hub.rooms());
    assert_eq!(hub.len(), 1, "a2 is connected, in no room");
    drop(ws_a2);
}

#[tokio::test]
async fn presence_lists_members_by_name_and_publish_local_reaches_them() {
    let (server, hub) = rooms_server();
    let addr = start(server).await;
    let (a1, mut ws_a1) = welcomed(addr, "/a").await;
    let (a2, mut ws_a2) = welcomed(addr, "/a").await;
    let (b1, mut ws_b1) = welcomed(addr, "/b").await;

    assert!(hub.set_member_name("/a", a1, "ann"));
    assert!(!hub.set_member_name("/a", b1, "bob"), "not a member of /a");
    let member = |id, name: &str| Member {
        id,
        name: name.to_owned(),
    };
    // Without a backplane: this node's members, by id; unnamed ones too.
    assert_eq!(
        hub.presence("/a").await,
        sorted(vec![member(a1, "ann"), member(a2, "")])
    );
    assert_eq!(hub.local_presence("/b"), vec![member(b1, "")]);
    assert!(hub.presence("/c").await.is_empty());

    assert_eq!(hub.publish_local("/a", "local"), 2);
    assert_eq!(next_text(&mut ws_a1).await, "local");
    assert_eq!(next_text(&mut ws_a2).await, "local");

    // A leaver leaves the list.
    send_text(&mut ws_a1, "leave").await;
    assert_eq!(next_text(&mut ws_a1).await, "left:true");
    assert_eq!(hub.presence("/a").await, vec![member(a2, "")]);
    send_text(&mut ws_b1, "probe").await;
    assert_eq!(next_text(&mut ws_b1).await, format!("{b1}: probe"));
}

#[tokio::test]
async fn broadcast_except_skips_the_given_connection() {
    let server = Server::new();
    let hub = server.hub();
    let server = server.on_connection(|mut conn| async move {
        let _ = conn.try_send(format!("id:{}", conn.id()));
        while conn.recv().await.is_some() {}
    });
    let addr = start(server).await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(welcomed(addr, "/").await);
    }
    let skipped = clients[0].0;

    assert_eq!(hub.broadcast_except(skipped, "not for the first"), 2);
    for (_, ws) in &mut clients[1..] {
        assert_eq!(next_text(ws).await, "not for the first");
    }
    assert_eq!(hub.broadcast("for everyone"), 3);
    for (id, ws) in &mut clients {
        assert_eq!(
            next_text(ws).await,
            "for everyone",
            "client {id} (skipped: {skipped})"
        );
    }
}

#[tokio::test]
async fn state_changes_go_open_closing_closed_when_the_server_closes() {
    let (states_tx, mut states) = mpsc::unbounded_channel();
    let (end_tx, mut end) = mpsc::unbounded_channel();
    let server = Server::new().on_connection(move |mut conn| {
        let states_tx = states_tx.clone();
        let end_tx = end_tx.clone();
        async move {
            let mut watch = conn.state_changes();
            let _ = states_tx.send(*watch.borrow_and_update());
            tokio::spawn(async move {
                while watch.changed().await.is_ok() {
                    let state = *watch.borrow_and_update();
                    let _ = states_tx.send(state);
                    if state == ReadyState::Closed {
                        break;
                    }
                }
            });
            while let Some(msg) = conn.recv().await {
                if msg.as_text() == Some("close me") {
                    let _ = conn.close(wharf::CloseCode::NORMAL, "bye");
                }
            }
            let _ = end_tx.send(conn.state());
        }
    });
    let addr = start(server).await;
    // tokio-tungstenite: it answers the close only when it reads, which
    // makes `Closing` observable (wharf's client answers at once).
    let mut ws = connect_tungstenite(addr, "/").await;
    assert_eq!(
        within("initial state", states.recv()).await,
        Some(ReadyState::Open)
    );

    within("send", ws.send(Message::text("close me")))
        .await
        .expect("send");
    // The client has not answered yet: it only does so when it reads.
    assert_eq!(
        within("closing", states.recv()).await,
        Some(ReadyState::Closing)
    );
    let close_frame = within("close frame", ws.next()).await;
    let Some(Ok(Message::Close(Some(frame)))) = close_frame else {
        panic!("expected a close frame, got {close_frame:?}");
    };
    assert_eq!(frame.code, CloseCode::Normal);
    assert_eq!(frame.reason, "bye");
    // Reading on sends tungstenite's answer; then the server ends TCP.
    let rest = within("end of stream", ws.next()).await;
    assert!(
        rest.is_none(),
        "expected the end of the stream, got {rest:?}"
    );

    assert_eq!(
        within("closed", states.recv()).await,
        Some(ReadyState::Closed)
    );
    assert_eq!(
        within("handler ends", end.recv()).await,
        Some(ReadyState::Closed)
    );
}
