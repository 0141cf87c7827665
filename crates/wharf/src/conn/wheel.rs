//! One coarse timer per worker for the deadlines of all its connections.
//!
//! An idle connection with keepalive always has a deadline (its next ping,
//! seconds away). A tokio timer per connection costs an allocation of about
//! 100 bytes each; here a connection whose deadline is at least [`COARSE`]
//! away holds a slot of 16 bytes instead, and one task per worker sweeps the
//! slots every [`TICK`] and wakes the drivers whose deadline has passed.
//! Deadlines nearer than that (the end of a close handshake under a short
//! timeout, say) still get a tokio timer of their own, for precision.
//!
//! A slot fires at the first sweep at or after its deadline, never before,
//! and at most one tick late. A deadline that moves later leaves its slot
//! where it was: the driver, woken early, arms it again (no lock on the
//! path of every message).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use super::Shared;

/// How often a worker's sweep runs while any slot is armed.
pub(crate) const TICK: Duration = Duration::from_millis(250);
/// Deadlines at least this far away go to the wheel.
pub(crate) const COARSE: Duration = Duration::from_secs(1);
/// A slot (or tick) that is not armed.
pub(crate) const NONE: u32 = u32::MAX;

/// A worker's coarse timer.
pub(crate) struct Wheel {
    epoch: Instant,
    /// Whole ticks since `epoch` at the latest sweep.
    now: AtomicU32,
    slots: Mutex<Slots>,
}

/// The slots, as two arrays indexed by key: 12 bytes a connection rather
/// than 16 for a struct of both, and a sweep scans only the ticks.
#[derive(Default)]
struct Slots {
    /// The tick at which to wake each slot's driver, or `NONE`.
    ticks: Vec<u32>,
    /// Each slot's connection.
    conns: Vec<Weak<Shared>>,
    free: Vec<u32>,
    armed: usize,
    sweeping: bool,
}

impl Default for Wheel {
    fn default() -> Self {
        Self {
            epoch: Instant::now(),
            now: AtomicU32::new(0),
            slots: Mutex::default(),
        }
    }
}

impl Wheel {
    fn slots(&self) -> MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The first tick at or after `at`.
    pub(crate) fn tick_of(&self, at: Instant) -> u32 {
        let since = at.saturating_duration_since(self.epoch);
        let ticks = since.as_nanos().div_ceil(TICK.as_nanos());
        u32::try_from(ticks).unwrap_or(NONE - 1)
    }

    /// Whether the latest sweep ran at or after `tick`.
    pub(crate) fn passed(&self, tick: u32) -> bool {
        tick <= self.now.load(Ordering::Acquire)
    }

    /// Arms slot `*key` (taking a slot first if it has none) to wake
    /// `shared`'s driver at `tick`; starts the sweep if it is not running.
    pub(crate) fn arm(self: &Arc<Self>, key: &mut u32, tick: u32, shared: &Arc<Shared>) {
        let mut s = self.slots();
        if *key == NONE {
            let conn = Arc::downgrade(shared);
            *key = match s.free.pop() {
                Some(k) => {
                    s.ticks[k as usize] = NONE;
                    s.conns[k as usize] = conn;
                    k
                }
                None => {
                    s.ticks.push(NONE);
                    s.conns.push(conn);
                    u32::try_from(s.ticks.len() - 1).unwrap_or(NONE)
                }
            };
        }
        if s.ticks[*key as usize] == NONE {
            s.armed += 1;
        }
        s.ticks[*key as usize] = tick;
        if !s.sweeping {
            s.sweeping = true;
            tokio::spawn(sweep(self.clone()));
        }
    }

    /// Leaves slot `key` allocated but unarmed.
    pub(crate) fn disarm(&self, key: u32) {
        if key == NONE {
            return;
        }
        let mut s = self.slots();
        if s.ticks[key as usize] != NONE {
            s.ticks[key as usize] = NONE;
            s.armed -= 1;
        }
    }

    /// Gives slot `key` back.
    pub(crate) fn release(&self, key: u32) {
        if key == NONE {
            return;
        }
        let mut s = self.slots();
        let was_armed = s.ticks[key as usize] != NONE;
        s.ticks[key as usize] = NONE;
        s.conns[key as usize] = Weak::new();
        if was_armed {
            s.armed -= 1;
        }
        s.free.push(key);
    }

    /// One sweep: advances the clock, disarms the slots that are due and
    /// returns them; `None` once nothing is armed (the sweep ends).
    fn due(&self) -> Option<Vec<Weak<Shared>>> {
        let now = self.tick_of(Instant::now()).saturating_sub(1);
        self.now.store(now, Ordering::Release);
        let mut s = self.slots();
        if s.armed == 0 {
            s.sweeping = false;
            return None;
        }
        let mut due = Vec::new();
        let Slots { ticks, conns, .. } = &mut *s;
        for (tick, conn) in ticks.iter_mut().zip(conns.iter()) {
            if *tick <= now {
                *tick = NONE;
                due.push(conn.clone());
            }
        }
        s.armed -= due.len();
        Some(due)
    }
}

/// Sweeps `wheel` every tick for as long as a slot is armed.
async fn sweep(wheel: Arc<Wheel>) {
    /// Lets a later `arm` start a new sweep if this one is dropped (its
    /// runtime shutting down) while slots are armed.
    struct Sweeping {
        wheel: Arc<Wheel>,
        finished: bool,
    }
    impl Drop for Sweeping {
        fn drop(&mut self) {
            if !self.finished {
                self.wheel.slots().sweeping = false;
            }
        }
    }
    let mut sweeping = Sweeping {
        wheel,
        finished: false,
    };
    let mut ticks = tokio::time::interval(TICK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(due) = sweeping.wheel.due() else {
            sweeping.finished = true;
            return;
        };
        for shared in due.iter().filter_map(Weak::upgrade) {
            shared.lock().wake_driver();
        }
    }
}
