//! Presence: who is in a room, by id and by name, on every node.
//!
//! The application names a room's members ([`Hub::set_member_name`]; the
//! chat gives each the name it joined under). [`Hub::presence`] lists a
//! room's members: this node's from the hub itself (always, even while the
//! bus is down), the other nodes' from the backplane
//! ([`Backplane::presence`](super::Backplane::presence)). A backplane
//! that finds another node dead (its presence expired without it leaving)
//! reports that node's members of each room once, as a [`Departure`], to
//! the hub's
//! [`Hub::departures`] receivers; each node tells its own members (with
//! [`Hub::publish_local`]), so each member hears of each departure once.
//!
//! Names are kept per room while the id is a member: those of members
//! that left are dropped when the room empties, or once they outnumber the
//! members (checked when a name is set), so they never take more than
//! about twice the room's members.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;

use tokio::sync::broadcast;
use wharf_proto::Message;

use super::{Hub, lock};

/// How many departures wait for a slow receiver of [`Hub::departures`]
/// before it misses some (it is told how many).
const DEPARTURES: usize = 256;

/// A member of a room: its connection id and the name the application
/// gave it (empty if none).
#[derive(Clone, Debug, Eq, PartialEq, Hash, PartialOrd, Ord)]
pub struct Member {
    /// The connection id (unique in the cluster with a backplane).
    pub id: u64,
    /// The name given with [`Hub::set_member_name`], or empty.
    pub name: String,
}

/// Members of a room that were on a node that died without leaving: they
/// left the room's presence when the node's presence expired.
#[derive(Clone, Debug, Eq, PartialEq)]
#[non_exhaustive]
pub struct Departure {
    /// The room.
    pub room: String,
    /// The dead node's members of it, by id.
    pub members: Vec<Member>,
}

impl Departure {
    /// A departure of `members` from `room` (for backplanes).
    pub fn new(room: String, members: Vec<Member>) -> Self {
        Self { room, members }
    }
}

/// The hub's share of presence: local names, and where departures go.
pub(super) struct Local {
    names: Mutex<HashMap<Box<str>, HashMap<u64, String>>>,
    departures: broadcast::Sender<Departure>,
}

impl Default for Local {
    fn default() -> Self {
        Self {
            names: Mutex::default(),
            departures: broadcast::channel(DEPARTURES).0,
        }
    }
}

impl Local {
    /// `room` has `local` members left here: at 0 its names go. Takes
    /// only the names' lock (a leaf: nothing else is locked under it).
    pub(super) fn room_changed(&self, room: &str, local: usize) {
        if local == 0 {
            lock(&self.names).remove(room);
        }
    }

    /// Reports a departure to the receivers of [`Hub::departures`], if
    /// any.
    pub(super) fn departed(&self, departure: Departure) {
        let _ = self.departures.send(departure);
    }
}

impl Hub {
    /// Names member `id` of `room` in presence: what [`Hub::presence`]
    /// lists with its id, here and, through the backplane, on every node.
    /// Call it after [`Hub::join`]; the name is dropped when the member
    /// leaves. Returns `false` (and keeps nothing) if `id` is not a member
    /// of `room` here.
    pub fn set_member_name(&self, room: &str, id: u64, name: &str) -> bool {
        if !self.rooms_of(id).iter().any(|r| r == room) {
            return false;
        }
        let len = self.room_len(room);
        let mut names = lock(&self.inner.presence.names);
        let of_room = names.entry(room.into()).or_default();
        of_room.insert(id, name.to_owned());
        if of_room.len() > 2 * len + 16 {
            // Names of members that left: dropped, in amortized O(1).
            drop(names);
            let members: HashSet<u64> = self.members(room).into_iter().collect();
            let mut names = lock(&self.inner.presence.names);
            if let Some(of_room) = names.get_mut(room) {
                of_room.retain(|id, _| members.contains(id));
            }
        } else {
            drop(names);
        }
        // The backplane writes this node's member list again.
        self.room_changed(room, len);
        true
    }

    /// This node's members of `room`, with their names, by id.
    pub fn local_presence(&self, room: &str) -> Vec<Member> {
        let mut ids = self.members(room);
        ids.sort_unstable();
        let names = lock(&self.inner.presence.names);
        let of_room = names.get(room);
        ids.into_iter()
            .map(|id| Member {
                id,
                name: of_room
                    .and_then(|n| n.get(&id))
                    .cloned()
                    .unwrap_or_default(),
            })
            .collect()
    }

    /// The members of `room` on every node, by id: this node's always,
    /// the others' as the backplane knows them (none without one, or while
    /// the bus cannot answer). A member of a node that died stays listed
    /// until that node's presence expires.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn presence(&self, room: &str) -> Vec<Member> {
        let remote = match self.backplane() {
            Some(backplane) => backplane.presence(room).await.unwrap_or_default(),
            None => Vec::new(),
        };
        let node = self.node();
        let mut all = self.local_presence(room);
        all.extend(
            remote
                .into_iter()
                .filter(|m| super::backplane::node_of(m.id) != node),
        );
        all.sort_unstable();
        all.dedup_by_key(|m| m.id);
        all
    }

    /// Departures of other nodes' members (see [`Departure`]), from now
    /// on. A receiver that falls more than 256 behind misses the oldest
    /// (its `recv` says how many).
    pub fn departures(&self) -> broadcast::Receiver<Departure> {
        self.inner.presence.departures.subscribe()
    }

    /// Sends `message` to this node's members of `room` only (not through
    /// the backplane), encoded once; returns how many queued it (or, on
    /// another worker, were handed it). For what every node tells its own
    /// members, such as a [`Departure`].
    pub fn publish_local(&self, room: &str, message: impl Into<Message>) -> usize {
        self.fan_out(Some(room), message.into(), None)
    }
}

/// The default of [`Backplane::presence`](super::Backplane::presence):
/// no other node known.
pub(super) fn none() -> Pin<Box<dyn Future<Output = Option<Vec<Member>>> + Send + 'static>> {
    Box::pin(std::future::ready(None))
}
