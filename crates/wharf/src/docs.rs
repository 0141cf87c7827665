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
    //! | `Server::max_backpressure` | 1 MiB | under `SlowClient::Close` (default) the send that would cross it is refused with `SendError::Backpressure`, the queued backlog is dropped and the connection is closed with 1008; under `SlowClient::Drop` that message is dropped, counted in `Client::dropped` and refused with `SendError::Dropped` |
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
