//! Counters a server keeps about itself, for metrics endpoints and tests.
//!
//! Every counter is a relaxed atomic, exact once the counted work has
//! finished. A connection's own messages in and out, counted once per
//! message, are first tallied in plain thread-local cells while its task is
//! polled, and added to the atomics before the task writes to its socket
//! and when the poll ends: four atomic adds per task turn rather than per
//! message.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A server's counters. Cheap to clone; every clone reads the same counters.
#[derive(Clone, Default)]
pub struct Stats {
    inner: Arc<Counters>,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) connections_total: AtomicU64,
    pub(crate) messages_in: AtomicU64,
    pub(crate) bytes_in: AtomicU64,
    pub(crate) messages_out: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
    pub(crate) slow_client_closes: AtomicU64,
    pub(crate) slow_client_drops: AtomicU64,
    pub(crate) protocol_errors: AtomicU64,
    pub(crate) timeouts: AtomicU64,
    pub(crate) write_timeouts: AtomicU64,
    pub(crate) handler_panics: AtomicU64,
    pub(crate) rate_limited: AtomicU64,
    pub(crate) rate_limit_closes: AtomicU64,
    /// Connections accepted in hixie-75 and hixie-76 (see `crate::legacy`).
    pub(crate) connections_legacy: [AtomicU64; 2],
    pub(crate) legacy_binary_skipped: AtomicU64,
    pub(crate) refusals: Mutex<BTreeMap<(u16, String), u64>>,
}

/// The counters at one moment.
#[derive(Clone, Debug, Default, Eq, PartialEq)]
#[non_exhaustive]
pub struct Snapshot {
    /// WebSocket connections accepted since start.
    pub connections_total: u64,
    /// Text and binary messages received.
    pub messages_in: u64,
    /// Payload bytes of the messages received.
    pub bytes_in: u64,
    /// Messages queued for sending (a broadcast counts once per receiver).
    pub messages_out: u64,
    /// Payload bytes of the messages queued for sending.
    pub bytes_out: u64,
    /// Connections closed with 1008 for a full write queue.
    pub slow_client_closes: u64,
    /// Messages dropped for a full write queue (`SlowClient::Drop`).
    pub slow_client_drops: u64,
    /// Connections failed for a protocol violation or exceeded limit.
    pub protocol_errors: u64,
    /// Connections dropped by a deadline: close timeout, keepalive, or
    /// the write timeout (also counted in `write_timeouts`).
    pub timeouts: u64,
    /// Connections dropped because their queued output waited longer than
    /// the write timeout with no byte written.
    pub write_timeouts: u64,
    /// Connection handlers that panicked (their connections were closed
    /// with 1011).
    pub handler_panics: u64,
    /// Messages received over the rate limit ([`Server::rate_limit`](crate::Server::rate_limit)):
    /// dropped, handed on marked, or the one that closed its connection.
    pub rate_limited: u64,
    /// Connections closed with 1008 for exceeding the rate limit (also
    /// counted in `protocol_errors`).
    pub rate_limit_closes: u64,
    /// Of `connections_total`, those in draft hixie-75
    /// ([`Server::legacy_drafts`](crate::Server::legacy_drafts)).
    pub connections_hixie75: u64,
    /// Of `connections_total`, those in draft hixie-76.
    pub connections_hixie76: u64,
    /// Binary messages not sent to legacy-draft connections, which cannot
    /// carry them (a broadcast counts once per such receiver).
    pub legacy_binary_skipped: u64,
    /// Refused upgrades, by status and reason.
    pub refusals: BTreeMap<(u16, String), u64>,
}

impl Stats {
    /// Reads every counter.
    pub fn snapshot(&self) -> Snapshot {
        let c = &self.inner;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Snapshot {
            connections_total: get(&c.connections_total),
            messages_in: get(&c.messages_in),
            bytes_in: get(&c.bytes_in),
            messages_out: get(&c.messages_out),
            bytes_out: get(&c.bytes_out),
            slow_client_closes: get(&c.slow_client_closes),
            slow_client_drops: get(&c.slow_client_drops),
            protocol_errors: get(&c.protocol_errors),
            timeouts: get(&c.timeouts),
            write_timeouts: get(&c.write_timeouts),
            handler_panics: get(&c.handler_panics),
            rate_limited: get(&c.rate_limited),
            rate_limit_closes: get(&c.rate_limit_closes),
            connections_hixie75: get(&c.connections_legacy[0]),
            connections_hixie76: get(&c.connections_legacy[1]),
            legacy_binary_skipped: get(&c.legacy_binary_skipped),
            refusals: c.refusals.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        }
    }

    pub(crate) fn counters(&self) -> &Arc<Counters> {
        &self.inner
    }
}

/// This thread's tally for the connection whose task is being polled:
/// `owner` is the address of its shared state (0 when no task is polled).
/// Only that connection's own messages are tallied; they reach its socket
/// only through its task, which flushes the tally before it writes.
struct Tally {
    owner: Cell<usize>,
    messages_in: Cell<u64>,
    bytes_in: Cell<u64>,
    messages_out: Cell<u64>,
    bytes_out: Cell<u64>,
}

thread_local! {
    static TALLY: Tally = const {
        Tally {
            owner: Cell::new(0),
            messages_in: Cell::new(0),
            bytes_in: Cell::new(0),
            messages_out: Cell::new(0),
            bytes_out: Cell::new(0),
        }
    };
}

/// Ends this thread's tally when dropped (also on unwinding): later counts
/// go straight to the atomics. Flush before, or the tally is lost.
pub(crate) struct Tallying {
    opened: bool,
}

impl Drop for Tallying {
    fn drop(&mut self) {
        if self.opened {
            TALLY.with(|t| t.owner.set(0));
        }
    }
}

/// Whether this thread is polling the task of connection `conn` (whose
/// tally is open).
pub(crate) fn polling(conn: usize) -> bool {
    TALLY.with(|t| conn != 0 && t.owner.get() == conn)
}

/// The messages and bytes tallied for connection `owner` on this thread.
fn tallied(owner: usize, f: impl FnOnce(&Tally)) -> bool {
    TALLY.with(|t| {
        let mine = owner != 0 && t.owner.get() == owner;
        if mine {
            f(t);
        }
        mine
    })
}

fn bump(messages: &Cell<u64>, bytes: &Cell<u64>, count: u64, n: usize) {
    messages.set(messages.get() + count);
    bytes.set(bytes.get() + n as u64);
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts a message received by connection `conn` (its key, see
    /// [`Counters::tally`]).
    pub(crate) fn received(&self, conn: usize, bytes: usize) {
        self.received_many(conn, 1, bytes);
    }

    /// Counts `count` messages of `bytes` in all received by `conn`.
    pub(crate) fn received_many(&self, conn: usize, count: u64, bytes: usize) {
        if !tallied(conn, |t| bump(&t.messages_in, &t.bytes_in, count, bytes)) {
            Self::add(&self.messages_in, count);
            Self::add(&self.bytes_in, bytes as u64);
        }
    }

    /// Counts a message queued for connection `conn`.
    pub(crate) fn queued(&self, conn: usize, bytes: usize) {
        if !tallied(conn, |t| bump(&t.messages_out, &t.bytes_out, 1, bytes)) {
            Self::add(&self.messages_out, 1);
            Self::add(&self.bytes_out, bytes as u64);
        }
    }

    /// Tallies connection `conn`'s message counts on this thread in plain
    /// cells (during its task's poll) until the guard is dropped;
    /// [`Counters::flush`] adds them to the atomics, which the task does
    /// before it writes and before the guard goes. If a tally is open
    /// already (polls do not nest, so it cannot be), counts go straight to
    /// the atomics.
    pub(crate) fn tally(conn: usize) -> Tallying {
        let opened = TALLY.with(|t| {
            let free = t.owner.get() == 0;
            if free {
                t.owner.set(conn);
            }
            free
        });
        Tallying { opened }
    }

    /// Adds this thread's tally for `conn` to the counters; with `end`, the
    /// tally stops (the connection's driver has ended: nothing flushes it
    /// later in this poll).
    pub(crate) fn flush(&self, conn: usize, end: bool) {
        tallied(conn, |t| {
            for (cell, atomic) in [
                (&t.messages_in, &self.messages_in),
                (&t.bytes_in, &self.bytes_in),
                (&t.messages_out, &self.messages_out),
                (&t.bytes_out, &self.bytes_out),
            ] {
                let n = cell.replace(0);
                if n > 0 {
                    Self::add(atomic, n);
                }
            }
            if end {
                t.owner.set(0);
            }
        });
    }

    pub(crate) fn refused(&self, status: u16, reason: &str) {
        let mut map = self.refusals.lock().unwrap_or_else(|e| e.into_inner());
        *map.entry((status, reason.to_owned())).or_default() += 1;
    }
}

impl fmt::Debug for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.snapshot().fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(a: &AtomicU64) -> u64 {
        a.load(Ordering::Relaxed)
    }

    #[test]
    fn tallies_only_the_polled_connection_and_flushes_into_the_atomics() {
        let c = Counters::default();
        let (mine, other) = (0x1000, 0x2000);
        {
            let _tally = Counters::tally(mine);
            c.received(mine, 10);
            c.queued(mine, 20);
            // Another connection's message (a broadcast): counted at once.
            c.queued(other, 5);
            assert_eq!((get(&c.messages_in), get(&c.messages_out)), (0, 1));
            assert_eq!(get(&c.bytes_out), 5);
            c.flush(mine, false);
            assert_eq!((get(&c.messages_in), get(&c.bytes_in)), (1, 10));
            assert_eq!((get(&c.messages_out), get(&c.bytes_out)), (2, 25));
            // A nested tally cannot open: its counts go straight through.
            let _nested = Counters::tally(other);
            c.received(other, 1);
            assert_eq!(get(&c.messages_in), 2);
            c.received(mine, 1);
            c.flush(mine, true);
            assert_eq!(get(&c.messages_in), 3);
            // Ended: no more tallying for `mine`.
            c.received(mine, 1);
            assert_eq!(get(&c.messages_in), 4);
        }
        // Without a tally, every count is immediate.
        c.received(mine, 1);
        assert_eq!(get(&c.messages_in), 5);
        TALLY.with(|t| assert_eq!(t.owner.get(), 0));
    }
}
