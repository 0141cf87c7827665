//! Counters a server keeps about itself, for metrics endpoints and tests.
//!
//! Every counter is a relaxed atomic: cheap on the hot path, and exact once
//! the counted work has finished.

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
    /// Connections dropped by the close timeout or keepalive.
    pub timeouts: u64,
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
            refusals: c.refusals.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        }
    }

    pub(crate) fn counters(&self) -> &Arc<Counters> {
        &self.inner
    }
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
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
