//! The hub: every open connection of a server (the seed's `server.clients`),
//! rooms, and encode-once broadcast.
//!
//! A broadcast or publish encodes its frame once; every receiver's queue gets
//! a clone of the same `Transmit`, whose payload is a reference-counted
//! `Bytes`: no per-receiver copy. With permessage-deflate it also compresses
//! once for all receivers without server context takeover (see `deliver`). Pushing never waits, so a slow receiver
//! cannot slow the others; it meets its own `max_backpressure` instead.
//! Messages from one sender reach each receiver in the order they were sent.
//!
//! Lock order: the client table, then the room table, then a connection's
//! own lock. Nothing here is held across an `.await`.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use tokio::sync::Notify;
use wharf_proto::{CloseCode, Message, Transmit};

use crate::conn::Client;

/// The registry of a server's open connections and its rooms. Cheap to
/// clone; every clone is the same hub.
#[derive(Clone, Default)]
pub struct Hub {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    clients: RwLock<HashMap<u64, Entry>>,
    rooms: RwLock<HashMap<String, HashMap<u64, Client>>>,
    emptied: Notify,
    closing: AtomicBool,
}

struct Entry {
    client: Client,
    /// Boxed: most connections join no room, and every byte here is paid
    /// per connection (and again for the table's spare capacity): 8 bytes
    /// here against 24 for an empty `Vec`.
    #[expect(
        clippy::box_collection,
        reason = "a thin pointer, allocated only on join"
    )]
    rooms: Option<Box<Vec<String>>>,
}

fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    // Nothing done under these locks can leave the maps inconsistent
    // mid-update, so a poisoned lock is recovered.
    lock.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}

impl Hub {
    /// An empty hub.
    pub fn new() -> Self {
        Self::default()
    }

    /// The number of open connections.
    pub fn len(&self) -> usize {
        read(&self.inner.clients).len()
    }

    /// Whether no connection is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A snapshot of the open connections, in no particular order.
    pub fn clients(&self) -> Vec<Client> {
        read(&self.inner.clients)
            .values()
            .map(|e| e.client.clone())
            .collect()
    }

    /// The connection with this id, if it is open.
    pub fn get(&self, id: u64) -> Option<Client> {
        read(&self.inner.clients).get(&id).map(|e| e.client.clone())
    }

    /// Sends to every open connection; returns how many queued it.
    pub fn broadcast(&self, message: impl Into<Message>) -> usize {
        self.broadcast_inner(message.into(), None)
    }

    /// Sends to every open connection but `except` (usually the sender).
    pub fn broadcast_except(&self, except: u64, message: impl Into<Message>) -> usize {
        self.broadcast_inner(message.into(), Some(except))
    }

    fn broadcast_inner(&self, message: Message, except: Option<u64>) -> usize {
        let clients = read(&self.inner.clients);
        let receivers = clients
            .iter()
            .filter(|&(id, _)| Some(*id) != except)
            .map(|(_, e)| &e.client);
        deliver(receivers, message)
    }

    /// Adds connection `id` to `room` (created on first join). Returns
    /// whether it was added: `false` if it was already there or is not open.
    pub fn join(&self, room: &str, id: u64) -> bool {
        let mut clients = write(&self.inner.clients);
        let Some(entry) = clients.get_mut(&id) else {
            return false;
        };
        let mut rooms = write(&self.inner.rooms);
        let members = rooms.entry(room.to_owned()).or_default();
        if members.insert(id, entry.client.clone()).is_some() {
            return false;
        }
        entry.rooms.get_or_insert_default().push(room.to_owned());
        true
    }

    /// Removes connection `id` from `room` (dropped once empty). Returns
    /// whether it was a member.
    pub fn leave(&self, room: &str, id: u64) -> bool {
        let mut clients = write(&self.inner.clients);
        if let Some(rooms) = clients.get_mut(&id).and_then(|e| e.rooms.as_mut()) {
            rooms.retain(|r| r != room);
        }
        let mut rooms = write(&self.inner.rooms);
        remove_member(&mut rooms, room, id)
    }

    /// Sends to every member of `room`; returns how many queued it.
    pub fn publish(&self, room: &str, message: impl Into<Message>) -> usize {
        self.publish_inner(room, message.into(), None)
    }

    /// Sends to every member of `room` but `except`.
    pub fn publish_except(&self, room: &str, except: u64, message: impl Into<Message>) -> usize {
        self.publish_inner(room, message.into(), Some(except))
    }

    fn publish_inner(&self, room: &str, message: Message, except: Option<u64>) -> usize {
        let rooms = read(&self.inner.rooms);
        let Some(members) = rooms.get(room) else {
            return 0;
        };
        let receivers = members
            .iter()
            .filter(|&(id, _)| Some(*id) != except)
            .map(|(_, c)| c);
        deliver(receivers, message)
    }

    /// The ids of `room`'s members.
    pub fn members(&self, room: &str) -> Vec<u64> {
        read(&self.inner.rooms)
            .get(room)
            .map(|m| m.keys().copied().collect())
            .unwrap_or_default()
    }

    /// The number of members of `room`.
    pub fn room_len(&self, room: &str) -> usize {
        read(&self.inner.rooms).get(room).map_or(0, HashMap::len)
    }

    /// The names of the rooms that have members.
    pub fn rooms(&self) -> Vec<String> {
        read(&self.inner.rooms).keys().cloned().collect()
    }

    /// The rooms connection `id` is in.
    pub fn rooms_of(&self, id: u64) -> Vec<String> {
        read(&self.inner.clients)
            .get(&id)
            .and_then(|e| e.rooms.as_deref().cloned())
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
        let entry = Entry {
            client: client.clone(),
            rooms: None,
        };
        let closing = {
            let mut clients = write(&self.inner.clients);
            clients.insert(client.id(), entry);
            self.inner.closing.load(Ordering::SeqCst)
        };
        if closing {
            let _ = client.close(CloseCode::GOING_AWAY, "server shutting down");
        }
    }

    pub(crate) fn remove(&self, id: u64) {
        let mut clients = write(&self.inner.clients);
        if let Some(entry) = clients.remove(&id) {
            let mut rooms = write(&self.inner.rooms);
            for room in entry.rooms.iter().flat_map(|r| r.iter()) {
                remove_member(&mut rooms, room, id);
            }
        }
        if clients.is_empty() {
            self.inner.emptied.notify_waiters();
        }
    }
}

/// Queues `message` for every receiver, encoding it once: one plain frame
/// for connections without compression, one compressed frame per distinct
/// set of deflate parameters for connections whose compressor keeps no
/// context, and a per-connection compression only for connections with
/// server context takeover. Returns how many receivers queued it.
fn deliver<'a>(receivers: impl Iterator<Item = &'a Client>, message: Message) -> usize {
    let plain = Transmit::message(message.clone());
    let mut deflated: Vec<((u8, u32, usize), Option<Transmit>)> = Vec::new();
    let mut queued = 0;
    for client in receivers {
        let shared = client.shared();
        let sent = match shared.deflate() {
            None => shared.send_encoded(plain.clone()),
            Some(p) if p.shareable() => {
                let key = (p.server_max_window_bits, p.level, p.threshold);
                let frame = match deflated.iter().find(|(k, _)| *k == key) {
                    Some((_, frame)) => frame.clone(),
                    None => {
                        let frame = Transmit::deflated(&message, p);
                        deflated.push((key, frame.clone()));
                        frame
                    }
                };
                shared.send_encoded(frame.unwrap_or_else(|| plain.clone()))
            }
            Some(_) => client.send(message.clone()),
        };
        queued += usize::from(sent.is_ok());
    }
    queued
}

fn remove_member(rooms: &mut HashMap<String, HashMap<u64, Client>>, room: &str, id: u64) -> bool {
    let Some(members) = rooms.get_mut(room) else {
        return false;
    };
    let removed = members.remove(&id).is_some();
    if members.is_empty() {
        rooms.remove(room);
    }
    removed
}

impl fmt::Debug for Hub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hub")
            .field("clients", &self.len())
            .field("rooms", &read(&self.inner.rooms).len())
            .finish()
    }
}
