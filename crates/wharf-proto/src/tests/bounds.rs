//! What a peer can make a connection hold, and how long: the bounds of
//! `receive` and the deadlines, driven with a clock the test moves.

use std::time::{Duration, Instant};

use bytes::BytesMut;

use super::{frame, frame_rsv, server_frame};
use crate::frame::OpCode;
use crate::{
    CloseCode, Connection, Event, Expired, Limits, MAX_EVENTS, MAX_PONGS, State, Timeouts,
};

fn sent(conn: &mut Connection) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(t) = conn.poll_transmit() {
        out.extend_from_slice(&t.to_vec());
    }
    out
}

#[test]
fn a_ping_flood_queues_at_most_max_pongs_and_answers_the_latest() {
    let mut conn = Connection::server(Limits::default());
    let mut input = Vec::new();
    for i in 0..10_000u32 {
        input.extend(frame(true, 9, &i.to_be_bytes()));
    }
    conn.receive(&mut BytesMut::from(&input[..])).unwrap();
    assert!(!conn.has_events(), "pings are not events");
    let pong = |i: u32| server_frame(OpCode::Pong, &i.to_be_bytes());
    assert_eq!(conn.buffered_amount(), MAX_PONGS as usize * pong(0).len());
    let mut want: Vec<u8> = (0..u32::from(MAX_PONGS) - 1).flat_map(pong).collect();
    want.extend(pong(9_999));
    assert_eq!(sent(&mut conn), want);
    // Once sent, pongs are counted afresh.
    conn.receive(&mut BytesMut::from(&frame(true, 9, b"again")[..]))
        .unwrap();
    assert_eq!(sent(&mut conn), server_frame(OpCode::Pong, b"again"));
}

#[test]
fn a_pong_flood_holds_nothing() {
    let mut conn = Connection::server(Limits::default());
    let input: Vec<u8> = (0..10_000)
        .flat_map(|_| frame(true, 0xa, &[7; 125]))
        .collect();
    conn.receive(&mut BytesMut::from(&input[..])).unwrap();
    assert!(!conn.has_events());
    assert_eq!(conn.buffered_amount(), 0);
}

#[test]
fn receive_stops_while_max_events_wait_and_resumes_on_the_same_buffer() {
    let mut conn = Connection::server(Limits::default());
    let n = MAX_EVENTS * 3 + 5;
    let input: Vec<u8> = (0..n).flat_map(|_| frame(true, 1, b"x")).collect();
    let mut buf = BytesMut::from(&input[..]);
    let mut got = 0;
    conn.receive(&mut buf).unwrap();
    loop {
        let mut batch = 0;
        while conn.poll_event().is_some() {
            batch += 1;
        }
        assert!(batch <= MAX_EVENTS);
        got += batch;
        if !conn.receive_pending() {
            break;
        }
        conn.receive(&mut buf).unwrap();
    }
    assert_eq!(got, n);
    assert!(buf.is_empty());
}

#[test]
fn a_compressed_message_is_inflated_only_once_nothing_waits() {
    // RFC 7692 §7.2.3.1: "Hello", compressed, no context takeover.
    const HELLO: &[u8] = &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
    let params = crate::DeflateParams {
        server_no_context_takeover: true,
        client_no_context_takeover: true,
        server_max_window_bits: 15,
        client_max_window_bits: 15,
        level: 6,
        threshold: 0,
    };
    let mut conn = Connection::server(Limits::default()).with_deflate(params);
    let mut input = frame(true, 1, b"plain");
    for _ in 0..3 {
        input.extend(frame_rsv(true, 0b100, 1, HELLO));
    }
    let mut buf = BytesMut::from(&input[..]);
    conn.receive(&mut buf).unwrap();
    // The plain message waits: the compressed one behind it is not
    // inflated yet, and costs its wire size.
    // (The next frame's header is parsed; its payload stays in `buf`.)
    let wire = |n: usize| (n * (HELLO.len() + 6)).saturating_sub(6);
    assert!(conn.receive_pending());
    assert_eq!(buf.len(), wire(3));
    assert!(conn.poll_event().is_some());
    assert!(conn.poll_event().is_none());
    for left in [2, 1, 0] {
        conn.receive(&mut buf).unwrap();
        assert_eq!(conn.poll_event(), Some(super::text("Hello")));
        assert!(conn.poll_event().is_none());
        assert_eq!(buf.len(), wire(left));
        assert_eq!(conn.receive_pending(), left > 0);
    }
}

fn timed(t: Timeouts, now: Instant) -> Connection {
    Connection::server(Limits::default()).with_timeouts(t, now)
}

const S: Duration = Duration::from_secs(1);

#[test]
fn keepalive_pings_after_silence_then_closes_1001() {
    let t0 = Instant::now();
    let mut conn = timed(Timeouts::default().keepalive(30 * S, 20 * S), t0);
    assert_eq!(conn.poll_timeout(), Some(t0 + 30 * S));
    // Input moves the deadline.
    conn.handle_input(t0 + 10 * S);
    conn.handle_timeout(t0 + 30 * S);
    assert!(sent(&mut conn).is_empty());
    assert_eq!(conn.poll_timeout(), Some(t0 + 40 * S));
    conn.handle_timeout(t0 + 40 * S);
    assert_eq!(sent(&mut conn), server_frame(OpCode::Ping, b""));
    assert_eq!(conn.poll_timeout(), Some(t0 + 60 * S));
    conn.handle_timeout(t0 + 59 * S);
    assert_eq!(conn.expired(), None);
    conn.handle_timeout(t0 + 60 * S);
    assert_eq!(conn.expired(), Some(Expired::Keepalive));
    assert_eq!(conn.state(), State::Closing);
    let close = sent(&mut conn);
    assert_eq!(&close[2..4], &1001u16.to_be_bytes());
}

/// Broadcast frames joined into one transmit (`Transmit::concat`) have no
/// header of their own: pongs queued behind them, and a ping flood that
/// replaces the last pong, must not take them for a frame with one.
#[test]
fn pongs_queue_behind_joined_broadcast_frames() {
    let mut conn = Connection::server(Limits::default());
    let frames: Vec<crate::Transmit> = ["a", "b", "c"]
        .into_iter()
        .map(|t| crate::Transmit::message(crate::Message::from(t)))
        .collect();
    let joined = crate::Transmit::concat(&frames);
    conn.send_encoded(joined.clone()).unwrap();
    let mut input = Vec::new();
    for i in 0..(u32::from(MAX_PONGS) + 5) {
        input.extend(frame(true, 9, &i.to_be_bytes()));
        if i == 0 {
            conn.receive(&mut BytesMut::from(&input[..])).unwrap();
            input.clear();
            conn.send_encoded(joined.clone()).unwrap();
        }
    }
    conn.receive(&mut BytesMut::from(&input[..])).unwrap();
    let mut want = joined.to_vec();
    want.extend(server_frame(OpCode::Pong, &0u32.to_be_bytes()));
    want.extend(joined.to_vec());
    for i in 1..u32::from(MAX_PONGS) - 1 {
        want.extend(server_frame(OpCode::Pong, &i.to_be_bytes()));
    }
    // The last pong queued is replaced by the latest ping's.
    want.extend(server_frame(
        OpCode::Pong,
        &(u32::from(MAX_PONGS) + 4).to_be_bytes(),
    ));
    assert_eq!(sent(&mut conn), want);
}

#[test]
fn a_pong_or_any_input_answers_keepalive() {
    let t0 = Instant::now();
    let mut conn = timed(Timeouts::default().keepalive(30 * S, 20 * S), t0);
    conn.handle_timeout(t0 + 30 * S);
    assert_eq!(sent(&mut conn), server_frame(OpCode::Ping, b""));
    conn.receive(&mut BytesMut::from(&frame(true, 0xa, b"")[..]))
        .unwrap();
    conn.handle_input(t0 + 31 * S);
    conn.handle_timeout(t0 + 50 * S);
    assert_eq!(conn.expired(), None);
    assert_eq!(conn.poll_timeout(), Some(t0 + 61 * S));
}

#[test]
fn silence_while_the_application_holds_messages_is_not_the_peers() {
    let t0 = Instant::now();
    let mut conn = timed(Timeouts::default().keepalive(30 * S, 20 * S), t0);
    conn.receive(&mut BytesMut::from(&frame(true, 1, b"unread")[..]))
        .unwrap();
    for s in [30, 60, 90, 120] {
        conn.handle_timeout(t0 + s * S);
    }
    assert_eq!(conn.expired(), None);
    assert!(sent(&mut conn).is_empty(), "no ping while input is paused");
}

#[test]
fn the_close_deadline_bounds_every_closing_state() {
    let t0 = Instant::now();
    for how in ["local", "peer", "violation"] {
        let mut conn = timed(Timeouts::default().close(10 * S), t0);
        assert_eq!(conn.poll_timeout(), None);
        match how {
            "local" => conn.close(CloseCode::NORMAL, "").unwrap(),
            "peer" => {
                conn.receive(&mut BytesMut::from(&frame(true, 8, &[3, 232])[..]))
                    .unwrap();
                assert!(matches!(conn.poll_event(), Some(Event::Close(_))));
            }
            _ => {
                let _ = conn.receive(&mut BytesMut::from(&frame(true, 3, b"")[..]));
            }
        }
        assert!(conn.needs_time(), "{how}");
        conn.handle_timeout(t0 + S);
        assert!(!conn.needs_time());
        assert_eq!(conn.poll_timeout(), Some(t0 + 11 * S), "{how}");
        conn.handle_timeout(t0 + 11 * S);
        assert_eq!(conn.expired(), Some(Expired::Close), "{how}");
    }
}

#[test]
fn output_that_waits_unwritten_past_the_write_timeout_ends_the_connection() {
    let t0 = Instant::now();
    let mut conn = timed(Timeouts::default().write(30 * S), t0);
    conn.send("hello".into()).unwrap();
    // The transport took nothing: the stall starts.
    conn.handle_written(t0, false, true);
    assert!(conn.is_stalled());
    assert_eq!(conn.poll_timeout(), Some(t0 + 30 * S));
    // Some bytes went out: the stall starts again from there.
    conn.handle_written(t0 + 20 * S, true, true);
    conn.handle_timeout(t0 + 30 * S);
    assert_eq!(conn.expired(), None);
    conn.handle_timeout(t0 + 50 * S);
    assert_eq!(conn.expired(), Some(Expired::Write));
    assert_eq!(conn.buffered_amount(), 0, "the queue is dropped");
    // Written out, nothing waits: no deadline.
    let mut conn = timed(Timeouts::default().write(30 * S), t0);
    conn.handle_written(t0, false, true);
    conn.handle_written(t0 + S, true, false);
    assert!(!conn.is_stalled());
    assert_eq!(conn.poll_timeout(), None);
}

#[test]
fn without_timeouts_nothing_expires() {
    let t0 = Instant::now();
    let mut conn = Connection::server(Limits::default());
    conn.close(CloseCode::NORMAL, "").unwrap();
    assert!(!conn.needs_time());
    conn.handle_timeout(t0 + 1_000_000 * S);
    assert_eq!(conn.expired(), None);
    assert_eq!(conn.poll_timeout(), None);
}

#[test]
fn a_dedicated_compressor_given_back_when_idle_starts_a_stream_the_peer_takes() {
    // Context takeover both ways: the peer keeps its window.
    let params = crate::DeflateParams {
        server_no_context_takeover: false,
        client_no_context_takeover: false,
        server_max_window_bits: 15,
        client_max_window_bits: 15,
        level: 6,
        threshold: 0,
    };
    let mut server = Connection::server(Limits::default()).with_deflate(params);
    let mut client = Connection::client(Limits::default(), || [1, 2, 3, 4]).with_deflate(params);
    let text = "the same words again and again, the same words again";
    let mut wire = BytesMut::new();
    for round in 0..3 {
        server.send(text.into()).unwrap();
        if round == 1 {
            // Gone quiet: the compressor is dropped, and rebuilt on use.
            server.shrink();
        }
        server.send(text.into()).unwrap();
        wire.extend_from_slice(&sent(&mut server));
    }
    let mut got = Vec::new();
    loop {
        client.receive(&mut wire).unwrap();
        got.extend(std::iter::from_fn(|| client.poll_event()));
        if !client.receive_pending() {
            break;
        }
    }
    assert_eq!(got, vec![super::text(text); 6]);
}

#[test]
fn deferred_inflation_hands_the_message_out_and_takes_it_back() {
    const HELLO: &[u8] = &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
    let params = crate::DeflateParams {
        server_no_context_takeover: false,
        client_no_context_takeover: false,
        server_max_window_bits: 15,
        client_max_window_bits: 15,
        level: 6,
        threshold: 0,
    };
    let mut conn = Connection::server(Limits::default().max_message_size(1000))
        .with_deflate(params)
        .with_deferred_inflation();
    // "Hello" twice with context takeover, then a bomb past the limit.
    let mut bomb = flate2::Compress::new(flate2::Compression::new(9), false);
    let mut bytes = Vec::with_capacity(4096);
    bomb.compress_vec(&[b'a'; 100_000], &mut bytes, flate2::FlushCompress::Sync)
        .unwrap();
    bytes.truncate(bytes.len() - 4);
    let mut input = frame_rsv(true, 0b100, 1, HELLO);
    input.extend(frame_rsv(true, 0b100, 1, HELLO));
    input.extend(frame_rsv(true, 0b100, 2, &bytes));
    let mut buf = BytesMut::from(&input[..]);
    conn.receive(&mut buf).unwrap();
    assert!(!conn.has_events() && conn.receive_pending());
    let mut job = conn.take_inflation().expect("a compressed message");
    // `receive` waits for it to come back.
    conn.receive(&mut buf).unwrap();
    assert!(conn.take_inflation().is_none());
    job.run();
    conn.finish_inflation(job).unwrap();
    assert_eq!(conn.poll_event(), Some(super::text("Hello")));
    conn.receive(&mut buf).unwrap();
    let job = conn.take_inflation().unwrap();
    conn.finish_inflation(job).unwrap();
    assert_eq!(conn.poll_event(), Some(super::text("Hello")));
    conn.receive(&mut buf).unwrap();
    let job = conn.take_inflation().unwrap();
    let err = conn.finish_inflation(job);
    assert_eq!(
        err.map_err(|e| e.close_code()),
        Err(CloseCode::MESSAGE_TOO_BIG)
    );
    assert_eq!(conn.state(), State::Closed);
    let close = sent(&mut conn);
    assert_eq!(&close[2..4], &1009u16.to_be_bytes());
}
