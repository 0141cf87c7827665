//! `Server::on_message`: connections served by a callback per message, with
//! no handler future: every message once and in order (plain and
//! compressed, across frame and read boundaries), the close handshake, a
//! panicking callback, rooms joined from the callback, and a peer that
//! floods and never reads, which meets the write-queue bound.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::Message as TMessage;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as TCloseCode;
use wharf::{DeflateConfig, Event, Server, SlowClient};

use crate::util::{MASK, RawClient, connect, connect_tungstenite, connector, frame, start, within};

fn echo() -> Server {
    Server::new().on_message(|client, message| {
        let _ = client.try_send(message);
    })
}

#[tokio::test]
async fn every_message_comes_back_once_in_order_and_the_close_is_answered() {
    let server = echo();
    let hub = server.hub();
    let addr = start(server).await;
    let mut ws = connect_tungstenite(addr, "/").await;
    // Sizes across the length encodings and the driver's read sizes; sent
    // four at a time before reading, so several are parsed from one read
    // (and the four stay under the 1 MiB queue bound).
    let sizes = [0usize, 1, 125, 126, 4_000, 65_535, 65_536, 200_000];
    for batch in 0..100 {
        let mut sent = Vec::new();
        for i in batch * 4..batch * 4 + 4 {
            let len = sizes[i % sizes.len()];
            let msg = if i % 2 == 0 {
                TMessage::text(format!("{i:06}{}", "é".repeat(len / 2)))
            } else {
                let mut bytes = vec![(i % 251) as u8; len + 6];
                bytes[..6].copy_from_slice(format!("{i:06}").as_bytes());
                TMessage::binary(bytes)
            };
            sent.push(msg.clone());
            within("send", ws.feed(msg)).await.expect("send");
        }
        within("flush", ws.flush()).await.expect("flush");
        for (i, want) in sent.iter().enumerate() {
            let got = within("echo", ws.next())
                .await
                .expect("a message")
                .expect("no error");
            assert!(
                got == *want,
                "message {} came back different",
                batch * 4 + i
            );
        }
    }
    within(
        "close",
        ws.close(Some(CloseFrame {
            code: TCloseCode::Normal,
            reason: "bye".into(),
        })),
    )
    .await
    .expect("close");
    match within("close echo", ws.next()).await {
        Some(Ok(TMessage::Close(Some(frame)))) => assert_eq!(frame.code, TCloseCode::Normal),
        other => panic!("expected the close echo, got {other:?}"),
    }
    drop(ws);
    within("hub empties", hub.wait_empty()).await;
}

#[tokio::test]
async fn compressed_messages_are_inflated_before_the_callback() {
    let server = echo().deflate(Some(DeflateConfig::dedicated(15)));
    let addr = start(server).await;
    let (mut ws, response) = within(
        "connect",
        connector()
            .deflate(Some(DeflateConfig::dedicated(15)))
            .connect(&format!("ws://{addr}/")),
    )
    .await
    .expect("handshake");
    assert!(
        response.headers().get("sec-websocket-extensions").is_some(),
        "deflate was not agreed"
    );
    // Highly compressible: a few KiB on the wire inflate to 1 MiB, which
    // the driver inflates with the lock released, then calls back.
    let big = "wharf ".repeat((1 << 20) / 6);
    for i in 0..20 {
        let text = if i % 5 == 4 {
            big.clone()
        } else {
            format!("message {i}")
        };
        ws.send(text.clone()).await.expect("send");
        match within("echo", ws.next()).await {
            Some(Event::Message(m)) => assert_eq!(m.as_text(), Some(text.as_str())),
            other => panic!("expected message {i}, got {other:?}"),
        }
    }
}

/// The close a panicking callback leaves: 1011, answered, the connection
/// gone from the hub, one panic counted.
async fn closed_with_1011_after_one_panic(
    mut raw: RawClient,
    hub: &wharf::Hub,
    stats: &wharf::Stats,
) {
    let close = within("close frame", raw.read_frame()).await;
    assert_eq!(close.opcode, 0x8);
    assert_eq!(close.close_code(), 1011);
    raw.write(&frame(0x8, &1000u16.to_be_bytes(), Some(MASK)))
        .await;
    within("end of stream", raw.expect_eof()).await;
    drop(raw);
    within("hub empties", hub.wait_empty()).await;
    assert_eq!(stats.snapshot().handler_panics, 1);
}

#[tokio::test]
async fn a_panicking_callback_closes_with_1011_and_discards_the_rest() {
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let server = Server::new().on_message(move |client, message| {
        seen.fetch_add(1, Ordering::SeqCst);
        if message.as_text() == Some("boom") {
            panic!("callback bug on connection {}", client.id());
        }
        let _ = client.try_send(message);
    });
    let hub = server.hub();
    let stats = server.stats();
    let addr = start(server).await;
    let mut raw = RawClient::handshake(addr).await;
    raw.write(&frame(0x1, b"one", Some(MASK))).await;
    assert_eq!(within("echo", raw.read_frame()).await.payload, b"one");
    // The panic, and a message behind it in the same write.
    let mut both = frame(0x1, b"boom", Some(MASK));
    both.extend(frame(0x1, b"after", Some(MASK)));
    raw.write(&both).await;
    closed_with_1011_after_one_panic(raw, &hub, &stats).await;
    assert_eq!(calls.load(Ordering::SeqCst), 2, "called after its panic");
}

#[tokio::test]
async fn a_callback_joins_rooms_and_publishes_across_workers() {
    let server = Server::new().workers(2);
    let hub = server.hub();
    let publisher = hub.clone();
    let server = server.on_message(move |client, message| {
        match message.as_text().and_then(|t| t.strip_prefix("join ")) {
            Some(room) => {
                client.join(room);
                let _ = client.try_send(format!("joined {room}"));
            }
            None => {
                publisher.publish("room", message);
            }
        }
    });
    let addr = start(server).await;
    let mut members = Vec::new();
    for _ in 0..4 {
        let mut ws = connect(addr, "/").await;
        ws.send("join room").await.expect("send");
        match within("joined", ws.next()).await {
            Some(Event::Message(m)) => assert_eq!(m.as_text(), Some("joined room")),
            other => panic!("expected the join's answer, got {other:?}"),
        }
        members.push(ws);
    }
    assert_eq!(hub.room_len("room"), 4);
    let sender = connect(addr, "/").await;
    for i in 0..100 {
        sender.send(format!("{i}")).await.expect("send");
    }
    for ws in &mut members {
        for i in 0..100 {
            match within("published", ws.next()).await {
                Some(Event::Message(m)) => assert_eq!(m.as_text(), Some(format!("{i}").as_str())),
                other => panic!("expected message {i}, got {other:?}"),
            }
        }
    }
}

/// The commands of the burst tests' callback.
fn commands(hub: wharf::Hub) -> impl Fn(&wharf::Client, wharf::Message) + Send + Sync + 'static {
    move |client, message| {
        let text = message.as_text().unwrap_or_default().to_owned();
        match text.split_once(' ') {
            Some(("pub", n)) => {
                hub.publish("r", n.to_owned());
            }
            // A publish, then a message to the sender itself, a member.
            Some(("pubme", n)) => {
                hub.publish("r", n.to_owned());
                let _ = client.try_send(format!("ack {n}"));
            }
            Some(("join", id)) => {
                hub.join("r", id.parse().expect("an id"));
            }
            Some(("leave", id)) => {
                hub.leave("r", id.parse().expect("an id"));
            }
            _ if text == "hello" => {
                client.join("r");
                let _ = client.try_send(client.id().to_string());
            }
            _ if text == "id" => {
                let _ = client.try_send(client.id().to_string());
            }
            _ => {}
        }
    }
}

/// A server running `commands` from a message callback, or (`handler`)
/// from a handler per connection, whose publishes in one poll are held
/// back the same way.
fn serve_commands(server: Server, handler: bool) -> Server {
    let commands = Arc::new(commands(server.hub()));
    if handler {
        server.on_connection(move |mut conn| {
            let commands = commands.clone();
            async move {
                while let Some(m) = conn.recv().await {
                    commands(conn.client(), m);
                }
            }
        })
    } else {
        server.on_message(move |client, m| commands(client, m))
    }
}

/// Reads text messages until `last`, which must come.
async fn texts_until(ws: &mut crate::util::Ws, last: &str) -> Vec<String> {
    let mut got = Vec::new();
    loop {
        match within("published", ws.next()).await {
            Some(Event::Message(m)) => {
                let text = m.as_text().expect("text").to_owned();
                if text == last {
                    return got;
                }
                got.push(text);
            }
            other => panic!("expected a message, got {other:?} after {got:?}"),
        }
    }
}

/// A publisher's burst arrives in one read and runs through the callback
/// as runs of messages, whose publishes are held back and delivered per
/// run (`hub::cork`). Whatever the callback does between them must still
/// see them in order: a message to the publisher itself after each
/// publish comes after it, on one worker and across two.
#[tokio::test]
async fn a_burst_of_publishes_keeps_its_order_with_the_callbacks_own_sends() {
    for (workers, handler) in [(1, false), (2, false), (1, true), (2, true)] {
        let addr = start(serve_commands(Server::new().workers(workers), handler)).await;
        let mut members = Vec::new();
        for _ in 0..3 {
            let mut ws = connect(addr, "/").await;
            ws.send("hello").await.expect("send");
            texts_until_any(&mut ws).await;
            members.push(ws);
        }
        let mut publisher = members.remove(0);
        // Queued at once: the client writes them together.
        for i in 0..400 {
            publisher.try_send(format!("pubme {i}")).expect("queued");
        }
        publisher.try_send("pub end").expect("queued");
        let mut want: Vec<String> = Vec::new();
        for i in 0..400 {
            want.push(format!("{i}"));
            want.push(format!("ack {i}"));
        }
        assert_eq!(
            texts_until(&mut publisher, "end").await,
            want,
            "{workers} workers"
        );
        let want: Vec<String> = (0..400).map(|i| format!("{i}")).collect();
        for ws in &mut members {
            assert_eq!(texts_until(ws, "end").await, want, "{workers} workers");
        }
    }
}

/// Reads one message (a greeting's answer).
async fn texts_until_any(ws: &mut crate::util::Ws) -> String {
    match within("answer", ws.next()).await {
        Some(Event::Message(m)) => m.as_text().expect("text").to_owned(),
        other => panic!("expected an answer, got {other:?}"),
    }
}

/// Joins and leaves in the middle of a burst of publishes cut it where
/// they stand: a member who joins gets only what is published after, one
/// who leaves everything published before, as if every publish had been
/// delivered at once (one worker: delivery is immediate there).
#[tokio::test]
async fn joins_and_leaves_in_a_burst_cut_it_where_they_stand() {
    for handler in [false, true] {
        let addr = start(serve_commands(Server::new().workers(1), handler)).await;
        let mut publisher = connect(addr, "/").await;
        publisher.send("hello").await.expect("send");
        texts_until_any(&mut publisher).await;
        let mut early = connect(addr, "/").await;
        early.send("hello").await.expect("send");
        let early_id = texts_until_any(&mut early).await;
        // `late` joins only when the burst says so.
        let mut late = connect(addr, "/").await;
        late.send("id").await.expect("send");
        let late_id = texts_until_any(&mut late).await;
        let mut burst = Vec::new();
        burst.extend((0..100).map(|i| format!("pub {i}")));
        burst.push(format!("join {late_id}"));
        burst.extend((100..200).map(|i| format!("pub {i}")));
        burst.push(format!("leave {early_id}"));
        burst.extend((200..300).map(|i| format!("pub {i}")));
        burst.push(format!("join {early_id}"));
        burst.push("pub end".to_owned());
        for m in burst {
            publisher.try_send(m).expect("queued");
        }
        let seq = |r: std::ops::Range<usize>| r.map(|i| i.to_string()).collect::<Vec<_>>();
        assert_eq!(texts_until(&mut publisher, "end").await, seq(0..300));
        assert_eq!(texts_until(&mut early, "end").await, seq(0..200));
        assert_eq!(texts_until(&mut late, "end").await, seq(100..300));
    }
}

/// A run's frames joined in one buffer are queued whole only if all of it
/// fits under `max_backpressure`: an empty queue takes one message past
/// the bound, never a run. With a 1 KiB bound and a burst of 16 messages
/// of 200 bytes, a member queues the first five or six and the policy
/// drops the rest.
#[tokio::test]
async fn a_run_of_publishes_meets_the_bound_message_by_message() {
    let server = Server::new()
        .workers(1)
        .max_backpressure(1024)
        .slow_client(SlowClient::Drop);
    let addr = start(serve_commands(server, false)).await;
    let mut member = connect(addr, "/").await;
    member.send("hello").await.expect("send");
    texts_until_any(&mut member).await;
    let publisher = connect(addr, "/").await;
    let body = "x".repeat(200);
    for i in 0..16 {
        publisher
            .try_send(format!("pub {i:02}{body}"))
            .expect("queued");
    }
    // Then, once the member's queue has drained, the end.
    tokio::time::sleep(Duration::from_millis(300)).await;
    publisher.try_send("pub end").expect("queued");
    let got = texts_until(&mut member, "end").await;
    assert!(
        (1..16).contains(&got.len()),
        "{} of 16 queued under a 1 KiB bound",
        got.len()
    );
    let queued: usize = got.iter().map(|m| m.len() + 4).sum();
    assert!(
        queued <= 1024 + 210,
        "{queued} bytes queued under a 1 KiB bound"
    );
    for (i, m) in got.iter().enumerate() {
        assert!(m.starts_with(&format!("{i:02}")), "message {i} is {m:.8}");
    }
}

/// `on_open` and `on_close` around `on_message`: the greeting before the
/// first echo; the close seen once per connection, with how it ended (the
/// peer's close frame, a reset), after the connection left the hub.
#[tokio::test]
async fn open_and_close_callbacks_frame_a_connections_messages() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let server = Server::new();
    let hub = server.hub();
    let during = hub.clone();
    let addr = start(
        server
            .on_open(|client| {
                let _ = client.try_send(format!("hello {}", client.id()));
            })
            .on_message(|client, message| {
                let _ = client.try_send(message);
            })
            .on_close(move |client, why| {
                let in_hub = during.get(client.id()).is_some();
                let _ = tx.send((client.id(), in_hub, format!("{why:?}")));
            }),
    )
    .await;
    let mut raw = RawClient::handshake(addr).await;
    let hello = within("greeting", raw.read_frame()).await;
    let id: u64 = std::str::from_utf8(&hello.payload)
        .expect("text")
        .strip_prefix("hello ")
        .expect("the greeting")
        .parse()
        .expect("an id");
    raw.write(&frame(0x1, b"echo", Some(MASK))).await;
    assert_eq!(within("echo", raw.read_frame()).await.payload, b"echo");
    let mut close = 1000u16.to_be_bytes().to_vec();
    close.extend_from_slice(b"bye");
    raw.write(&frame(0x8, &close, Some(MASK))).await;
    assert_eq!(within("close echo", raw.read_frame()).await.opcode, 0x8);
    within("end of stream", raw.expect_eof()).await;
    drop(raw);
    let (closed, in_hub, why) = within("on_close", rx.recv()).await.expect("called");
    assert_eq!(closed, id);
    assert!(!in_hub, "still in the hub when on_close ran");
    assert!(why.starts_with("Peer(") && why.contains("bye"), "{why}");
    // A reset: the socket dropped without a close frame.
    let mut raw = RawClient::handshake(addr).await;
    within("greeting", raw.read_frame()).await;
    drop(raw);
    let (_, _, why) = within("on_close", rx.recv()).await.expect("called");
    assert_eq!(why, "Reset");
    within("hub empties", hub.wait_empty()).await;
    // Once each: nothing more comes.
    let more = tokio::time::timeout(Duration::from_millis(200), rx.recv()).await;
    assert!(more.is_err(), "on_close called again: {more:?}");
}

/// A panic in `on_open` closes the connection with 1011, before any
/// message reaches `on_message`; `on_close` still runs, once.
#[tokio::test]
async fn a_panicking_open_callback_closes_with_1011() {
    let messages = Arc::new(AtomicUsize::new(0));
    let closes = Arc::new(AtomicUsize::new(0));
    let (seen, ended) = (messages.clone(), closes.clone());
    let server = Server::new()
        .on_open(|client| panic!("open bug on connection {}", client.id()))
        .on_message(move |_, _| {
            seen.fetch_add(1, Ordering::SeqCst);
        })
        .on_close(move |_, _| {
            ended.fetch_add(1, Ordering::SeqCst);
        });
    let hub = server.hub();
    let stats = server.stats();
    let addr = start(server).await;
    let mut raw = RawClient::handshake(addr).await;
    raw.write(&frame(0x1, b"one", Some(MASK))).await;
    closed_with_1011_after_one_panic(raw, &hub, &stats).await;
    assert_eq!(messages.load(Ordering::SeqCst), 0);
    assert_eq!(closes.load(Ordering::SeqCst), 1);
}

/// An attacker's echo flood: 64 KiB messages as fast as the socket takes
/// them, for 3 s, never reading a reply. Were the callback path to read on
/// while replies pile up, the queue would grow at the flood's rate (GiBs
/// in 3 s): it must stay within `max_backpressure` plus one message, the
/// server reading nothing more once its socket refuses output, so that the
/// peer is pushed back through TCP.
#[tokio::test]
async fn a_peer_that_floods_and_never_reads_meets_the_queue_bound() {
    const BOUND: usize = 256 << 10;
    const MSG: usize = 64 << 10;
    let server = echo()
        .max_backpressure(BOUND)
        .slow_client(SlowClient::Close);
    let hub = server.hub();
    let addr = start(server).await;
    let mut raw = RawClient::handshake(addr).await;
    within("registered", async {
        while hub.is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    let client = hub.clients().pop().expect("the connection");
    let done = Arc::new(AtomicBool::new(false));
    let (watcher, stop) = (client.clone(), done.clone());
    let peak = tokio::spawn(async move {
        let mut peak = 0;
        while !stop.load(Ordering::SeqCst) {
            peak = peak.max(watcher.buffered_amount());
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        peak
    });
    let one = frame(0x2, &vec![7u8; MSG], Some(MASK));
    let started = Instant::now();
    let mut written = 0usize;
    while started.elapsed() < Duration::from_secs(3) {
        match tokio::time::timeout(Duration::from_millis(200), raw.stream.write_all(&one)).await {
            Ok(Ok(())) => written += one.len(),
            // Refused: the server closed.
            Ok(Err(_)) => break,
            // Not taken: pushed back; keep trying until the time is up.
            Err(_) => {}
        }
    }
    done.store(true, Ordering::SeqCst);
    let peak = within("watcher", peak).await.expect("watcher");
    eprintln!("flood: {written} bytes written in 3 s, queue peak {peak} bytes");
    assert!(
        peak <= BOUND + MSG + 64,
        "write queue peaked at {peak} bytes over a {BOUND}-byte bound"
    );
    assert!(
        written < 64 << 20,
        "the server took {written} bytes from a peer that never reads"
    );
    drop(raw);
    within("hub empties", hub.wait_empty()).await;
    assert!(client.disconnect().is_some(), "no account of the end");
}
