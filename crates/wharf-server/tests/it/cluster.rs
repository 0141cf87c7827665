//! Many nodes sharing rooms through a real `redis-server` (Debian's,
//! installed by `scripts/install-proxies`), started here on a free loopback
//! port: exactly-once and per-sender order across three nodes, an outage of
//! Redis and its return, a stalled Redis (liveness probe), and a node
//! killed with SIGKILL leaving presence. A test that finds no
//! `redis-server` says so and passes.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wharf_server::{Config, Mode};

use crate::util::{TempDir, TestServer, Ws, config, next_json, send_text, start, within};

const PROTOCOL: &str = "wharf.chat.v1";

/// A `redis-server` this test started, killed (by its PID) when dropped.
struct Redis {
    child: Option<Child>,
    port: u16,
    dir: TempDir,
}

impl Redis {
    /// Starts one on a free port, or `None` (with a message) if Redis is
    /// not installed.
    async fn start(name: &str) -> Option<Self> {
        if !Path::new("/usr/bin/redis-server").exists() {
            eprintln!(
                "SKIPPED: redis-server is not installed (scripts/install-proxies installs it)"
            );
            return None;
        }
        let port = StdListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let mut redis = Self {
            child: None,
            port,
            dir: TempDir::new(&format!("redis-{name}")),
        };
        redis.restart().await;
        Some(redis)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    async fn restart(&mut self) {
        let child = Command::new("/usr/bin/redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        within("redis-server to answer", async {
            while self.command("PING").await.as_deref() != Some("+PONG") {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn signal(&self, signal: rustix::process::Signal) {
        let pid = self.child.as_ref().expect("running").id();
        let pid = rustix::process::Pid::from_raw(i32::try_from(pid).expect("pid")).expect("pid");
        rustix::process::kill_process(pid, signal).expect("signal redis-server");
    }

    /// Sends one inline command; the reply's first line.
    async fn command(&self, cmd: &str) -> Option<String> {
        let exchange = async {
            let mut tcp = TcpStream::connect(("127.0.0.1", self.port)).await.ok()?;
            tcp.write_all(format!("{cmd}\r\n").as_bytes()).await.ok()?;
            let mut buf = vec![0; 4096];
            let n = tcp.read(&mut buf).await.ok()?;
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            Some(text.lines().last().unwrap_or_default().to_owned())
        };
        tokio::time::timeout(Duration::from_millis(500), exchange)
            .await
            .ok()
            .flatten()
    }

    /// Waits until `channel` has `n` subscribers (one per node).
    async fn wait_subscribers(&self, channel: &str, n: u64) {
        within(&format!("{n} subscribers of {channel}"), async {
            loop {
                let reply = self.command(&format!("PUBSUB NUMSUB {channel}")).await;
                if reply.as_deref() == Some(&format!(":{n}")) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

fn node_config(redis: &Redis) -> Config {
    let mut c = config(Mode::Chat);
    c.redis = Some(redis.url());
    // Tests send faster than people type.
    c.rate_limit_messages = 0;
    c.rate_limit_bytes = 0;
    c
}

/// A node in-process, once its backplane is up.
async fn node(redis: &Redis) -> TestServer {
    let node = start(node_config(redis)).await;
    node.wait_metric("wharf_backplane_up", 1).await;
    node
}

async fn member(server: &TestServer, room: &str, name: &str) -> (Ws, Value) {
    let mut ws = server.ws("/chat", Some(PROTOCOL)).await;
    assert_eq!(next_json(&mut ws).await["type"], "welcome");
    send_text(
        &mut ws,
        &json!({"type": "join", "room": room, "name": name}).to_string(),
    )
    .await;
    let joined = next_json(&mut ws).await;
    assert_eq!(joined["type"], "joined", "{joined}");
    (ws, joined)
}

async fn say(ws: &mut Ws, text: &str) {
    send_text(ws, &json!({"type": "say", "text": text}).to_string()).await;
}

/// Reads until a `message` whose text satisfies `stop`, returning the
/// `message` texts seen (other types skipped).
async fn read_until(ws: &mut Ws, mut stop: impl FnMut(&str) -> bool) -> Vec<String> {
    let mut texts = Vec::new();
    loop {
        let msg = next_json(ws).await;
        if msg["type"] == "message" {
            let text = msg["text"].as_str().expect("text").to_owned();
            let done = stop(&text);
            texts.push(text);
            if done {
                return texts;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_share_rooms_exactly_once_in_order() {
    let Some(redis) = Redis::start("three").await else {
        return;
    };
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(node(&redis).await);
    }
    // 20 clients per node, in rooms "a" and "b" by turns.
    let mut clients = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        for i in 0..20 {
            let room = if i % 2 == 0 { "a" } else { "b" };
            let name = format!("n{n}c{i}");
            let (ws, _) = member(node, room, &name).await;
            clients.push((room, name, ws));
        }
    }
    redis.wait_subscribers("wharf:room:a", 3).await;
    redis.wait_subscribers("wharf:room:b", 3).await;

    // Cluster-wide presence: a 31st member of "a", on the third node.
    let (mut late, joined) = member(&nodes[2], "a", "late").await;
    assert_eq!(joined["online"], 31, "{joined}");
    say(&mut late, "late:done").await;

    const EACH: usize = 5;
    for (_, name, ws) in &mut clients {
        for k in 0..EACH {
            say(ws, &format!("{name}:{k}")).await;
        }
        say(ws, &format!("{name}:done")).await;
    }
    let reads = clients.into_iter().map(|(room, _, mut ws)| {
        tokio::spawn(async move {
            let senders = if room == "a" { 31 } else { 30 };
            let mut done = 0;
            let texts = read_until(&mut ws, |t| {
                done += usize::from(t.ends_with(":done"));
                done == senders
            })
            .await;
            (room, texts)
        })
    });
    for read in reads {
        let (room, texts) = within("every member's messages", read)
            .await
            .expect("reader");
        let mut per_sender: HashMap<&str, Vec<&str>> = HashMap::new();
        for t in &texts {
            let (sender, k) = t.rsplit_once(':').expect("sender:k");
            per_sender.entry(sender).or_default().push(k);
        }
        let expected = if room == "a" { 31 } else { 30 };
        assert_eq!(per_sender.len(), expected, "senders seen in {room}");
        for (sender, ks) in per_sender {
            let parity = sender
                .rsplit_once('c')
                .map(|(_, i)| i.parse::<usize>().ok());
            if let Some(Some(i)) = parity {
                let from = if i % 2 == 0 { "a" } else { "b" };
                assert_eq!(from, room, "{sender} is not in room {room}");
            }
            let want: Vec<String> = if sender == "late" {
                vec!["done".into()]
            } else {
                (0..EACH)
                    .map(|k| k.to_string())
                    .chain(["done".into()])
                    .collect()
            };
            assert_eq!(ks, want, "{sender}'s messages as seen in {room}");
        }
    }
    for node in &nodes {
        assert_eq!(node.metric("wharf_backplane_dropped_total").await, 0);
        assert_eq!(node.metric("wharf_backplane_duplicates_total").await, 0);
        assert_eq!(node.metric("wharf_backplane_up").await, 1);
    }
    drop(late);
    for node in nodes {
        node.stop().await;
    }
}

async fn health(node: &TestServer) -> String {
    node.request("GET", "/healthz", &[]).await.body_text()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_keeps_local_chat_and_cross_node_returns_within_2s() {
    let Some(mut redis) = Redis::start("outage").await else {
        return;
    };
    let a = node(&redis).await;
    let b = node(&redis).await;
    let (mut sender, _) = member(&a, "r", "sender").await;
    let (mut local, _) = member(&a, "r", "local").await;
    let (mut remote, _) = member(&b, "r", "remote").await;
    redis.wait_subscribers("wharf:room:r", 2).await;
    say(&mut sender, "before").await;
    assert_eq!(read_until(&mut remote, |t| t == "before").await, ["before"]);

    redis.kill();
    within("a degraded /healthz", async {
        while !health(&a)
            .await
            .starts_with("degraded: redis backplane down")
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    // Local delivery goes on; the cross-node copy is dropped and counted.
    say(&mut sender, "during").await;
    assert_eq!(
        read_until(&mut local, |t| t == "during").await,
        ["before", "during"]
    );
    assert!(a.metric("wharf_backplane_dropped_total").await >= 1);
    assert_eq!(a.metric("wharf_backplane_up").await, 0);

    redis.restart().await;
    let back = Instant::now();
    let mut k = 0;
    within("cross-node delivery back", async {
        loop {
            k += 1;
            say(&mut sender, &format!("retry-{k}")).await;
            let got = tokio::time::timeout(Duration::from_millis(100), async {
                read_until(&mut remote, |t| t.starts_with("retry-")).await
            })
            .await;
            if got.is_ok() {
                return;
            }
        }
    })
    .await;
    let took = back.elapsed();
    assert!(
        took <= Duration::from_secs(2),
        "cross-node back after {took:?}"
    );
    // No duplicates after the resubscribe: each once, in order.
    for i in 0..5 {
        say(&mut sender, &format!("after-{i}")).await;
    }
    let texts = read_until(&mut remote, |t| t == "after-4").await;
    let after: Vec<&String> = texts.iter().filter(|t| t.starts_with("after-")).collect();
    assert_eq!(
        after,
        ["after-0", "after-1", "after-2", "after-3", "after-4"]
    );
    assert!(a.metric("wharf_backplane_reconnects_total").await >= 1);
    assert_eq!(health(&a).await, "ok");
    eprintln!("cross-node delivery back {took:?} after Redis answered");
    drop((sender, local, remote));
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_redis_is_found_by_the_liveness_probe() {
    let Some(redis) = Redis::start("stalled").await else {
        return;
    };
    let a = node(&redis).await;
    // SIGSTOP: the connections stay open, no error ever arrives.
    redis.signal(rustix::process::Signal::STOP);
    let stalled = Instant::now();
    tokio::time::timeout(Duration::from_secs(8), async {
        while !health(&a).await.starts_with("degraded") {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the probe to notice a stalled Redis within 8 s");
    let noticed = stalled.elapsed();
    redis.signal(rustix::process::Signal::CONT);
    within("the backplane back", a.wait_metric("wharf_backplane_up", 1)).await;
    eprintln!("a stalled Redis noticed after {noticed:?}");
    a.stop().await;
}

/// The `wharf` binary on a free port, once it answers `/healthz`.
struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_with_sigkill_leaves_presence_and_its_members_left_once() {
    let Some(redis) = Redis::start("sigkill").await else {
        return;
    };
    let port = StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wharf"));
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("WHARF_") {
            cmd.env_remove(k);
        }
    }
    // A 2 s TTL keeps the test short: refreshed every 667 ms.
    let ttl = Duration::from_secs(2);
    let child = cmd
        .args(["--listen", &addr.to_string(), "--redis", &redis.url()])
        .args(["--redis-presence-ttl", "2s"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn wharf");
    let mut doomed = Node(child);
    // The survivors look for dead nodes at their own refreshes: the same
    // TTL, as in a cluster with one configuration.
    let mut c = node_config(&redis);
    c.redis_presence_ttl = ttl;
    let a = start(c.clone()).await;
    let b = start(c).await;
    a.wait_metric("wharf_backplane_up", 1).await;
    b.wait_metric("wharf_backplane_up", 1).await;
    // Three members on the doomed node, in the binary.
    let mut gone = Vec::new();
    within("the doomed node", async {
        loop {
            let url = format!("ws://{addr}/chat");
            if let Ok((mut ws, _)) = wharf::connect(&url).await {
                assert_eq!(next_json(&mut ws).await["type"], "welcome");
                gone.push(ws);
                if gone.len() == 3 {
                    return;
                }
            } else {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    })
    .await;
    let mut doomed_ids = HashMap::new();
    for (i, ws) in gone.iter_mut().enumerate() {
        send_text(
            ws,
            &json!({"type": "join", "room": "k", "name": format!("g{i}")}).to_string(),
        )
        .await;
        let joined = next_json(ws).await;
        assert_eq!(joined["type"], "joined");
        doomed_ids.insert(joined["id"].as_u64().expect("id"), format!("g{i}"));
    }
    // The doomed node's count in Redis (its field alone: `count expiry`).
    within("the doomed node's presence", async {
        while !redis
            .command("HVALS wharf:presence:k")
            .await
            .is_some_and(|v| v.starts_with("3 "))
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let (mut stays, joined) = member(&a, "k", "stays").await;
    assert_eq!(joined["online"], 4, "{joined}");
    let (mut other, joined) = member(&b, "k", "other").await;
    assert_eq!(joined["online"], 5, "{joined}");
    // `stays` hears of `other`.
    assert_eq!(next_json(&mut stays).await["name"], "other");

    let _ = doomed.0.kill(); // SIGKILL: no leave, no goodbye
    let _ = doomed.0.wait();
    let killed = Instant::now();
    // Within the TTL and a refresh (plus slack for a loaded machine), each
    // survivor gets one `left` per dead member, and nothing more.
    let bound = ttl + ttl / 3 + Duration::from_secs(1);
    let deadline = killed + bound + Duration::from_secs(1);
    let (at_a, at_b) = tokio::join!(
        lefts_until(&mut stays, deadline),
        lefts_until(&mut other, deadline)
    );
    for (lefts, last) in [at_a, at_b] {
        assert_eq!(lefts.len(), 3, "a left per dead member: {lefts:?}");
        for (id, seen) in &lefts {
            assert_eq!(seen.len(), 1, "exactly once: {lefts:?}");
            assert_eq!(
                seen[0]["name"].as_str(),
                doomed_ids.get(id).map(String::as_str)
            );
            assert_eq!(seen[0]["online"], 2, "{}", seen[0]);
        }
        let took = last - killed;
        assert!(took <= bound, "the lefts came after {took:?}");
        eprintln!("a SIGKILLed node's members left after {took:?}");
    }
    // Counts agree: a fresh member sees the two survivors and itself.
    let (probe, joined) = member(&a, "k", "probe").await;
    assert_eq!(joined["online"], 3, "{joined}");
    drop((probe, stays, other));
    a.stop().await;
    b.stop().await;
}

/// The `left` messages `ws` receives until `deadline`, by id, and when the
/// last came; any other message fails the test.
async fn lefts_until(ws: &mut Ws, deadline: Instant) -> (HashMap<u64, Vec<Value>>, Instant) {
    let mut lefts: HashMap<u64, Vec<Value>> = HashMap::new();
    let mut last = Instant::now();
    while let Ok(msg) = tokio::time::timeout(
        deadline.saturating_duration_since(Instant::now()),
        next_json(ws),
    )
    .await
    {
        assert_eq!(msg["type"], "left", "{msg}");
        let id = msg["id"].as_u64().expect("id");
        lefts.entry(id).or_default().push(msg);
        last = Instant::now();
    }
    (lefts, last)
}

/// A bare `wharf::Server` on the Redis backplane whose handler joins room
/// `p` under the name in its first message (after sending its id), answers
/// `in`, then holds on.
async fn presence_node(redis: &Redis) -> (SocketAddr, wharf::Hub) {
    let backplane = wharf::redis::Redis::open(&redis.url()).expect("redis url");
    let server = wharf::Server::new().backplane(std::sync::Arc::new(backplane));
    let hub = server.hub();
    let handler_hub = hub.clone();
    let server = server.on_connection(move |mut conn| {
        let hub = handler_hub.clone();
        async move {
            let _ = conn.try_send(format!("id:{}", conn.id()));
            let Some(first) = conn.recv().await else {
                return;
            };
            let name = first.as_text().unwrap_or_default().to_owned();
            conn.join("p");
            hub.set_member_name("p", conn.id(), &name);
            let _ = conn.try_send("in");
            while conn.recv().await.is_some() {}
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(server.serve(listener));
    within("the backplane up", async {
        while hub.backplane().and_then(|b| b.status().link) != Some(wharf::backplane::Link::Up) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    (addr, hub)
}

/// `hub`'s member list of `p`, as (id, name) pairs.
async fn listed(hub: &wharf::Hub) -> Vec<(u64, String)> {
    hub.presence("p")
        .await
        .into_iter()
        .map(|m| (m.id, m.name))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_lists_are_cluster_wide_and_local_ones_survive_an_outage() {
    let Some(mut redis) = Redis::start("lists").await else {
        return;
    };
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(presence_node(&redis).await);
    }
    let mut clients = Vec::new();
    let mut want = Vec::new();
    for (n, name) in [(0, "ann"), (0, "bob"), (1, "cy"), (2, "di")] {
        let (mut ws, id) = direct_client(nodes[n].0).await;
        send_text(&mut ws, name).await;
        assert_eq!(text(&mut ws).await, "in");
        clients.push(ws);
        want.push((id, name.to_owned()));
    }
    want.sort_unstable();
    // Every node lists all four, by id, with their names.
    for (_, hub) in &nodes {
        within("the four members listed", async {
            while listed(hub).await != want {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
    }
    // `cy` leaves (its node 1 then serves no member): gone everywhere.
    drop(clients.remove(2));
    want.retain(|(_, name)| name != "cy");
    for (_, hub) in &nodes {
        within("cy gone from the lists", async {
            while listed(hub).await != want {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
    }
    // Redis down: each node still lists its own members.
    redis.kill();
    let local: Vec<_> = want
        .iter()
        .filter(|(_, name)| name == "ann" || name == "bob")
        .cloned()
        .collect();
    within("node 0 lists its own", async {
        while listed(&nodes[0].1).await != local {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    drop(clients);
}

/// A bare `wharf::Server` on the Redis backplane (node number `number`)
/// whose handler sends its id first, then for `to:<id>:<text>` calls
/// `Hub::send_to(id, text)` and answers `sent:<bool>`.
async fn direct_node(redis: &Redis, number: u16) -> (SocketAddr, wharf::Hub) {
    let backplane = wharf::redis::Redis::open(&redis.url())
        .expect("redis url")
        .node_number(number);
    let server = wharf::Server::new().backplane(std::sync::Arc::new(backplane));
    let hub = server.hub();
    let handler_hub = hub.clone();
    let server = server.on_connection(move |mut conn| {
        let hub = handler_hub.clone();
        async move {
            let _ = conn.try_send(format!("id:{}", conn.id()));
            while let Some(msg) = conn.recv().await {
                let Some(text) = msg.as_text() else { continue };
                let Some((id, text)) = text.strip_prefix("to:").and_then(|t| t.split_once(':'))
                else {
                    continue;
                };
                let sent = id
                    .parse::<u64>()
                    .is_ok_and(|id| hub.send_to(id, text.to_owned()));
                let _ = conn.try_send(format!("sent:{sent}"));
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(server.serve(listener));
    within("the backplane up", async {
        while hub.backplane().and_then(|b| b.status().link) != Some(wharf::backplane::Link::Up) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    (addr, hub)
}

async fn text(ws: &mut Ws) -> String {
    match crate::util::next(ws).await {
        wharf::Message::Text(t) => t.as_str().to_owned(),
        other => panic!("expected text, got {other:?}"),
    }
}

/// Connects to `addr`; the connection's id.
async fn direct_client(addr: SocketAddr) -> (Ws, u64) {
    let (mut ws, _) = wharf::connect(&format!("ws://{addr}/"))
        .await
        .expect("connect");
    let hello = text(&mut ws).await;
    let id = hello
        .strip_prefix("id:")
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("expected the id, got {hello:?}"));
    (ws, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_to_an_id_reach_a_client_on_another_node() {
    let Some(redis) = Redis::start("direct").await else {
        return;
    };
    let (a, hub_a) = direct_node(&redis, 7).await;
    let (b, _hub_b) = direct_node(&redis, 300).await;
    assert_eq!(hub_a.node(), 7);
    let (mut on_a, id_a) = direct_client(a).await;
    let (mut on_b, id_b) = direct_client(b).await;
    let (mut also_a, id_a2) = direct_client(a).await;
    // The node's number is in the id, above the per-node part; ids stay
    // exact as JavaScript numbers.
    assert_eq!(wharf::backplane::node_of(id_a), 7);
    assert_eq!(wharf::backplane::node_of(id_b), 300);
    assert_eq!(id_a & ((1 << wharf::backplane::LOCAL_BITS) - 1), 1);
    assert!(id_b < 1 << 53);
    redis.wait_subscribers("wharf:node:300", 1).await;

    // A to B, in order; B to A; A to A (local, no bus).
    for i in 0..20 {
        send_text(&mut on_a, &format!("to:{id_b}:hello-{i}")).await;
    }
    for i in 0..20 {
        assert_eq!(text(&mut on_a).await, "sent:true");
        assert_eq!(text(&mut on_b).await, format!("hello-{i}"));
    }
    send_text(&mut on_b, &format!("to:{id_a}:back")).await;
    assert_eq!(text(&mut on_b).await, "sent:true");
    assert_eq!(text(&mut on_a).await, "back");
    send_text(&mut on_a, &format!("to:{id_a2}:local")).await;
    assert_eq!(text(&mut on_a).await, "sent:true");
    assert_eq!(text(&mut also_a).await, "local");
    // A local id that is not open: refused here. A remote one that is
    // not open: handed to the bus, and nobody gets it.
    send_text(&mut on_a, &format!("to:{}:nobody", id_a2 + 1000)).await;
    assert_eq!(text(&mut on_a).await, "sent:false");
    send_text(&mut on_a, &format!("to:{}:nobody", id_b + 1000)).await;
    assert_eq!(text(&mut on_a).await, "sent:true");
    send_text(&mut on_a, &format!("to:{id_b}:last")).await;
    assert_eq!(text(&mut on_a).await, "sent:true");
    assert_eq!(text(&mut on_b).await, "last");
}

/// A TCP relay in front of Redis that can silence the subscriptions open
/// now: their connections stay up and Redis's replies on them are
/// swallowed, while commands on the other connections still work. A
/// subscription that fails silently, as through a NAT that forgot it.
struct Relay {
    port: u16,
    /// Connections numbered up to this one that sent `SUBSCRIBE` are mute.
    mute_upto: std::sync::Arc<std::sync::atomic::AtomicU64>,
    opened: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Relay {
    async fn start(redis_port: u16) -> Self {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let mute_upto = Arc::new(AtomicU64::new(0));
        let opened = Arc::new(AtomicU64::new(0));
        let (mute, count) = (mute_upto.clone(), opened.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(("127.0.0.1", redis_port)).await else {
                    continue;
                };
                let serial = count.fetch_add(1, Ordering::SeqCst) + 1;
                let subscriber = Arc::new(AtomicBool::new(false));
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let seen = subscriber.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0; 16 * 1024];
                    while let Ok(n @ 1..) = cr.read(&mut buf).await {
                        if buf[..n]
                            .windows(9)
                            .any(|w| w.eq_ignore_ascii_case(b"SUBSCRIBE"))
                        {
                            seen.store(true, Ordering::SeqCst);
                        }
                        if sw.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
                let mute = mute.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0; 16 * 1024];
                    while let Ok(n @ 1..) = sr.read(&mut buf).await {
                        let silent = subscriber.load(Ordering::SeqCst)
                            && serial <= mute.load(Ordering::SeqCst);
                        if !silent && cw.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Self {
            port,
            mute_upto,
            opened,
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Silences every subscription open now.
    fn mute(&self) {
        use std::sync::atomic::Ordering;
        self.mute_upto
            .store(self.opened.load(Ordering::SeqCst), Ordering::SeqCst);
    }
}

/// Says `retry-<k>` from `sender` until `receiver` gets one; how long
/// that took from `since`.
async fn until_delivered(sender: &mut Ws, receiver: &mut Ws, since: Instant) -> Duration {
    let mut k = 0;
    within("cross-node delivery back", async {
        loop {
            k += 1;
            say(sender, &format!("retry-{k}")).await;
            let got = tokio::time::timeout(Duration::from_millis(100), async {
                read_until(receiver, |t| t.starts_with("retry-")).await
            })
            .await;
            if got.is_ok() {
                return;
            }
        }
    })
    .await;
    since.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_that_dies_alone_is_found_and_renewed_within_2s() {
    let Some(redis) = Redis::start("stale-sub").await else {
        return;
    };
    let relay = Relay::start(redis.port).await;
    let mut through_relay = node_config(&redis);
    through_relay.redis = Some(relay.url());
    let a = start(through_relay).await;
    a.wait_metric("wharf_backplane_up", 1).await;
    let b = node(&redis).await;
    let (mut on_a, _) = member(&a, "s", "on-a").await;
    let (mut on_b, _) = member(&b, "s", "on-b").await;
    redis.wait_subscribers("wharf:room:s", 2).await;
    say(&mut on_b, "before").await;
    assert_eq!(read_until(&mut on_a, |t| t == "before").await, ["before"]);

    // 1. Silently: no error, no close; commands (publishes, presence)
    //    still work. Only the liveness probe can tell.
    relay.mute();
    let muted = Instant::now();
    say(&mut on_a, "a-still-publishes").await;
    let seen = read_until(&mut on_b, |t| t == "a-still-publishes").await;
    assert_eq!(seen, ["before", "a-still-publishes"]);
    let took = until_delivered(&mut on_b, &mut on_a, muted).await;
    assert!(
        took <= Duration::from_secs(2),
        "silent: back after {took:?}"
    );
    assert!(a.metric("wharf_backplane_reconnects_total").await >= 1);
    eprintln!("a silently stale subscription renewed after {took:?}");

    // 2. Killed by Redis (CLIENT KILL TYPE pubsub): every node's
    //    subscription closes, commands go on.
    let before = a.metric("wharf_backplane_reconnects_total").await;
    let killed = Instant::now();
    let reply = redis.command("CLIENT KILL TYPE pubsub").await;
    assert!(
        reply.as_deref().is_some_and(|r| r.starts_with(':')),
        "{reply:?}"
    );
    let took = until_delivered(&mut on_b, &mut on_a, killed).await;
    assert!(
        took <= Duration::from_secs(2),
        "killed: back after {took:?}"
    );
    let took_ba = until_delivered(&mut on_a, &mut on_b, killed).await;
    assert!(
        took_ba <= Duration::from_secs(2),
        "killed: back after {took_ba:?}"
    );
    assert!(a.metric("wharf_backplane_reconnects_total").await > before);
    eprintln!("a killed subscription renewed after {took:?}");
    assert_eq!(a.metric("wharf_backplane_duplicates_total").await, 0);
    drop((on_a, on_b));
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_prefix_node_number_and_presence_ttl_are_settings() {
    let Some(redis) = Redis::start("settings").await else {
        return;
    };
    let mut c = node_config(&redis);
    c.redis_prefix = "app2:".to_owned();
    c.redis_node_number = Some(42);
    c.redis_presence_ttl = Duration::from_secs(1);
    let a = start(c).await;
    a.wait_metric("wharf_backplane_up", 1).await;
    redis.wait_subscribers("app2:node:42", 1).await;
    let (ws, joined) = member(&a, "p", "ann").await;
    let id = joined["id"].as_u64().expect("id");
    assert_eq!(wharf::backplane::node_of(id), 42, "{joined}");
    redis.wait_subscribers("app2:room:p", 1).await;
    // Nothing under the default prefix.
    assert_eq!(
        redis.command("EXISTS wharf:presence:p").await.as_deref(),
        Some(":0")
    );
    // The key lives twice the TTL: 2 s here, against 12 s by default.
    let pttl: i64 = redis
        .command("PTTL app2:presence:p")
        .await
        .and_then(|r| r.trim_start_matches(':').parse().ok())
        .expect("PTTL");
    assert!((1..=2000).contains(&pttl), "PTTL {pttl}");
    drop(ws);
    a.stop().await;
}
