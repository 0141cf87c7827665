//! Rate limits on received messages: messages per second and bytes per
//! second, each a token bucket with a burst.
//!
//! Each bucket is kept as its *debt*: how long it would take to refill
//! completely (the generic cell rate algorithm's form of a token bucket).
//! A message is admitted when every bucket has room for it, or is full: a
//! message larger than the byte burst passes on a full bucket and leaves
//! the bucket in debt for as long as its bytes take at the rate. Time is an
//! argument: the limiter reads no clock, so tests step it.
//!
//! Times are kept in 1/65,536 ns (16 fractional bits), so that a cost of
//! one unit is exact enough that `burst` messages fit and `burst + 1` do
//! not, at any rate.

use std::time::Instant;

/// What happens to a message received over the rate limit.
#[derive(Clone, Copy, Debug, Default, Eq, PartialEq)]
#[non_exhaustive]
pub enum RateAction {
    /// Fail the connection with 1008 "rate limit exceeded"
    /// ([`ProtocolError::RateLimited`](crate::ProtocolError::RateLimited)),
    /// after the events before the message: the default.
    #[default]
    Close,
    /// Drop the message (no event) and count it
    /// ([`Connection::take_rate_limited`](crate::Connection::take_rate_limited)).
    Drop,
    /// Deliver the message as [`Event::RateLimited`](crate::Event::RateLimited)
    /// and let the application answer it (say, with an error of its own
    /// protocol), keeping the connection.
    Notify,
}

/// A limit on the messages a connection receives: at most `rate` messages
/// (and bytes) a second, with bursts of up to `burst`. A limit left unset
/// (or set to zero) does not apply.
///
/// ```
/// use std::time::{Duration, Instant};
/// use wharf_proto::{RateAction, RateLimit, RateLimiter};
///
/// let limit = RateLimit::new(RateAction::Drop).messages(5, 20);
/// let t0 = Instant::now();
/// let mut limiter = RateLimiter::new(limit, t0);
/// assert!((0..20).all(|_| limiter.check(t0, 10)));
/// assert!(!limiter.check(t0, 10));
/// assert!(limiter.check(t0 + Duration::from_millis(200), 10));
/// ```
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
#[non_exhaustive]
pub struct RateLimit {
    /// Messages a second (0: no message limit).
    pub messages_per_second: u32,
    /// Messages accepted at once from a full bucket.
    pub message_burst: u32,
    /// Payload bytes a second (0: no byte limit), counted on the message as
    /// delivered (inflated, if it was compressed).
    pub bytes_per_second: u64,
    /// Bytes accepted at once from a full bucket.
    pub byte_burst: u64,
    /// What happens to a message over the limit.
    pub action: RateAction,
}

impl RateLimit {
    /// No limit yet (add them with [`RateLimit::messages`] and
    /// [`RateLimit::bytes`]), with `action` for the messages over them.
    pub const fn new(action: RateAction) -> Self {
        Self {
            messages_per_second: 0,
            message_burst: 0,
            bytes_per_second: 0,
            byte_burst: 0,
            action,
        }
    }

    /// At most `per_second` messages a second, `burst` at once (at least
    /// one).
    #[must_use]
    pub const fn messages(mut self, per_second: u32, burst: u32) -> Self {
        self.messages_per_second = per_second;
        self.message_burst = burst;
        self
    }

    /// At most `per_second` payload bytes a second, `burst` at once.
    #[must_use]
    pub const fn bytes(mut self, per_second: u64, burst: u64) -> Self {
        self.bytes_per_second = per_second;
        self.byte_burst = burst;
        self
    }

    /// What happens to a message over the limit.
    #[must_use]
    pub const fn action(mut self, action: RateAction) -> Self {
        self.action = action;
        self
    }
}

/// A connection's rate limit: the limiter, when input last arrived, and
/// the messages over the limit not yet reported.
#[derive(Debug)]
pub(crate) struct Rate {
    pub(crate) limiter: RateLimiter,
    /// When input last arrived, in the limiter's nanoseconds (converted
    /// once per read, not per message).
    input_at: u64,
    pub(crate) limited: u32,
}

impl Rate {
    pub(crate) fn new(limit: RateLimit, now: Instant) -> Self {
        Self {
            limiter: RateLimiter::new(limit, now),
            input_at: 0,
            limited: 0,
        }
    }

    /// Records that input arrived at `now`.
    pub(crate) fn input(&mut self, now: Instant) {
        self.input_at = self.limiter.nanos(now);
    }

    /// Whether a message of `bytes` that arrived with the last input is
    /// within the limit (and charges it if so).
    pub(crate) fn admit(&mut self, bytes: usize) -> bool {
        self.limiter.check_at(self.input_at, bytes)
    }
}

/// Fractional bits of the limiter's time unit.
const FRAC: u32 = 16;
const NANOS: u128 = 1_000_000_000;

/// One bucket, in 1/65,536 ns.
#[derive(Clone, Copy, Debug, Default)]
struct Bucket {
    /// The time one unit (message or byte) refills in; 0: no limit.
    unit: u64,
    /// The time a full bucket takes to refill: `burst` units.
    capacity: u64,
    /// How long until the bucket is full again.
    debt: u64,
}

impl Bucket {
    fn new(per_second: u64, burst: u64) -> Self {
        if per_second == 0 {
            return Self::default();
        }
        let unit = u64::try_from((NANOS << FRAC) / u128::from(per_second)).unwrap_or(u64::MAX);
        Self {
            unit,
            capacity: unit.saturating_mul(burst.max(1)),
            debt: 0,
        }
    }

    /// The cost of `n` units, if the bucket (refilled) has room for it.
    fn room(&self, n: u64) -> Option<u64> {
        let cost = self.unit.saturating_mul(n);
        (self.debt == 0 || self.debt.saturating_add(cost) <= self.capacity).then_some(cost)
    }
}

/// The state of a [`RateLimit`] for one connection: two buckets and the
/// time they were last refilled. Sans-IO: the caller passes the time.
#[derive(Clone, Debug)]
pub struct RateLimiter {
    action: RateAction,
    epoch: Instant,
    /// The last refill, in ns since `epoch`.
    last: u64,
    messages: Bucket,
    bytes: Bucket,
}

impl RateLimiter {
    /// A limiter for `limit` whose buckets are full at `now`.
    pub fn new(limit: RateLimit, now: Instant) -> Self {
        Self {
            action: limit.action,
            epoch: now,
            last: 0,
            messages: Bucket::new(
                u64::from(limit.messages_per_second),
                u64::from(limit.message_burst),
            ),
            bytes: Bucket::new(limit.bytes_per_second, limit.byte_burst),
        }
    }

    /// The action for a message over the limit.
    pub fn action(&self) -> RateAction {
        self.action
    }

    /// Whether a message of `bytes` bytes received at `now` is within the
    /// limit: if so, it is charged to both buckets; if not, nothing is
    /// charged. A `now` earlier than the last one counts as the last one.
    pub fn check(&mut self, now: Instant, bytes: usize) -> bool {
        self.check_at(self.nanos(now), bytes)
    }

    /// `now` in nanoseconds since the limiter was made.
    fn nanos(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    fn check_at(&mut self, at: u64, bytes: usize) -> bool {
        if at > self.last {
            let refill = (at - self.last).saturating_mul(1 << FRAC);
            self.messages.debt = self.messages.debt.saturating_sub(refill);
            self.bytes.debt = self.bytes.debt.saturating_sub(refill);
            self.last = at;
        }
        let bytes = u64::try_from(bytes).unwrap_or(u64::MAX);
        match (self.messages.room(1), self.bytes.room(bytes)) {
            (Some(m), Some(b)) => {
                self.messages.debt += m;
                self.bytes.debt = self.bytes.debt.saturating_add(b);
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_burst_passes_and_one_more_does_not() {
        let t0 = Instant::now();
        for (rate, burst) in [(1, 1), (5, 20), (7, 3), (1000, 1000), (3, 100_000)] {
            let mut l =
                RateLimiter::new(RateLimit::new(RateAction::Drop).messages(rate, burst), t0);
            for i in 0..burst {
                assert!(l.check(t0, 0), "rate {rate} burst {burst}: message {i}");
            }
            assert!(!l.check(t0, 0), "rate {rate} burst {burst}: one past");
        }
    }

    #[test]
    fn the_bucket_refills_at_the_rate() {
        let t0 = Instant::now();
        let mut l = RateLimiter::new(RateLimit::new(RateAction::Drop).messages(5, 2), t0);
        assert!(l.check(t0, 0) && l.check(t0, 0) && !l.check(t0, 0));
        // 200 ms refills exactly one message; 199 ms does not.
        assert!(!l.check(t0 + ms(199), 0));
        assert!(l.check(t0 + ms(200), 0));
        assert!(!l.check(t0 + ms(200), 0));
        // Refused messages cost nothing: a long pause refills the burst,
        // and no more than it.
        assert!(!l.check(t0 + ms(300), 0));
        let later = t0 + Duration::from_secs(60);
        assert!(l.check(later, 0) && l.check(later, 0) && !l.check(later, 0));
        // Time going backwards counts as no time.
        assert!(!l.check(t0, 0));
    }

    #[test]
    fn bytes_have_their_own_bucket() {
        let t0 = Instant::now();
        let limit = RateLimit::new(RateAction::Close)
            .messages(100, 100)
            .bytes(1000, 4000);
        let mut l = RateLimiter::new(limit, t0);
        assert!(l.check(t0, 4000));
        assert!(!l.check(t0, 1));
        assert!(l.check(t0 + ms(1), 1));
        assert!(!l.check(t0 + ms(1), 1));
        // A second refills 1,000 bytes, and 999 ms not quite.
        let mut l = RateLimiter::new(limit, t0);
        assert!(l.check(t0, 3000) && l.check(t0, 1000) && !l.check(t0, 1));
        assert!(!l.check(t0 + ms(999), 1000));
        assert!(l.check(t0 + ms(1000), 1000));
    }

    #[test]
    fn a_message_larger_than_the_burst_passes_on_a_full_bucket() {
        let t0 = Instant::now();
        let mut l = RateLimiter::new(RateLimit::new(RateAction::Drop).bytes(100, 100), t0);
        assert!(l.check(t0, 1000));
        // It left 10 s of debt, 9 s more than the bucket holds: a byte
        // (10 ms) fits only 9.01 s later.
        assert!(!l.check(t0 + ms(9_009), 1));
        assert!(l.check(t0 + ms(9_010), 1));
        let mut l = RateLimiter::new(RateLimit::new(RateAction::Drop).bytes(100, 100), t0);
        assert!(l.check(t0, 1000));
        assert!(l.check(t0 + ms(10_000), 100));
        assert!(!l.check(t0 + ms(10_000), 1));
    }

    #[test]
    fn no_limit_set_admits_everything() {
        let t0 = Instant::now();
        let mut l = RateLimiter::new(RateLimit::new(RateAction::Close), t0);
        assert!((0..10_000).all(|_| l.check(t0, usize::MAX)));
    }
}
