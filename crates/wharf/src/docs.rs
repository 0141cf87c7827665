//! Design notes, as documentation.

pub mod limits {
    //! # Limits: each default, why, and what happens at the limit
    //!
    //! | setting | default | at the limit |
    //! |---|---|---|
    //! | `Limits::max_frame_size` | 1 MiB | close 1009, decided from the frame header before any payload is buffered |
    //! | `Limits::max_message_size` | 1 MiB | close 1009, decided from the header of the frame that would cross it |
    //! | `Limits::max_fragments` | 4,096 | close 1008 at the first fragment past it |
    //! | inflated size (permessage-deflate) | `max_message_size` | close 1009 the moment inflating a message would pass it: output grows in steps and never beyond the limit plus one byte, so a few KiB that inflate to GiBs cost at most the limit |
    //! | `Server::max_backpressure` | 1 MiB | `Client::send` (and the `Sink`) waits below it: the queue holds at most the bound plus one message. For `try_send` and broadcasts: under `SlowClient::Close` (default) the send that would cross it is refused with `SendError::Backpressure`, the queued backlog is dropped and the connection is closed with 1008; under `SlowClient::Drop` that message is dropped, counted in `Client::dropped` and refused with `SendError::Dropped` |
    //! | `Server::keepalive` | 30 s, 20 s | a connection silent for 30 s is pinged; silent 20 s more, it gets close 1001 ("keepalive timeout") and its TCP connection is dropped at once ([`Disconnect::TimedOut`](crate::Disconnect::TimedOut)) |
    //! | `Server::handshake_timeout` | 10 s | one deadline from accept until the connection's first request head is complete, whichever path reads it (wharf's own parser, or hyper after it); each later request head on a keep-alive connection has as long again, counted from the end of the previous response: past it the TCP connection is dropped without an answer (slowloris) |
    //! | `Server::max_handshakes` | 256 | connections accepted whose first request head (and PROXY header) is not complete: one more drops the **oldest**, closed without an answer. A real client sends its head within a round trip of connecting, so the oldest are the likeliest idle; dropping the newest would let a few hundred idle sockets lock everyone out. Also what running out of descriptors (`EMFILE`) drops first |
    //! | `Server::max_connections` | none | connections open (WebSocket, and plain HTTP from their first request on): an upgrade past it gets `503`, `Retry-After: 5` and "server at its connection limit; retry later" (counted in `Stats` refusals); a plain request is still answered, with `Connection: close`, and not counted. Off by default in the library, which cannot know the process's descriptor budget; the `wharf` binary derives it from `ulimit -n` |
    //! | `Server::max_connections_per_ip` | none | the same per client address (IPv6: per /64, one subscriber's block), the address as trusted proxies report it: `503`, "too many connections from your address; retry later". The binary's default is half of its `max-connections` |
    //! | accept errors | - | out of descriptors (`EMFILE`, `ENFILE`): the oldest handshake in flight is dropped and accept retried; with none, accepting pauses 10 ms, doubling to 1 s, while open connections go on. One warning, then at most one line per 10 s |
    //! | PROXY protocol header | v1: 107 bytes, v2: 2,064 bytes | `Server::proxy_protocol`: read byte-exact before anything else, under the handshake deadline; a longer, malformed or missing header closes the connection unanswered |
    //! | `Server::close_timeout` | 10 s | from the moment the close handshake starts (either side) or the connection fails, everything must be over: no close reply, no FIN after ours, or a queue the peer does not take: the TCP connection is dropped ([`Disconnect::TimedOut`](crate::Disconnect::TimedOut)). At shutdown, plain HTTP responses in flight get as long to finish |
    //! | `Server::write_timeout` | 30 s | queued output waits this long with no byte taken by the socket (a peer that stopped reading, or holds a zero TCP window while trickling input): the queue is dropped and the TCP connection with it ([`Disconnect::TimedOut`](crate::Disconnect::TimedOut), `Stats::write_timeouts`). Plain HTTP too: a response the socket takes no byte of for this long drops its connection (a client that stops reading, pipelining requests) |
    //! | TLS handshake (`Server::tls`) | within `handshake_timeout` | the handshake counts against the first request's deadline (from accept): a client that connects and sends nothing, or part of a `ClientHello`, is dropped at it. A first byte that cannot start a TLS record (plain HTTP on the TLS port) gets `400` "this port speaks TLS" and the connection is closed. A TLS connection also holds rustls' state (about 1 KiB, boxed outside the task) and up to 64 KiB of encrypted output the socket has not taken (rustls' buffer limit: past it a write waits, as on a full socket) |
    //! | request head | 16 KiB (request line and headers) | `431` with a one-line reason and `Connection: close`, on both request paths (on a keep-alive connection's later requests, hyper's `431` without a body) |
    //! | header fields | 64 per request | `431`, as for the head size |
    //! | request target | 8 KiB (path and query) | `414` with a one-line reason, the connection closed; an upgrade keeps its target for its lifetime ([`Client::path`](crate::Client::path)), so this bounds it |
    //! | upgrade request body | none | `Content-Length` other than `0`, or any `Transfer-Encoding`: `400` ("an upgrade request must not have a body") and the connection closed, since bytes after the head are read as frames |
    //! | refused upgrade | - | every refusal (`4xx`/`5xx` from validation, limits or the upgrade hook) closes its connection (`Connection: close`), also when it is not the first request on it: nothing behind it is read as another request |
    //! | `Server::allowed_origins` | same origin as the `Host` | a browser's page of another origin (its `Origin` header) gets `403` "origin not allowed" before the upgrade hook runs; requests without `Origin` (not browsers) are served |
    //! | `Server::allowed_hosts` | any | a request (plain or upgrade) whose `Host` names another server gets `403` "host not allowed": the defence against DNS rebinding |
    //! | `Server::rate_limit` | none (the `wharf` binary's chat: 5 messages/s, burst 20; 16 KiB/s, burst 64 KiB) | per connection, a token bucket for messages and one for payload bytes, refilled continuously, charged when the message's bytes were read: `burst` messages at once pass, the next one is over until `1/rate` has passed. Over it, by `RateAction`: `Close` fails the connection with 1008 "rate limit exceeded" after the messages before it (`Disconnect::Protocol(ProtocolError::RateLimited)`, `Stats::rate_limit_closes`); `Drop` drops the message; `Notify` hands it to `recv` with `Connection::rate_limited` true, for the application to answer. Each over-limit message is counted in `Stats::rate_limited`. A message larger than the byte burst passes only on a full bucket. Cost: about 100 bytes per connection, allocated at open; nothing per message |
    //! | pongs waiting to be sent | 16 (`wharf_proto::MAX_PONGS`) | a ping past it replaces the last pong queued (RFC 6455 §5.5.3 lets an endpoint answer only the latest ping); pongs copy their ping's payload, so a ping flood pins no read buffer |
    //! | events waiting for `recv` | 64 (`wharf_proto::MAX_EVENTS`); one inflated message | parsing stops, the rest stays in the read buffer as wire bytes, and the socket is not read until `recv` takes them: the peer is pushed back through TCP |
    //! | bytes read per poll | 256 KiB | the connection's task yields; a peer that sends without pause delays only its own connection |
    //! | read buffers kept per thread | 64 buffers, 1 MiB | older ones are freed |
    //!
    //! ## The per-connection budget
    //!
    //! What a peer can make the server hold for one connection, whatever it
    //! sends (pings, pongs, compressed bombs, endless fragments, a frame it
    //! never finishes, a zero window), is at most
    //!
    //! ```text
    //! M + Q + 2·R + C
    //! M = max_message_size                  one message assembled (wire bytes), or inflated and
    //!                                       not yet taken by the handler: never both, since a
    //!                                       compressed message is inflated only when nothing waits
    //! Q = max_backpressure + the largest message the application sends
    //!     + 16 pongs of 127 bytes + one close frame
    //! R = max(64 KiB, max_frame_size + 14)  the read buffer: wire bytes not yet parsed, uncompressed
    //!                                       messages waiting (zero-copy views into it), and one
    //!                                       more still pinned by payloads in the queue
    //! C = about 1 KiB of connection state, plus with dedicated permessage-deflate
    //!     (context takeover) up to ~300 KiB of deflate state once used
    //! ```
    //!
    //! The driver reads nothing while events wait for `recv` or while the
    //! socket refuses its output, so neither a slow handler nor a peer that
    //! does not read lets input pile up; and every state has a deadline
    //! (handshake, keepalive, close, write), so no peer holds that budget
    //! forever without showing life. For the `wharf` binary's defaults (chat:
    //! 64 KiB messages, 1 MiB queue) that is about 1.3 MiB per connection;
    //! echo and broadcast (1 MiB messages) about 4 MiB. An idle connection
    //! holds about 1 KiB. What a handler keeps of the messages it received
    //! is the application's own memory.
    //!
    //! CPU is budgeted too: one poll of a connection reads at most 256 KiB
    //! and inflates at most one message (`max_message_size` of output), then
    //! the task yields, so input that is cheap to send and costly to handle
    //! delays only the connection that sent it. Inflating happens with the
    //! connection's lock released (`wharf_proto::Connection::take_inflation`),
    //! so a broadcast to that connection never waits for it.
    //!
    //! Why these values: a chat or pub/sub message is small, so 1 MiB leaves
    //! room for pasted images (the `wharf` binary's chat mode takes 64 KiB,
    //! which its protocol never exceeds). Fragment counts bound per-frame work on
    //! messages made of empty fragments. Browsers do not fragment what they
    //! send, so 4,096 is generous.
    //!
    //! A write queue of 1 MiB holds about a thousand chat messages: a client
    //! that falls that far behind is better reconnected (its page then
    //! fetches what it missed) than served stale data; the queue is measured
    //! in bytes, so a few large messages count as much as many small ones.
    //! Keepalive closes with 1001 (going away) rather than 1011 because the
    //! fault is the peer's silence, not a server error; the close frame is
    //! sent on a best-effort basis, since a silent peer is likely gone.
    //!
    //! The HTTP limits match what browsers and proxies send and accept: a
    //! browser's handshake is well under 2 KiB, 8 KiB is the request-line
    //! limit of common proxies and servers, and 16 KiB of head leaves room
    //! for large cookies. They are the same on both paths a request can
    //! take (the first request of a connection is parsed by wharf, later
    //! ones by hyper), so that no limit depends on a request's position on
    //! its connection. A head is parsed only once a blank line or 16 KiB
    //! has arrived, so a head trickled a byte at a time costs one scan.
    //!
    //! The Autobahn conformance server raises the sizes to 16 MiB and the
    //! fragment count to 65,536, which its cases 9.x need.
}

/// The seed's pre-standard drafts, hixie-75 and hixie-76, behind
/// [`Server::legacy_drafts`](crate::Server::legacy_drafts): why they are
/// off by default, what a legacy connection is, what replaces keepalive.
#[doc = include_str!("../../../docs/LEGACY.md")]
pub mod legacy {}

#[doc = include_str!("../../../docs/MIGRATION.md")]
pub mod migration {}

pub mod runtime {
    //! # The runtime model: thread per core, and why
    //!
    //! [`Server::workers`](crate::Server::workers)`(n)` serves on `n`
    //! workers: the runtime that runs `serve` is worker 0, and `n - 1`
    //! threads each run a tokio current-thread runtime. One acceptor (worker
    //! 0's accept loop) hands every accepted connection to the next worker
    //! in turn, and the connection lives there: TLS, request head, upgrade,
    //! driver, handler, timers. The `wharf` binary runs one worker per CPU
    //! it may run on (`--workers`); a library user who calls `serve` on a
    //! runtime of their own, of either kind, gets that runtime alone.
    //!
    //! ## What was measured
    //!
    //! Before this model the binary ran on tokio's work-stealing runtime.
    //! Pinned to one core beside the library on a current-thread runtime, in
    //! one run (issue 16): broadcast 1 → 1,000 at 1,682 messages a second
    //! for the binary against 4,000 for the library, and 1,312 bytes per
    //! idle connection against 961. Turning deflate or keepalive off did not
    //! close the gap; the scheduler did: with work stealing, every wake of
    //! a connection's task goes through atomics and a shared injection
    //! queue, and a broadcast to 1,000 connections is 1,000 such wakes. On
    //! a current-thread runtime they are pushes onto a local queue. The
    //! figures after the change are in `docs/BENCHMARKS.md`.
    //!
    //! ## Why thread per core over work stealing
    //!
    //! - A connection's state (its core, its queue, its waker) is touched by
    //!   one thread: its lock is never contended and its cache lines stay put.
    //! - A handler's `send` to its own connection, and a broadcast to the
    //!   connections of its own worker, wake tasks on the same thread.
    //! - The per-thread pools (read buffers, compressors) and the worker's
    //!   timer wheel see no traffic from other threads.
    //!
    //! The price is no stealing: a worker whose connections are busier than
    //! the others' cannot hand them off. WebSocket servers hold many similar,
    //! long-lived connections, which turn-by-turn placement spreads evenly;
    //! a workload of a few very hot connections is better served by tokio's
    //! multi-thread runtime, which `serve` on such a runtime gives.
    //!
    //! ## One acceptor, not `SO_REUSEPORT`
    //!
    //! One accept loop works with every [`Listener`](crate::Listener) (TLS,
    //! Unix sockets, the PROXY protocol), keeps one place for the connection
    //! caps and the shutdown, and places connections in turn (the kernel's
    //! `SO_REUSEPORT` hashing is no better balanced). An accept costs a few
    //! microseconds against tens for the handshake that follows on its
    //! worker, so one acceptor keeps up with hundreds of thousands of new
    //! connections a second.
    //!
    //! ## Fan-out across cores, the same shape as across nodes
    //!
    //! The hub has a shard per worker; a room's directory entry (striped by
    //! name: no global lock) counts its members on each shard. A publish on
    //! a worker delivers to its own shard's members at once and hands one
    //! `Fanout` (the frames, encoded once and shared) to the inbox of every
    //! other shard with members, which delivers it there: one hand-over per
    //! worker, never per receiver, as the Redis backplane sends one message
    //! per publish and each node delivers it to its members. Each receiver
    //! is in one shard, and each inbox is first in, first out: every member
    //! gets each message exactly once, in the order its sender published.
    //! An inbox holds at most 64 MiB; past it, hand-overs to that worker are
    //! dropped and counted (`Hub::fanouts_dropped`). It counts payload
    //! bytes, and a message received from a client is a view that keeps its
    //! whole read buffer: up to nearly twice its size (a message just over
    //! half a 64 KiB read). Flooded with a worker blocked
    //! (`tests/it/hub_flood.rs`), the process grew 65 MiB with 256 KiB
    //! messages and 96 MiB with 33 KiB ones (400 MiB without the bound).
    //!
    //! Deliveries go in runs where messages come in runs. A message
    //! callback's publishes during a run of messages read together (a
    //! handler's during one poll) are held and delivered when it ends
    //! (`hub::cork`), and a worker
    //! delivers the fan-outs its inbox collected while it was busy as runs:
    //! each receiver is locked, queued to and woken once per run, and a
    //! run's small frames are joined into one buffer that every receiver
    //! shares (one queue entry, one reference count and one gather each).
    //! The cost per delivery falls as the rate rises, the way a server
    //! under load should behave: 1 publisher → 1,000 subscribers on one
    //! core went from about 3,500 to 16,000–28,000 messages a second
    //! (`docs/BENCHMARKS.md`).
    //!
    //! ## On 16 and 64 cores (expected from what 2 cores measured)
    //!
    //! Echo and chat traffic between a connection and its own handler never
    //! leaves its worker, and the counters are per-thread tallies, so they
    //! scale with the cores until the NIC or the kernel's network stack
    //! does not. A publish splits into two costs, measured in CPU time by
    //! `cargo bench -p wharf --bench publish` (`docs/BENCHMARKS.md`):
    //!
    //! - **Serial, on the publisher's worker**: about 0.3 µs for the publish
    //!   (the message encoded once, the room's directory stripe read, its own
    //!   shard's members queued), plus about 0.1 µs per other worker with
    //!   members (one push on that worker's inbox), more when that inbox
    //!   was empty and its worker must be woken: 0.1 to 0.3 µs measured
    //!   here, about 1 µs (a system call) for a worker asleep in the kernel.
    //! - **Parallel, on each worker**: taking the hand-over, then 0.1 to
    //!   0.3 µs per member (the frame queued, the member's task woken on its
    //!   own thread, the frame written), whatever the number of workers.
    //!
    //! A publisher into a room with members on every worker therefore spends
    //! about 0.3 + 0.1 × (workers − 1) µs: some 550,000 publishes a second on
    //! 16 cores and 150,000 on 64 (60,000 and 15,000 while the other workers
    //! are idle and every hand-over wakes one; under load, inboxes batch).
    //! Publishers on different workers run in parallel, so publishes in all
    //! grow with the publishers until the receiving workers are busy: each
    //! takes every publish that reaches it (0.1 µs) and delivers to its
    //! members: into rooms with 5 members on every worker, publishes in all
    //! top out near a million a second, on 16 cores as on 64, since every
    //! worker takes every publish. Deliveries scale
    //! with the workers: 3 to 10 million a second each, 50 to 150 million on
    //! 16 cores and 200 to 600 million on 64, far more than a NIC carries in
    //! frames this small (100 million 34-byte frames a second are 27 Gbit/s
    //! before TCP/IP), so on a real network the NIC and the kernel's
    //! per-packet work bind first.
    //!
    //! Two cache lines move between cores on this path: a room's directory
    //! stripe (its read lock's count, written by every publish to a room of
    //! that stripe) and each worker's inbox (its lock, written by every
    //! publisher that hands over to it). At 2 cores neither shows: one room
    //! for all publishers costs what a room each does. On 64 cores a line
    //! costs 0.1 to 0.3 µs per transfer, which bounds one hot room, and each
    //! inbox, at a few million publishes a second: above what a worker
    //! delivers anyway. A publish from a thread that is no worker
    //! ([`Hub::publish`](crate::Hub::publish) from a plain thread) queues to
    //! every member itself and pays per member (0.15 to 0.3 µs each, a wake
    //! across threads), not per worker: on many cores, publish from a
    //! worker. The load test takes `--server-cpus N` to measure all this on
    //! a larger machine.
    //!
    //! ## Timers
    //!
    //! A deadline at least a second away (keepalive, write and close
    //! timeouts) waits on its worker's wheel: a 12-byte slot, swept every
    //! 250 ms by one task per worker, never early and at most one tick late.
    //! Nearer deadlines get a tokio timer of their own. An idle connection
    //! with keepalive therefore holds no timer allocation.
}
