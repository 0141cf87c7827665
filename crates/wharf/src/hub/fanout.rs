//! Encode once, deliver everywhere: the frames of one broadcast, shared by
//! every receiver on every worker, and the inbox through which a worker
//! hands a broadcast to another worker's connections.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use wharf_proto::{Message, Transmit};

use crate::conn::Client;
use crate::stats::Counters;

/// The deflate parameters that decide a shareable compressed frame.
type DeflateKey = (u8, u32, usize);

/// One message's frames: the plain frame, encoded once, and the compressed
/// frames, one per distinct set of deflate parameters, compressed on first
/// need and shared from then on by every receiver on every worker.
pub(crate) struct Frames {
    message: Message,
    plain: Transmit,
    deflated: Mutex<Vec<(DeflateKey, Option<Transmit>)>>,
    /// For hixie-75/76 receivers (binary skipped, counted).
    legacy: super::legacy::LegacyFrame,
}

impl Frames {
    pub(crate) fn new(message: Message) -> Self {
        Self {
            plain: Transmit::message(message.clone()),
            message,
            deflated: Mutex::new(Vec::new()),
            legacy: super::legacy::LegacyFrame::default(),
        }
    }

    /// The payload's length, which an inbox counts against its bound.
    pub(crate) fn len(&self) -> usize {
        self.plain.payload().len()
    }

    /// The compressed frame for `key`, compressing on first need (`None`:
    /// compression would not shrink it; the plain frame goes instead).
    fn deflated(&self, key: DeflateKey, client: &Client) -> Option<Transmit> {
        let mut cache = self.deflated.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, frame)) = cache.iter().find(|(k, _)| *k == key) {
            return frame.clone();
        }
        let params = client.shared().deflate()?;
        let frame = Transmit::deflated(&self.message, params);
        cache.push((key, frame.clone()));
        frame
    }

    /// Queues the message for every receiver: the plain frame for
    /// connections without compression, a shared compressed frame for those
    /// whose compressor keeps no context, a compression of their own only
    /// for connections with server context takeover. Returns how many
    /// receivers queued it.
    pub(crate) fn deliver<'a>(&self, receivers: impl Iterator<Item = &'a Client>) -> usize {
        // This call's own copy of the cache, so that the shared one is
        // locked once per kind of receiver, not once per receiver.
        let mut local: Vec<(DeflateKey, Option<Transmit>)> = Vec::new();
        let mut queued = 0;
        // The plain frames queued, counted once at the end rather than per
        // receiver (two atomic adds each): the receivers of one hub share
        // its counters.
        let mut plain: Option<(&Counters, u64)> = None;
        for client in receivers {
            let shared = client.shared();
            let sent = match shared.deflate() {
                _ if shared.legacy().is_some() => self.legacy.send(shared, &self.message),
                None => match shared.queue_encoded(self.plain.clone()) {
                    Ok(_) => {
                        let counters = shared.stats();
                        match &mut plain {
                            Some((c, n)) if std::ptr::eq(*c, counters) => *n += 1,
                            _ => {
                                flush_plain(plain.take(), self.len());
                                plain = Some((counters, 1));
                            }
                        }
                        Ok(())
                    }
                    Err(e) => Err(e),
                },
                Some(p) if p.shareable() => {
                    let key = (p.server_max_window_bits, p.level, p.threshold);
                    let frame = match local.iter().find(|(k, _)| *k == key) {
                        Some((_, frame)) => frame.clone(),
                        None => {
                            let frame = self.deflated(key, client);
                            local.push((key, frame.clone()));
                            frame
                        }
                    };
                    shared.send_encoded(frame.unwrap_or_else(|| self.plain.clone()))
                }
                Some(_) => client.try_send(self.message.clone()),
            };
            queued += usize::from(sent.is_ok());
        }
        flush_plain(plain, self.len());
        queued
    }
}

/// Counts `n` plain frames of `len` payload bytes queued.
fn flush_plain(plain: Option<(&Counters, u64)>, len: usize) {
    if let Some((counters, n)) = plain {
        Counters::add(&counters.messages_out, n);
        Counters::add(&counters.bytes_out, n * len as u64);
    }
}

/// What a worker hands another: one message for its members of a room, or
/// for all its connections.
pub(crate) struct Fanout {
    pub(crate) frames: Frames,
    /// `None`: every connection (a broadcast).
    pub(crate) room: Option<Box<str>>,
    pub(crate) except: Option<u64>,
}

/// The most payload bytes a worker's inbox holds; past it, fan-outs to
/// that worker are dropped and counted. A worker this far behind has
/// connections that would each meet their own `max_backpressure` anyway.
pub(crate) const INBOX_BYTES: usize = 64 << 20;
/// The most fan-outs an inbox holds, whatever their size.
pub(crate) const INBOX_JOBS: usize = 1 << 16;

/// Fan-outs waiting for a worker, in the order they were handed over: the
/// messages of one sender reach the worker's connections in that order.
#[derive(Default)]
pub(crate) struct Inbox {
    queue: Mutex<Queue>,
    ready: Notify,
}

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Arc<Fanout>>,
    bytes: usize,
}

impl Inbox {
    /// Queues `job`; `false` if the inbox is full (the job is dropped).
    pub(crate) fn push(&self, job: Arc<Fanout>) -> bool {
        let len = job.frames.len();
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        if q.jobs.len() >= INBOX_JOBS || q.bytes + len > INBOX_BYTES {
            return false;
        }
        let was_empty = q.jobs.is_empty();
        q.bytes += len;
        q.jobs.push_back(job);
        drop(q);
        if was_empty {
            self.ready.notify_one();
        }
        true
    }

    /// Waits for fan-outs and takes every one waiting.
    ///
    /// # Cancel safety
    /// Cancel safe: nothing is taken until the wait is over.
    pub(crate) async fn take(&self) -> VecDeque<Arc<Fanout>> {
        loop {
            {
                let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
                if !q.jobs.is_empty() {
                    q.bytes = 0;
                    return std::mem::take(&mut q.jobs);
                }
            }
            self.ready.notified().await;
        }
    }
}
