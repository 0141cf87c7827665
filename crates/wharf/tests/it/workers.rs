//! Thread per core (`Server::workers`): connections spread over the
//! workers, and a room spread over them gets every message exactly once, in
//! each sender's order; the coarse keepalive timer (deadlines a second or
//! more away) pings and drops a silent peer on time.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::io::AsyncReadExt;
use wharf::{Event, Message, Server};

use crate::chat_util::next_text;
use crate::util::{RawClient, connect, start, within};

const WORKERS: usize = 3;
const CLIENTS: usize = 12;
const MESSAGES: usize = 40;

/// Every client joins `room` and says which thread serves it; each of its
/// messages is published to the room, or broadcast to every client when it
/// starts with `all:`.
fn room_server() -> (Server, wharf::Hub) {
    let server = Server::new().workers(WORKERS);
    let hub = server.hub();
    let server = server.on_connection(|mut conn| async move {
        conn.join("room");
        let thread = std::thread::current().name().unwrap_or("?").to_owned();
        let _ = conn.try_send(format!("thread {thread}"));
        while let Some(msg) = conn.recv().await {
            let text = msg.as_text().unwrap_or_default().to_owned();
            match text.strip_prefix("all:") {
                Some(rest) => conn.hub().broadcast(rest.to_owned()),
                None => conn.hub().publish("room", text),
            };
        }
    });
    (server, hub)
}

#[tokio::test]
async fn a_room_across_workers_gets_every_message_once_in_sender_order() {
    let (server, hub) = room_server();
    let addr = start(server).await;
    let mut clients = Vec::new();
    let mut threads = BTreeSet::new();
    for _ in 0..CLIENTS {
        let mut ws = connect(addr, "/").await;
        let hello = next_text(&mut ws).await;
        threads.insert(hello.strip_prefix("thread ").unwrap_or(&hello).to_owned());
        clients.push(ws);
    }
    assert_eq!(threads.len(), WORKERS, "connections on {threads:?}");
    within("all joined", async {
        while hub.room_len("room") != CLIENTS {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;

    // Everyone sends at once: room messages and broadcasts, interleaved.
    let (mut writers, mut readers): (Vec<_>, Vec<_>) =
        clients.into_iter().map(wharf::Connection::split).unzip();
    let sending = writers.iter_mut().enumerate().map(|(c, w)| async move {
        for i in 0..MESSAGES {
            let text = match i % 4 {
                3 => format!("all:{c}:{i}"),
                _ => format!("{c}:{i}"),
            };
            w.send(text).await.expect("send");
        }
    });
    let receiving = readers.iter_mut().map(|r| async move {
        let mut last: HashMap<usize, usize> = HashMap::new();
        for _ in 0..CLIENTS * MESSAGES {
            let Some(Event::Message(Message::Text(text))) = r.next().await else {
                panic!("expected a text message");
            };
            let text = text.as_str();
            let (c, i) = text.split_once(':').expect("sender:seq");
            let (c, i): (usize, usize) = (c.parse().unwrap(), i.parse().unwrap());
            // Per sender, in order and exactly once: each is the next one.
            let want = last.get(&c).map_or(0, |l| l + 1);
            assert_eq!(i, want, "from {c}: got {i} after {:?}", last.get(&c));
            last.insert(c, i);
        }
        last
    });
    let (_, received) = within("every message everywhere", async {
        tokio::join!(
            futures_util::future::join_all(sending),
            futures_util::future::join_all(receiving)
        )
    })
    .await;
    for last in received {
        assert_eq!(last.len(), CLIENTS);
        assert!(last.values().all(|&i| i == MESSAGES - 1), "{last:?}");
    }
    assert_eq!(hub.fanouts_dropped(), 0);
    let mut members = hub.members("room");
    members.sort_unstable();
    members.dedup();
    assert_eq!(members.len(), CLIENTS);
    drop(writers);
    drop(readers);
    within("everyone gone", hub.wait_empty()).await;
    assert_eq!(hub.room_len("room"), 0);
    assert!(hub.rooms().is_empty());
}

#[tokio::test]
#[should_panic(expected = "Server::workers must be called before Server::hub")]
async fn workers_after_hub_is_refused_not_a_silent_second_hub() {
    let server = Server::new();
    let _hub = server.hub();
    let _ = server.workers(2);
}

/// `workers` builds a new hub: a backplane attached to the old one would
/// silently stop carrying this server's rooms.
#[cfg(feature = "redis")]
#[tokio::test]
#[should_panic(expected = "Server::workers must be called before Server::backplane")]
async fn workers_after_a_backplane_is_refused() {
    let redis = wharf::redis::Redis::open("redis://127.0.0.1:1/").expect("a valid URL");
    let _ = Server::new()
        .backplane(std::sync::Arc::new(redis))
        .workers(2);
}

#[tokio::test]
async fn keepalive_on_the_coarse_timer_pings_then_drops_a_silent_peer() {
    // A ping after 1.2 s of silence (on the wheel: over a second away),
    // then 1.1 s for the pong (also on the wheel).
    let server = Server::new().workers(2).keepalive(Some((
        Duration::from_millis(1200),
        Duration::from_millis(1100),
    )));
    let addr = start(server).await;
    // Two silent peers, one per worker.
    let mut a = RawClient::handshake(addr).await;
    let mut b = RawClient::handshake(addr).await;
    let start = Instant::now();
    for client in [&mut a, &mut b] {
        let ping = tokio::time::timeout(Duration::from_secs(3), client.read_frame())
            .await
            .expect("a ping within 3 s");
        assert_eq!(ping.opcode, 0x9, "{ping:?}");
    }
    let pinged = start.elapsed();
    assert!(
        pinged >= Duration::from_millis(1200) && pinged < Duration::from_millis(1200 + 1000),
        "pinged after {pinged:?}: the coarse timer fires at its deadline, at most a tick late"
    );
    for client in [&mut a, &mut b] {
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(3), client.stream.read_to_end(&mut rest))
            .await
            .expect("dropped within 3 s")
            .ok();
    }
    let dropped = start.elapsed();
    assert!(
        dropped >= Duration::from_millis(2300) && dropped < Duration::from_millis(2300 + 1500),
        "dropped after {dropped:?}"
    );
}
