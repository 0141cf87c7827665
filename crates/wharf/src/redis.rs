//! A [`Backplane`] on Redis pub/sub (feature `redis`): rooms, broadcasts
//! and presence shared by every node that points at the same Redis.
//!
//! # Channels and envelope
//! One channel per room (`<prefix>room:<name>`), subscribed only while this
//! node has a local member; one for broadcasts (`<prefix>all`); one per node
//! (`<prefix>node:<number>`) for sends to one of its connections
//! ([`crate::Hub::send_to`]) and its liveness probe. A message crosses Redis
//! once per publish, in an envelope of 26 bytes before the payload:
//!
//! ```text
//! version (1) │ kind (1: text 0, binary 1, probe 2, direct text 3,
//! direct binary 4) │ origin node (8) │ sequence (8) │ previous sequence on
//! this channel (8, 0: unknown) │ payload (direct: the connection id (8),
//! then the message)
//! ```
//!
//! # Node numbers
//! A node's number (in the high bits of its connection ids) is drawn at
//! random from 1 to 65,535 when the backplane is made, or set
//! ([`Redis::node_number`]). The node claims it in Redis
//! (`<prefix>number:<n>`, held for twice the presence TTL and refreshed
//! with presence); a number another live node holds is logged as an error
//! (ids may then collide: set distinct numbers).
//!
//! A node skips its own messages (it delivered them at once). Per origin
//! and channel, a sequence not above the last one seen is a duplicate
//! (dropped); a `previous` that is not the last one seen is a gap (the bus
//! lost messages: counted). Redis pub/sub is at most once: nothing is
//! replayed after an outage.
//!
//! # Faults
//! One task per backplane owns the two connections (a subscriber and a
//! multiplexed one for publishes and presence). Publishes go to it through
//! a queue bounded in messages and bytes; while the link is down, or the
//! queue is full, they are dropped and counted, never waited for. After any
//! error the task reconnects (at once, then every [`RETRY`]) and subscribes
//! again to every room the node serves. A probe published to the node's own
//! channel every 250 ms must come back within [`PROBE_TIMEOUT`], or the
//! subscription is taken as stale (a connection that fails silently, while
//! commands still work) and reconnected: delivery resumes within 2 s.
//!
//! # Presence
//! A hash per room (`<prefix>presence:<room>`): one field per node, its
//! local member count and an expiry (wall-clock milliseconds), refreshed
//! on every change and every `presence_ttl / 3`; the key itself expires
//! after twice the TTL. A node that dies without leaving drops out of every
//! count within `presence_ttl` (nodes' clocks are assumed to agree to well
//! under a second).
//!
//! Member lists: a hash per room and node (`<prefix>members:<room>:<node
//! id>`), each member's connection id and name ([`crate::Hub::set_member_name`]),
//! written as members come and go (only what changed) and kept for twice
//! the TTL, renewed with the count: a refresh is one pipeline per node
//! (per 256 rooms), whatever the number of members. [`crate::Hub::presence`]
//! reads the lists of the nodes whose count has not expired.
//!
//! Dead nodes: at every refresh a node also reads the count hash of each
//! room it serves. A node seen there alive whose expiry passes without it
//! leaving (a node that leaves deletes its field) is dead: its member list
//! (still kept: twice the TTL) is read once and handed to the hub as a
//! [`crate::Departure`], for this node to tell its own members. Each node
//! reports each dead node once per room, to its own members: every
//! surviving member hears of each departure once, within `presence_ttl`
//! and a refresh of the death, with no election. A node judges no other
//! for `presence_ttl / 3 + 500 ms` after its own link comes back (the
//! others may not have refreshed yet after a Redis outage). Fields expired
//! for twice the TTL are deleted by whoever sees them.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::hash::{BuildHasher as _, Hasher as _, RandomState};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{BufMut as _, Bytes, BytesMut};
use futures_util::StreamExt as _;
use tokio::sync::{Notify, mpsc};
use wharf_proto::{Message, Utf8Bytes};

use crate::hub::backplane::{Backplane, Inbox, Link, Status, Target, node_of};
use crate::hub::{Departure, Member};

/// How long the task waits between two connection attempts.
pub const RETRY: Duration = Duration::from_millis(250);
/// How long a probe may take to come back before the link is taken as
/// stale.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// The most messages waiting for the bus; more are dropped.
pub const QUEUE_MESSAGES: usize = 8192;
/// The most payload bytes waiting for the bus; more are dropped.
pub const QUEUE_BYTES: usize = 8 << 20;

const PROBE_EVERY: Duration = Duration::from_millis(250);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
const QUERY_TIMEOUT: Duration = Duration::from_millis(500);
const BATCH: usize = 256;
const VERSION: u8 = 1;
const HEADER: usize = 26;
const KIND_TEXT: u8 = 0;
const KIND_BINARY: u8 = 1;
const KIND_PROBE: u8 = 2;
const KIND_DIRECT_TEXT: u8 = 3;
const KIND_DIRECT_BINARY: u8 = 4;
/// Past this many (channel, origin) pairs remembered, the sequence tables
/// start over (a gap then goes unseen once; nothing is delivered twice
/// that Redis did not send twice).
const MAX_TRACKED: usize = 65_536;

/// A Redis backplane; give it to [`crate::Server::backplane`] (inside a
/// tokio runtime: attaching it starts its task).
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let redis = wharf::redis::Redis::open("redis://127.0.0.1:6379/0")?.prefix("chat:");
/// let server = wharf::Server::new().backplane(std::sync::Arc::new(redis));
/// # let _ = server; Ok(()) }
/// ```
pub struct Redis {
    shared: Arc<Shared>,
}

struct Shared {
    client: ::redis::Client,
    prefix: String,
    presence_ttl: Duration,
    /// This node's id on the bus (the origin of its envelopes).
    node: u64,
    /// This node's number in connection ids.
    number: u16,
    tx: mpsc::Sender<Out>,
    rx: Mutex<Option<mpsc::Receiver<Out>>>,
    queued_bytes: AtomicUsize,
    rooms: Mutex<Rooms>,
    changed: Notify,
    up: AtomicBool,
    link: Mutex<Link>,
    query: Mutex<Option<::redis::aio::MultiplexedConnection>>,
    inbox: OnceLock<Inbox>,
    published: AtomicU64,
    received: AtomicU64,
    dropped: AtomicU64,
    gaps: AtomicU64,
    duplicates: AtomicU64,
    reconnects: AtomicU64,
    /// A node number clash was logged.
    clash: AtomicBool,
}

#[derive(Default)]
struct Rooms {
    /// Local member counts of the rooms this node serves.
    local: HashMap<String, usize>,
    /// Rooms whose subscription or presence the task has to bring up to
    /// date.
    dirty: HashSet<String>,
}

/// A message on its way to the bus.
struct Out {
    to: Dest,
    message: Message,
}

/// Where an [`Out`] goes.
enum Dest {
    /// Every node (a broadcast).
    All,
    /// The node holding this connection id.
    Client(u64),
    /// A room's channel.
    Room(String),
}

impl Redis {
    /// A backplane for the Redis at `url` (`redis://host:port/db`;
    /// `rediss://` for TLS needs the feature `redis-tls`). Nothing is
    /// connected before it is attached to a hub.
    ///
    /// # Errors
    /// If `url` is not a Redis URL this build can use.
    pub fn open(url: &str) -> Result<Self, ::redis::RedisError> {
        let client = ::redis::Client::open(url)?;
        let (tx, rx) = mpsc::channel(QUEUE_MESSAGES);
        let node = node_id();
        Ok(Self {
            shared: Arc::new(Shared {
                client,
                prefix: "wharf:".to_owned(),
                presence_ttl: Duration::from_secs(6),
                node,
                // 1 to 65,535.
                number: u16::try_from(node % 65_535).unwrap_or(0) + 1,
                tx,
                rx: Mutex::new(Some(rx)),
                queued_bytes: AtomicUsize::new(0),
                rooms: Mutex::new(Rooms::default()),
                changed: Notify::new(),
                up: AtomicBool::new(false),
                link: Mutex::new(Link::Down("not connected yet".to_owned())),
                query: Mutex::new(None),
                inbox: OnceLock::new(),
                published: AtomicU64::new(0),
                received: AtomicU64::new(0),
                dropped: AtomicU64::new(0),
                gaps: AtomicU64::new(0),
                duplicates: AtomicU64::new(0),
                reconnects: AtomicU64::new(0),
                clash: AtomicBool::new(false),
            }),
        })
    }

    /// The prefix of every channel and key [default: `wharf:`]: nodes that
    /// share rooms use the same one; different apps on one Redis use
    /// different ones. Has no effect once attached.
    #[must_use]
    pub fn prefix(mut self, prefix: &str) -> Self {
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            prefix.clone_into(&mut shared.prefix);
        }
        self
    }

    /// How long a node's presence lasts without a refresh [default: 6 s]:
    /// the bound on how long the members of a node that died stay in
    /// counts. Refreshed every third of it (at least every 100 ms). Has no
    /// effect once attached.
    #[must_use]
    pub fn presence_ttl(mut self, ttl: Duration) -> Self {
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            shared.presence_ttl = ttl.max(Duration::from_millis(300));
        }
        self
    }

    /// This node's number in connection ids (1 to 65,535) [default:
    /// random]: nodes on one Redis need distinct ones (a clash is logged as
    /// an error). 0 is taken as 1. Has no effect once attached.
    #[must_use]
    pub fn node_number(mut self, number: u16) -> Self {
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            shared.number = number.max(1);
        }
        self
    }

    /// This node's id on the bus, in its envelopes (random at start).
    pub fn origin(&self) -> u64 {
        self.shared.node
    }
}

impl Redis {
    /// Queues `out` for the task, or drops and counts it: the link is
    /// down, or the queue full.
    fn enqueue(&self, out: Out) {
        let shared = &self.shared;
        let len = out.message.len();
        let queued = shared.queued_bytes.fetch_add(len, Ordering::Relaxed);
        if !shared.up.load(Ordering::Relaxed)
            || queued + len > QUEUE_BYTES
            || shared.tx.try_send(out).is_err()
        {
            shared.queued_bytes.fetch_sub(len, Ordering::Relaxed);
            shared.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Backplane for Redis {
    fn attach(&self, inbox: Inbox) {
        if self.shared.inbox.set(inbox).is_err() {
            return;
        }
        let Some(rx) = lock(&self.shared.rx).take() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(run(self.shared.clone(), rx));
            }
            Err(_) => {
                tracing::error!("the Redis backplane was attached outside a tokio runtime");
                *lock(&self.shared.link) = Link::Down("not started: no tokio runtime".to_owned());
            }
        }
    }

    fn room_changed(&self, room: &str, local: usize) {
        let mut rooms = lock(&self.shared.rooms);
        if local == 0 {
            rooms.local.remove(room);
        } else {
            rooms.local.insert(room.to_owned(), local);
        }
        rooms.dirty.insert(room.to_owned());
        drop(rooms);
        self.shared.changed.notify_one();
    }

    fn forward(&self, target: Target<'_>, message: &Message) {
        let to = match target {
            Target::Room(room) => Dest::Room(room.to_owned()),
            Target::All => Dest::All,
        };
        self.enqueue(Out {
            to,
            message: message.clone(),
        });
    }

    fn node(&self) -> u16 {
        self.shared.number
    }

    fn send_to(&self, id: u64, message: &Message) {
        self.enqueue(Out {
            to: Dest::Client(id),
            message: message.clone(),
        });
    }

    fn online(&self, room: &str) -> Pin<Box<dyn Future<Output = Option<usize>> + Send + 'static>> {
        let shared = self.shared.clone();
        let room = room.to_owned();
        Box::pin(async move {
            let mut conn = lock(&shared.query).clone()?;
            let key = format!("{}presence:{room}", shared.prefix);
            let fields: HashMap<String, String> = tokio::time::timeout(
                QUERY_TIMEOUT,
                ::redis::cmd("HGETALL").arg(&key).query_async(&mut conn),
            )
            .await
            .ok()?
            .ok()?;
            let me = format!("{:016x}", shared.node);
            let now = now_ms();
            let others: usize = fields
                .iter()
                .filter(|(node, _)| **node != me)
                .filter_map(|(_, value)| parse_presence(value))
                .filter(|&(_, expiry)| expiry > now)
                .map(|(count, _)| count)
                .sum();
            // This node's own count is exact here, whatever Redis holds.
            let local = shared.inbox.get().map_or(0, |i| i.room_len(&room));
            Some(others + local)
        })
    }

    fn presence(
        &self,
        room: &str,
    ) -> Pin<Box<dyn Future<Output = Option<Vec<Member>>> + Send + 'static>> {
        let shared = self.shared.clone();
        let room = room.to_owned();
        Box::pin(async move {
            let mut conn = lock(&shared.query).clone()?;
            let query = async {
                let key = format!("{}presence:{room}", shared.prefix);
                let fields: HashMap<String, String> = ::redis::cmd("HGETALL")
                    .arg(&key)
                    .query_async(&mut conn)
                    .await?;
                let me = format!("{:016x}", shared.node);
                let now = now_ms();
                let live: Vec<&String> = fields
                    .iter()
                    .filter(|(node, value)| {
                        **node != me && parse_presence(value).is_some_and(|(_, exp)| exp > now)
                    })
                    .map(|(node, _)| node)
                    .collect();
                if live.is_empty() {
                    return Ok(Vec::new());
                }
                let mut pipe = ::redis::pipe();
                for node in &live {
                    pipe.cmd("HGETALL")
                        .arg(members_key(&shared.prefix, &room, node));
                }
                let lists: Vec<HashMap<String, String>> = pipe.query_async(&mut conn).await?;
                Ok::<_, ::redis::RedisError>(lists.into_iter().flat_map(parse_members).collect())
            };
            tokio::time::timeout(QUERY_TIMEOUT, query).await.ok()?.ok()
        })
    }

    fn status(&self) -> Status {
        let s = &self.shared;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Status {
            link: Some(lock(&s.link).clone()),
            published: get(&s.published),
            received: get(&s.received),
            dropped: get(&s.dropped),
            gaps: get(&s.gaps),
            duplicates: get(&s.duplicates),
            reconnects: get(&s.reconnects),
        }
    }
}

impl fmt::Debug for Redis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redis")
            .field("node", &format_args!("{:016x}", self.shared.node))
            .field("prefix", &self.shared.prefix)
            .field("status", &self.status())
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every update under these locks is a single assignment or insertion.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A random node id: the standard library's per-process random hasher
/// keys, mixed with the clock and the process id.
fn node_id() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    h.finish().max(1)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Queues this node's count of a room's members in its presence hash, with
/// the count's expiry, and keeps the hash for twice the TTL.
fn set_count(
    pipe: &mut ::redis::Pipeline,
    key: &str,
    field: &str,
    n: usize,
    expiry: u64,
    ttl: u64,
) {
    pipe.cmd("HSET")
        .arg(key)
        .arg(field)
        .arg(format!("{n} {expiry}"))
        .ignore()
        .cmd("PEXPIRE")
        .arg(key)
        .arg(ttl * 2)
        .ignore();
}

/// The key of `node`'s member list of `room`.
fn members_key(prefix: &str, room: &str, node: &str) -> String {
    format!("{prefix}members:{room}:{node}")
}

/// A member list as read from Redis (fields that are not ids skipped).
fn parse_members(list: HashMap<String, String>) -> Vec<Member> {
    list.into_iter()
        .filter_map(|(id, name)| {
            Some(Member {
                id: id.parse().ok()?,
                name,
            })
        })
        .collect()
}

/// What the task knows of presence, across sessions.
#[derive(Default)]
struct Watch {
    /// This node's member lists as written to Redis in this session, per
    /// room (cleared on every new connection: written again in full).
    written: HashMap<String, HashMap<u64, String>>,
    /// Per room this node serves, the other nodes seen alive in it.
    alive: HashMap<String, HashSet<String>>,
    /// When the link last came up: no node is judged dead before
    /// [`Watch::settled`].
    since: Option<Instant>,
}

impl Watch {
    fn settled(&self, ttl: Duration) -> bool {
        self.since
            .is_some_and(|t| t.elapsed() >= ttl / 3 + Duration::from_millis(500))
    }
}

/// A presence field's value: `count expiry_ms`.
fn parse_presence(value: &str) -> Option<(usize, u64)> {
    let (count, expiry) = value.split_once(' ')?;
    Some((count.parse().ok()?, expiry.parse().ok()?))
}

/// Encodes an envelope (see the module docs).
fn envelope(kind: u8, origin: u64, seq: u64, prev: u64, payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(HEADER + payload.len());
    b.put_u8(VERSION);
    b.put_u8(kind);
    b.put_u64(origin);
    b.put_u64(seq);
    b.put_u64(prev);
    b.put_slice(payload);
    b.freeze()
}

/// A decoded envelope header and its payload.
#[derive(Debug, Eq, PartialEq)]
struct Envelope<'a> {
    kind: u8,
    origin: u64,
    seq: u64,
    prev: u64,
    payload: &'a [u8],
}

fn open_envelope(b: &[u8]) -> Option<Envelope<'_>> {
    if b.len() < HEADER || b[0] != VERSION || b[1] > KIND_DIRECT_BINARY {
        return None;
    }
    let word = |i: usize| {
        let mut w = [0; 8];
        w.copy_from_slice(&b[i..i + 8]);
        u64::from_be_bytes(w)
    };
    Some(Envelope {
        kind: b[1],
        origin: word(2),
        seq: word(10),
        prev: word(18),
        payload: &b[HEADER..],
    })
}

/// What a sequence number says about a message from one origin on one
/// channel.
#[derive(Debug, Eq, PartialEq)]
enum Order {
    Duplicate,
    Gap,
    Next,
}

/// The last sequence seen per channel and origin.
#[derive(Default)]
struct Seen {
    last: HashMap<String, HashMap<u64, u64>>,
    len: usize,
}

impl Seen {
    fn check(&mut self, channel: &str, origin: u64, seq: u64, prev: u64) -> Order {
        if self.len >= MAX_TRACKED {
            self.last.clear();
            self.len = 0;
        }
        let per_origin = match self.last.get_mut(channel) {
            Some(m) => m,
            None => self.last.entry(channel.to_owned()).or_default(),
        };
        let last = per_origin.get(&origin).copied();
        match last {
            Some(last) if seq <= last => return Order::Duplicate,
            None => self.len += 1,
            Some(_) => {}
        }
        per_origin.insert(origin, seq);
        match last {
            Some(last) if prev != 0 && prev != last => Order::Gap,
            _ => Order::Next,
        }
    }

    fn forget(&mut self, channel: &str) {
        if let Some(m) = self.last.remove(channel) {
            self.len -= m.len();
        }
    }
}

/// The publisher's side of the sequences: the last number sent per
/// channel (bounded like [`Seen`]; a forgotten channel sends `prev` 0).
#[derive(Default)]
struct Sent {
    seq: u64,
    last: HashMap<String, u64>,
}

impl Sent {
    fn next(&mut self, channel: &str) -> (u64, u64) {
        self.seq += 1;
        if self.last.len() >= MAX_TRACKED {
            self.last.clear();
        }
        let prev = match self.last.get_mut(channel) {
            Some(last) => std::mem::replace(last, self.seq),
            None => {
                self.last.insert(channel.to_owned(), self.seq);
                0
            }
        };
        (self.seq, prev)
    }
}

/// The backplane's task: connect, serve, and reconnect after any failure,
/// until the hub is gone.
async fn run(shared: Arc<Shared>, mut rx: mpsc::Receiver<Out>) {
    let mut seen = Seen::default();
    let mut sent = Sent::default();
    let mut watch = Watch::default();
    let mut connected_before = false;
    let mut logged_down = false;
    loop {
        if !shared.inbox.get().is_some_and(Inbox::is_open) {
            return;
        }
        let reason = session(
            &shared,
            &mut rx,
            &mut seen,
            &mut sent,
            &mut watch,
            &mut connected_before,
        )
        .await;
        let was_up = shared.up.swap(false, Ordering::SeqCst);
        *lock(&shared.query) = None;
        // What was queued for a link that failed is lost: counted.
        while let Ok(out) = rx.try_recv() {
            shared
                .queued_bytes
                .fetch_sub(out.message.len(), Ordering::Relaxed);
            shared.dropped.fetch_add(1, Ordering::Relaxed);
        }
        if was_up || !logged_down {
            tracing::warn!(%reason, "Redis backplane down: cross-node messages are dropped until it is back");
            logged_down = true;
        }
        *lock(&shared.link) = Link::Down(reason);
        // A link that worked is tried again at once (a stale subscription
        // is back within the probe's bound); failures then wait.
        if !was_up {
            tokio::time::sleep(RETRY).await;
        }
    }
}

/// One connection's life: returns why it ended.
async fn session(
    shared: &Arc<Shared>,
    rx: &mut mpsc::Receiver<Out>,
    seen: &mut Seen,
    sent: &mut Sent,
    watch: &mut Watch,
    connected_before: &mut bool,
) -> String {
    let connect = async {
        let pubsub = shared.client.get_async_pubsub().await?;
        let conn = shared.client.get_multiplexed_async_connection().await?;
        Ok::<_, ::redis::RedisError>((pubsub, conn))
    };
    let (pubsub, mut conn) = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return format!("cannot connect to Redis: {e}"),
        Err(_) => return "cannot connect to Redis: timed out".to_owned(),
    };
    let (mut sink, mut stream) = pubsub.split();
    let names = Names::new(shared);
    let fixed = [names.own.clone(), names.all.clone()];
    if let Err(e) = timed(sink.subscribe(&fixed[..])).await {
        return format!("cannot subscribe: {e}");
    }
    // Every room this node serves, subscribed again on every connection:
    // the bus forgot them with the old one.
    let mut subscribed: HashSet<String> = HashSet::new();
    {
        let mut rooms = lock(&shared.rooms);
        let Rooms { local, dirty } = &mut *rooms;
        dirty.extend(local.keys().cloned());
    }
    watch.written.clear();
    watch.since = None;
    if let Err(e) = reconcile(shared, &mut sink, &mut conn, &mut subscribed, seen, watch).await {
        return e;
    }
    if let Err(e) = claim_number(shared, &mut conn).await {
        return e;
    }
    *lock(&shared.query) = Some(conn.clone());
    *lock(&shared.link) = Link::Up;
    shared.up.store(true, Ordering::SeqCst);
    watch.since = Some(Instant::now());
    if std::mem::replace(connected_before, true) {
        shared.reconnects.fetch_add(1, Ordering::Relaxed);
        tracing::info!("Redis backplane back: rooms subscribed again");
    } else {
        tracing::info!(node = %format_args!("{:016x}", shared.node), "Redis backplane up");
    }
    let refresh = (shared.presence_ttl / 3).max(Duration::from_millis(100));
    let mut probe = tokio::time::interval(PROBE_EVERY);
    let mut heartbeat = tokio::time::interval(refresh);
    let mut probe_back = Instant::now();
    let mut probes = 0u64;
    loop {
        // What arrives first: reading keeps Redis' output buffer for this
        // subscriber short, and the probe's echo is seen before the probe
        // is judged.
        tokio::select! {
            biased;
            msg = stream.next() => {
                let Some(msg) = msg else {
                    return "the subscription connection closed".to_owned();
                };
                receive(shared, seen, &names, msg.get_channel_name(), msg.get_payload_bytes(), &mut probe_back);
            }
            out = rx.recv() => {
                let Some(out) = out else { return "backplane closed".to_owned() };
                if let Err(e) = publish(shared, rx, sent, &names, &mut conn, out).await {
                    return e;
                }
            }
            () = shared.changed.notified() => {
                if let Err(e) = reconcile(shared, &mut sink, &mut conn, &mut subscribed, seen, watch).await {
                    return e;
                }
            }
            _ = probe.tick() => {
                if !shared.inbox.get().is_some_and(Inbox::is_open) {
                    return "hub closed".to_owned();
                }
                if probe_back.elapsed() > PROBE_TIMEOUT {
                    return format!("liveness probe: no answer from Redis in {} s", PROBE_TIMEOUT.as_secs());
                }
                probes += 1;
                let env = envelope(KIND_PROBE, shared.node, probes, 0, b"");
                let cmd = ::redis::cmd("PUBLISH").arg(&names.own).arg(&env[..]).to_owned();
                if let Err(e) = timed(cmd.query_async::<()>(&mut conn)).await {
                    return format!("probe: {e}");
                }
            }
            _ = heartbeat.tick() => {
                if let Err(e) = refresh_presence(shared, &mut conn, watch).await {
                    return e;
                }
                if let Err(e) = claim_number(shared, &mut conn).await {
                    return e;
                }
            }
        }
    }
}

/// Awaits a Redis command under [`COMMAND_TIMEOUT`].
async fn timed<T>(f: impl Future<Output = ::redis::RedisResult<T>>) -> Result<T, String> {
    match tokio::time::timeout(COMMAND_TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("Redis did not answer in time".to_owned()),
    }
}

/// The channel names of one prefix.
struct Names {
    /// Broadcasts.
    all: String,
    /// This node's own channel: direct sends, probes.
    own: String,
    /// Before a node's number.
    node: String,
    /// Before a room's name.
    room: String,
}

impl Names {
    fn new(shared: &Shared) -> Self {
        let p = &shared.prefix;
        Self {
            all: format!("{p}all"),
            own: format!("{p}node:{}", shared.number),
            node: format!("{p}node:"),
            room: format!("{p}room:"),
        }
    }

    fn of(&self, to: &Dest) -> String {
        match to {
            Dest::All => self.all.clone(),
            Dest::Client(id) => format!("{}{}", self.node, node_of(*id)),
            Dest::Room(room) => format!("{}{room}", self.room),
        }
    }
}

/// What a message from the bus is for.
enum Inward<'a> {
    Client(u64),
    Target(Target<'a>),
}

/// Handles one message from the bus.
fn receive(
    shared: &Shared,
    seen: &mut Seen,
    names: &Names,
    channel: &str,
    payload: &[u8],
    probe_back: &mut Instant,
) {
    // Anything that arrives shows the subscription alive, not only the
    // probe: under load the probe's echo may wait behind other messages,
    // and a busy link must not be taken for a stale one.
    *probe_back = Instant::now();
    let Some(env) = open_envelope(payload) else {
        tracing::debug!(channel, "not a wharf envelope: ignored");
        return;
    };
    if env.origin == shared.node {
        return;
    }
    if env.kind == KIND_PROBE {
        return;
    }
    let direct = matches!(env.kind, KIND_DIRECT_TEXT | KIND_DIRECT_BINARY);
    let (to, payload) = if channel == names.own && direct && env.payload.len() >= 8 {
        let (id, rest) = env.payload.split_at(8);
        let mut word = [0; 8];
        word.copy_from_slice(id);
        (Inward::Client(u64::from_be_bytes(word)), rest)
    } else if direct {
        return;
    } else if channel == names.all {
        (Inward::Target(Target::All), env.payload)
    } else if let Some(room) = channel.strip_prefix(&names.room) {
        (Inward::Target(Target::Room(room)), env.payload)
    } else {
        return;
    };
    match seen.check(channel, env.origin, env.seq, env.prev) {
        Order::Duplicate => {
            shared.duplicates.fetch_add(1, Ordering::Relaxed);
            return;
        }
        Order::Gap => {
            shared.gaps.fetch_add(1, Ordering::Relaxed);
        }
        Order::Next => {}
    }
    let body = Bytes::copy_from_slice(payload);
    let message = if matches!(env.kind, KIND_TEXT | KIND_DIRECT_TEXT) {
        match Utf8Bytes::try_from(body) {
            Ok(text) => Message::Text(text),
            Err(_) => return,
        }
    } else {
        Message::Binary(body)
    };
    if let Some(inbox) = shared.inbox.get() {
        match to {
            Inward::Target(target) => {
                inbox.deliver(target, message);
            }
            Inward::Client(id) => {
                // Gone since it was addressed: nothing to do.
                inbox.send_to(id, message);
            }
        }
        shared.received.fetch_add(1, Ordering::Relaxed);
    }
}

/// Sends `first` and whatever else waits (up to [`BATCH`]) in one
/// pipeline, in queue order.
async fn publish(
    shared: &Shared,
    rx: &mut mpsc::Receiver<Out>,
    sent: &mut Sent,
    names: &Names,
    conn: &mut ::redis::aio::MultiplexedConnection,
    first: Out,
) -> Result<(), String> {
    let mut pipe = ::redis::pipe();
    let mut n = 0u64;
    let mut next = Some(first);
    while let Some(out) = next.take() {
        shared
            .queued_bytes
            .fetch_sub(out.message.len(), Ordering::Relaxed);
        let channel = names.of(&out.to);
        let (seq, prev) = sent.next(&channel);
        let text = out.message.as_text().is_some();
        let env = match out.to {
            Dest::Client(id) => {
                let kind = if text {
                    KIND_DIRECT_TEXT
                } else {
                    KIND_DIRECT_BINARY
                };
                let mut body = Vec::with_capacity(8 + out.message.len());
                body.extend_from_slice(&id.to_be_bytes());
                body.extend_from_slice(out.message.as_bytes());
                envelope(kind, shared.node, seq, prev, &body)
            }
            Dest::All | Dest::Room(_) => {
                let kind = if text { KIND_TEXT } else { KIND_BINARY };
                envelope(kind, shared.node, seq, prev, out.message.as_bytes())
            }
        };
        pipe.cmd("PUBLISH").arg(channel).arg(&env[..]).ignore();
        n += 1;
        if n < BATCH as u64 {
            next = rx.try_recv().ok();
        }
    }
    match timed(pipe.query_async::<()>(conn)).await {
        Ok(()) => {
            shared.published.fetch_add(n, Ordering::Relaxed);
            Ok(())
        }
        Err(e) => {
            shared.dropped.fetch_add(n, Ordering::Relaxed);
            Err(format!("publish: {e}"))
        }
    }
}

/// Brings the subscriptions and presence of the rooms marked dirty up to
/// date.
async fn reconcile(
    shared: &Shared,
    sink: &mut ::redis::aio::PubSubSink,
    conn: &mut ::redis::aio::MultiplexedConnection,
    subscribed: &mut HashSet<String>,
    seen: &mut Seen,
    watch: &mut Watch,
) -> Result<(), String> {
    let changes: Vec<(String, usize)> = {
        let mut rooms = lock(&shared.rooms);
        let Rooms { local, dirty } = &mut *rooms;
        dirty
            .drain()
            .map(|room| {
                let n = local.get(&room).copied().unwrap_or(0);
                (room, n)
            })
            .collect()
    };
    if changes.is_empty() {
        return Ok(());
    }
    let mut join = Vec::new();
    let mut part = Vec::new();
    let mut presence = ::redis::pipe();
    let field = format!("{:016x}", shared.node);
    let expiry = now_ms() + millis(shared.presence_ttl);
    for (room, n) in &changes {
        let channel = format!("{}room:{room}", shared.prefix);
        let key = format!("{}presence:{room}", shared.prefix);
        if *n > 0 {
            if subscribed.insert(channel.clone()) {
                join.push(channel);
            }
            set_count(
                &mut presence,
                &key,
                &field,
                *n,
                expiry,
                millis(shared.presence_ttl),
            );
            write_members(shared, &mut presence, watch, room, &field);
        } else {
            if subscribed.remove(&channel) {
                seen.forget(&channel);
                part.push(channel);
            }
            presence.cmd("HDEL").arg(&key).arg(&field).ignore();
            presence
                .cmd("DEL")
                .arg(members_key(&shared.prefix, room, &field))
                .ignore();
            watch.written.remove(room);
            watch.alive.remove(room);
        }
    }
    if !join.is_empty() {
        timed(sink.subscribe(&join[..]))
            .await
            .map_err(|e| format!("cannot subscribe: {e}"))?;
    }
    if !part.is_empty() {
        timed(sink.unsubscribe(&part[..]))
            .await
            .map_err(|e| format!("cannot unsubscribe: {e}"))?;
    }
    timed(presence.query_async::<()>(conn))
        .await
        .map_err(|e| format!("presence: {e}"))
}

/// Adds to `pipe` what brings this node's member list of `room` in Redis
/// up to date: only the changes since the last write in this session (all
/// of it, after clearing the key, on the first), and its expiry.
fn write_members(
    shared: &Shared,
    pipe: &mut ::redis::Pipeline,
    watch: &mut Watch,
    room: &str,
    field: &str,
) {
    let key = members_key(&shared.prefix, room, field);
    let now: HashMap<u64, String> = shared
        .inbox
        .get()
        .map(|i| i.local_presence(room))
        .unwrap_or_default()
        .into_iter()
        .map(|m| (m.id, m.name))
        .collect();
    let old = watch.written.remove(room);
    if old.is_none() {
        pipe.cmd("DEL").arg(&key).ignore();
    }
    let old = old.unwrap_or_default();
    let gone: Vec<u64> = old
        .keys()
        .filter(|id| !now.contains_key(id))
        .copied()
        .collect();
    if !gone.is_empty() {
        pipe.cmd("HDEL").arg(&key).arg(gone).ignore();
    }
    let mut set = ::redis::cmd("HSET");
    set.arg(&key);
    let mut changed = false;
    for (id, name) in &now {
        if old.get(id) != Some(name) {
            set.arg(*id).arg(name);
            changed = true;
        }
    }
    if changed {
        pipe.add_command(set).ignore();
    }
    pipe.cmd("PEXPIRE")
        .arg(&key)
        .arg(millis(shared.presence_ttl) * 2)
        .ignore();
    watch.written.insert(room.to_owned(), now);
}

/// Refreshes this node's presence in every room it serves, reads the
/// other nodes' there, and reports the members of the nodes found dead
/// (see the module docs).
async fn refresh_presence(
    shared: &Shared,
    conn: &mut ::redis::aio::MultiplexedConnection,
    watch: &mut Watch,
) -> Result<(), String> {
    let rooms: Vec<(String, usize)> = lock(&shared.rooms)
        .local
        .iter()
        .map(|(r, n)| (r.clone(), *n))
        .collect();
    watch
        .alive
        .retain(|room, _| rooms.iter().any(|(r, _)| r == room));
    if rooms.is_empty() {
        return Ok(());
    }
    let field = format!("{:016x}", shared.node);
    let now = now_ms();
    let ttl = millis(shared.presence_ttl);
    let expiry = now + ttl;
    let settled = watch.settled(shared.presence_ttl);
    // (room, node) pairs.
    let mut dead = Vec::new();
    let mut stale = Vec::new();
    for chunk in rooms.chunks(BATCH) {
        let mut pipe = ::redis::pipe();
        for (room, n) in chunk {
            let key = format!("{}presence:{room}", shared.prefix);
            set_count(&mut pipe, &key, &field, *n, expiry, ttl);
            pipe.cmd("PEXPIRE")
                .arg(members_key(&shared.prefix, room, &field))
                .arg(ttl * 2)
                .ignore()
                .cmd("HGETALL")
                .arg(&key);
        }
        let counts: Vec<HashMap<String, String>> = timed(pipe.query_async(conn))
            .await
            .map_err(|e| format!("presence: {e}"))?;
        for ((room, _), fields) in chunk.iter().zip(counts) {
            let alive = watch.alive.entry(room.clone()).or_default();
            for (node, value) in &fields {
                let Some((_, until)) = parse_presence(value).filter(|_| *node != field) else {
                    continue;
                };
                if until > now {
                    alive.insert(node.clone());
                    continue;
                }
                if until.saturating_add(ttl * 2) < now {
                    stale.push((room.clone(), node.clone()));
                }
                if settled && alive.remove(node) {
                    dead.push((room.clone(), node.clone()));
                }
            }
            // A node whose field is gone left the room as it should.
            alive.retain(|node| fields.contains_key(node));
        }
    }
    if dead.is_empty() && stale.is_empty() {
        return Ok(());
    }
    let mut pipe = ::redis::pipe();
    for (room, node) in &dead {
        pipe.cmd("HGETALL")
            .arg(members_key(&shared.prefix, room, node));
    }
    for (room, node) in &stale {
        pipe.cmd("HDEL")
            .arg(format!("{}presence:{room}", shared.prefix))
            .arg(node)
            .ignore();
    }
    let lists: Vec<HashMap<String, String>> = timed(pipe.query_async(conn))
        .await
        .map_err(|e| format!("presence: {e}"))?;
    for ((room, node), list) in dead.into_iter().zip(lists) {
        let mut members = parse_members(list);
        members.sort_unstable();
        tracing::info!(
            %room,
            %node,
            members = members.len(),
            "a node's presence expired without it leaving: its members left"
        );
        if let Some(inbox) = shared.inbox.get()
            && !members.is_empty()
        {
            inbox.departed(Departure::new(room, members));
        }
    }
    Ok(())
}

/// Claims (or keeps) this node's number; logs an error, once, if another
/// live node holds it.
async fn claim_number(
    shared: &Shared,
    conn: &mut ::redis::aio::MultiplexedConnection,
) -> Result<(), String> {
    let key = format!("{}number:{}", shared.prefix, shared.number);
    let me = format!("{:016x}", shared.node);
    let ttl = millis(shared.presence_ttl) * 2;
    let mut pipe = ::redis::pipe();
    pipe.cmd("SET")
        .arg(&key)
        .arg(&me)
        .arg("NX")
        .arg("PX")
        .arg(ttl)
        .ignore()
        .cmd("GET")
        .arg(&key);
    let (holder,): (Option<String>,) = timed(pipe.query_async(conn))
        .await
        .map_err(|e| format!("node number: {e}"))?;
    if holder.as_deref() == Some(me.as_str()) {
        return timed(
            ::redis::cmd("PEXPIRE")
                .arg(&key)
                .arg(ttl)
                .query_async::<()>(conn),
        )
        .await
        .map_err(|e| format!("node number: {e}"));
    }
    if !shared.clash.swap(true, Ordering::Relaxed) {
        tracing::error!(
            number = shared.number,
            "another node on this Redis has the same node number: connection ids may collide; give each node its own (redis-node-number)"
        );
    }
    Ok(())
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip_and_refuse_garbage() {
        let b = envelope(KIND_TEXT, 7, 9, 8, b"hi");
        assert_eq!(b.len(), HEADER + 2);
        assert_eq!(
            open_envelope(&b),
            Some(Envelope {
                kind: KIND_TEXT,
                origin: 7,
                seq: 9,
                prev: 8,
                payload: b"hi"
            })
        );
        assert_eq!(open_envelope(&b[..HEADER - 1]), None);
        let mut bad = b.to_vec();
        bad[0] = 2;
        assert_eq!(open_envelope(&bad), None);
        bad[0] = VERSION;
        bad[1] = 9;
        assert_eq!(open_envelope(&bad), None);
    }

    #[test]
    fn sequences_find_duplicates_and_gaps_per_channel_and_origin() {
        let mut sent = Sent::default();
        let mut seen = Seen::default();
        let a1 = sent.next("a");
        let b1 = sent.next("b");
        let a2 = sent.next("a");
        assert_eq!(a1, (1, 0));
        assert_eq!(b1, (2, 0));
        assert_eq!(a2, (3, 1));
        assert_eq!(seen.check("a", 5, a1.0, a1.1), Order::Next);
        assert_eq!(seen.check("a", 5, a2.0, a2.1), Order::Next);
        assert_eq!(seen.check("a", 5, a2.0, a2.1), Order::Duplicate);
        assert_eq!(seen.check("a", 6, a1.0, a1.1), Order::Next);
        // "b" first seen at its second message: no gap can be told.
        let b2 = sent.next("b");
        assert_eq!(seen.check("b", 5, b2.0, b2.1), Order::Next);
        let _lost = sent.next("a");
        let a4 = sent.next("a");
        assert_eq!(seen.check("a", 5, a4.0, a4.1), Order::Gap);
        seen.forget("a");
        assert_eq!(seen.check("a", 5, a4.0, a4.1), Order::Next);
    }

    #[test]
    fn member_lists_parse_and_skip_garbage() {
        let list = HashMap::from([
            ("7".to_owned(), "ann".to_owned()),
            ("x".to_owned(), "bad".to_owned()),
        ]);
        assert_eq!(
            parse_members(list),
            vec![Member {
                id: 7,
                name: "ann".to_owned()
            }]
        );
        assert_eq!(members_key("w:", "a:b", "00ff"), "w:members:a:b:00ff");
    }

    #[test]
    fn presence_values_parse() {
        assert_eq!(parse_presence("3 1700"), Some((3, 1700)));
        assert_eq!(parse_presence("x 1"), None);
        assert_eq!(parse_presence("3"), None);
    }
}
