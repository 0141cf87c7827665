//! The drafts' own examples, byte for byte; bad keys; the framing fed in
//! every split.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, Version};

use super::*;
use crate::{CloseCode, Connection, Event, Limits, Message, ProtocolError, State, Timeouts};

/// The -76 example handshake (draft-hixie-76 §1.3): its keys, `key3`, and
/// the answer the draft gives.
const KEY1_76: &str = "4 @1  46546xW%0l 1 5";
const KEY2_76: &str = "12998 5 Y3 1  .P00";
const KEY3_76: &[u8; 8] = b"^n:ds[4U";
const ANSWER_76: &[u8; 16] = b"8jKS'y:G*Co,Wxa-";

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (name, value) in pairs {
        h.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    h
}

fn example_76() -> HeaderMap {
    headers(&[
        ("Host", "example.com"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key2", KEY2_76),
        ("Sec-WebSocket-Protocol", "sample"),
        ("Upgrade", "WebSocket"),
        ("Sec-WebSocket-Key1", KEY1_76),
        ("Origin", "http://example.com"),
    ])
}

fn example_75() -> HeaderMap {
    headers(&[
        ("Upgrade", "WebSocket"),
        ("Connection", "Upgrade"),
        ("Host", "example.com"),
        ("Origin", "http://example.com"),
        ("WebSocket-Protocol", "sample"),
    ])
}

fn validate(draft: Draft, h: &HeaderMap) -> Result<LegacyHandshake, Reject> {
    let uri = Uri::from_static("/demo");
    LegacyHandshake::validate(draft, &Method::GET, Version::HTTP_11, &uri, h)
}

#[test]
fn detects_the_draft_from_the_headers() {
    assert_eq!(detect(&example_76()), Some(Draft::Hixie76));
    assert_eq!(detect(&example_75()), Some(Draft::Hixie75));
    let mut h = example_75();
    h.insert("sec-websocket-version", HeaderValue::from_static("13"));
    assert_eq!(detect(&h), None, "a version header means RFC 6455");
    let h = headers(&[("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")]);
    assert_eq!(detect(&h), None);
}

#[test]
fn hixie76_1_3_example_answer() {
    let hs = validate(Draft::Hixie76, &example_76()).unwrap();
    assert_eq!(hs.body_len(), KEY3_LEN);
    assert_eq!(hs.protocol(), Some("sample"));
    assert_eq!(&hs.challenge(KEY3_76), ANSWER_76);
    let mut out = Vec::new();
    hs.write_response(
        false,
        Some("sample"),
        &HeaderMap::new(),
        Some(KEY3_76),
        &mut out,
    );
    let mut expected = b"HTTP/1.1 101 WebSocket Protocol Handshake\r\n\
        Upgrade: WebSocket\r\n\
        Connection: Upgrade\r\n\
        Sec-WebSocket-Origin: http://example.com\r\n\
        Sec-WebSocket-Location: ws://example.com/demo\r\n\
        Sec-WebSocket-Protocol: sample\r\n\
        \r\n"
        .to_vec();
    expected.extend_from_slice(ANSWER_76);
    assert_eq!(
        String::from_utf8_lossy(&out),
        String::from_utf8_lossy(&expected)
    );
    assert_eq!(out, expected);
    let res = hs.response(true, Some("sample"));
    assert_eq!(res.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(
        res.headers()["sec-websocket-location"],
        "wss://example.com/demo"
    );
    assert_eq!(res.headers()["sec-websocket-origin"], "http://example.com");
}

#[test]
fn hixie75_example_response() {
    let hs = validate(Draft::Hixie75, &example_75()).unwrap();
    assert_eq!(hs.body_len(), 0);
    let mut out = Vec::new();
    hs.write_response(false, Some("sample"), &HeaderMap::new(), None, &mut out);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "HTTP/1.1 101 Web Socket Protocol Handshake\r\n\
         Upgrade: WebSocket\r\n\
         Connection: Upgrade\r\n\
         WebSocket-Origin: http://example.com\r\n\
         WebSocket-Location: ws://example.com/demo\r\n\
         WebSocket-Protocol: sample\r\n\
         \r\n"
    );
    let res = hs.response(false, None);
    assert_eq!(res.headers()["websocket-location"], "ws://example.com/demo");
    assert!(!res.headers().contains_key("websocket-protocol"));
}

#[test]
fn key_rules() {
    assert_eq!(key_number(KEY1_76.as_bytes()), Ok(829_309_203));
    assert_eq!(key_number(KEY2_76.as_bytes()), Ok(259_970_620));
    let reason = |k: &[u8]| key_number(k).unwrap_err().reason;
    assert_eq!(reason(b"12345"), "Sec-WebSocket-Key has no spaces");
    assert_eq!(
        reason(b"1 2 3"),
        "Sec-WebSocket-Key number is not a multiple of its spaces"
    );
    assert_eq!(
        reason(b"4294967296 "),
        "Sec-WebSocket-Key number over 4294967295"
    );
    assert_eq!(
        reason(b"99999999999999999999999 "),
        "Sec-WebSocket-Key number over 4294967295"
    );
    assert_eq!(
        reason(&[b' '; MAX_KEY_LEN + 1]),
        "Sec-WebSocket-Key too long"
    );
    assert_eq!(key_number(b" "), Ok(0), "no digits is the number zero");
    assert_eq!(key_number(b"4294967295 "), Ok(u32::MAX));
}

#[test]
fn refusals_are_a_status_and_one_line() {
    type Edit = Box<dyn Fn(&mut HeaderMap)>;
    let cases: Vec<(Draft, Edit, StatusCode)> = vec![
        (
            Draft::Hixie76,
            Box::new(|h| {
                h.remove("sec-websocket-key2");
            }),
            StatusCode::BAD_REQUEST,
        ),
        (
            Draft::Hixie76,
            Box::new(|h| {
                h.append("sec-websocket-key1", HeaderValue::from_static("1 "));
            }),
            StatusCode::BAD_REQUEST,
        ),
        (
            Draft::Hixie76,
            Box::new(|h| {
                h.insert("sec-websocket-key1", HeaderValue::from_static("12345"));
            }),
            StatusCode::BAD_REQUEST,
        ),
        (
            Draft::Hixie76,
            Box::new(|h| {
                h.insert("sec-websocket-key2", HeaderValue::from_static("1 2 3"));
            }),
            StatusCode::BAD_REQUEST,
        ),
        (
            Draft::Hixie76,
            Box::new(|h| {
                h.remove("origin");
            }),
            StatusCode::BAD_REQUEST,
        ),
        (
            Draft::Hixie75,
            Box::new(|h| {
                h.remove("host");
            }),
            StatusCode::BAD_REQUEST,
        ),
        (
            Draft::Hixie75,
            Box::new(|h| {
                h.insert("upgrade", HeaderValue::from_static("h2c"));
            }),
            StatusCode::BAD_REQUEST,
        ),
        (
            Draft::Hixie75,
            Box::new(|h| {
                h.insert("connection", HeaderValue::from_static("close"));
            }),
            StatusCode::BAD_REQUEST,
        ),
        (
            Draft::Hixie75,
            Box::new(|h| {
                h.append("websocket-protocol", HeaderValue::from_static("b"));
            }),
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (i, (draft, edit, status)) in cases.into_iter().enumerate() {
        let mut h = match draft {
            Draft::Hixie75 => example_75(),
            Draft::Hixie76 => example_76(),
        };
        edit(&mut h);
        let r = validate(draft, &h).unwrap_err();
        assert_eq!(r.status, status, "case {i}");
        assert!(!r.reason.is_empty() && !r.reason.contains('\n'), "case {i}");
    }
    let uri = Uri::from_static("/");
    let h = example_76();
    let post = LegacyHandshake::validate(Draft::Hixie76, &Method::POST, Version::HTTP_11, &uri, &h);
    assert_eq!(post.unwrap_err().status, StatusCode::METHOD_NOT_ALLOWED);
    let old = LegacyHandshake::validate(Draft::Hixie76, &Method::GET, Version::HTTP_10, &uri, &h);
    assert_eq!(
        old.unwrap_err().status,
        StatusCode::HTTP_VERSION_NOT_SUPPORTED
    );
}

/// What a legacy server connection did with some input.
#[derive(Debug, PartialEq)]
struct Outcome {
    events: Vec<Event>,
    sent: Vec<u8>,
    error: Option<ProtocolError>,
    state: State,
}

fn run(draft: Draft, limits: Limits, input: &[u8], split: &[usize]) -> Outcome {
    let mut conn = Connection::server(limits).with_legacy(draft);
    let mut buf = BytesMut::new();
    let mut out = Outcome {
        events: Vec::new(),
        sent: Vec::new(),
        error: None,
        state: State::Open,
    };
    let mut from = 0;
    for &to in split.iter().chain([input.len()].iter()) {
        buf.extend_from_slice(&input[from..to]);
        from = to;
        loop {
            if let Err(e) = conn.receive(&mut buf) {
                out.error.get_or_insert(e);
            }
            out.events.extend(std::iter::from_fn(|| conn.poll_event()));
            while let Some(t) = conn.poll_transmit() {
                out.sent.extend_from_slice(&t.to_vec());
            }
            if !conn.receive_pending() {
                break;
            }
        }
    }
    out.state = conn.state();
    out
}

/// Feeds `input` whole, split at every byte boundary (two pieces), and a
/// byte at a time: every feeding gives the same outcome, returned.
fn check_with(draft: Draft, limits: Limits, input: &[u8]) -> Outcome {
    let whole = run(draft, limits, input, &[]);
    for at in 0..=input.len() {
        assert_eq!(run(draft, limits, input, &[at]), whole, "split at {at}");
    }
    let bytewise: Vec<usize> = (0..input.len()).collect();
    assert_eq!(run(draft, limits, input, &bytewise), whole, "byte by byte");
    whole
}

fn check(draft: Draft, input: &[u8]) -> Outcome {
    check_with(draft, Limits::default(), input)
}

fn text(s: &str) -> Event {
    Event::Message(Message::Text(crate::Utf8Bytes::from(s.to_owned())))
}

#[test]
fn text_frames_in_every_split() {
    for draft in [Draft::Hixie75, Draft::Hixie76] {
        let out = check(
            draft,
            b"\x00Hello\xff\x00\xff\x00caf\xc3\xa9 \xf0\x9f\x8c\x8a\xff",
        );
        assert_eq!(out.events, [text("Hello"), text(""), text("café 🌊")]);
        assert_eq!(
            (out.error, out.sent.len(), out.state),
            (None, 0, State::Open)
        );
    }
}

#[test]
fn other_frames_are_read_and_discarded() {
    // A sentinel frame of another type, a length-prefixed frame of 200
    // bytes (length in two bytes), an empty one, then text.
    let mut input = b"\x01ignored\xff\x80\x81\x48".to_vec();
    input.extend_from_slice(&[0xaa; 200]);
    input.extend_from_slice(b"\x80\x00\x00kept\xff");
    for draft in [Draft::Hixie75, Draft::Hixie76] {
        let out = check(draft, &input);
        assert_eq!(out.events, [text("kept")]);
        assert_eq!(out.error, None);
    }
    // -75 has no closing handshake: `0xFF 0x00` is an empty frame, discarded.
    let out = check(Draft::Hixie75, b"\xff\x00\x00after\xff");
    assert_eq!(out.events, [text("after")]);
    assert_eq!(out.state, State::Open);
}

#[test]
fn hixie76_closing_handshake() {
    let out = check(Draft::Hixie76, b"\x00bye\xff\xff\x00\x00ignored\xff");
    assert_eq!(out.events.len(), 2);
    assert_eq!(out.events[0], text("bye"));
    let Event::Close(close) = &out.events[1] else {
        panic!("{out:?}")
    };
    assert_eq!(close.code, CloseCode::NO_STATUS_RECEIVED);
    assert_eq!(out.sent, b"\xff\x00", "the echo");
    assert_eq!(out.state, State::Closed);
}

#[test]
fn invalid_text_ends_the_connection() {
    for (draft, sent) in [
        (Draft::Hixie76, &b"\xff\x00"[..]),
        (Draft::Hixie75, &b""[..]),
    ] {
        for input in [
            &b"\x00ok\xff\x00\xc3\x28\xff"[..],
            b"\x00\xed\xa0\x80",
            b"\x00\xe2\x82\xff",
        ] {
            let out = check(draft, input);
            assert_eq!(out.error, Some(ProtocolError::TextNotUtf8), "{input:?}");
            assert_eq!(out.sent, sent);
            assert_eq!(out.state, State::Closed);
        }
    }
}

#[test]
fn limits_apply() {
    let limits = Limits::default().max_message_size(8).max_frame_size(100);
    for draft in [Draft::Hixie75, Draft::Hixie76] {
        let out = check_with(draft, limits, b"\x0012345678\xff");
        assert_eq!(out.events, [text("12345678")], "at the limit");
        let out = check_with(draft, limits, b"\x00123456789\xff");
        assert_eq!(out.error, Some(ProtocolError::MessageTooBig { max: 8 }));
        // Over the limit without an end byte: fails before the end arrives.
        let out = check_with(draft, limits, b"\x01123456789");
        assert_eq!(out.error, Some(ProtocolError::MessageTooBig { max: 8 }));
        let out = check_with(draft, limits, b"\x80\x64");
        assert_eq!(out.error, None, "a discarded frame at the frame limit");
        let out = check_with(draft, limits, b"\x80\x65");
        assert_eq!(
            out.error,
            Some(ProtocolError::FrameTooBig { len: 101, max: 100 })
        );
        let out = check_with(
            draft,
            limits,
            b"\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80",
        );
        assert!(
            matches!(out.error, Some(ProtocolError::FrameTooBig { .. })),
            "{out:?}"
        );
        assert_eq!(out.state, State::Closed);
    }
}

#[test]
fn many_frames_in_one_read_stop_at_max_events() {
    let input: Vec<u8> = (0..200).flat_map(|_| *b"\x00m\xff").collect();
    let out = check(Draft::Hixie76, &input);
    assert_eq!(out.events.len(), 200);
}

#[test]
fn sends_text_only_and_closes_by_draft() {
    let mut conn = Connection::server(Limits::default()).with_legacy(Draft::Hixie76);
    conn.send(Message::Text("hi".into())).unwrap();
    assert_eq!(conn.poll_transmit().unwrap().to_vec(), b"\x00hi\xff");
    assert_eq!(
        conn.send(Message::Binary(Bytes::from_static(b"x"))),
        Err(crate::SendError::NotInDraft)
    );
    assert_eq!(conn.ping(Bytes::new()), Err(crate::SendError::NotInDraft));
    conn.close(CloseCode::NORMAL, "bye").unwrap();
    assert_eq!(conn.poll_transmit().unwrap().to_vec(), b"\xff\x00");
    assert_eq!(conn.state(), State::Closing);
    let mut input = BytesMut::from(&b"\xff\x00"[..]);
    conn.receive(&mut input).unwrap();
    assert!(matches!(conn.poll_event(), Some(Event::Close(_))));
    assert!(conn.is_finished());

    let mut conn = Connection::server(Limits::default()).with_legacy(Draft::Hixie75);
    conn.close(CloseCode::NORMAL, "bye").unwrap();
    assert!(conn.poll_transmit().is_none(), "-75 has no close frame");
    assert!(conn.is_finished());
    let shared = Transmit::legacy(&Message::Text("all".into())).unwrap();
    assert_eq!(shared.to_vec(), b"\x00all\xff");
    assert!(Transmit::legacy(&Message::Binary(Bytes::new())).is_none());
}

use crate::Transmit;

#[test]
fn keepalive_sends_no_ping_and_times_silence_out() {
    let start = Instant::now();
    let t = Timeouts::default()
        .keepalive(Duration::from_secs(30), Duration::from_secs(20))
        .close(Duration::from_secs(5));
    let mut conn = Connection::server(Limits::default())
        .with_legacy(Draft::Hixie76)
        .with_timeouts(t, start);
    let first = conn.poll_timeout().unwrap();
    assert_eq!(first, start + Duration::from_secs(30));
    conn.handle_timeout(first);
    assert!(conn.poll_transmit().is_none(), "no ping in the drafts");
    assert_eq!(conn.expired(), None);
    // Input in time keeps it open.
    conn.handle_input(first + Duration::from_secs(10));
    let next = conn.poll_timeout().unwrap();
    assert_eq!(next, first + Duration::from_secs(40));
    conn.handle_timeout(next);
    let end = conn.poll_timeout().unwrap();
    assert_eq!(end, next + Duration::from_secs(20));
    conn.handle_timeout(end);
    assert_eq!(conn.expired(), Some(crate::Expired::Keepalive));
    assert_eq!(conn.poll_transmit().unwrap().to_vec(), b"\xff\x00");
}
