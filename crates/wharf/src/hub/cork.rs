//! Broadcasts held back for the rest of a run of messages ("corked"), then
//! delivered together: each receiver is locked, queued to and woken once
//! per run rather than once per message.
//!
//! The driver of a connection served by a message callback
//! ([`crate::Server::on_message`]) hands the callback runs of messages read
//! together (a publisher's burst); a connection's handler takes, in one
//! poll, every message `recv` has ready. While such a run or poll lasts, a
//! broadcast or publish from this thread is held here; when it ends, the
//! held messages go out in the order they were made, consecutive messages
//! to the same receivers as one delivery pass. A thread holds fewer than
//! `MAX_RUN` (64) messages: the 64th sends them on at once.
//!
//! On this thread, nothing observes the difference but the clock: every
//! other operation that could be ordered after a held message lets it go
//! first. That is any lock of a connection's state
//! ([`crate::conn::Shared::lock`]: a direct send, a close, a ping, a state
//! query; not `recv`, which only takes what the peer sent), and a join or
//! leave. So a receiver still gets a sender's
//! messages in the order they were sent, and a member the callback adds
//! after a publish does not get it. What other threads do meanwhile (a
//! join there, a task the callback handed work to) is ordered against the
//! run's end, as it is against a publish that another worker's inbox
//! delivers.

use std::cell::{Cell, RefCell};

use wharf_proto::Message;

use super::Hub;

thread_local! {
    /// Set while a run is corked on this thread.
    static CORK: RefCell<Option<Cork>> = const { RefCell::new(None) };
    /// Whether messages are held: the one check every connection lock pays.
    static HELD: Cell<bool> = const { Cell::new(false) };
}

#[derive(Default)]
struct Cork {
    /// The hub the held messages are for (one at a time: another hub's
    /// broadcast lets these go first).
    hub: Option<Hub>,
    held: Vec<Held>,
}

/// A broadcast or publish held back.
pub(super) struct Held {
    pub(super) room: Option<Box<str>>,
    pub(super) except: Option<u64>,
    pub(super) message: Message,
}

/// Runs `f` with this thread's broadcasts held back, then delivers them.
/// Nested calls hold nothing more: the outermost delivers.
pub(crate) fn corked<R>(f: impl FnOnce() -> R) -> R {
    /// Uncorks at the end, whatever way it comes, then delivers what was
    /// held: uncorked first, so that a panic while delivering cannot leave
    /// the thread holding every later broadcast back.
    struct Uncork;
    impl Drop for Uncork {
        fn drop(&mut self) {
            HELD.set(false);
            if let Some(Cork {
                hub: Some(hub),
                mut held,
            }) = CORK.with_borrow_mut(Option::take)
            {
                hub.deliver_held(&mut held);
            }
        }
    }
    let outer = CORK.with_borrow_mut(|c| {
        if c.is_some() {
            return false;
        }
        *c = Some(Cork::default());
        true
    });
    let _uncork = outer.then_some(Uncork);
    f()
}

/// Holds a broadcast or publish for `hub` if this thread is corked; gives
/// the message back if it is not.
pub(super) fn hold(
    hub: &Hub,
    room: Option<&str>,
    except: Option<u64>,
    message: Message,
) -> Result<(), Message> {
    let same = CORK.with_borrow(|c| {
        c.as_ref().map(|c| {
            c.hub
                .as_ref()
                .is_none_or(|h| std::sync::Arc::ptr_eq(&h.inner, &hub.inner))
        })
    });
    match same {
        None => return Err(message),
        Some(false) => release(),
        Some(true) => {}
    }
    let held = CORK.with_borrow_mut(|c| {
        let Some(c) = c else {
            return Err(message);
        };
        c.hub.get_or_insert_with(|| hub.clone());
        c.held.push(Held {
            room: room.map(Into::into),
            except,
            message,
        });
        HELD.set(true);
        Ok(c.held.len())
    })?;
    // A handler that publishes in a loop holds no more than a run.
    if held >= super::MAX_RUN {
        release();
    }
    Ok(())
}

/// Delivers what this thread holds, if anything (the run stays corked).
#[inline]
pub(crate) fn release() {
    if HELD.get() {
        release_held();
    }
}

#[cold]
fn release_held() {
    HELD.set(false);
    let taken = CORK.with_borrow_mut(|c| {
        c.as_mut()
            .map(|c| (c.hub.take(), std::mem::take(&mut c.held)))
    });
    // Delivered with the cork's cell free: delivering locks connections,
    // which look at it.
    if let Some((Some(hub), mut held)) = taken {
        hub.deliver_held(&mut held);
        // The vector's room kept for the next run.
        CORK.with_borrow_mut(|c| {
            if let Some(c) = c
                && c.held.is_empty()
            {
                c.held = held;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::{CORK, corked};
    use crate::Hub;

    /// A thread that publishes in a loop holds no more than a run back:
    /// the rest goes out as it comes.
    #[test]
    fn a_thread_holds_at_most_a_run() {
        let hub = Hub::new();
        let mut most = 0;
        corked(|| {
            for i in 0..10_000 {
                hub.broadcast(format!("{i}"));
                let held = CORK.with_borrow(|c| c.as_ref().map_or(0, |c| c.held.len()));
                most = most.max(held);
            }
        });
        assert!(most > 1, "nothing was held");
        assert!(most < super::super::MAX_RUN, "{most} messages held");
        assert!(CORK.with_borrow(Option::is_none), "still corked");
    }
}
