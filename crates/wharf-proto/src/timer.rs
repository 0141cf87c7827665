//! Deadlines of a connection, with time as an input (as in quinn-proto): the
//! core never reads a clock. The transport passes `now` to
//! [`Connection::handle_input`](crate::Connection::handle_input),
//! [`Connection::handle_written`](crate::Connection::handle_written) and
//! [`Connection::handle_timeout`](crate::Connection::handle_timeout), and
//! sleeps until [`Connection::poll_timeout`](crate::Connection::poll_timeout).
//!
//! Three deadlines bound every state of an open connection:
//! - **keepalive**: a peer silent for `keepalive` is pinged; silent for
//!   `keepalive_timeout` more, it gets close 1001 and the connection is
//!   abandoned. Silence is not judged while the application has not taken
//!   the messages already received (input is paused then, by our choice).
//! - **close**: once the close handshake starts (either side) or the
//!   connection fails, everything — the peer's close frame, our last
//!   frames, the transport's end — must be over within `close`.
//! - **write**: output that waits with no byte taken by the transport for
//!   `write` means a peer that does not read (or a zero TCP window): the
//!   connection is abandoned and its queue dropped.

use std::time::{Duration, Instant};

/// The time limits of a connection; `None` (or zero) turns one off. The
/// default has none: a bare core waits forever, a server sets all three.
#[derive(Clone, Copy, Debug, Default, Eq, PartialEq)]
#[non_exhaustive]
pub struct Timeouts {
    /// Ping a peer that has sent nothing for this long.
    pub keepalive: Option<Duration>,
    /// After that ping, close (1001) a peer still silent this much longer.
    pub keepalive_timeout: Duration,
    /// How long the close handshake, and then the transport's end, may take.
    pub close: Option<Duration>,
    /// How long queued output may wait with no byte written.
    pub write: Option<Duration>,
}

impl Timeouts {
    /// Sets keepalive: a ping after `interval` of silence, and the end after
    /// `timeout` more.
    #[must_use]
    pub fn keepalive(mut self, interval: Duration, timeout: Duration) -> Self {
        self.keepalive = Some(interval);
        self.keepalive_timeout = timeout;
        self
    }

    /// Sets the close timeout.
    #[must_use]
    pub fn close(mut self, timeout: Duration) -> Self {
        self.close = Some(timeout);
        self
    }

    /// Sets the write-progress timeout.
    #[must_use]
    pub fn write(mut self, timeout: Duration) -> Self {
        self.write = Some(timeout);
        self
    }
}

/// Which deadline passed; the connection is over and the transport should
/// be dropped (after writing what it can, for [`Expired::Keepalive`], whose
/// close frame is queued).
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
#[non_exhaustive]
pub enum Expired {
    /// The close handshake or the transport's end took too long.
    Close,
    /// The peer stayed silent after a keepalive ping.
    Keepalive,
    /// Output waited too long with no byte written.
    Write,
}

/// [`Timeouts`] as a connection holds them: milliseconds in 32 bits (about
/// 49 days; longer counts as that), zero for off. A connection is mostly
/// idle state.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Limits {
    keepalive: u32,
    keepalive_timeout: u32,
    close: u32,
    write: u32,
}

fn ms(d: Option<Duration>) -> u32 {
    // An explicit zero still means "at once", not "off".
    d.map_or(0, |d| {
        u32::try_from(d.as_millis()).unwrap_or(u32::MAX).max(1)
    })
}

fn dur(ms: u32) -> Option<Duration> {
    (ms > 0).then(|| Duration::from_millis(u64::from(ms)))
}

impl Limits {
    pub(crate) fn new(t: Timeouts) -> Self {
        Self {
            keepalive: ms(t.keepalive),
            keepalive_timeout: ms(Some(t.keepalive_timeout)),
            close: ms(t.close),
            write: ms(t.write),
        }
    }

    pub(crate) fn get(self) -> Timeouts {
        Timeouts {
            keepalive: dur(self.keepalive),
            keepalive_timeout: dur(self.keepalive_timeout).unwrap_or_default(),
            close: dur(self.close),
            write: dur(self.write),
        }
    }

    pub(crate) fn has_keepalive(self) -> bool {
        self.keepalive > 0
    }

    pub(crate) fn has_close(self) -> bool {
        self.close > 0
    }

    pub(crate) fn has_write(self) -> bool {
        self.write > 0
    }
}

/// The instants a connection's deadlines run from. Allocated only while
/// one runs: always with keepalive or a rate limit, else from the close
/// handshake or the first stalled write. An idle connection's clock is 40
/// bytes: what only the end or a stalled write needs is boxed apart.
#[derive(Debug)]
pub(crate) struct Clock {
    /// When the peer last showed life: input arrived, or the transport
    /// took output it had refused.
    pub(crate) heard: Instant,
    /// Our keepalive ping is queued and nothing was heard since.
    pub(crate) pinged: bool,
    /// The rate limit on received messages, if any: time-dependent state
    /// too, kept here so that a connection without one pays nothing.
    pub(crate) rate: Option<Box<crate::rate::Rate>>,
    /// From the close handshake or the first stalled write on.
    later: Option<Box<Later>>,
}

/// The instants of the deadlines that run only around the end of a
/// connection or while the peer takes no output.
#[derive(Debug, Default)]
struct Later {
    /// When the state left `Open`.
    closing: Option<Instant>,
    /// Since when output has waited with no byte written.
    stalled: Option<Instant>,
}

impl Clock {
    pub(crate) fn new(now: Instant) -> Self {
        Self {
            heard: now,
            pinged: false,
            rate: None,
            later: None,
        }
    }

    /// When the state left `Open`, once it has (and a deadline runs).
    pub(crate) fn closing(&self) -> Option<Instant> {
        self.later.as_ref()?.closing
    }

    pub(crate) fn set_closing(&mut self, at: Instant) {
        self.later.get_or_insert_default().closing = Some(at);
    }

    /// Since when output has waited with no byte written, if it waits.
    pub(crate) fn stalled(&self) -> Option<Instant> {
        self.later.as_ref()?.stalled
    }

    pub(crate) fn set_stalled(&mut self, at: Option<Instant>) {
        match (at, &mut self.later) {
            (Some(at), later) => later.get_or_insert_default().stalled = Some(at),
            (None, Some(later)) => later.stalled = None,
            (None, None) => {}
        }
    }

    /// When the keepalive acts next: the ping, or the end after it.
    pub(crate) fn keepalive_at(&self, l: Limits) -> Option<Instant> {
        if !l.has_keepalive() {
            return None;
        }
        let ping = self.heard + dur(l.keepalive)?;
        Some(if self.pinged {
            ping + Duration::from_millis(u64::from(l.keepalive_timeout))
        } else {
            ping
        })
    }

    pub(crate) fn close_at(&self, l: Limits) -> Option<Instant> {
        Some(self.closing()? + dur(l.close)?)
    }

    pub(crate) fn write_at(&self, l: Limits) -> Option<Instant> {
        Some(self.stalled()? + dur(l.write)?)
    }
}

/// The clock is what keepalive costs an idle connection: keep it in
/// mimalloc's 40-byte size class.
#[cfg(all(test, target_pointer_width = "64"))]
#[test]
fn an_idle_connections_clock_stays_small() {
    let clock = size_of::<Clock>();
    assert!(clock <= 40, "the clock grew to {clock} bytes");
}
