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

    /// Queues a run of messages, in order, for every receiver: the plain
    /// frames for connections without compression (each receiver locked
    /// and woken once for the whole run), a shared compressed frame for
    /// those whose compressor keeps no context, a compression of their own
    /// only for connections with server context takeover. Returns how many
    /// deliveries were queued.
    pub(crate) fn deliver<'a>(run: &[&Self], receivers: impl Iterator<Item = &'a Client>) -> usize {
        // This call's own copy of each message's cache, so that the shared
        // one is locked once per kind of receiver, not once per receiver.
        let mut local: Vec<Vec<(DeflateKey, Option<Transmit>)>> = vec![Vec::new(); run.len()];
        let mut queued = 0;
        // The plain frames queued, counted once at the end rather than per
        // receiver (two atomic adds each): the receivers of one hub share
        // its counters.
        let mut plain = Tally::default();
        // A run of small frames joined into one buffer, shared by every
        // plain receiver: one queue entry, one reference count and one
        // gather per receiver for the whole run.
        let joined = (run.len() > 1)
            .then(|| run.iter().map(|f| f.plain.len()).sum::<usize>())
            .filter(|&len| len <= JOIN_BYTES)
            .map(|_| {
                let joined = Transmit::concat(run.iter().map(|f| &f.plain));
                let payload = run.iter().map(|f| f.len()).sum::<usize>();
                (joined, payload)
            });
        for client in receivers {
            let shared = client.shared();
            if shared.deflate().is_none() && shared.legacy().is_none() {
                let (n, bytes) = shared.queue_encoded_run(
                    joined.as_ref().map(|(t, payload)| (t, run.len(), *payload)),
                    run.iter().map(|f| f.plain.clone()),
                );
                plain.add(shared.stats(), n, bytes);
                queued += n;
                continue;
            }
            for (frames, local) in run.iter().zip(local.iter_mut()) {
                queued += usize::from(frames.deliver_to(client, local).is_ok());
            }
        }
        plain.flush();
        queued
    }

    /// Queues the message for a receiver with compression or a legacy
    /// draft.
    fn deliver_to(
        &self,
        client: &Client,
        local: &mut Vec<(DeflateKey, Option<Transmit>)>,
    ) -> Result<(), crate::error::SendError> {
        let shared = client.shared();
        match shared.deflate() {
            _ if shared.legacy().is_some() => self.legacy.send(shared, &self.message),
            None => shared.send_encoded(self.plain.clone()),
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
        }
    }
}

/// Plain frames queued by one delivery pass, counted at its end: the
/// receivers of one hub share their counters.
#[derive(Default)]
struct Tally<'a> {
    counters: Option<&'a Counters>,
    messages: u64,
    bytes: u64,
}

impl<'a> Tally<'a> {
    fn add(&mut self, counters: &'a Counters, messages: usize, bytes: usize) {
        if !self.counters.is_some_and(|c| std::ptr::eq(c, counters)) {
            self.flush();
            self.counters = Some(counters);
        }
        self.messages += messages as u64;
        self.bytes += bytes as u64;
    }

    fn flush(&mut self) {
        if let Some(counters) = self.counters.take() {
            Counters::add(&counters.messages_out, std::mem::take(&mut self.messages));
            Counters::add(&counters.bytes_out, std::mem::take(&mut self.bytes));
        }
    }
}

/// The most bytes of a run's frames joined into one buffer for its plain
/// receivers (`Frames::deliver`): past it, copying costs more than the
/// queue entries it saves.
const JOIN_BYTES: usize = 16 << 10;

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
