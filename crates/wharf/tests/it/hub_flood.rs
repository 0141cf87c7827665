//! The cross-worker inbox under a flood, as an attacker would make it: a
//! client sends large messages as fast as TCP takes them, its handler on
//! worker 0 publishes each to a room whose members are all on worker 1,
//! and worker 1 is busy (here: blocked) so its inbox cannot drain. The
//! process's memory must grow by at most the inbox's bound plus what each
//! receiving connection may queue; the overflow is dropped and counted, and
//! once the flood is over the members that read get messages again, each
//! exactly once and in order.
//!
//! Memory is measured as the process's peak RSS (`VmHWM`), which the other
//! tests of this binary would blur: the test runs itself again in a process
//! of its own, once per message size.
//!
//! The inbox counts payload bytes, but a message the server received is a
//! view into the read buffer it arrived in, and keeps that whole buffer
//! alive. A 256 KiB message has a buffer to itself; a message of just over
//! half a read (33 KiB) leaves too little room behind it for the next, so it
//! pins a 64 KiB buffer: the worst case, nearly twice its size.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use wharf::{Server, SlowClient};

use crate::util::{RawClient, connect, frame, frame_header, start, upgrade_request, within};

/// `hub::fanout::INBOX_BYTES`: the most payload bytes a worker's inbox
/// holds. Written out here so that the test keeps the documented bound if
/// the constant is ever raised.
const INBOX_BYTES: u64 = 64 << 20;
/// Each flood's message size: one read buffer per message, and the
/// size that pins the most read buffer per payload byte.
const MESSAGES: [usize; 2] = [256 << 10, 33 << 10];
/// The read a connection makes between frames (`conn::task::MAX_READ`): a
/// buffer holds a frame of up to this whole, or one larger exactly.
const MAX_READ: u64 = 64 << 10;
/// Each connection's write queue bound (`Server::max_backpressure`).
const BACKPRESSURE: usize = 1 << 20;
/// Worker 1 stays blocked until this much was published to it: four times
/// what its inbox may hold (or `STALL_LIMIT` passed).
const STALL_BYTES: u64 = 4 * INBOX_BYTES;
const STALL_LIMIT: Duration = Duration::from_secs(8);
/// How long the flood goes on once worker 1 is back.
const AFTER_STALL: Duration = Duration::from_millis(500);
/// Members that read, and members that never read.
const READERS: usize = 2;
const SILENT: usize = 2;
/// Small messages sent once the flood is over; every member that reads
/// must get them all.
const TAIL: u64 = 16;
/// Set in the child process that runs the flood.
const CHILD: &str = "WHARF_HUB_FLOOD_CHILD";
const CHILD_TEST: &str = "hub_flood::flood_in_a_process_of_its_own";

#[test]
fn a_publish_flood_into_a_stalled_worker_holds_at_most_the_inbox_bound() {
    for message in MESSAGES {
        flood_in_a_child(message);
    }
}

/// Runs [`flood_in_a_process_of_its_own`] with `message` bytes a message.
fn flood_in_a_child(message: usize) {
    let mut child = Command::new(std::env::current_exe().expect("the test binary"))
        .args([CHILD_TEST, "--exact", "--ignored", "--nocapture"])
        .args(["--test-threads", "1"])
        .env(CHILD, message.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the test binary again");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            break status;
        }
        if started.elapsed() > Duration::from_secs(40) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the flood took over 40 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = child.wait_with_output().expect("the child's output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let _ = std::io::stdout().write_all(stdout.as_bytes());
    assert!(status.success(), "the flood failed:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains("flood of "),
        "the flood did not run:\n{stdout}"
    );
}

/// What the members that read saw: the sequence numbers of the messages,
/// and a count that moves while they arrive.
#[derive(Default)]
struct Seen {
    received: AtomicU64,
}

#[tokio::test]
#[ignore = "run by a_publish_flood_into_a_stalled_worker_holds_at_most_the_inbox_bound, alone in its process"]
async fn flood_in_a_process_of_its_own() {
    let Some(message) = std::env::var(CHILD).ok().and_then(|m| m.parse().ok()) else {
        return;
    };
    let published = Arc::new(AtomicU64::new(0));
    let server = Server::new()
        .workers(2)
        .max_backpressure(BACKPRESSURE)
        .slow_client(SlowClient::Drop);
    let hub = server.hub();
    let count = published.clone();
    let server = server.on_connection(move |mut conn| {
        let published = count.clone();
        async move {
            let thread = std::thread::current().name().unwrap_or("?").to_owned();
            let _ = conn.try_send(thread);
            match conn.path() {
                // The application: whatever a client sends goes to the room.
                "/flood" => {
                    while let Some(msg) = conn.recv().await {
                        let len = msg.len() as u64;
                        conn.hub().publish("room", msg);
                        published.fetch_add(len, Ordering::Relaxed);
                    }
                }
                "/member" => {
                    conn.join("room");
                    while conn.recv().await.is_some() {}
                }
                // Blocks its worker's thread until the flood has sent it
                // `STALL_BYTES`: a worker too busy to take its inbox.
                "/stall" => {
                    while let Some(msg) = conn.recv().await {
                        if msg.as_text() != Some("stall") {
                            continue;
                        }
                        let from = published.load(Ordering::Relaxed);
                        let start = Instant::now();
                        while published.load(Ordering::Relaxed) - from < STALL_BYTES
                            && start.elapsed() < STALL_LIMIT
                        {
                            std::thread::sleep(Duration::from_millis(2));
                        }
                        let sent = published.load(Ordering::Relaxed) - from;
                        let ms = start.elapsed().as_millis();
                        let _ = conn.try_send(format!("released {sent} {ms}"));
                    }
                }
                _ => while conn.recv().await.is_some() {},
            }
        }
    });
    let addr = start(server).await;

    // Connections go to the workers in turn: the flooder and the idle ones
    // on worker 0, the members and the staller on worker 1.
    let mut flooder = raw(addr, "/flood").await;
    let hello = flooder.read_frame().await;
    assert_ne!(
        hello.payload, b"wharf-worker-1",
        "the flooder is on worker 0"
    );
    let mut idle = Vec::new();
    let mut readers = Vec::new();
    let mut silent = Vec::new();
    for i in 0..READERS + SILENT {
        if i < READERS {
            let mut member = connect(addr, "/member").await;
            let hello = within("hello", member.recv()).await.expect("a hello");
            assert_eq!(hello.as_text(), Some("wharf-worker-1"));
            readers.push(member);
        } else {
            let mut member = raw(addr, "/member").await;
            assert_eq!(member.read_frame().await.payload, b"wharf-worker-1");
            silent.push(member);
        }
        let mut other = connect(addr, "/idle").await;
        let hello = within("hello", other.recv()).await.expect("a hello");
        assert_ne!(hello.as_text(), Some("wharf-worker-1"));
        idle.push(other);
    }
    let mut staller = connect(addr, "/stall").await;
    let hello = within("hello", staller.recv()).await.expect("a hello");
    assert_eq!(hello.as_text(), Some("wharf-worker-1"));
    within("members joined", async {
        while hub.room_len("room") != READERS + SILENT {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;

    // Members that read check each message as it comes: sequence numbers
    // only grow (once each, in order), up to the text "end".
    let seen: Vec<Arc<Seen>> = (0..READERS).map(|_| Arc::default()).collect();
    let reading: Vec<_> = readers
        .into_iter()
        .zip(&seen)
        .map(|(mut member, seen)| {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut seqs = Vec::new();
                let deadline = Instant::now() + Duration::from_secs(30);
                loop {
                    let left = deadline.saturating_duration_since(Instant::now());
                    let msg = tokio::time::timeout(left, member.recv())
                        .await
                        .expect("the member gets \"end\" in time")
                        .expect("the member stays open");
                    if msg.as_text() == Some("end") {
                        break (member, seqs);
                    }
                    let bytes = msg.as_bytes();
                    let seq = u64::from_be_bytes(bytes[..8].try_into().expect("a sequence number"));
                    if let Some(&last) = seqs.last() {
                        assert!(seq > last, "message {seq} after {last}");
                    }
                    seqs.push(seq);
                    seen.received.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();

    let before = memory();
    staller.send("stall").await.expect("send");
    let stop = Arc::new(AtomicBool::new(false));
    let tcp = flooder.stream.into_std().expect("a std socket");
    let flooding = tokio::task::spawn_blocking({
        let stop = stop.clone();
        move || flood(tcp, message, &stop)
    });
    let started = Instant::now();
    let released = tokio::time::timeout(Duration::from_secs(15), staller.recv())
        .await
        .expect("worker 1 is back in time")
        .expect("the staller stays open");
    let released = released.as_text().expect("a text").to_owned();
    let stalled_bytes: u64 = released
        .split(' ')
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("released <bytes> <ms>");
    tokio::time::sleep(AFTER_STALL).await;
    stop.store(true, Ordering::Relaxed);
    let (mut tcp, next) = within("the flood stops", flooding)
        .await
        .expect("the flood thread");
    let flood_time = started.elapsed();
    let flooded = published.load(Ordering::Relaxed);
    let dropped = hub.fanouts_dropped();

    // Once the members that read have taken what was queued for them, the
    // tail: every one of its messages reaches every one of them, in order.
    within("the backlog drains", async {
        let mut last = (0, Instant::now());
        loop {
            let now: u64 = seen
                .iter()
                .map(|s| s.received.load(Ordering::Relaxed))
                .sum();
            if now != last.0 {
                last = (now, Instant::now());
            } else if last.1.elapsed() > Duration::from_millis(200) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    for seq in next..next + TAIL {
        tcp.write_all(&frame(0x2, &seq.to_be_bytes(), Some([1, 2, 3, 4])))
            .expect("write the tail");
    }
    tcp.write_all(&frame(0x1, b"end", Some([1, 2, 3, 4])))
        .expect("write the end");
    let after = memory();

    let mut delivered = Vec::new();
    for r in reading {
        let (member, seqs) = within("the tail", r).await.expect("a member's reader");
        let tail: Vec<u64> = seqs.iter().copied().filter(|&s| s >= next).collect();
        assert_eq!(
            tail,
            (next..next + TAIL).collect::<Vec<_>>(),
            "the tail, each once and in order"
        );
        delivered.push(seqs.len() as u64 - TAIL);
        idle.push(member);
    }
    assert_eq!(hub.room_len("room"), READERS + SILENT, "nobody was closed");
    drop((silent, idle));

    // What the flood may make the process hold: the inbox's bound, with
    // the read buffers its messages pin; for each member, its write queue
    // (bound plus one message) and its read buffer on this side when it
    // reads; the flooder's read buffer and each thread's pool of them.
    let members = (READERS + SILENT) as u64;
    let frame_room = (message + 14) as u64;
    let pinned = INBOX_BYTES * frame_room.max(MAX_READ) / message as u64;
    let budget = pinned
        + members * (BACKPRESSURE + message) as u64
        + READERS as u64 * 2 * frame_room
        + 2 * frame_room
        + 2 * (1 << 20)
        + SLACK;
    let growth = after.peak.saturating_sub(before.rss);
    println!(
        "flood of {} KiB messages: {} MiB published in {:.1} s ({} MiB while worker 1 was blocked); \
         {dropped} fan-outs dropped; members that read got {delivered:?} flood messages; \
         RSS before {} MiB, peak {} MiB: growth {} MiB, budget {} MiB",
        message >> 10,
        flooded >> 20,
        flood_time.as_secs_f64(),
        stalled_bytes >> 20,
        before.rss >> 20,
        after.peak >> 20,
        growth >> 20,
        budget >> 20,
    );
    // Without the inbox's bound, all of it would have been held.
    assert!(
        stalled_bytes > budget + INBOX_BYTES,
        "the flood sent only {stalled_bytes} bytes while worker 1 was blocked: \
         too few to tell a bounded inbox from an unbounded one"
    );
    assert!(dropped > 0, "an overflowing inbox drops and counts");
    assert!(
        growth < budget,
        "memory grew by {growth} bytes, over the budget of {budget}"
    );
}

/// Allocator and runtime overhead the budget allows for beyond the bounds.
const SLACK: u64 = 16 << 20;

/// Connects a raw client to `path` and completes the handshake.
async fn raw(addr: std::net::SocketAddr, path: &str) -> RawClient {
    let mut client = RawClient::connect(addr).await;
    client.write(upgrade_request(path, &[]).as_bytes()).await;
    assert_eq!(client.read_response().await.status, 101);
    client
}

/// Writes binary messages of `message` bytes (a sequence number first),
/// masked with a zero key, until `stop`; returns the socket and the next
/// sequence number.
fn flood(
    mut tcp: std::net::TcpStream,
    message: usize,
    stop: &AtomicBool,
) -> (std::net::TcpStream, u64) {
    tcp.set_nonblocking(false).expect("blocking");
    tcp.set_write_timeout(Some(Duration::from_secs(5)))
        .expect("write timeout");
    let mut frame = frame_header(0x2, message as u64, Some([0; 4]));
    let header = frame.len();
    frame.resize(header + message, 0xab);
    let mut seq = 0u64;
    let until = Instant::now() + Duration::from_secs(20);
    while !stop.load(Ordering::Relaxed) && Instant::now() < until {
        frame[header..header + 8].copy_from_slice(&seq.to_be_bytes());
        tcp.write_all(&frame).expect("the server takes the flood");
        seq += 1;
    }
    (tcp, seq)
}

/// The process's resident memory now and at its peak, in bytes.
struct Memory {
    rss: u64,
    peak: u64,
}

fn memory() -> Memory {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb << 10)
            .unwrap_or_else(|| panic!("{name} in /proc/self/status"))
    };
    Memory {
        rss: field("VmRSS:"),
        peak: field("VmHWM:"),
    }
}
