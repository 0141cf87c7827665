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
    //! | `Server::handshake_timeout` | 10 s | a request head not complete in time: the TCP connection is dropped (slowloris) |
    //! | `Server::close_timeout` | 10 s | no close reply, or no FIN after ours: the TCP connection is dropped ([`Disconnect::TimedOut`](crate::Disconnect::TimedOut)) |
    //!
    //! Why these values: a chat or pub/sub message is small, so 1 MiB leaves
    //! room for pasted images while bounding what one connection can make
    //! the server hold to about three messages (the read buffer, the message
    //! being assembled and the inbox, which stops reading from the socket when
    //! it holds a full message). Fragment counts bound per-frame work on
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
    //! The Autobahn conformance server raises the sizes to 16 MiB and the
    //! fragment count to 65,536, which its cases 9.x need.
}
