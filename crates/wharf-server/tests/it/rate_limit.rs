//! The chat's rate limits and name rules, as clients see them: a flood
//! costs its sender (`rate_limited` errors), never the room's readers.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpSocket;
use wharf::{Connector, Event, Message};
use wharf_server::{Config, Mode};

use crate::util::{TestServer, Ws, config, next_json, send_text, start, within};

fn join_text(room: &str, name: &str) -> String {
    json!({"v": 1, "type": "join", "room": room, "name": name}).to_string()
}

fn say_text(text: &str) -> String {
    json!({"v": 1, "type": "say", "text": text}).to_string()
}

/// Connects and takes the welcome.
async fn member(server: &TestServer) -> Ws {
    let mut ws = server.ws("/chat", Some("wharf.chat.v1")).await;
    assert_eq!(next_json(&mut ws).await["type"], "welcome");
    ws
}

/// Sends `texts` in one flush: they reach the server together, so they
/// are charged to the rate limit at (nearly) one instant.
async fn send_all(ws: &mut Ws, texts: &[String]) {
    within("send", async {
        for t in texts {
            ws.feed(Message::from(t.as_str())).await.expect("feed");
        }
        ws.flush().await.expect("flush");
    })
    .await;
}

/// The chat with only a message limit: `burst` at once, then `rate` a
/// second.
fn limited(rate: u32, burst: u32) -> Config {
    let mut c = config(Mode::Chat);
    c.rate_limit_messages = rate;
    c.rate_limit_message_burst = burst;
    c.rate_limit_bytes = 0;
    c
}

#[tokio::test]
async fn the_burst_passes_and_the_next_message_gets_rate_limited() {
    // 10 a second: one more every 100 ms. The join counts too.
    let server = start(limited(10, 5)).await;
    let mut bystander = member(&server).await;
    send_text(&mut bystander, &join_text("r", "bea")).await;
    assert_eq!(next_json(&mut bystander).await["type"], "joined");
    tokio::time::sleep(Duration::from_millis(150)).await;

    let mut ws = member(&server).await;
    let mut burst = vec![join_text("r", "ann")];
    burst.extend((0..5).map(|i| say_text(&format!("m{i}"))));
    send_all(&mut ws, &burst).await;
    let joined = next_json(&mut ws).await;
    assert_eq!(joined["type"], "joined", "{joined}");
    for i in 0..4 {
        let m = next_json(&mut ws).await;
        assert_eq!(
            (m["type"].as_str(), m["text"].as_str()),
            (Some("message"), Some(&*format!("m{i}"))),
            "{m}"
        );
    }
    let refused = next_json(&mut ws).await;
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(refused["code"], "rate_limited");
    let reason = refused["reason"].as_str().expect("reason");
    assert!(
        reason.contains("10 messages a second (bursts of 5)"),
        "{reason}"
    );

    // The bystander saw the join and exactly the four messages accepted.
    assert_eq!(next_json(&mut bystander).await["type"], "joined");
    for i in 0..4 {
        assert_eq!(next_json(&mut bystander).await["text"], format!("m{i}"));
    }
    // 100 ms later one more fits; the connection stayed open.
    tokio::time::sleep(Duration::from_millis(120)).await;
    send_text(&mut ws, &say_text("later")).await;
    assert_eq!(next_json(&mut ws).await["text"], "later");
    assert_eq!(next_json(&mut bystander).await["text"], "later");
    assert_eq!(server.metric("wharf_rate_limited_total").await, 1);
    assert_eq!(server.metric("wharf_rate_limit_closes_total").await, 0);
}

#[tokio::test]
async fn the_byte_burst_is_exact() {
    let join = join_text("r", "ann");
    let say = say_text("0123456789");
    for (burst, says_accepted) in [(join.len() + say.len(), 1), (join.len() + say.len() - 1, 0)] {
        let mut c = config(Mode::Chat);
        c.rate_limit_messages = 0;
        // One byte a second: nothing refills within the test.
        c.rate_limit_bytes = 1;
        c.rate_limit_byte_burst = burst;
        let server = start(c).await;
        let mut ws = member(&server).await;
        send_all(&mut ws, &[join.clone(), say.clone(), say.clone()]).await;
        assert_eq!(next_json(&mut ws).await["type"], "joined");
        for _ in 0..says_accepted {
            assert_eq!(next_json(&mut ws).await["type"], "message");
        }
        for _ in says_accepted..2 {
            assert_eq!(next_json(&mut ws).await["code"], "rate_limited");
        }
    }
}

#[tokio::test]
async fn joining_the_room_one_is_in_costs_the_others_nothing() {
    let server = start(limited(1000, 1000)).await;
    let mut bea = member(&server).await;
    send_text(&mut bea, &join_text("r", "bea")).await;
    assert_eq!(next_json(&mut bea).await["type"], "joined");
    let mut ann = member(&server).await;
    send_text(&mut ann, &join_text("r", "ann")).await;
    assert_eq!(next_json(&mut ann).await["type"], "joined");
    assert_eq!(next_json(&mut bea).await["name"], "ann");

    let again: Vec<String> = (0..50).map(|_| join_text("r", "ann")).collect();
    send_all(&mut ann, &again).await;
    for _ in 0..50 {
        let j = next_json(&mut ann).await;
        assert_eq!(
            (j["type"].as_str(), j["online"].as_u64()),
            (Some("joined"), Some(2)),
            "{j}"
        );
    }
    send_text(&mut ann, &say_text("hi")).await;
    // Bea's next message is the say: none of the 50 joins reached her.
    let m = next_json(&mut bea).await;
    assert_eq!(
        (m["type"].as_str(), m["text"].as_str()),
        (Some("message"), Some("hi")),
        "{m}"
    );
}

#[tokio::test]
async fn names_and_rooms_with_invisible_characters_are_refused() {
    let server = start(config(Mode::Chat)).await;
    let mut ws = member(&server).await;
    for (bad, rule) in [
        ("Ada\u{202E}", "reorders text"),
        ("Ada\u{200B}", "zero-width"),
        ("\u{FEFF}Ada", "zero-width"),
        ("A\u{2028}da", "line or paragraph separator"),
        ("Ada\u{7}", "control character"),
        ("Ada\u{A0}L", "space other than U+0020"),
        ("Ada\u{3164}", "invisible character"),
        ("Ada\u{E000}", "private-use"),
        ("Ada\u{378}", "unassigned"),
    ] {
        for (room, name) in [("r", bad), (bad, "ann")] {
            send_text(&mut ws, &join_text(room, name)).await;
            let e = next_json(&mut ws).await;
            assert_eq!(e["code"], "bad_message", "{bad:?}: {e}");
            let reason = e["reason"].as_str().expect("reason");
            assert!(reason.contains(rule), "{bad:?}: {reason}");
            assert!(reason.contains("U+"), "{bad:?}: {reason}");
        }
    }
    // Visible names, emoji sequences included, still work.
    send_text(&mut ws, &join_text("tea room", "👩\u{200D}💻 Åsa")).await;
    let j = next_json(&mut ws).await;
    assert_eq!(
        (j["type"].as_str(), j["name"].as_str()),
        (Some("joined"), Some("👩\u{200D}💻 Åsa"))
    );
}

/// A member with a small receive buffer (16 KiB), so that the server sees
/// the pace at which it reads.
async fn slow_member(server: &TestServer) -> Ws {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(16 << 10).expect("SO_RCVBUF");
    let stream = within("connect", socket.connect(server.addr))
        .await
        .expect("connect");
    let url = format!("ws://{}/chat", server.addr);
    let (mut ws, _) = within("handshake", Connector::new().connect_on(stream, &url))
        .await
        .expect("handshake");
    assert_eq!(next_json(&mut ws).await["type"], "welcome");
    ws
}

/// The attack of issue 12, replayed with the binary's default limits: one
/// member sends 4,000 `say`s of 2,000 characters as fast as it can; ten
/// members read at 256 KB/s. None of them is closed, each receives every
/// message the server accepted, and the sender gets `rate_limited` for the
/// rest.
#[tokio::test]
async fn a_say_flood_costs_the_sender_not_the_readers() {
    const READERS: usize = 10;
    const FLOOD: usize = 4000;
    const READ_RATE: f64 = 256_000.0;
    let server = start(config(Mode::Chat)).await;
    let mut readers = Vec::new();
    for i in 0..READERS {
        let mut ws = slow_member(&server).await;
        send_text(&mut ws, &join_text("r", &format!("reader{i}"))).await;
        readers.push(ws);
    }
    let mut sender = member(&server).await;
    send_text(&mut sender, &join_text("r", "flood")).await;
    // Let the joins use no more of the readers' buckets than they must.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let reading = readers.into_iter().map(|mut ws| {
        tokio::spawn(async move {
            let started = Instant::now();
            let (mut bytes, mut from_flood) = (0usize, 0usize);
            loop {
                let msg = tokio::time::timeout(Duration::from_secs(20), ws.next())
                    .await
                    .expect("reader stalled");
                let Some(Event::Message(msg)) = msg else {
                    panic!("reader closed: {msg:?}");
                };
                let Message::Text(t) = msg else { continue };
                bytes += t.len();
                let v: Value = serde_json::from_str(&t).expect("json");
                if v["type"] == "message" && v["name"] == "flood" {
                    if v["text"] == "done" {
                        return (from_flood, ws);
                    }
                    from_flood += 1;
                }
                // Keep to READ_RATE bytes a second.
                let due = Duration::from_secs_f64(bytes as f64 / READ_RATE);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    tokio::time::sleep(wait).await;
                }
            }
        })
    });
    let reading: Vec<_> = reading.collect();

    let text = "x".repeat(2000);
    let flood = say_text(&text);
    let (mut tx, mut rx) = sender.split();
    let counting = tokio::spawn(async move {
        let (mut accepted, mut limited) = (0usize, 0usize);
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(20), rx.next())
                .await
                .expect("sender stalled");
            let Some(Event::Message(Message::Text(t))) = msg else {
                panic!("sender closed: {msg:?}");
            };
            let v: Value = serde_json::from_str(&t).expect("json");
            match (v["type"].as_str(), v["code"].as_str(), v["text"].as_str()) {
                (Some("message"), _, Some("done")) if v["name"] == "flood" => {
                    return (accepted, limited);
                }
                (Some("message"), _, _) if v["name"] == "flood" => accepted += 1,
                (Some("error"), Some("rate_limited"), _) => limited += 1,
                _ => {}
            }
        }
    });
    let started = Instant::now();
    within("flood", async {
        for _ in 0..FLOOD {
            tx.feed(Message::from(flood.as_str())).await.expect("feed");
        }
        tx.flush().await.expect("flush");
    })
    .await;
    let flood_time = started.elapsed();
    // After a second's refill, a last message marks the end.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    tx.send(Message::from(say_text("done")))
        .await
        .expect("send");
    let (accepted, limited) = within("sender's count", counting).await.expect("sender");
    assert_eq!(
        accepted + limited,
        FLOOD,
        "every flood message accepted or refused"
    );
    // The default: a burst of 20 and 5 a second (and 16 KiB/s, 64 KiB).
    let most = 20 + (flood_time.as_secs_f64() * 5.0).ceil() as usize + 1;
    assert!(
        (1..=most).contains(&accepted),
        "accepted {accepted} (at most {most})"
    );
    for (i, r) in reading.into_iter().enumerate() {
        let (got, mut ws) = tokio::time::timeout(Duration::from_secs(30), r)
            .await
            .expect("reader")
            .expect("reader task");
        assert_eq!(got, accepted, "reader {i} received every accepted message");
        // Still open: it can speak.
        send_text(&mut ws, &say_text("still here")).await;
    }
    assert_eq!(server.metric("wharf_slow_client_closes_total").await, 0);
    assert_eq!(
        server.metric("wharf_rate_limited_total").await,
        limited as u64
    );
    eprintln!("flood: {FLOOD} sent in {flood_time:?}, {accepted} accepted, {limited} rate_limited");
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

/// An independent client, Python's `websockets`, sees the rate limit and
/// the name rules as the Rust client does.
#[tokio::test]
async fn a_python_websockets_client_is_rate_limited_and_refused_invisible_names() {
    if !python_websockets() {
        eprintln!(
            "SKIPPED: python3 cannot import websockets and pip could not install it \
             (python3 -m pip install websockets)"
        );
        return;
    }
    // One message a second: the sends, however slow the machine, fall well
    // inside one refill.
    let burst = 8;
    let server = start(limited(1, burst)).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/chat_limits.py");
    let port = server.addr.port().to_string();
    let mut child = std::process::Command::new("python3")
        .args([script, &port, &burst.to_string()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("python client still running after 30 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let out = child.wait_with_output().expect("output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "python client failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("6 rate_limited"), "{stdout}");
}
