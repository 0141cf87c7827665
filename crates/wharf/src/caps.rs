//! Connection caps: how many connections may be open (in all, and per
//! client address), how many handshakes may be in flight, and what the
//! accept loop does when the process runs out of file descriptors.
//!
//! A connection is *in its handshake* from accept until its first request
//! head is complete (the PROXY protocol header, if enabled, included). Past
//! [`Server::max_handshakes`](crate::Server::max_handshakes), the oldest
//! handshake in flight is dropped to make room for the new one: a client
//! that is not an attacker sends its head within a round trip of
//! connecting, so the sockets that have waited longest are the likeliest to
//! be idle (slowloris); dropping the newest instead would let a few hundred
//! idle sockets lock every newcomer out.
//!
//! A connection is *open* once its first request head has been read and
//! admitted: a WebSocket connection until its task ends, a plain HTTP
//! connection until hyper is done with it. Past a cap
//! ([`Server::max_connections`](crate::Server::max_connections),
//! [`Server::max_connections_per_ip`](crate::Server::max_connections_per_ip)),
//! an upgrade is refused with `503`, `Retry-After` and a one-line reason;
//! a plain request is still answered (`/healthz` keeps working), with
//! `Connection: close`, and its connection is not counted. IPv6 clients are
//! counted per /64, the block one subscriber gets.
//!
//! Running out of descriptors (`EMFILE`, `ENFILE`) drops the oldest
//! handshake in flight, if there is one, and retries; otherwise accepting
//! pauses (10 ms, doubling up to 1 s) while existing connections go on. It
//! logs one warning, then at most one line every 10 s.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::io;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use http::{HeaderValue, Response, StatusCode, header};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::upgrade::Refuse;

/// How long a client refused by a cap is asked to wait (`Retry-After`).
pub(crate) const RETRY_AFTER_SECS: u32 = 5;

/// The caps of a server, and their shared state.
#[derive(Clone, Debug)]
pub(crate) struct Caps {
    pub(crate) max_connections: Option<usize>,
    pub(crate) max_per_ip: Option<usize>,
    pub(crate) max_handshakes: usize,
    state: Arc<State>,
}

#[derive(Debug, Default)]
struct State {
    open: Mutex<Open>,
    handshakes: Mutex<Handshakes>,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    per_ip: HashMap<IpKey, usize>,
}

#[derive(Debug, Default)]
struct Handshakes {
    next: u64,
    /// By age: dropping a sender wakes its handshake, which then ends.
    pending: BTreeMap<u64, oneshot::Sender<Infallible>>,
}

/// What the per-address cap counts: an IPv4 address (also when mapped into
/// IPv6), or the /64 an IPv6 address is in.
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
enum IpKey {
    V4(u32),
    V6(u64),
}

impl IpKey {
    fn new(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Self::V4(v4.to_bits()),
            IpAddr::V6(v6) => Self::V6((v6.to_bits() >> 64) as u64),
        }
    }
}

/// Why a connection was not admitted.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub(crate) enum Full {
    /// `max_connections` are open.
    Server,
    /// `max_connections_per_ip` are open from this client's address.
    Address,
}

impl Full {
    /// The refusal: `503` and a one-line reason.
    pub(crate) fn refuse(self) -> Refuse {
        let reason = match self {
            Self::Server => "server at its connection limit; retry later",
            Self::Address => "too many connections from your address; retry later",
        };
        Refuse::new(StatusCode::SERVICE_UNAVAILABLE, reason)
    }
}

/// `res` with `Retry-After`, for a refusal by a cap.
pub(crate) fn retry_after<B>(mut res: Response<B>) -> Response<B> {
    res.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
    res
}

impl Caps {
    /// No connection caps; `max_handshakes` handshakes in flight.
    pub(crate) fn new(max_handshakes: usize) -> Self {
        Self {
            max_connections: None,
            max_per_ip: None,
            max_handshakes,
            state: Arc::default(),
        }
    }

    /// Counts a connection from `ip` as open, unless a cap is reached. The
    /// [`Slot`] uncounts it when dropped.
    pub(crate) fn admit(&self, ip: IpAddr) -> Result<Slot, Full> {
        let key = IpKey::new(ip);
        let mut open = lock(&self.state.open);
        if self.max_connections.is_some_and(|max| open.total >= max) {
            return Err(Full::Server);
        }
        let from_ip = open.per_ip.get(&key).copied().unwrap_or(0);
        if self.max_per_ip.is_some_and(|max| from_ip >= max) {
            return Err(Full::Address);
        }
        open.total += 1;
        *open.per_ip.entry(key).or_insert(0) += 1;
        Ok(Slot {
            state: Some(self.state.clone()),
            key,
        })
    }

    /// Uncounts a connection that a [`Slot::hand_over`] passed on.
    pub(crate) fn release(&self, ip: IpAddr) {
        self.state.release(IpKey::new(ip));
    }

    /// Connections open now (admitted, not yet ended).
    #[cfg(test)]
    fn open(&self) -> usize {
        lock(&self.state.open).total
    }

    /// Registers a handshake that starts now; past `max_handshakes`, the
    /// oldest one is dropped. Returns the guard, whose
    /// [`Handshake::evicted`] completes if it is dropped in turn, and
    /// whether an older one was dropped.
    pub(crate) fn handshake(&self) -> (Handshake, bool) {
        let mut hs = lock(&self.state.handshakes);
        let mut evicted = false;
        while hs.pending.len() >= self.max_handshakes.max(1) {
            // Dropping the sender ends that handshake.
            evicted |= hs.pending.pop_first().is_some();
        }
        let id = hs.next;
        hs.next += 1;
        let (tx, rx) = oneshot::channel();
        hs.pending.insert(id, tx);
        (
            Handshake {
                state: self.state.clone(),
                id,
                rx,
            },
            evicted,
        )
    }

    /// Drops the oldest handshake in flight, to free a descriptor; `false`
    /// if there is none.
    pub(crate) fn evict_oldest(&self) -> bool {
        lock(&self.state.handshakes).pending.pop_first().is_some()
    }

    /// Handshakes in flight now.
    #[cfg(test)]
    fn handshakes(&self) -> usize {
        lock(&self.state.handshakes).pending.len()
    }
}

impl State {
    fn release(&self, key: IpKey) {
        let mut open = lock(&self.open);
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.per_ip.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                open.per_ip.remove(&key);
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The counts stay consistent whatever panicked: every update is one
    // statement under the lock.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One open connection, counted until dropped (or handed over to a
/// WebSocket connection, whose task uncounts it when it ends).
#[derive(Debug)]
pub(crate) struct Slot {
    state: Option<Arc<State>>,
    key: IpKey,
}

impl Slot {
    /// Leaves the count to the WebSocket connection this slot became
    /// ([`Caps::release`] when its task ends).
    pub(crate) fn hand_over(mut self) {
        self.state = None;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(state) = self.state.take() {
            state.release(self.key);
        }
    }
}

/// A plain HTTP connection's place under the caps: taken by its first
/// request, kept until the connection ends.
#[derive(Debug, Default)]
pub(crate) struct HttpSlot(Mutex<Admission>);

#[derive(Debug, Default)]
enum Admission {
    /// No request yet.
    #[default]
    Pending,
    Open(#[expect(dead_code, reason = "held for its Drop")] Slot),
    /// Over a cap: the connection closes after its first response.
    Over,
    /// Released for an upgrade.
    Released,
}

impl HttpSlot {
    /// On the connection's first request, admits it with `admit`; whether
    /// the connection may stay open after this response.
    pub(crate) fn admit(&self, admit: impl FnOnce() -> Result<Slot, Full>) -> bool {
        let mut a = lock(&self.0);
        if matches!(*a, Admission::Pending) {
            *a = match admit() {
                Ok(slot) => Admission::Open(slot),
                Err(_) => Admission::Over,
            };
        }
        !matches!(*a, Admission::Over)
    }

    /// Leaves the caps (the connection is becoming a WebSocket connection,
    /// counted on its own).
    pub(crate) fn release(&self) {
        *lock(&self.0) = Admission::Released;
    }
}

/// A handshake in flight, unregistered when dropped.
#[derive(Debug)]
pub(crate) struct Handshake {
    state: Arc<State>,
    id: u64,
    rx: oneshot::Receiver<Infallible>,
}

impl Handshake {
    /// Completes once this handshake is dropped to make room for a newer
    /// one (or for a descriptor).
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub(crate) async fn evicted(&mut self) {
        // The sender never sends: this completes when it is dropped.
        let _ = (&mut self.rx).await;
    }
}

impl Drop for Handshake {
    fn drop(&mut self) {
        lock(&self.state.handshakes).pending.remove(&self.id);
    }
}

/// The accept loop's answer to accept errors: for running out of
/// descriptors, drop the oldest handshake or pause, with a bounded log.
#[derive(Debug)]
pub(crate) struct AcceptErrors {
    pause: Duration,
    /// When the last line was logged, and errors since then.
    logged: Option<Instant>,
    unlogged: u64,
}

impl AcceptErrors {
    const FIRST_PAUSE: Duration = Duration::from_millis(10);
    const MAX_PAUSE: Duration = Duration::from_secs(1);
    const LOG_EVERY: Duration = Duration::from_secs(10);

    pub(crate) fn new() -> Self {
        Self {
            pause: Self::FIRST_PAUSE,
            logged: None,
            unlogged: 0,
        }
    }

    /// An accept succeeded: the next failure starts over with a short
    /// pause (its log line stays rate-limited).
    pub(crate) fn reset(&mut self) {
        self.pause = Self::FIRST_PAUSE;
    }

    /// Handles an accept error: how long to pause before accepting again
    /// (zero: at once).
    pub(crate) fn on_error(&mut self, e: &io::Error, caps: &Caps) -> Duration {
        let fds = is_out_of_descriptors(e);
        if fds && caps.evict_oldest() {
            // Its task closes its socket when next polled: yield, then retry.
            self.log(e, "out of file descriptors; dropped the oldest handshake");
            return Duration::from_millis(1);
        }
        if !fds && is_per_connection(e) {
            return Duration::ZERO;
        }
        self.log(e, "accept failed; pausing accepts");
        let pause = self.pause;
        self.pause = (self.pause * 2).min(Self::MAX_PAUSE);
        pause
    }

    fn log(&mut self, e: &io::Error, what: &str) {
        let now = Instant::now();
        match self.logged {
            Some(t) if now.duration_since(t) < Self::LOG_EVERY => self.unlogged += 1,
            _ => {
                tracing::warn!(error = %e, suppressed = self.unlogged, "{what}");
                self.logged = Some(now);
                self.unlogged = 0;
            }
        }
    }
}

/// `EMFILE` or `ENFILE`: the process or the system is out of descriptors.
fn is_out_of_descriptors(e: &io::Error) -> bool {
    // Linux, the BSDs and macOS agree on these numbers.
    matches!(e.raw_os_error(), Some(23 | 24))
}

/// An error about the one connection being accepted (it was reset or
/// aborted before accept), not about the listener.
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(total: Option<usize>, per_ip: Option<usize>) -> Caps {
        let mut c = Caps::new(4);
        c.max_connections = total;
        c.max_per_ip = per_ip;
        c
    }

    #[test]
    fn admits_exactly_up_to_the_caps() {
        let c = caps(Some(3), Some(2));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let s1 = c.admit(a).unwrap();
        let _s2 = c.admit(a).unwrap();
        assert_eq!(c.admit(a).unwrap_err(), Full::Address);
        let _s3 = c.admit(b).unwrap();
        assert_eq!(c.admit(b).unwrap_err(), Full::Server);
        drop(s1);
        assert_eq!(c.open(), 2);
        let s4 = c.admit(a).unwrap();
        s4.hand_over();
        assert_eq!(c.open(), 3);
        c.release(a);
        assert_eq!(c.open(), 2);
    }

    #[test]
    fn ipv6_is_counted_per_64_and_mapped_ipv4_as_ipv4() {
        let c = caps(None, Some(1));
        let _a = c.admit("2001:db8:1:2::1".parse().unwrap()).unwrap();
        let e = c.admit("2001:db8:1:2:ffff::9".parse().unwrap());
        assert_eq!(e.unwrap_err(), Full::Address);
        let _b = c.admit("2001:db8:1:3::1".parse().unwrap()).unwrap();
        let _v4 = c.admit("198.51.100.7".parse().unwrap()).unwrap();
        let mapped = c.admit("::ffff:198.51.100.7".parse().unwrap());
        assert_eq!(mapped.unwrap_err(), Full::Address);
    }

    #[tokio::test]
    async fn the_oldest_handshake_is_dropped_past_the_bound() {
        let c = Caps::new(2);
        let (mut h1, e1) = c.handshake();
        let (mut h2, e2) = c.handshake();
        assert!(!e1 && !e2);
        let (_h3, e3) = c.handshake();
        assert!(e3);
        assert_eq!(c.handshakes(), 2);
        tokio::time::timeout(Duration::from_secs(1), h1.evicted())
            .await
            .expect("the oldest is dropped");
        let pending = tokio::time::timeout(Duration::from_millis(20), h2.evicted()).await;
        assert!(pending.is_err(), "the second one stays");
        drop(h2);
        assert_eq!(c.handshakes(), 1);
        assert!(c.evict_oldest());
        assert!(!c.evict_oldest());
    }

    #[test]
    fn descriptor_exhaustion_drops_a_handshake_before_pausing() {
        let c = Caps::new(8);
        let emfile = io::Error::from_raw_os_error(24);
        let mut errors = AcceptErrors::new();
        let (_h, _) = c.handshake();
        assert_eq!(errors.on_error(&emfile, &c), Duration::from_millis(1));
        assert_eq!(errors.on_error(&emfile, &c), Duration::from_millis(10));
        assert_eq!(errors.on_error(&emfile, &c), Duration::from_millis(20));
        for _ in 0..10 {
            errors.on_error(&emfile, &c);
        }
        assert_eq!(errors.on_error(&emfile, &c), Duration::from_secs(1));
        errors.reset();
        assert_eq!(errors.on_error(&emfile, &c), Duration::from_millis(10));
        let aborted = io::Error::from(io::ErrorKind::ConnectionAborted);
        assert_eq!(errors.on_error(&aborted, &c), Duration::ZERO);
    }
}
