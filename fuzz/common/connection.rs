// The connection harness shared by the `connection_server`,
// `connection_client` and `connection_deflate` fuzz targets and by the test
// that runs their committed seeds on stable
// (crates/wharf-proto/tests/fuzz_seeds.rs). Each `include!`s this file, so
// there is one copy. It uses only wharf-proto's public API and the crates
// wharf-proto itself depends on.

#[allow(dead_code)] // each user takes a part
mod harness {
    use bytes::{Bytes, BytesMut};
    use wharf_proto::frame::{FrameHeader, MAX_HEADER_LEN};
    use wharf_proto::{
        CloseCode, CloseFrame, Connection, Event, Limits, MAX_EVENTS, MAX_PONGS, Message, OpCode,
        ProtocolError, Role, State, Transmit,
    };

    /// Frame and message limit of the raw-bytes targets.
    pub(crate) const MAX: usize = 64 << 10;

    /// The largest control frame a connection writes: header and 125 bytes.
    const CONTROL_FRAME: usize = MAX_HEADER_LEN + 125;

    /// What a connection made of its input that must not depend on how the
    /// input was split into reads. Pings and pongs are left out: the core may
    /// answer or report only the latest of several.
    #[derive(Debug, PartialEq)]
    pub(crate) enum Seen {
        Message(Message),
        Close(CloseFrame),
        Failed(ProtocolError),
    }

    /// A frame this end wrote, header decoded and payload unmasked.
    #[derive(Debug)]
    pub(crate) struct Sent {
        pub(crate) header: FrameHeader,
        pub(crate) payload: Vec<u8>,
    }

    /// A masking source for the client role: fixed, so runs repeat.
    pub(crate) fn mask_source() -> impl FnMut() -> [u8; 4] + Send + Sync + 'static {
        let mut n = 0x37fa_213d_u32;
        move || {
            n = n.wrapping_mul(0x9e37_79b9).wrapping_add(1);
            n.to_be_bytes()
        }
    }

    /// A connection under test and the invariants checked after every step.
    pub(crate) struct Harness {
        pub(crate) conn: Connection,
        limits: Limits,
        buf: BytesMut,
        pub(crate) seen: Vec<Seen>,
        /// The code of the close frame this end sent, once it has.
        pub(crate) sent_close: Option<CloseCode>,
        /// This end started the close handshake.
        pub(crate) closed_locally: bool,
        peer_closed: bool,
    }

    impl Harness {
        pub(crate) fn new(conn: Connection) -> Self {
            Self {
                limits: conn.limits(),
                conn,
                buf: BytesMut::new(),
                seen: Vec::new(),
                sent_close: None,
                closed_locally: false,
                peer_closed: false,
            }
        }

        /// Feeds one read as a transport does: `receive`, an inflation if
        /// one was left out (run, then given back), then events and
        /// transmits drained and checked; again while `receive_pending`
        /// says parsing stopped early, each round making progress.
        pub(crate) fn feed(&mut self, read: &[u8]) {
            self.buf.extend_from_slice(read);
            loop {
                let held = self.buf.len();
                let (pending, progressed) = self.round();
                if !pending {
                    break;
                }
                assert!(
                    progressed || self.buf.len() < held,
                    "receive_pending with nothing done: {:?}",
                    self.conn
                );
            }
            // What is held back is at most a partial header or one partial frame.
            let max_frame = self.limits.max_frame_size;
            assert!(
                self.buf.len() < MAX_HEADER_LEN.max(max_frame),
                "held {} bytes",
                self.buf.len()
            );
        }

        /// One `receive` and what follows it; returns whether parsing
        /// stopped early, and whether an event or inflation happened.
        fn round(&mut self) -> (bool, bool) {
            let was_closed = self.conn.state() == State::Closed;
            let was_open = self.conn.state() == State::Open;
            let mut result = self.conn.receive(&mut self.buf);
            if was_closed {
                assert!(result.is_ok(), "a closed connection discards input");
            }
            let mut progressed = false;
            if result.is_ok()
                && let Some(mut job) = self.conn.take_inflation()
            {
                assert!(self.conn.is_inflating());
                assert!(job.len() <= self.limits.max_message_size);
                job.run();
                result = self.conn.finish_inflation(job);
                assert!(!self.conn.is_inflating());
                progressed = true;
                if result.is_err() {
                    // What `receive` left behind the message is discarded
                    // by the next call, as after any failure.
                    let again = self.conn.receive(&mut self.buf);
                    assert!(
                        again.is_ok() && self.buf.is_empty(),
                        "input kept: {again:?}"
                    );
                }
            }
            if result.is_err() || self.conn.state() == State::Closed {
                assert!(
                    self.buf.is_empty(),
                    "input left after the connection closed"
                );
            }

            let mut peer_close = None;
            let mut events = 0;
            while let Some(event) = self.conn.poll_event() {
                events += 1;
                match event {
                    Event::Message(m) => {
                        assert!(!m.is_control(), "pings and pongs are not events");
                        assert!(
                            m.len() <= self.limits.max_message_size,
                            "message of {} bytes over the limit of {}",
                            m.len(),
                            self.limits.max_message_size
                        );
                        self.seen.push(Seen::Message(m));
                    }
                    Event::Close(frame) => {
                        assert!(!self.peer_closed, "two close events");
                        assert_eq!(self.conn.state(), State::Closed);
                        self.peer_closed = true;
                        peer_close = Some(frame.code);
                        self.seen.push(Seen::Close(frame));
                    }
                    // Events added later (the enum is open) have no rule here yet.
                    _ => {}
                }
            }
            assert!(events <= MAX_EVENTS + 1, "{events} events from one receive");
            // Whatever the input made the connection queue (pongs, the close
            // echo or the failing close) is bounded, however many pings.
            let queued = self.conn.buffered_amount();
            assert!(
                queued <= (usize::from(MAX_PONGS) + 1) * CONTROL_FRAME,
                "{queued} bytes queued by the peer's input"
            );

            let close_before = self.sent_close;
            let sent = self.drain();
            assert!(sent.is_empty(), "data frames written unprompted: {sent:?}");
            let new_close = self.sent_close.filter(|_| close_before.is_none());

            match result {
                Err(e) => {
                    assert_eq!(self.conn.state(), State::Closed);
                    assert_eq!(self.conn.error(), Some(&e));
                    if was_open {
                        assert_eq!(new_close, Some(e.close_code()), "close frame for {e}");
                    } else {
                        assert_eq!(new_close, None, "a second close frame for {e}");
                    }
                    self.seen.push(Seen::Failed(e));
                }
                Ok(()) => {
                    if let Some(code) = peer_close {
                        if was_open {
                            assert_eq!(new_close, Some(code), "the close echo");
                        } else {
                            assert_eq!(new_close, None, "an echo after our own close");
                        }
                    } else if !was_closed {
                        assert_eq!(new_close, None, "a close frame without a reason");
                        let open = if was_open {
                            State::Open
                        } else {
                            State::Closing
                        };
                        assert_eq!(self.conn.state(), open);
                    }
                }
            }
            if self.conn.state() == State::Closed {
                assert!(self.conn.is_finished());
            }
            let pending = self.conn.receive_pending() && self.conn.state() != State::Closed;
            (pending, progressed || events > 0)
        }

        /// Closes from this end, checking the close frame written.
        pub(crate) fn close(&mut self, code: CloseCode, reason: &str) {
            let was_open = self.conn.state() == State::Open;
            let result = self.conn.close(code, reason);
            match result {
                Ok(()) => {
                    assert!(was_open && code.is_sendable());
                    assert_eq!(self.conn.state(), State::Closing);
                    self.closed_locally = true;
                    let sent = self.drain();
                    assert!(sent.is_empty());
                    assert_eq!(self.sent_close, Some(code));
                }
                Err(_) => {
                    assert!(
                        !was_open || !code.is_sendable(),
                        "close refused: {result:?}"
                    );
                    assert!(self.drain().is_empty());
                }
            }
        }

        /// Sends a message from this end; returns the data frame written,
        /// if any.
        pub(crate) fn send(&mut self, message: Message, compress: bool) -> Option<Sent> {
            let was_open = self.conn.state() == State::Open;
            let control = message.is_control();
            let len = message.len();
            let result = if compress {
                self.conn.send(message)
            } else {
                self.conn.send_uncompressed(message)
            };
            assert_eq!(
                result.is_ok(),
                was_open && !(control && len > 125),
                "send: {result:?}"
            );
            let mut sent = self.drain();
            assert!(sent.len() <= 1);
            sent.pop()
        }

        /// Queues a frame encoded elsewhere (a broadcast's); returns the data
        /// frame written, if any.
        pub(crate) fn send_encoded(&mut self, transmit: Transmit) -> Option<Sent> {
            let was_open = self.conn.state() == State::Open;
            let result = self.conn.send_encoded(transmit);
            assert_eq!(result.is_ok(), was_open, "send_encoded: {result:?}");
            let mut sent = self.drain();
            assert!(sent.len() <= 1);
            sent.pop()
        }

        /// Takes every queued frame, checking each one; returns the data
        /// frames (pongs, pings and close frames are checked here).
        pub(crate) fn drain(&mut self) -> Vec<Sent> {
            let mut data = Vec::new();
            while let Some(t) = self.conn.poll_transmit() {
                let (header, n) = FrameHeader::decode(t.header())
                    .expect("our header decodes")
                    .expect("our header is whole");
                assert_eq!(n, t.header().len());
                assert_eq!(header.payload_len, t.payload().len() as u64);
                assert!(header.fin, "we never fragment");
                match self.conn.role() {
                    Role::Client => assert!(header.mask.is_some(), "a client masks"),
                    Role::Server => assert!(header.mask.is_none(), "a server does not mask"),
                }
                let mut payload = t.payload().to_vec();
                if let Some(key) = header.mask {
                    for (i, b) in payload.iter_mut().enumerate() {
                        *b ^= key[i % 4];
                    }
                }
                match header.opcode {
                    OpCode::Ping | OpCode::Pong => {
                        assert!(payload.len() <= 125 && header.rsv == 0);
                        assert!(self.sent_close.is_none(), "a control frame after our close");
                    }
                    OpCode::Close => {
                        assert!(self.sent_close.is_none(), "two close frames");
                        assert_eq!(header.rsv, 0);
                        let frame = CloseFrame::decode(Bytes::from(payload))
                            .expect("our close frame is valid");
                        self.sent_close = Some(frame.code);
                    }
                    OpCode::Text | OpCode::Binary => {
                        assert!(self.sent_close.is_none(), "data after our close");
                        assert_eq!(header.rsv & 0b011, 0);
                        data.push(Sent { header, payload });
                    }
                    other => panic!("wrote a {other:?} frame"),
                }
            }
            assert_eq!(self.conn.buffered_amount(), 0);
            data
        }
    }

    /// Feeds `data[1..]` to a connection of `role` in reads sized by
    /// `data[0]` (0: one read; n: pseudo-random reads of 1..=n bytes),
    /// checking the invariants after each read, then feeds it again in one
    /// read: both must see the same. Returns the first run.
    pub(crate) fn drive(role: Role, data: &[u8]) -> Harness {
        let Some((&reads, stream)) = data.split_first() else {
            return Harness::new(connection(role));
        };
        let split = run(role, reads, stream);
        if reads != 0 {
            let whole = run(role, 0, stream);
            assert_eq!(split.seen, whole.seen, "split by {reads} and whole");
            assert_eq!(split.conn.state(), whole.conn.state());
        }
        split
    }

    fn connection(role: Role) -> Connection {
        let limits = Limits::default().max_message_size(MAX).max_frame_size(MAX);
        match role {
            Role::Server => Connection::server(limits),
            Role::Client => Connection::client(limits, mask_source()),
        }
    }

    fn run(role: Role, reads: u8, stream: &[u8]) -> Harness {
        let mut h = Harness::new(connection(role));
        for read in Reads::new(reads, stream) {
            h.feed(read);
        }
        h
    }

    /// `stream` cut into reads: one if `max` is 0, else pseudo-random sizes
    /// in `1..=max`, the same for the same `max`.
    pub(crate) struct Reads<'a> {
        rest: &'a [u8],
        max: usize,
        rng: u32,
    }

    impl<'a> Reads<'a> {
        pub(crate) fn new(max: u8, stream: &'a [u8]) -> Self {
            Self::sized(usize::from(max), stream)
        }

        pub(crate) fn sized(max: usize, stream: &'a [u8]) -> Self {
            Self {
                rest: stream,
                max,
                rng: max as u32,
            }
        }
    }

    impl<'a> Iterator for Reads<'a> {
        type Item = &'a [u8];

        fn next(&mut self) -> Option<&'a [u8]> {
            if self.rest.is_empty() {
                return None;
            }
            let len = if self.max == 0 {
                self.rest.len()
            } else {
                self.rng = self.rng.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                1 + (self.rng >> 16) as usize % self.max
            };
            let (read, rest) = self.rest.split_at(len.min(self.rest.len()));
            self.rest = rest;
            Some(read)
        }
    }
}
