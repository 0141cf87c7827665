// The driver shared by the `connection_server` fuzz target and the test that
// runs its committed seeds on stable (crates/wharf-proto/tests/fuzz_seeds.rs).
// Both `include!` this file, so there is one copy.

mod driver {
    use bytes::BytesMut;
    use wharf_proto::frame::{FrameHeader, MAX_HEADER_LEN};
    use wharf_proto::{CloseFrame, Connection, Event, Limits, OpCode, State};

    /// Frame and message limit for the fuzzed connection.
    pub(crate) const MAX: usize = 64 << 10;

    /// Feeds `data[1..]` to a server connection in reads sized by `data[0]`,
    /// checking the invariants after each read. Returns the connection.
    pub(crate) fn drive(data: &[u8]) -> Connection {
        let limits = Limits::default().max_message_size(MAX).max_frame_size(MAX);
        let mut conn = Connection::server(limits);
        let Some((&seed, mut rest)) = data.split_first() else {
            return conn;
        };
        let mut rng = u32::from(seed);
        let mut buf = BytesMut::new();
        while !rest.is_empty() {
            let len = if seed == 0 {
                rest.len()
            } else {
                rng = rng.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                1 + (rng >> 16) as usize % usize::from(seed)
            };
            let (read, tail) = rest.split_at(len.min(rest.len()));
            rest = tail;
            buf.extend_from_slice(read);

            let was_closed = conn.state() == State::Closed;
            let result = conn.receive(&mut buf);
            if was_closed {
                assert!(result.is_ok(), "a closed connection discards input");
            }
            if result.is_err() || conn.state() == State::Closed {
                assert!(buf.is_empty(), "input left after the connection closed");
            }
            // What is held back is at most a partial header or one partial frame.
            assert!(
                buf.len() < MAX_HEADER_LEN.max(MAX),
                "held {} bytes",
                buf.len()
            );

            let mut peer_close = None;
            while let Some(event) = conn.poll_event() {
                match event {
                    Event::Message(m) => {
                        assert!(m.len() <= MAX, "message of {} bytes", m.len());
                        if m.is_control() {
                            assert!(m.len() <= 125, "control payload of {} bytes", m.len());
                        }
                    }
                    Event::Close(frame) => {
                        assert!(peer_close.is_none(), "two close events");
                        assert_eq!(conn.state(), State::Closed);
                        peer_close = Some(frame.code);
                    }
                    _ => {}
                }
            }

            let mut sent_close = None;
            while let Some(t) = conn.poll_transmit() {
                let (header, n) = FrameHeader::decode(t.header())
                    .expect("our header decodes")
                    .expect("our header is whole");
                assert_eq!(n, t.header().len());
                assert_eq!(header.payload_len, t.payload().len() as u64);
                assert!(header.fin && header.rsv == 0 && header.mask.is_none());
                match header.opcode {
                    OpCode::Pong => assert!(t.payload().len() <= 125),
                    OpCode::Close => {
                        assert!(sent_close.is_none(), "two close frames");
                        let frame = CloseFrame::decode(t.payload().clone())
                            .expect("our close frame is valid");
                        sent_close = Some(frame.code);
                    }
                    other => panic!("server sent {other:?} unprompted"),
                }
            }
            assert_eq!(conn.buffered_amount(), 0);

            match result {
                Err(e) => {
                    assert_eq!(conn.state(), State::Closed);
                    assert_eq!(conn.error(), Some(&e));
                    assert_eq!(sent_close, Some(e.close_code()), "close frame for {e}");
                }
                Ok(()) => {
                    if let Some(code) = peer_close {
                        assert_eq!(sent_close, Some(code), "the close echo");
                    } else if !was_closed {
                        assert_eq!(conn.state(), State::Open);
                        assert_eq!(sent_close, None);
                    }
                }
            }
            if conn.state() == State::Closed {
                assert!(conn.is_finished());
            }
        }
        conn
    }
}
