//! The hub: every open connection of a server (the seed's `server.clients`),
//! rooms, and encode-once broadcast, sharded by worker.
//!
//! A broadcast or publish encodes its frame once; every receiver's queue gets
//! a clone of the same `Transmit`, whose payload is a reference-counted
//! `Bytes`: no per-receiver copy. With permessage-deflate it also compresses
//! once for all receivers without server context takeover (`Frames`).
//! Pushing never waits, so a slow receiver cannot slow the others; it meets
//! its own `max_backpressure` instead.
//!
//! **Shards.** A server with N workers ([`crate::Server::workers`]) has N
//! shards, one per worker thread, each with its own connections and room
//! members behind its own locks; a connection's id says its shard. A room's
//! entry in the directory (striped by name, so that no lock is global) counts
//! its members on each shard. A publish on a worker thread delivers to its
//! own shard's members at once, and hands one `Fanout` (the same frames) to
//! the inbox of every other shard with members; that worker delivers it to
//! its members. Called from any other thread, a publish delivers to every
//! shard itself. Either way the messages of one sender reach each receiver
//! in the order they were sent, exactly once.
//!
//! Lock order: a shard's client table, then its room table, then a
//! directory stripe, then a connection's own lock. Nothing here is held
//! across an `.await`.

pub(crate) mod backplane;
mod cork;
mod fanout;
mod legacy;
mod presence;

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};

use hashbrown::HashTable;
use tokio::sync::Notify;
use wharf_proto::{CloseCode, Message};

pub(crate) use self::cork::{corked, release};
use self::fanout::{Fanout, Frames, Inbox};
use crate::conn::Client;
use crate::conn::wheel::Wheel;

pub use self::backplane::Backplane;
use self::backplane::Target;
pub use self::presence::{Departure, Member};

/// The most workers (shards) a hub has: a room's shards fit in a `u64`.
pub(crate) const MAX_SHARDS: usize = 64;
/// The most messages delivered as one run (each receiver locked once for
/// them): bounds how long a delivery pass holds a shard's tables.
const MAX_RUN: usize = 64;
/// Directory stripes: publishes to different rooms rarely share a lock.
const STRIPES: usize = 64;

/// The registry of a server's open connections and its rooms (the seed's
/// `server.clients`). Cheap to clone; every clone is the same hub.
///
/// A connection is in the hub from before its handler starts until its task
/// ends. A broadcast or publish encodes the message once and queues the
/// same frame on every receiver, never waiting: a receiver over its
/// `max_backpressure` meets the server's [`SlowClient`](crate::SlowClient)
/// policy alone.
///
/// ```no_run
/// use wharf::{Event, Server};
/// use futures_util::StreamExt;
///
/// # async fn run() -> Result<(), wharf::Error> {
/// let server = Server::new();
/// let hub = server.hub(); // for other tasks: an HTTP route, a timer
/// tokio::spawn({
///     let hub = hub.clone();
///     async move {
///         loop {
///             tokio::time::sleep(std::time::Duration::from_secs(10)).await;
///             hub.publish("news", format!("{} connections", hub.len()));
///         }
///     }
/// });
/// server
///     .on_connection(|mut conn| async move {
///         let room = conn.path().trim_start_matches('/').to_owned(); // "/news"
///         conn.join(&room);
///         while let Some(Event::Message(m)) = conn.next().await {
///             conn.hub().publish_except(&room, conn.id(), m);
///         }
///         // Leaving is automatic when the connection ends.
///     })
///     .listen("127.0.0.1:3400")
///     .await
/// # }
/// ```
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

impl Default for Hub {
    fn default() -> Self {
        Self::with_shards(1)
    }
}

struct Inner {
    shards: Box<[Shard]>,
    /// Rooms by name, striped: each room's member count on every shard.
    directory: Box<[Stripe]>,
    hasher: RandomState,
    /// Open connections, on all shards.
    len: AtomicUsize,
    /// Fan-outs dropped because a worker's inbox was full.
    dropped: AtomicU64,
    emptied: Notify,
    closing: AtomicBool,
    /// Other nodes' hubs, if any (`backplane.rs`).
    backplane: OnceLock<Arc<dyn Backplane>>,
    /// This node's number in the high bits of ids (`backplane.rs`): 0
    /// without a backplane.
    node: AtomicU64,
    /// Members' names and departures (`presence.rs`).
    presence: presence::Local,
}

/// One worker's share of the hub.
#[derive(Default)]
struct Shard {
    /// Ids handed out on this shard: `seq * shards + index + 1`.
    next: AtomicU64,
    clients: Mutex<Clients>,
    rooms: Mutex<HashMap<Box<str>, HashMap<u64, Client>>>,
    inbox: Inbox,
    /// The coarse timer of the shard's connections.
    wheel: Arc<Wheel>,
}

/// One stripe of the room directory.
type Stripe = RwLock<HashMap<Box<str>, Room>>;

/// A room in the directory: its members on each shard.
struct Room {
    members: Box<[u32]>,
}

impl Room {
    fn total(&self) -> usize {
        self.members.iter().map(|&n| n as usize).sum()
    }
}

/// A shard's open connections. Every byte of a table slot is paid per
/// connection, and again for the table's spare capacity: the table holds
/// only the `Client` (8 bytes, its id inside), the rooms joined are kept
/// apart for the connections that joined any.
#[derive(Default)]
struct Clients {
    table: HashTable<Client>,
    joined: HashMap<u64, Vec<String>>,
}

impl Clients {
    /// Ids are handed out in sequence, never chosen by a peer: a
    /// multiplicative hash spreads them, high bits (which the table's
    /// control bytes use) included.
    fn hash(id: u64) -> u64 {
        id.wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }

    fn get(&self, id: u64) -> Option<&Client> {
        self.table.find(Self::hash(id), |c| c.id() == id)
    }

    fn insert(&mut self, client: Client) {
        self.table
            .insert_unique(Self::hash(client.id()), client, |c| Self::hash(c.id()));
    }

    fn remove(&mut self, id: u64) -> Option<Client> {
        let entry = self
            .table
            .find_entry(Self::hash(id), |c| c.id() == id)
            .ok()?;
        Some(entry.remove().0)
    }
}

fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    // Nothing done under these locks can leave the maps inconsistent
    // mid-update, so a poisoned lock is recovered.
    lock.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}

fn lock<T>(lock: &Mutex<T>) -> MutexGuard<'_, T> {
    lock.lock().unwrap_or_else(|e| e.into_inner())
}

thread_local! {
    /// The hub and shard this thread is the worker of: (hub address, index).
    static WORKER: std::cell::Cell<(usize, usize)> = const { std::cell::Cell::new((0, 0)) };
}

impl Hub {
    /// An empty hub.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty hub with `shards` shards (1 to 64), one per worker.
    pub(crate) fn with_shards(shards: usize) -> Self {
        let shards = shards.clamp(1, MAX_SHARDS);
        Self {
            inner: Arc::new(Inner {
                shards: (0..shards).map(|_| Shard::default()).collect(),
                directory: (0..STRIPES).map(|_| RwLock::default()).collect(),
                hasher: RandomState::new(),
                len: AtomicUsize::new(0),
                dropped: AtomicU64::new(0),
                emptied: Notify::new(),
                closing: AtomicBool::new(false),
                backplane: OnceLock::new(),
                node: AtomicU64::new(0),
                presence: presence::Local::default(),
            }),
        }
    }

    /// The number of shards (workers).
    pub(crate) fn shards(&self) -> usize {
        self.inner.shards.len()
    }

    /// Whether this hub is shared (a clone exists beside this one).
    pub(crate) fn is_shared(&self) -> bool {
        Arc::strong_count(&self.inner) > 1
    }

    /// Marks this thread as the worker of shard `index`.
    pub(crate) fn enter_worker(&self, index: usize) {
        WORKER.set((Arc::as_ptr(&self.inner).addr(), index));
    }

    /// The shard this thread is the worker of, if any. With one shard every
    /// thread delivers to it directly.
    fn here(&self) -> Option<usize> {
        if self.inner.shards.len() == 1 {
            return None;
        }
        let (hub, index) = WORKER.get();
        (hub == Arc::as_ptr(&self.inner).addr()).then_some(index)
    }

    /// The shard this thread's new connections belong to.
    pub(crate) fn current_shard(&self) -> usize {
        self.here().unwrap_or(0)
    }

    /// A new connection id on `shard`: unique within this hub, increasing
    /// in the order connections open on the shard; with a backplane, the
    /// node's number in the high bits makes it unique in the cluster.
    pub(crate) fn next_id(&self, shard: usize) -> u64 {
        let n = self.inner.shards.len() as u64;
        let seq = self.inner.shards[shard]
            .next
            .fetch_add(1, Ordering::Relaxed);
        backplane::node_id(
            self.inner.node.load(Ordering::Relaxed),
            seq * n + shard as u64 + 1,
        )
    }

    /// The coarse timer of connection `id`'s shard.
    pub(crate) fn wheel(&self, id: u64) -> &Arc<Wheel> {
        &self.shard_of(id).wheel
    }

    fn shard_of(&self, id: u64) -> &Shard {
        &self.inner.shards[self.shard_index(id)]
    }

    fn stripe(&self, room: &str) -> &Stripe {
        let hash = self.inner.hasher.hash_one(room);
        &self.inner.directory[(hash as usize) % STRIPES]
    }

    /// Fan-outs dropped because a worker's inbox was full.
    pub fn fanouts_dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    /// The number of open connections.
    pub fn len(&self) -> usize {
        self.inner.len.load(Ordering::SeqCst)
    }

    /// Whether no connection is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A snapshot of the open connections, in no particular order.
    pub fn clients(&self) -> Vec<Client> {
        let mut all = Vec::with_capacity(self.len());
        for shard in &self.inner.shards {
            all.extend(lock(&shard.clients).table.iter().cloned());
        }
        all
    }

    /// The connection with this id, if it is open.
    pub fn get(&self, id: u64) -> Option<Client> {
        lock(&self.shard_of(id).clients).get(id).cloned()
    }

    /// Sends to every open connection; returns how many queued it (or, on
    /// another worker, were handed it; or, held back until a message
    /// callback's run of messages or a handler's poll ends, how many it
    /// will be handed to).
    pub fn broadcast(&self, message: impl Into<Message>) -> usize {
        let message = message.into();
        self.forward(Target::All, &message);
        self.fan_out(None, message, None)
    }

    /// Sends to every open connection but `except` (usually the sender).
    pub fn broadcast_except(&self, except: u64, message: impl Into<Message>) -> usize {
        let message = message.into();
        self.forward(Target::All, &message);
        self.fan_out(None, message, Some(except))
    }

    /// Adds connection `id` to `room` (created on first join). Returns
    /// whether it was added: `false` if it was already there or is not open.
    pub fn join(&self, room: &str, id: u64) -> bool {
        // Messages held back before the join are not for the new member.
        release();
        let index = self.shard_index(id);
        let shard = &self.inner.shards[index];
        let mut clients = lock(&shard.clients);
        let Some(client) = clients.get(id) else {
            return false;
        };
        let mut rooms = lock(&shard.rooms);
        let members = rooms.entry(room.into()).or_default();
        if members.insert(id, client.clone()).is_some() {
            return false;
        }
        let mut directory = write(self.stripe(room));
        let n = self.inner.shards.len();
        let dir = directory.entry(room.into()).or_insert_with(|| Room {
            members: vec![0; n].into(),
        });
        dir.members[index] += 1;
        self.room_changed(room, dir.total());
        drop(directory);
        clients.joined.entry(id).or_default().push(room.to_owned());
        true
    }

    /// Removes connection `id` from `room` (dropped once empty). Returns
    /// whether it was a member.
    pub fn leave(&self, room: &str, id: u64) -> bool {
        // Messages held back before the leave are still for the member.
        release();
        let index = self.shard_index(id);
        let shard = &self.inner.shards[index];
        let mut clients = lock(&shard.clients);
        if let Some(rooms) = clients.joined.get_mut(&id) {
            rooms.retain(|r| r != room);
            if rooms.is_empty() {
                clients.joined.remove(&id);
            }
        }
        let mut rooms = lock(&shard.rooms);
        self.remove_member(&mut rooms, index, room, id)
    }

    /// Sends to every member of `room`; returns how many queued it (or, on
    /// another worker, were handed it; or, held back until a message
    /// callback's run of messages or a handler's poll ends, how many it
    /// will be handed to).
    pub fn publish(&self, room: &str, message: impl Into<Message>) -> usize {
        let message = message.into();
        self.forward(Target::Room(room), &message);
        self.fan_out(Some(room), message, None)
    }

    /// Sends to every member of `room` but `except`.
    pub fn publish_except(&self, room: &str, except: u64, message: impl Into<Message>) -> usize {
        let message = message.into();
        self.forward(Target::Room(room), &message);
        self.fan_out(Some(room), message, Some(except))
    }

    /// Delivers on this thread's shard (or on every shard, from a thread
    /// that is no worker of this hub) and hands the message to the other
    /// shards that have receivers: the same frames, encoded once. Held back
    /// instead while this thread runs a message callback over a run of
    /// messages, or polls a connection's handler (see `cork`).
    fn fan_out(&self, room: Option<&str>, message: Message, except: Option<u64>) -> usize {
        let message = match cork::hold(self, room, except, message) {
            Ok(()) => return self.receivers(room).iter().map(|&n| n as usize).sum(),
            Err(message) => message,
        };
        self.fan_out_run(room, vec![message], except)
    }

    /// Receivers per shard, from the directory (a room) or the tables.
    fn receivers(&self, room: Option<&str>) -> [u32; MAX_SHARDS] {
        let mut counts = [0u32; MAX_SHARDS];
        match room {
            Some(room) => {
                if let Some(dir) = read(self.stripe(room)).get(room) {
                    counts[..dir.members.len()].copy_from_slice(&dir.members);
                }
            }
            None => {
                for (count, shard) in counts.iter_mut().zip(self.inner.shards.iter()) {
                    *count = u32::try_from(lock(&shard.clients).table.len()).unwrap_or(u32::MAX);
                }
            }
        }
        counts
    }

    /// [`Hub::fan_out`] for messages in order to the same receivers: on
    /// this thread's shard each receiver takes the whole run at once.
    fn fan_out_run(&self, room: Option<&str>, run: Vec<Message>, except: Option<u64>) -> usize {
        let Some(here) = self.here() else {
            let frames: Vec<Frames> = run.into_iter().map(Frames::new).collect();
            let frames: Vec<&Frames> = frames.iter().collect();
            return self
                .inner
                .shards
                .iter()
                .map(|shard| shard.deliver(room, &frames, except))
                .sum();
        };
        let counts = self.receivers(room);
        if counts.iter().all(|&n| n == 0) {
            return 0;
        }
        let jobs: Vec<Arc<Fanout>> = run
            .into_iter()
            .map(|message| {
                Arc::new(Fanout {
                    frames: Frames::new(message),
                    room: room.map(Into::into),
                    except,
                })
            })
            .collect();
        let mut reached = 0;
        for (index, shard) in self.inner.shards.iter().enumerate() {
            if counts[index] == 0 {
                continue;
            }
            if index == here {
                let frames: Vec<&Frames> = jobs.iter().map(|job| &job.frames).collect();
                reached += shard.deliver(room, &frames, except);
            } else {
                for job in &jobs {
                    if shard.inbox.push(job.clone()) {
                        reached += counts[index] as usize;
                    } else {
                        self.inner.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
        reached
    }

    /// Delivers messages held back (see `cork`), in order: consecutive
    /// messages to the same receivers as one run.
    fn deliver_held(&self, held: &mut Vec<cork::Held>) {
        for_each_run(
            held.drain(..),
            |a, b| a.room == b.room && a.except == b.except,
            |run| {
                let mut run = run.into_iter();
                let Some(cork::Held {
                    room,
                    except,
                    message,
                }) = run.next()
                else {
                    return;
                };
                let messages = std::iter::once(message).chain(run.map(|h| h.message));
                self.fan_out_run(room.as_deref(), messages.collect(), except);
            },
        );
    }

    /// Delivers what other workers handed shard `index`, as they arrive;
    /// runs on that shard's worker for as long as it serves.
    pub(crate) async fn run_inbox(self, index: usize) {
        let shard = &self.inner.shards[index];
        loop {
            let jobs = shard.inbox.take().await;
            // Consecutive fan-outs to the same receivers as one run: each
            // receiver takes them at once (`Frames::deliver`).
            for_each_run(
                jobs.iter(),
                |a, b| a.room == b.room && a.except == b.except,
                |run| {
                    let frames: Vec<&Frames> = run.iter().map(|job| &job.frames).collect();
                    shard.deliver(run[0].room.as_deref(), &frames, run[0].except);
                },
            );
        }
    }

    /// The ids of `room`'s members.
    pub fn members(&self, room: &str) -> Vec<u64> {
        let mut ids = Vec::new();
        for shard in &self.inner.shards {
            if let Some(m) = lock(&shard.rooms).get(room) {
                ids.extend(m.keys().copied());
            }
        }
        ids
    }

    /// The number of members of `room`.
    pub fn room_len(&self, room: &str) -> usize {
        read(self.stripe(room)).get(room).map_or(0, Room::total)
    }

    /// The names of the rooms that have members.
    pub fn rooms(&self) -> Vec<String> {
        let mut names = Vec::new();
        for stripe in &self.inner.directory {
            names.extend(read(stripe).keys().map(|k| k.to_string()));
        }
        names
    }

    /// The rooms connection `id` is in.
    pub fn rooms_of(&self, id: u64) -> Vec<String> {
        lock(&self.shard_of(id).clients)
            .joined
            .get(&id)
            .cloned()
            .unwrap_or_default()
    }

    /// Starts the close handshake on every open connection, after the
    /// messages already queued; connections registered later are closed as
    /// they arrive.
    pub fn close_all(&self, code: CloseCode, reason: &str) {
        self.inner.closing.store(true, Ordering::SeqCst);
        for client in self.clients() {
            let _ = client.close(code, reason);
        }
    }

    /// Waits until no connection is open.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn wait_empty(&self) {
        loop {
            let notified = self.inner.emptied.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_empty() {
                return;
            }
            notified.await;
        }
    }

    /// Registers a connection. If `close_all` has begun, it is closed too:
    /// the flag is read after the insertion, under the table's lock, so a
    /// connection is either seen by `close_all`'s snapshot or sees the flag.
    pub(crate) fn insert(&self, client: Client) {
        let closing = {
            let mut clients = lock(&self.shard_of(client.id()).clients);
            clients.insert(client.clone());
            self.inner.len.fetch_add(1, Ordering::SeqCst);
            self.inner.closing.load(Ordering::SeqCst)
        };
        if closing {
            let _ = client.close(CloseCode::GOING_AWAY, "server shutting down");
        }
    }

    pub(crate) fn remove(&self, id: u64) {
        let index = self.shard_index(id);
        let shard = &self.inner.shards[index];
        let mut clients = lock(&shard.clients);
        if clients.remove(id).is_none() {
            return;
        }
        if let Some(joined) = clients.joined.remove(&id) {
            let mut rooms = lock(&shard.rooms);
            for room in &joined {
                self.remove_member(&mut rooms, index, room, id);
            }
        }
        drop(clients);
        if self.inner.len.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.inner.emptied.notify_waiters();
        }
    }

    fn shard_index(&self, id: u64) -> usize {
        (backplane::local_id(id).wrapping_sub(1) % self.inner.shards.len() as u64) as usize
    }

    /// Removes `id` from shard `index`'s members of `room` (held: `rooms`),
    /// and the room from the directory once it has no member anywhere.
    fn remove_member(
        &self,
        rooms: &mut HashMap<Box<str>, HashMap<u64, Client>>,
        index: usize,
        room: &str,
        id: u64,
    ) -> bool {
        let Some(members) = rooms.get_mut(room) else {
            return false;
        };
        if members.remove(&id).is_none() {
            return false;
        }
        if members.is_empty() {
            rooms.remove(room);
        }
        let mut directory = write(self.stripe(room));
        if let Some(dir) = directory.get_mut(room) {
            dir.members[index] = dir.members[index].saturating_sub(1);
            self.room_changed(room, dir.total());
            if dir.total() == 0 {
                directory.remove(room);
            }
        }
        true
    }
}

/// Calls `f` with each run of consecutive `items` that are `same` as the
/// run's first, at most [`MAX_RUN`] long, in order.
fn for_each_run<T>(
    items: impl Iterator<Item = T>,
    same: impl Fn(&T, &T) -> bool,
    mut f: impl FnMut(Vec<T>),
) {
    let mut items = items.peekable();
    while let Some(first) = items.next() {
        let mut run = vec![first];
        while let Some(next) = items.next_if(|i| run.len() < MAX_RUN && same(&run[0], i)) {
            run.push(next);
        }
        f(run);
    }
}

impl Shard {
    /// Delivers a run of messages' `frames` to this shard's receivers: the
    /// members of `room`, or every connection. Returns how many deliveries
    /// were queued (for one message: how many receivers queued it).
    fn deliver(&self, room: Option<&str>, frames: &[&Frames], except: Option<u64>) -> usize {
        match room {
            Some(room) => {
                let rooms = lock(&self.rooms);
                let Some(members) = rooms.get(room) else {
                    return 0;
                };
                Frames::deliver(
                    frames,
                    members
                        .iter()
                        .filter(|&(id, _)| Some(*id) != except)
                        .map(|(_, c)| c),
                )
            }
            None => {
                let clients = lock(&self.clients);
                Frames::deliver(
                    frames,
                    clients.table.iter().filter(|c| Some(c.id()) != except),
                )
            }
        }
    }
}

impl fmt::Debug for Hub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hub")
            .field("clients", &self.len())
            .field("shards", &self.inner.shards.len())
            .finish()
    }
}
