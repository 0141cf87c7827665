//! Connection tests: a data-driven `check` for the server's parser, and a
//! client/server `Pair` wired in memory.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use crate::*;

mod bounds;

const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// A masked client frame.
fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    frame_rsv(fin, 0, opcode, payload)
}

fn frame_rsv(fin: bool, rsv: u8, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![(u8::from(fin) << 7) | (rsv << 4) | opcode];
    match payload.len() {
        n @ 0..=125 => out.push(0x80 | n as u8),
        n @ 126..=0xffff => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&KEY);
    let mut p = payload.to_vec();
    mask::apply_naive(&mut p, KEY, 0);
    out.extend_from_slice(&p);
    out
}

fn close_payload(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason);
    p
}

/// What a server connection did with some input.
#[derive(Debug, PartialEq)]
struct Outcome {
    events: Vec<Event>,
    sent: Vec<u8>,
    error: Option<ProtocolError>,
    state: State,
}

fn run(limits: Limits, input: &[u8], chunk: usize) -> Outcome {
    let mut conn = Connection::server(limits);
    let mut buf = BytesMut::new();
    let mut events = Vec::new();
    let mut sent = Vec::new();
    let mut error = None;
    for piece in input.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        loop {
            if let Err(e) = conn.receive(&mut buf) {
                error.get_or_insert(e);
            }
            events.extend(std::iter::from_fn(|| conn.poll_event()));
            while let Some(t) = conn.poll_transmit() {
                sent.extend_from_slice(&t.to_vec());
            }
            if !conn.receive_pending() {
                break;
            }
        }
    }
    Outcome {
        events,
        sent,
        error,
        state: conn.state(),
    }
}

/// Feeds `input` whole, then 1, 2, 3 and 7 bytes at a time: every chunking
/// must give the same outcome, which is returned.
fn check_with(limits: Limits, input: &[u8]) -> Outcome {
    let whole = run(limits, input, input.len());
    for chunk in [1, 2, 3, 7] {
        assert_eq!(run(limits, input, chunk), whole, "chunks of {chunk}");
    }
    whole
}

fn check(input: &[u8]) -> Outcome {
    check_with(Limits::default(), input)
}

fn text(s: &str) -> Event {
    Event::Message(Message::Text(Utf8Bytes::from(s.to_owned())))
}

fn server_frame(opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    Transmit::unmasked(opcode, Bytes::copy_from_slice(payload)).to_vec()
}

fn assert_failed(out: &Outcome, code: CloseCode) {
    assert_eq!(
        out.error.as_ref().map(ProtocolError::close_code),
        Some(code),
        "{out:?}"
    );
    assert_eq!(out.state, State::Closed);
    let close = find_close(&out.sent).expect("a close frame was sent");
    assert_eq!(u16::from_be_bytes([close[0], close[1]]), code.0);
}

/// The payload of the first close frame in a server byte stream.
fn find_close(mut sent: &[u8]) -> Option<&[u8]> {
    while let Ok(Some((h, n))) = frame::FrameHeader::decode(sent) {
        let end = n + h.payload_len as usize;
        if h.opcode == OpCode::Close {
            return Some(&sent[n..end]);
        }
        sent = &sent[end..];
    }
    None
}

#[test]
fn delivers_text_and_binary() {
    let mut input = frame(true, 1, b"Hello");
    input.extend(frame(true, 2, &[0, 1, 2]));
    let out = check(&input);
    assert_eq!(
        out.events,
        [
            text("Hello"),
            Event::Message(Message::Binary(Bytes::from_static(&[0, 1, 2])))
        ]
    );
    assert!(out.sent.is_empty() && out.error.is_none());
}

#[test]
fn assembles_fragments_with_interleaved_ping() {
    let mut input = frame(false, 1, b"Hel");
    input.extend(frame(true, 9, b"are you there"));
    input.extend(frame(false, 0, b"l"));
    input.extend(frame(true, 0, b"o"));
    let out = check(&input);
    assert_eq!(out.events, [text("Hello")]);
    assert_eq!(out.sent, server_frame(OpCode::Pong, b"are you there"));
}

#[test]
fn accepts_unsolicited_pong_without_reply() {
    let out = check(&frame(true, 0xa, b"hi"));
    assert!(out.events.is_empty());
    assert!(out.sent.is_empty());
}

#[test]
fn echoes_close_code_and_finishes() {
    let mut input = frame(true, 8, &close_payload(1000, b"bye"));
    input.extend(frame(true, 1, b"ignored after close"));
    let out = check(&input);
    assert_eq!(
        out.events,
        [Event::Close(CloseFrame {
            code: CloseCode::NORMAL,
            reason: Utf8Bytes::from("bye")
        })]
    );
    assert_eq!(
        out.sent,
        server_frame(OpCode::Close, &1000u16.to_be_bytes())
    );
    assert_eq!(out.state, State::Closed);
}

#[test]
fn empty_close_is_echoed_empty() {
    let out = check(&frame(true, 8, b""));
    assert_eq!(out.sent, server_frame(OpCode::Close, b""));
    let Event::Close(c) = &out.events[0] else {
        panic!()
    };
    assert_eq!(c.code, CloseCode::NO_STATUS_RECEIVED);
}

#[test]
fn replies_to_earlier_messages_go_before_the_failing_close() {
    let mut conn = Connection::server(Limits::default());
    let mut input = frame(true, 1, b"first");
    input.extend(frame_rsv(true, 2, 1, b"bad"));
    let mut buf = BytesMut::from(&input[..]);
    assert!(conn.receive(&mut buf).is_err());
    assert_eq!(conn.state(), State::Open);
    let Some(Event::Message(m)) = conn.poll_event() else {
        panic!()
    };
    conn.send(m).unwrap();
    assert_eq!(conn.poll_event(), None);
    assert_eq!(conn.state(), State::Closed);
    assert_eq!(
        conn.poll_transmit().unwrap().to_vec(),
        server_frame(OpCode::Text, b"first")
    );
    let close = conn.poll_transmit().unwrap();
    assert_eq!(&close.payload()[..2], &1002u16.to_be_bytes());
}

#[test]
fn close_echo_follows_replies_to_earlier_messages() {
    let mut conn = Connection::server(Limits::default());
    let mut input = frame(true, 1, b"last words");
    input.extend(frame(true, 8, &close_payload(1000, b"")));
    conn.receive(&mut BytesMut::from(&input[..])).unwrap();
    let Some(Event::Message(m)) = conn.poll_event() else {
        panic!()
    };
    conn.send(m).unwrap();
    assert!(matches!(conn.poll_event(), Some(Event::Close(_))));
    assert_eq!(
        conn.poll_transmit().unwrap().to_vec(),
        server_frame(OpCode::Text, b"last words")
    );
    assert_eq!(
        conn.poll_transmit().unwrap().to_vec(),
        server_frame(OpCode::Close, &1000u16.to_be_bytes())
    );
}

#[test]
fn poll_message_takes_a_run_of_messages_and_stops_at_the_close() {
    let mut conn = Connection::server(Limits::default());
    let mut input = frame(true, 1, b"one");
    input.extend(frame(true, 2, b"two"));
    input.extend(frame(true, 8, &close_payload(1000, b"")));
    conn.receive(&mut BytesMut::from(&input[..])).unwrap();
    let one = conn.poll_message().unwrap();
    let two = conn.poll_message().unwrap();
    // The close stays queued, and with it the state: replies still go out.
    assert!(conn.poll_message().is_none());
    assert_eq!(conn.state(), State::Open);
    conn.send(one).unwrap();
    conn.send(two).unwrap();
    assert!(matches!(conn.poll_event(), Some(Event::Close(_))));
    assert_eq!(
        conn.poll_transmit().unwrap().to_vec(),
        server_frame(OpCode::Text, b"one")
    );
    assert_eq!(
        conn.poll_transmit().unwrap().to_vec(),
        server_frame(OpCode::Binary, b"two")
    );
    assert_eq!(
        conn.poll_transmit().unwrap().to_vec(),
        server_frame(OpCode::Close, &1000u16.to_be_bytes())
    );
    assert!(conn.poll_message().is_none());
}

#[test]
fn close_inside_fragmented_message_is_normal() {
    let mut input = frame(false, 1, b"part");
    input.extend(frame(true, 8, &close_payload(1000, b"")));
    let out = check(&input);
    assert!(out.error.is_none());
    assert_eq!(out.state, State::Closed);
}

#[test]
fn rejects_unmasked_client_frame() {
    assert_failed(
        &check(&server_frame(OpCode::Text, b"hi")),
        CloseCode::PROTOCOL_ERROR,
    );
}

#[test]
fn rejects_reserved_bits_without_extension() {
    for rsv in 1..8 {
        assert_failed(
            &check(&frame_rsv(true, rsv, 1, b"x")),
            CloseCode::PROTOCOL_ERROR,
        );
    }
}

#[test]
fn rejects_reserved_opcode() {
    assert_failed(&check(&frame(true, 3, b"")), CloseCode::PROTOCOL_ERROR);
}

#[test]
fn rejects_continuation_without_message() {
    assert_failed(&check(&frame(true, 0, b"x")), CloseCode::PROTOCOL_ERROR);
}

#[test]
fn rejects_new_message_inside_fragmented_one() {
    let mut input = frame(false, 1, b"a");
    input.extend(frame(true, 1, b"b"));
    assert_failed(&check(&input), CloseCode::PROTOCOL_ERROR);
}

#[test]
fn rejects_fragmented_ping_and_long_ping() {
    assert_failed(&check(&frame(false, 9, b"x")), CloseCode::PROTOCOL_ERROR);
    assert_failed(
        &check(&frame(true, 9, &[0; 126])),
        CloseCode::PROTOCOL_ERROR,
    );
}

#[test]
fn rejects_invalid_close_payloads() {
    assert_failed(&check(&frame(true, 8, &[3])), CloseCode::PROTOCOL_ERROR);
    for code in [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000] {
        assert_failed(
            &check(&frame(true, 8, &close_payload(code, b""))),
            CloseCode::PROTOCOL_ERROR,
        );
    }
    assert_failed(
        &check(&frame(true, 8, &close_payload(1000, b"\xff"))),
        CloseCode::INVALID_PAYLOAD,
    );
}

#[test]
fn accepts_valid_close_codes() {
    for code in [
        1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 4999,
    ] {
        let out = check(&frame(true, 8, &close_payload(code, b"")));
        assert!(out.error.is_none(), "{code}");
    }
}

#[test]
fn rejects_invalid_utf8_text() {
    assert_failed(
        &check(&frame(true, 1, b"ab\xc0\xafcd")),
        CloseCode::INVALID_PAYLOAD,
    );
    let mut input = frame(false, 1, b"\xce\xba\xe1");
    input.extend(frame(true, 0, b"\xbd"));
    assert_failed(&check(&input), CloseCode::INVALID_PAYLOAD);
}

#[test]
fn fails_fast_on_invalid_utf8_before_frame_ends() {
    let input = frame(
        true,
        1,
        b"valid \xf4\x90 and then a long tail that has not arrived",
    );
    // Feed only up to the bad bytes: the error must come now.
    let out = run(Limits::default(), &input[..6 + 8], 64);
    assert_failed(&out, CloseCode::INVALID_PAYLOAD);
}

#[test]
fn fails_fast_on_invalid_fragment_before_message_ends() {
    let mut input = frame(false, 1, b"ok");
    input.extend(frame(false, 0, b"\xff"));
    let out = check(&input);
    assert_failed(&out, CloseCode::INVALID_PAYLOAD);
}

#[test]
fn frame_over_limit_fails_from_header_alone() {
    let limits = Limits::default().max_frame_size(100);
    let input = frame(true, 2, &[0; 101]);
    let out = run(limits, &input[..8], 8);
    assert_failed(&out, CloseCode::MESSAGE_TOO_BIG);
    // A header announcing 2^62 bytes fails without allocating.
    let huge = [0x82, 0xff, 0x40, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4];
    assert_failed(&check(&huge), CloseCode::MESSAGE_TOO_BIG);
}

#[test]
fn message_over_limit_fails_at_the_fragment_that_crosses_it() {
    let limits = Limits::default().max_message_size(10);
    let mut input = frame(false, 2, &[0; 6]);
    input.extend(frame(true, 0, &[0; 5]));
    assert_failed(&check_with(limits, &input), CloseCode::MESSAGE_TOO_BIG);
}

#[test]
fn too_many_fragments_fail_with_1008() {
    let limits = Limits::default().max_fragments(3);
    let mut input = frame(false, 2, b"a");
    input.extend(frame(false, 0, b"b"));
    input.extend(frame(true, 0, b"c"));
    assert!(check_with(limits, &input).error.is_none());
    let mut input = frame(false, 2, b"a");
    for _ in 0..3 {
        input.extend(frame(false, 0, b"b"));
    }
    assert_failed(&check_with(limits, &input), CloseCode::POLICY_VIOLATION);
}

#[test]
fn input_needed_counts_what_a_partial_frame_lacks() {
    let payload: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
    let wire = frame(true, 2, &payload);
    let mut conn = Connection::server(Limits::default());
    let mut buf = BytesMut::from(&wire[..3]);
    conn.receive(&mut buf).unwrap();
    assert_eq!(conn.input_needed(), 0, "header incomplete: size unknown");
    buf.extend_from_slice(&wire[3..300]);
    conn.receive(&mut buf).unwrap();
    // 8 header bytes (2 + 2 + mask) are consumed; 292 payload bytes held.
    assert_eq!(buf.len(), 292);
    assert_eq!(conn.input_needed(), 1000 - 292);
    // The held part is unmasked already: a reader may move it elsewhere.
    assert_eq!(&buf[..], &payload[..292]);
    let mut moved = BytesMut::with_capacity(1000);
    moved.extend_from_slice(&buf);
    moved.extend_from_slice(&wire[300..]);
    conn.receive(&mut moved).unwrap();
    assert_eq!(conn.input_needed(), 0);
    assert_eq!(
        conn.poll_event(),
        Some(Event::Message(Message::Binary(Bytes::from(payload))))
    );
}

#[test]
fn local_close_waits_for_peer_then_closes() {
    let mut conn = Connection::server(Limits::default());
    conn.close(CloseCode::GOING_AWAY, "shutting down").unwrap();
    assert_eq!(conn.state(), State::Closing);
    assert_eq!(conn.send(Message::from("late")), Err(SendError::Closed));
    let t = conn.poll_transmit().unwrap();
    assert_eq!(&t.payload()[..2], &1001u16.to_be_bytes());
    let mut buf = BytesMut::from(&frame(true, 8, &close_payload(1001, b""))[..]);
    conn.receive(&mut buf).unwrap();
    assert_eq!(conn.state(), State::Closing, "applied when polled");
    assert!(matches!(conn.poll_event(), Some(Event::Close(_))));
    assert_eq!(conn.state(), State::Closed);
    assert!(conn.poll_transmit().is_none(), "no second close frame");
    assert!(conn.is_finished());
}

#[test]
fn refuses_unsendable_close_codes_and_long_pings() {
    let mut conn = Connection::server(Limits::default());
    assert!(matches!(
        conn.close(CloseCode::ABNORMAL, ""),
        Err(SendError::CodeNotSendable(_))
    ));
    assert_eq!(
        conn.ping(Bytes::from(vec![0; 126])),
        Err(SendError::ControlTooLong)
    );
}

#[test]
fn close_reason_is_cut_at_a_char_boundary() {
    let f = CloseFrame::new(CloseCode::NORMAL, &"é".repeat(100));
    assert!(f.reason.len() <= MAX_REASON_LEN && f.reason.len().is_multiple_of(2));
}

/// A client and a server wired in memory.
struct Pair {
    client: Connection,
    server: Connection,
    /// Bytes on the wire towards each end, and each end's read buffer.
    to_server: BytesMut,
    to_client: BytesMut,
    server_buf: BytesMut,
    client_buf: BytesMut,
    /// Events each end received, in order.
    server_events: Vec<Event>,
    client_events: Vec<Event>,
}

impl Pair {
    fn new() -> Self {
        let mut n = 0u32;
        Self {
            client: Connection::client(Limits::default(), move || {
                n = n.wrapping_mul(2_654_435_761).wrapping_add(1);
                n.to_be_bytes()
            }),
            server: Connection::server(Limits::default()),
            to_server: BytesMut::new(),
            to_client: BytesMut::new(),
            server_buf: BytesMut::new(),
            client_buf: BytesMut::new(),
            server_events: Vec::new(),
            client_events: Vec::new(),
        }
    }

    /// Moves bytes both ways, at most `chunk` per read, until both ends are
    /// idle.
    fn drive(&mut self, chunk: usize) {
        loop {
            while let Some(t) = self.client.poll_transmit() {
                self.to_server.extend_from_slice(&t.to_vec());
            }
            while let Some(t) = self.server.poll_transmit() {
                self.to_client.extend_from_slice(&t.to_vec());
            }
            if self.to_server.is_empty() && self.to_client.is_empty() {
                return;
            }
            let n = chunk.min(self.to_server.len());
            self.server_buf
                .extend_from_slice(&self.to_server.split_to(n));
            let _ = self.server.receive(&mut self.server_buf);
            let n = chunk.min(self.to_client.len());
            self.client_buf
                .extend_from_slice(&self.to_client.split_to(n));
            let _ = self.client.receive(&mut self.client_buf);
            for (conn, buf, got) in [
                (
                    &mut self.server,
                    &mut self.server_buf,
                    &mut self.server_events,
                ),
                (
                    &mut self.client,
                    &mut self.client_buf,
                    &mut self.client_events,
                ),
            ] {
                // As a transport does: take the events, then parse what
                // was left behind them.
                got.extend(std::iter::from_fn(|| conn.poll_event()));
                while conn.receive_pending() {
                    let _ = conn.receive(buf);
                    got.extend(std::iter::from_fn(|| conn.poll_event()));
                }
            }
        }
    }
}

#[test]
fn pair_close_handshake_completes_on_both_ends() {
    let mut pair = Pair::new();
    pair.client.send(Message::from("hi")).unwrap();
    pair.client.close(CloseCode::NORMAL, "done").unwrap();
    pair.drive(5);
    assert_eq!(pair.server_events[0], text("hi"));
    assert!(matches!(&pair.server_events[1], Event::Close(c) if c.code == CloseCode::NORMAL));
    // The echo was queued when the server polled the close event.
    pair.drive(5);
    assert!(matches!(&pair.client_events[0], Event::Close(c) if c.code == CloseCode::NORMAL));
    assert!(pair.client.is_finished() && pair.server.is_finished());
}

fn arb_message() -> impl Strategy<Value = Message> {
    prop_oneof![
        any::<String>().prop_map(Message::from),
        proptest::collection::vec(any::<u8>(), 0..70_000).prop_map(Message::from),
        proptest::collection::vec(any::<u8>(), 0..126).prop_map(|p| Message::Ping(p.into())),
        proptest::collection::vec(any::<u8>(), 0..126).prop_map(|p| Message::Pong(p.into())),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn pair_delivers_every_message_at_any_chunking(
        messages in proptest::collection::vec(arb_message(), 1..6),
        chunk in prop_oneof![Just(1usize), 1usize..40, Just(1 << 20)],
    ) {
        let mut pair = Pair::new();
        for m in &messages {
            pair.client.send(m.clone()).unwrap();
            pair.server.send(m.clone()).unwrap();
        }
        pair.drive(chunk);
        // Pings and pongs are answered and taken without events.
        let want: Vec<_> = messages
            .iter()
            .filter(|m| matches!(m, Message::Text(_) | Message::Binary(_)))
            .cloned()
            .map(Event::Message)
            .collect();
        prop_assert_eq!(&pair.server_events, &want);
        prop_assert_eq!(&pair.client_events, &want);
    }

    #[test]
    fn server_outcome_is_independent_of_chunking(
        frames in proptest::collection::vec((any::<bool>(), 0u8..11, proptest::collection::vec(any::<u8>(), 0..300)), 1..6),
        chunk in 1usize..20,
    ) {
        let input: Vec<u8> = frames.iter().flat_map(|(fin, op, p)| frame(*fin, *op, p)).collect();
        let whole = run(Limits::default(), &input, input.len());
        prop_assert_eq!(run(Limits::default(), &input, chunk), whole);
    }
}

/// A server connection limited to `burst` messages (at 1 a second), fed
/// `n` one-byte text messages at once.
fn rate_limited(action: RateAction, burst: u32, n: usize) -> (Connection, Vec<Event>, u32) {
    let t0 = std::time::Instant::now();
    let mut conn = Connection::server(Limits::default())
        .with_rate_limit(RateLimit::new(action).messages(1, burst), t0);
    conn.handle_input(t0);
    let input: Vec<u8> = (0..n).flat_map(|_| frame(true, 1, b"x")).collect();
    let mut buf = BytesMut::from(&input[..]);
    let mut events = Vec::new();
    loop {
        let _ = conn.receive(&mut buf);
        events.extend(std::iter::from_fn(|| conn.poll_event()));
        if !conn.receive_pending() {
            break;
        }
    }
    let limited = conn.take_rate_limited();
    (conn, events, limited)
}

#[test]
fn rate_limit_drop_delivers_the_burst_and_counts_the_rest() {
    let (conn, events, limited) = rate_limited(RateAction::Drop, 3, 100);
    assert_eq!(events, vec![text("x"), text("x"), text("x")]);
    assert_eq!((limited, conn.state()), (97, State::Open));
}

#[test]
fn rate_limit_notify_marks_the_messages_past_the_burst() {
    let (mut conn, events, limited) = rate_limited(RateAction::Notify, 2, 4);
    let over = Event::RateLimited(Message::Text(Utf8Bytes::from_static("x")));
    assert_eq!(events, vec![text("x"), text("x"), over.clone(), over]);
    assert_eq!((limited, conn.state()), (2, State::Open));
    assert_eq!(conn.take_rate_limited(), 0);
    // A second later, one more fits.
    conn.handle_input(std::time::Instant::now() + std::time::Duration::from_secs(1));
    let mut buf = BytesMut::from(&frame(true, 1, b"x")[..]);
    conn.receive(&mut buf).unwrap();
    assert_eq!(conn.poll_event(), Some(text("x")));
}

#[test]
fn rate_limit_close_fails_with_1008_after_the_burst() {
    let (mut conn, events, limited) = rate_limited(RateAction::Close, 5, 50);
    assert_eq!(events, vec![text("x"); 5]);
    assert_eq!(limited, 1);
    assert_eq!(conn.state(), State::Closed);
    assert_eq!(conn.error(), Some(&ProtocolError::RateLimited));
    let close = conn.poll_transmit().unwrap();
    assert_eq!(&close.payload()[..2], &1008u16.to_be_bytes());
    assert_eq!(&close.payload()[2..], b"rate limit exceeded");
}
