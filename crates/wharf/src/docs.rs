//! Design notes, as documentation.

pub mod limits {
    //! # Limits: each default, why, and what happens at the limit
    //!
    //! | setting | default | at the limit |
    //! |---|---|---|
    //! | `Limits::max_frame_size` | 1 MiB | close 1009, decided from the frame header before any payload is buffered |
    //! | `Limits::max_message_size` | 1 MiB | close 1009, decided from the header of the frame that would cross it |
    //! | `Limits::max_fragments` | 4,096 | close 1008 at the first fragment past it |
    //! | `Server::max_backpressure` | 1 MiB | the send that would cross it is refused with `SendError::Backpressure` and the connection is closed with 1008 |
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
    //! The Autobahn conformance server raises the sizes to 16 MiB and the
    //! fragment count to 65,536, which its cases 9.x need.
}
