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

use std::sync::OnceLock;
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
/// handshake or the first stalled write. An idle connection's clock is 16
/// bytes: the instant the peer was last heard from, as nanoseconds from
/// the process's [`EPOCH`], and what only a rate limit, the end or a
/// stalled write needs, boxed apart.
#[derive(Debug)]
pub(crate) struct Clock {
    /// When the peer last showed life (input arrived, or the transport
    /// took output it had refused): nanoseconds from [`EPOCH`] in the low
    /// 63 bits (signed: 146 years either way), and in the top bit whether
    /// our keepalive ping is queued and nothing was heard since.
    heard: u64,
    more: Option<Box<More>>,
}

/// What a clock holds only with a rate limit, or around the end of a
/// connection, or while the peer takes no output.
#[derive(Debug, Default)]
struct More {
    /// The rate limit on received messages, if any: time-dependent state
    /// too, kept here so that a connection without one pays nothing.
    rate: Option<crate::rate::Rate>,
    /// When the state left `Open`.
    closing: Option<Instant>,
    /// Since when output has waited with no byte written.
    stalled: Option<Instant>,
}

/// The instant every clock of the process counts from: the first one a
/// clock was given. Instants before it count as negative. (The core reads
/// no clock: this is an input, kept.)
static EPOCH: OnceLock<Instant> = OnceLock::new();

/// The top bit of [`Clock::heard`]: the keepalive ping is out.
const PINGED: u64 = 1 << 63;

/// `at` as nanoseconds from [`EPOCH`] in 63 bits, two's complement
/// (saturating past 146 years).
fn offset(at: Instant) -> u64 {
    const MAX: i64 = (1 << 62) - 1;
    let epoch = *EPOCH.get_or_init(|| at);
    let ns = |d: Duration| i64::try_from(d.as_nanos()).unwrap_or(MAX).min(MAX);
    let ns = match at.checked_duration_since(epoch) {
        Some(after) => ns(after),
        None => -ns(epoch.duration_since(at)),
    };
    ns.cast_unsigned() & !PINGED
}

/// The signed nanoseconds from [`EPOCH`] in `heard`'s low 63 bits.
fn nanos(heard: u64) -> i64 {
    // Shifted up and back, arithmetically: bit 62 is the sign.
    (heard << 1).cast_signed() >> 1
}

/// The instant `ns` nanoseconds from [`EPOCH`]; `None` only before any
/// clock was made, which cannot hold a time to convert.
fn instant(ns: i64) -> Option<Instant> {
    let epoch = *EPOCH.get()?;
    let d = Duration::from_nanos(ns.unsigned_abs());
    Some(if ns >= 0 {
        epoch.checked_add(d).unwrap_or(epoch)
    } else {
        epoch.checked_sub(d).unwrap_or(epoch)
    })
}

impl Clock {
    pub(crate) fn new(now: Instant) -> Self {
        Self {
            heard: offset(now),
            more: None,
        }
    }

    /// The peer showed life at `now`: keepalive silence starts again.
    pub(crate) fn heard(&mut self, now: Instant) {
        self.heard = offset(now);
    }

    /// Whether our keepalive ping is queued and nothing was heard since.
    pub(crate) fn pinged(&self) -> bool {
        self.heard & PINGED != 0
    }

    pub(crate) fn set_pinged(&mut self) {
        self.heard |= PINGED;
    }

    pub(crate) fn rate(&mut self) -> Option<&mut crate::rate::Rate> {
        self.more.as_mut()?.rate.as_mut()
    }

    pub(crate) fn set_rate(&mut self, rate: crate::rate::Rate) {
        self.more.get_or_insert_default().rate = Some(rate);
    }

    /// When the state left `Open`, once it has (and a deadline runs).
    pub(crate) fn closing(&self) -> Option<Instant> {
        self.more.as_ref()?.closing
    }

    pub(crate) fn set_closing(&mut self, at: Instant) {
        self.more.get_or_insert_default().closing = Some(at);
    }

    /// Since when output has waited with no byte written, if it waits.
    pub(crate) fn stalled(&self) -> Option<Instant> {
        self.more.as_ref()?.stalled
    }

    pub(crate) fn set_stalled(&mut self, at: Option<Instant>) {
        match (at, &mut self.more) {
            (Some(at), more) => more.get_or_insert_default().stalled = Some(at),
            (None, Some(more)) => more.stalled = None,
            (None, None) => {}
        }
    }

    /// When the keepalive acts next: the ping, or the end after it.
    pub(crate) fn keepalive_at(&self, l: Limits) -> Option<Instant> {
        if !l.has_keepalive() {
            return None;
        }
        let ping = instant(nanos(self.heard))? + dur(l.keepalive)?;
        Some(if self.pinged() {
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
/// mimalloc's 16-byte size class.
#[cfg(all(test, target_pointer_width = "64"))]
#[test]
fn an_idle_connections_clock_stays_small() {
    let clock = size_of::<Clock>();
    assert!(clock <= 16, "the clock grew to {clock} bytes");
}

#[cfg(test)]
#[test]
fn a_clock_keeps_its_instants_exactly_before_and_after_the_epoch() {
    const S: Duration = Duration::from_secs(1);
    let now = Instant::now();
    let mut clock = Clock::new(now);
    let l = Limits::new(Timeouts::default().keepalive(30 * S, 10 * S));
    assert_eq!(clock.keepalive_at(l), Some(now + 30 * S));
    clock.set_pinged();
    assert!(clock.pinged());
    assert_eq!(clock.keepalive_at(l), Some(now + 40 * S));
    let odd = Duration::from_nanos(1);
    let year = 86_400 * 365 * S;
    // An hour back is before any epoch of this test process (if the
    // machine has been up that long).
    let past = now.checked_sub(3600 * S - odd).unwrap_or(now);
    for at in [now - odd, past, now + odd, now + 50 * year + odd] {
        clock.heard(at);
        assert!(!clock.pinged());
        assert_eq!(clock.keepalive_at(l), Some(at + 30 * S));
        clock.set_pinged();
        assert!(clock.pinged());
        assert_eq!(clock.keepalive_at(l), Some(at + 40 * S));
    }
}
