//! A client that stops reading meets its own `max_backpressure`, under
//! either slow-client policy, while a hundred fast clients get every
//! broadcast.

use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use wharf::{Disconnect, Hub, ReadyState, SendError, Server, SlowClient};

use crate::chat_util::eventually;
use crate::util::{
    MASK, RawClient, Tungstenite, connect_tungstenite, frame, start, upgrade_request, within,
};

/// The write-queue bound of every connection in these tests.
const MAX: usize = 64 << 10;
/// The longest header of an (unmasked) server frame: a send accepted into
/// an empty queue may carry its header past `MAX`.
const MAX_HEADER: usize = 10;
/// The longest close frame a server sends.
const MAX_CLOSE_FRAME: usize = 2 + 125;
/// The size of each broadcast message, and of its frame on the wire.
const BROADCAST_LEN: usize = 256;
const BROADCAST_FRAME: usize = BROADCAST_LEN + 4;
/// The size of each message sent directly to the slow client.
const BIG_LEN: usize = 64 << 10;
/// The most scheduler turns `Fixture::settle` gives the drivers.
const SETTLE_TURNS: usize = 100;
/// How many clients read everything they are sent.
const FAST: usize = 100;
/// The most broadcast-and-send steps a test takes.
const MAX_STEPS: u32 = 2_000;

/// A server with 100 fast tokio-tungstenite clients reading in tasks and
/// one raw client on `/slow` that reads nothing until told to.
struct Fixture {
    hub: Hub,
    /// The server's handle for the slow connection.
    slow: wharf::Client,
    /// The slow client's end; it is read only when a test says so.
    raw: RawClient,
    /// Each fast client's broadcast numbers, in the order received, once it
    /// reads `done`.
    readers: Vec<JoinHandle<Vec<u32>>>,
}

impl Fixture {
    async fn new(policy: SlowClient) -> Self {
        let (slow_tx, mut slow_rx) = mpsc::unbounded_channel();
        let server = Server::new()
            .max_backpressure(MAX)
            .close_timeout(Duration::from_secs(1))
            .slow_client(policy);
        let hub = server.hub();
        let server = server.on_connection(move |mut conn| {
            let slow_tx = slow_tx.clone();
            async move {
                let slow = conn.path() == "/slow";
                if slow {
                    let _ = slow_tx.send(conn.client().clone());
                }
                // The slow client's messages are echoed, to show that it
                // still works once it reads again.
                while let Some(msg) = conn.recv().await {
                    if slow {
                        let _ = conn.try_send(msg);
                    }
                }
            }
        });
        let addr = start(server).await;
        let mut readers = Vec::with_capacity(FAST);
        for _ in 0..FAST {
            let ws = connect_tungstenite(addr, "/").await;
            readers.push(tokio::spawn(read_broadcasts(ws)));
        }
        let mut raw = RawClient::connect(addr).await;
        raw.write(upgrade_request("/slow", &[]).as_bytes()).await;
        let res = raw.read_response().await;
        assert_eq!(res.status, 101, "{res:?}");
        let slow = within("slow connection handed over", slow_rx.recv())
            .await
            .expect("handler sent the slow client");
        eventually("every connection registered", || hub.len() == FAST + 1).await;
        Self {
            hub,
            slow,
            raw,
            readers,
        }
    }

    /// Asserts that the slow connection's queue is within its bound.
    fn assert_bounded(&self, step: u32) {
        let buffered = self.slow.buffered_amount();
        assert!(
            buffered <= MAX + MAX_HEADER,
            "step {step}: {buffered} bytes queued for the slow client, bound {MAX}"
        );
    }

    /// Lets the connection drivers run until the slow connection's queue is
    /// empty, or for a bounded number of turns if it stays full (its peer's
    /// TCP window is shut). One `yield_now` is not enough: the scheduler may
    /// resume the test before it has polled every one of the 101 drivers.
    async fn settle(&self) {
        for _ in 0..SETTLE_TURNS {
            if self.slow.buffered_amount() == 0 {
                break;
            }
            tokio::task::yield_now().await;
        }
    }

    /// Ends the fast clients with `done` and checks that each received
    /// broadcasts `0..broadcasts`, in order, once each.
    async fn check_fast_clients(self, broadcasts: u32) {
        assert_eq!(
            self.hub.broadcast_except(self.slow.id(), "done"),
            FAST,
            "every fast client is still connected"
        );
        let expected: Vec<u32> = (0..broadcasts).collect();
        for (i, reader) in self.readers.into_iter().enumerate() {
            let got = within("fast client reads everything", reader)
                .await
                .expect("reader task");
            assert!(
                got == expected,
                "fast client {i} got {} broadcasts, expected {broadcasts} in order",
                got.len()
            );
        }
    }
}

/// Reads binary broadcasts until the text `done`, returning their numbers.
async fn read_broadcasts(mut ws: Tungstenite) -> Vec<u32> {
    let mut got = Vec::new();
    loop {
        match within("fast client reads", ws.next()).await {
            Some(Ok(Message::Binary(b))) if b.len() == BROADCAST_LEN => got.push(number(&b)),
            Some(Ok(Message::Text(t))) if t.as_str() == "done" => return got,
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("fast client: unexpected {other:?}"),
        }
    }
}

/// A binary message of `len` bytes starting with the big-endian `n`.
fn numbered(n: u32, len: usize) -> Vec<u8> {
    let mut payload = vec![0xa5; len];
    payload[..4].copy_from_slice(&n.to_be_bytes());
    payload
}

fn number(payload: &[u8]) -> u32 {
    u32::from_be_bytes(payload[..4].try_into().expect("4 bytes"))
}

#[tokio::test]
async fn slow_client_is_refused_at_the_bound_and_closed_while_fast_clients_get_everything() {
    let f = Fixture::new(SlowClient::Close).await;
    let mut broadcasts = 0;
    let mut refused = None;
    for step in 0..MAX_STEPS {
        // A broadcast that did not fit would trip the policy itself; the
        // test wants the direct send to meet the bound, so it holds back.
        if f.slow.buffered_amount() + BROADCAST_FRAME <= MAX {
            let reached = f.hub.broadcast(numbered(broadcasts, BROADCAST_LEN));
            assert_eq!(reached, FAST + 1, "step {step}: broadcast reached");
            broadcasts += 1;
            f.assert_bounded(step);
            f.settle().await;
        }
        match f.slow.try_send(numbered(step, BIG_LEN)) {
            Ok(()) => {}
            Err(SendError::Backpressure) => {
                refused = Some(step);
                break;
            }
            Err(e) => panic!("step {step}: unexpected {e:?}"),
        }
        f.assert_bounded(step);
        f.settle().await;
    }
    let step = refused.expect("the slow client's send was never refused");
    // The policy queued its close frame behind what was already being
    // written; only that frame may exceed the bound.
    let buffered = f.slow.buffered_amount();
    assert!(
        buffered <= MAX + MAX_HEADER + MAX_CLOSE_FRAME,
        "{buffered} bytes queued once the slow client was refused at step {step}"
    );
    assert_eq!(
        f.slow.try_send(vec![0; 16]),
        Err(SendError::Closed),
        "a refused client is being closed"
    );

    // The slow client never answers the close: the close timeout ends it.
    let refused_at = tokio::time::Instant::now();
    eventually("slow connection ends", || f.slow.disconnect().is_some()).await;
    assert_eq!(f.slow.disconnect(), Some(Disconnect::TimedOut));
    let waited = refused_at.elapsed();
    assert!(
        waited < Duration::from_secs(3),
        "ended {waited:?} after the refusal, close timeout 1 s"
    );
    assert_eq!(f.slow.state(), ReadyState::Closed);
    let id = f.slow.id();
    eventually("hub forgets the slow client", || f.hub.get(id).is_none()).await;
    assert_eq!(f.hub.len(), FAST);
    f.check_fast_clients(broadcasts).await;
}

#[tokio::test]
async fn slow_client_drop_policy_drops_at_the_bound_and_recovers_when_it_reads() {
    let mut f = Fixture::new(SlowClient::Drop).await;
    let mut broadcasts = 0;
    let mut sent = 0;
    let mut drops_after_first = None;
    for step in 0..MAX_STEPS {
        // Under this policy a broadcast that does not fit is dropped for
        // the slow client only.
        let reached = f.hub.broadcast(numbered(broadcasts, BROADCAST_LEN));
        assert!(
            reached == FAST + 1 || reached == FAST,
            "step {step}: broadcast reached {reached}"
        );
        broadcasts += 1;
        f.assert_bounded(step);
        f.settle().await;
        match f.slow.try_send(numbered(sent, BIG_LEN)) {
            Ok(()) => sent += 1,
            Err(SendError::Dropped) => {
                // Keep going a while to show the connection stays open.
                let left = drops_after_first.get_or_insert(20);
                *left -= 1;
                if *left == 0 {
                    break;
                }
            }
            Err(e) => panic!("step {step}: unexpected {e:?}"),
        }
        assert_eq!(f.slow.state(), ReadyState::Open, "step {step}");
        f.assert_bounded(step);
        f.settle().await;
    }
    assert!(drops_after_first.is_some(), "no send was ever dropped");
    assert!(f.slow.dropped() >= 20, "dropped: {}", f.slow.dropped());
    assert_eq!(f.slow.state(), ReadyState::Open);

    // The slow client reads again: everything accepted arrives, in order,
    // and then a message sent once the queue has drained.
    let mut big = Vec::new();
    let mut small = Vec::new();
    let mut after_queued = false;
    loop {
        // Whatever is still queued will reach the client, so a read only
        // waits while something is on its way.
        if !after_queued && f.slow.buffered_amount() == 0 {
            f.slow.try_send("after").expect("send once drained");
            after_queued = true;
        }
        let frame = f.raw.read_frame().await;
        assert!(frame.fin, "{frame:?}");
        match (frame.opcode, frame.payload.len()) {
            (0x2, BIG_LEN) => big.push(number(&frame.payload)),
            (0x2, BROADCAST_LEN) => small.push(number(&frame.payload)),
            (0x1, _) if frame.payload == b"after" => break,
            _ => panic!("slow client: unexpected {frame:?}"),
        }
    }
    assert_eq!(big, (0..sent).collect::<Vec<_>>(), "every accepted send");
    assert!(
        small.windows(2).all(|w| w[0] < w[1]),
        "broadcasts in order: {small:?}"
    );
    assert!(!small.is_empty());

    // It still works both ways.
    f.raw.write(&frame(0x1, b"still there?", Some(MASK))).await;
    let echo = f.raw.read_frame().await;
    assert_eq!(
        (echo.opcode, &echo.payload[..]),
        (0x1, &b"still there?"[..])
    );
    assert_eq!(f.slow.state(), ReadyState::Open);
    f.check_fast_clients(broadcasts).await;
}
