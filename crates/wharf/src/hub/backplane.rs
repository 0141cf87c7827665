//! The backplane seam: how a hub shares its rooms and broadcasts with the
//! hubs of other nodes through a message bus.
//!
//! The hub tells its [`Backplane`] three things, all without waiting:
//! - a room's local member count changed ([`Backplane::room_changed`]):
//!   from 0 to 1 the node starts receiving the room's traffic, back to 0
//!   it stops (a node receives nothing for rooms it does not serve), and
//!   every count feeds cluster-wide presence;
//! - a publish or broadcast happened ([`Backplane::forward`]), once per
//!   call, with the message as the application gave it: the bus carries it
//!   once, whatever the number of nodes and members.
//!
//! What arrives from the bus goes to [`Inbox::deliver`], which hands it to
//! this node's members only, through the hub's encode-once local delivery:
//! one frame per node per message. A node delivers its own publishes
//! locally at once and ignores them when the bus echoes them back: local
//! members then never wait for a round trip to Redis, and never lose a
//! message because the bus is down.
//!
//! **Connection ids** are unique in the cluster: a backplane gives its
//! node a number ([`Backplane::node`], 1 to 65,535), which the hub puts
//! above the [`LOCAL_BITS`] low bits of every id it hands out (and which
//! say the shard, as on one node). Ids stay below 2^53, exact in
//! JavaScript numbers. Without a backplane the number is 0 and ids are as
//! before: 1, 2, 3... [`Hub::send_to`] queues to a local id at once and
//! hands any other node's id to the backplane, which sends it to that
//! node alone.
//!
//! A hub without a backplane (the default) pays one atomic load per
//! publish for this seam.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use wharf_proto::Message;

use super::presence::{self, Departure, Member};
use super::{Hub, Inner};

/// The low bits of a connection id that the node numbers it with; the bits
/// above them (16, up to bit 52) hold the node's number.
pub const LOCAL_BITS: u32 = 37;
const LOCAL_MASK: u64 = (1 << LOCAL_BITS) - 1;

/// The id made of node number `node` and per-node id `local`.
pub(crate) fn node_id(node: u64, local: u64) -> u64 {
    (node << LOCAL_BITS) | (local & LOCAL_MASK)
}

/// The per-node part of connection id `id`.
pub(crate) fn local_id(id: u64) -> u64 {
    id & LOCAL_MASK
}

/// The number of the node that handed out connection id `id` (0: a hub
/// without a backplane).
pub fn node_of(id: u64) -> u16 {
    u16::try_from(id >> LOCAL_BITS).unwrap_or(0)
}

/// Who a message from the bus is for.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
#[non_exhaustive]
pub enum Target<'a> {
    /// Every open connection ([`Hub::broadcast`]).
    All,
    /// The members of a room ([`Hub::publish`]).
    Room(&'a str),
}

/// The state of a backplane's link to its bus, for health checks.
#[derive(Clone, Debug, Eq, PartialEq)]
#[non_exhaustive]
pub enum Link {
    /// Not connected (yet, or any more): local delivery goes on,
    /// cross-node publishes are dropped and counted. The reason is one
    /// line for people.
    Down(String),
    /// Connected and subscribed; the liveness probe comes back.
    Up,
}

/// A backplane's counters, for metrics.
#[derive(Clone, Debug, Default, Eq, PartialEq)]
#[non_exhaustive]
pub struct Status {
    /// Whether the bus is reachable now.
    pub link: Option<Link>,
    /// Messages sent to the bus.
    pub published: u64,
    /// Messages received from other nodes and delivered locally.
    pub received: u64,
    /// Messages not sent to the bus: the bus was down, or the queue to it
    /// full.
    pub dropped: u64,
    /// Times the bus lost messages of some node on some channel (seen from
    /// the sequence numbers).
    pub gaps: u64,
    /// Messages received twice and delivered once.
    pub duplicates: u64,
    /// Reconnections after the link went down.
    pub reconnects: u64,
}

/// Connects a [`Hub`] to other nodes' hubs. Every method is called with
/// the hub's locks held, so none may block or call back into the hub:
/// implementations queue work for a task of their own (bounded, counting
/// what they drop).
pub trait Backplane: Send + Sync + 'static {
    /// Called once, when the backplane is attached to a hub: where
    /// messages from the bus go.
    fn attach(&self, inbox: Inbox);

    /// `room` now has `local` members on this node (after a join or a
    /// leave). At 0 the node stops receiving the room's messages.
    fn room_changed(&self, room: &str, local: usize);

    /// Sends `message` to the other nodes' members of `target`. Never
    /// waits.
    fn forward(&self, target: Target<'_>, message: &Message);

    /// The cluster-wide member count of `room`, or `None` if the bus
    /// cannot tell now (the caller then uses the local count).
    fn online(&self, room: &str) -> Pin<Box<dyn Future<Output = Option<usize>> + Send + 'static>>;

    /// The members of `room` on the other nodes that are alive, as far
    /// as the bus knows, or `None` if it cannot tell now (the caller then
    /// lists the local members only). The default knows none.
    fn presence(
        &self,
        room: &str,
    ) -> Pin<Box<dyn Future<Output = Option<Vec<Member>>> + Send + 'static>> {
        let _ = room;
        presence::none()
    }

    /// The link state and counters.
    fn status(&self) -> Status;

    /// This node's number (1 to 65,535), unique among the nodes on the
    /// bus: the hub puts it in the high bits of every connection id (see
    /// the module docs). Read once, when attached. The default, 0, keeps
    /// ids per process, and [`Hub::send_to`] then reaches local ids only.
    fn node(&self) -> u16 {
        0
    }

    /// Sends `message` to connection `id` on the node whose number is in
    /// the id (never this one). Never waits. The default drops it.
    fn send_to(&self, id: u64, message: &Message) {
        let _ = (id, message);
    }
}

/// Where a backplane delivers what it receives: this node's members.
/// Holds the hub weakly, so a backplane's task does not keep a dropped
/// hub alive.
#[derive(Clone)]
pub struct Inbox {
    hub: Weak<Inner>,
}

impl Inbox {
    /// Queues `message` for every local receiver of `target`, encoding it
    /// once (on every worker that has receivers); nothing is forwarded back
    /// to the bus. Returns how many queued it (0 once the hub is gone).
    pub fn deliver(&self, target: Target<'_>, message: Message) -> usize {
        let Some(inner) = self.hub.upgrade() else {
            return 0;
        };
        let hub = Hub { inner };
        match target {
            Target::All => hub.fan_out(None, message, None),
            Target::Room(room) => hub.fan_out(Some(room), message, None),
        }
    }

    /// Queues `message` for local connection `id`; returns whether it is
    /// open here and took it.
    pub fn send_to(&self, id: u64, message: Message) -> bool {
        self.hub
            .upgrade()
            .and_then(|inner| Hub { inner }.get(id))
            .is_some_and(|client| client.try_send(message).is_ok())
    }

    /// The number of local members of `room`.
    pub fn room_len(&self, room: &str) -> usize {
        self.hub
            .upgrade()
            .map_or(0, |inner| Hub { inner }.room_len(room))
    }

    /// This node's members of `room` with their names, by id.
    pub fn local_presence(&self, room: &str) -> Vec<Member> {
        self.hub
            .upgrade()
            .map_or_else(Vec::new, |inner| Hub { inner }.local_presence(room))
    }

    /// Reports members of a dead node to this node's
    /// [`Hub::departures`] receivers: call it once per dead node and
    /// room.
    pub fn departed(&self, departure: Departure) {
        if let Some(inner) = self.hub.upgrade() {
            inner.presence.departed(departure);
        }
    }

    /// Whether the hub still exists.
    pub fn is_open(&self) -> bool {
        self.hub.strong_count() > 0
    }
}

impl fmt::Debug for Inbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inbox")
            .field("open", &self.is_open())
            .finish()
    }
}

impl Hub {
    /// An empty hub that shares its rooms and broadcasts with other nodes
    /// through `backplane`.
    pub fn with_backplane(backplane: Arc<dyn Backplane>) -> Self {
        let hub = Self::new();
        hub.set_backplane(backplane);
        hub
    }

    /// Attaches `backplane`, before any connection or room exists. Returns
    /// `false` (and leaves the hub as it was) if one was already attached.
    pub(crate) fn set_backplane(&self, backplane: Arc<dyn Backplane>) -> bool {
        let inbox = Inbox {
            hub: Arc::downgrade(&self.inner),
        };
        if self.inner.backplane.set(backplane.clone()).is_err() {
            return false;
        }
        self.inner
            .node
            .store(u64::from(backplane.node()), Ordering::Relaxed);
        backplane.attach(inbox);
        true
    }

    /// The backplane, if this hub has one.
    pub fn backplane(&self) -> Option<&Arc<dyn Backplane>> {
        self.inner.backplane.get()
    }

    /// The number of members of `room` on every node: the local count
    /// without a backplane, or when the bus cannot answer.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn online(&self, room: &str) -> usize {
        if let Some(backplane) = self.backplane()
            && let Some(n) = backplane.online(room).await
        {
            // The bus's answer may predate this node's latest joins.
            return n.max(self.room_len(room));
        }
        self.room_len(room)
    }

    /// Sends `message` to connection `id`, on this node or, with a
    /// backplane, on any other: a local connection's queue gets it at once;
    /// the id of another node's connection goes to that node through the
    /// bus, once (whether it is still open there is not known here).
    /// Returns whether it was queued or handed to the bus: `false` for a
    /// local id that is not open (or whose queue is over its bound), or a
    /// remote one without a bus.
    pub fn send_to(&self, id: u64, message: impl Into<Message>) -> bool {
        let node = node_of(id);
        let here = self.inner.node.load(Ordering::Relaxed);
        if u64::from(node) == here {
            return self
                .get(id)
                .is_some_and(|client| client.try_send(message).is_ok());
        }
        match self.inner.backplane.get() {
            Some(backplane) => {
                backplane.send_to(id, &message.into());
                true
            }
            None => false,
        }
    }

    /// This node's number in connection ids: 0 without a backplane.
    pub fn node(&self) -> u16 {
        u16::try_from(self.inner.node.load(Ordering::Relaxed)).unwrap_or(0)
    }

    pub(super) fn forward(&self, target: Target<'_>, message: &Message) {
        if let Some(backplane) = self.inner.backplane.get() {
            backplane.forward(target, message);
        }
    }

    pub(super) fn room_changed(&self, room: &str, local: usize) {
        self.inner.presence.room_changed(room, local);
        if let Some(backplane) = self.inner.backplane.get() {
            backplane.room_changed(room, local);
        }
    }
}
