//! permessage-deflate: RFC 7692 §7.2.3 vectors, negotiation, the inflate
//! limit, and round trips in every mode.

use bytes::{Bytes, BytesMut};
use http::HeaderValue;
use proptest::prelude::*;

use super::*;
use crate::{Connection, Event, Handshake, Limits, Message};

fn params(server_nct: bool, client_nct: bool, server_bits: u8, client_bits: u8) -> DeflateParams {
    DeflateParams {
        server_no_context_takeover: server_nct,
        client_no_context_takeover: client_nct,
        server_max_window_bits: server_bits,
        client_max_window_bits: client_bits,
        level: 6,
        threshold: 0,
    }
}

/// A server-side codec with context takeover in both directions.
fn codec() -> Codec {
    let p = params(false, false, 15, 15);
    Codec::new(p, p)
}

#[test]
fn rfc7692_7_2_3_1_compressed_hello() {
    let out = codec()
        .decompress(&[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00], 1024)
        .unwrap();
    assert_eq!(&out[..], b"Hello");
    let compressed = codec().compress(b"Hello");
    assert_eq!(&compressed[..], [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]);
}

#[test]
fn rfc7692_7_2_3_2_sharing_the_window() {
    let mut c = codec();
    let first = c
        .decompress(&[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00], 1024)
        .unwrap();
    let second = c.decompress(&[0xf2, 0x00, 0x11, 0x00, 0x00], 1024).unwrap();
    assert_eq!((&first[..], &second[..]), (&b"Hello"[..], &b"Hello"[..]));
    let mut c = codec();
    c.compress(b"Hello");
    assert_eq!(&c.compress(b"Hello")[..], [0xf2, 0x00, 0x11, 0x00, 0x00]);
}

#[test]
fn rfc7692_7_2_3_3_stored_block() {
    let out = codec()
        .decompress(
            &[
                0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00,
            ],
            1024,
        )
        .unwrap();
    assert_eq!(&out[..], b"Hello");
}

#[test]
fn rfc7692_7_2_3_4_bfinal_set() {
    let mut c = codec();
    let out = c
        .decompress(&[0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00], 1024)
        .unwrap();
    assert_eq!(&out[..], b"Hello");
    // The stream ended: the next message starts a fresh one.
    let out = c
        .decompress(&[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00], 1024)
        .unwrap();
    assert_eq!(&out[..], b"Hello");
}

#[test]
fn rfc7692_7_2_3_5_two_blocks() {
    let input = [
        0xf2, 0x48, 0x05, 0x00, 0x00, 0x00, 0xff, 0xff, 0xca, 0xc9, 0xc9, 0x07, 0x00,
    ];
    assert_eq!(&codec().decompress(&input, 1024).unwrap()[..], b"Hello");
}

#[test]
fn rfc7692_7_2_3_1_frame_through_a_connection() {
    // The §7.2.3.1 frame, masked as a client sends it.
    let mut frame = vec![0xc1, 0x87, 1, 2, 3, 4];
    let mut payload = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
    crate::mask::apply(&mut payload, [1, 2, 3, 4], 0);
    frame.extend_from_slice(&payload);
    let mut conn = Connection::server(Limits::default()).with_deflate(params(true, true, 15, 15));
    conn.receive(&mut BytesMut::from(&frame[..])).unwrap();
    assert_eq!(
        conn.poll_event(),
        Some(Event::Message(Message::from("Hello")))
    );
}

#[test]
fn inflating_past_the_limit_fails_with_1009_without_holding_the_output() {
    // 64 MiB of zeros deflates to about 64 KiB.
    let bomb = compress_shared(15, 9, &vec![0u8; 64 << 20]);
    assert!(bomb.len() < 100 << 10, "{}", bomb.len());
    let err = codec().decompress(&bomb, 1 << 20).unwrap_err();
    assert_eq!(err, ProtocolError::MessageTooBig { max: 1 << 20 });
    assert_eq!(err.close_code(), crate::CloseCode::MESSAGE_TOO_BIG);
    // Through a connection: the close carries 1009.
    let mut conn = Connection::server(Limits::default()).with_deflate(params(true, true, 15, 15));
    let key = [9, 8, 7, 6];
    let mut masked = bomb.to_vec();
    crate::mask::apply(&mut masked, key, 0);
    let header = crate::frame::FrameHeader {
        fin: true,
        rsv: 0b100,
        opcode: crate::OpCode::Binary,
        mask: Some(key),
        payload_len: masked.len() as u64,
    };
    let mut input = crate::Transmit::with_header(header, masked.into()).to_vec();
    let mut buf = BytesMut::from(&input[..]);
    input.clear();
    assert!(matches!(
        conn.receive(&mut buf),
        Err(ProtocolError::MessageTooBig { .. })
    ));
    assert_eq!(conn.poll_event(), None);
    let close = conn.poll_transmit().unwrap();
    assert_eq!(&close.payload()[..2], &1009u16.to_be_bytes());
}

#[test]
fn invalid_deflate_data_fails_with_1007() {
    let err = codec()
        .decompress(&[0xff, 0xff, 0xff, 0xff], 1024)
        .unwrap_err();
    assert_eq!(err.close_code(), crate::CloseCode::INVALID_PAYLOAD);
}

fn offers(header: &str) -> Vec<Offer> {
    parse_offers(std::iter::once(&HeaderValue::from_str(header).unwrap())).unwrap()
}

fn negotiated(header: &str, config: &DeflateConfig) -> Option<(DeflateParams, String)> {
    negotiate(&offers(header), config).map(|(p, h)| (p, h.to_str().unwrap().to_owned()))
}

#[test]
fn negotiates_the_default_offer_in_shared_mode() {
    let (p, h) = negotiated(
        "permessage-deflate; client_max_window_bits",
        &DeflateConfig::shared(),
    )
    .unwrap();
    assert!(p.server_no_context_takeover && p.client_no_context_takeover);
    assert_eq!(
        h,
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
    );
}

#[test]
fn negotiates_context_takeover_in_dedicated_mode() {
    let (p, h) = negotiated("permessage-deflate", &DeflateConfig::dedicated(15)).unwrap();
    assert!(!p.server_no_context_takeover && !p.client_no_context_takeover);
    assert_eq!(h, "permessage-deflate");
    // The client may still ask the server not to keep context.
    let (p, h) = negotiated(
        "permessage-deflate; server_no_context_takeover",
        &DeflateConfig::dedicated(15),
    )
    .unwrap();
    assert!(p.server_no_context_takeover);
    assert_eq!(h, "permessage-deflate; server_no_context_takeover");
}

#[test]
fn answers_server_max_window_bits_with_the_smaller_value() {
    let (p, h) = negotiated(
        "permessage-deflate; server_max_window_bits=10",
        &DeflateConfig::dedicated(15),
    )
    .unwrap();
    assert_eq!(p.server_max_window_bits, 10);
    assert_eq!(h, "permessage-deflate; server_max_window_bits=10");
    let (p, _) = negotiated(
        "permessage-deflate; server_max_window_bits=\"12\"",
        &DeflateConfig::dedicated(11),
    )
    .unwrap();
    assert_eq!(p.server_max_window_bits, 11);
}

#[test]
fn declines_window_bits_8_and_falls_back_to_the_next_offer() {
    let header = "permessage-deflate; server_max_window_bits=8, permessage-deflate";
    let (p, h) = negotiated(header, &DeflateConfig::dedicated(15)).unwrap();
    assert_eq!(
        (p.server_max_window_bits, h.as_str()),
        (15, "permessage-deflate")
    );
    assert!(
        negotiated(
            "permessage-deflate; server_max_window_bits=8",
            &DeflateConfig::shared()
        )
        .is_none()
    );
}

#[test]
fn declines_unknown_duplicate_and_invalid_parameters() {
    let c = DeflateConfig::shared();
    assert!(negotiated("permessage-deflate; foo", &c).is_none());
    assert!(
        negotiated(
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            &c
        )
        .is_none()
    );
    assert!(negotiated("permessage-deflate; server_max_window_bits", &c).is_none());
    assert!(negotiated("permessage-deflate; server_max_window_bits=16", &c).is_none());
    assert!(negotiated("permessage-deflate; server_max_window_bits=09", &c).is_none());
    assert!(negotiated("permessage-deflate; client_no_context_takeover=1", &c).is_none());
    assert!(negotiated("x-webkit-deflate-frame", &c).is_none());
}

#[test]
fn asks_the_client_for_a_smaller_window_only_when_it_allows_it() {
    let mut c = DeflateConfig::dedicated(15);
    c.client_max_window_bits = 10;
    let (p, h) = negotiated("permessage-deflate; client_max_window_bits", &c).unwrap();
    assert_eq!(p.client_max_window_bits, 10);
    assert_eq!(h, "permessage-deflate; client_max_window_bits=10");
    let (_, h) = negotiated("permessage-deflate", &c).unwrap();
    assert_eq!(h, "permessage-deflate");
}

#[test]
fn malformed_extension_headers_are_refused_with_400() {
    for bad in [
        "permessage-deflate; ",
        "permessage-deflate;;",
        "permessage-deflate; a=",
        "permessage-deflate; a=\"unterminated",
        "permessage-deflate; a=\"not a token\"",
        "permessage-deflate x",
        "=",
    ] {
        let req = http::Request::get("/")
            .header("host", "h")
            .header("upgrade", "websocket")
            .header("connection", "upgrade")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-extensions", bad)
            .body(())
            .unwrap();
        let reject = Handshake::from_request(&req).unwrap_err();
        assert_eq!(reject.status, http::StatusCode::BAD_REQUEST, "{bad:?}");
    }
}

#[test]
fn parsing_a_huge_header_is_linear() {
    let header = "permessage-deflate; client_max_window_bits, ".repeat(20_000);
    let start = std::time::Instant::now();
    assert_eq!(offers(&header).len(), 20_000);
    // Generous: a quadratic parse of 900 KB would take minutes.
    assert!(start.elapsed() < std::time::Duration::from_secs(5));
}

#[test]
fn shared_frames_are_identical_across_connections() {
    let p = params(true, true, 15, 15);
    let m = Message::from("a chat message that is long enough to compress, compress, compress");
    let a = crate::Transmit::deflated(&m, &p).unwrap();
    let mut conn = Connection::server(Limits::default()).with_deflate(p);
    conn.send(m).unwrap();
    assert_eq!(conn.poll_transmit().unwrap(), a);
}

/// A client and a server with deflate, as the `Pair` in `crate::tests`.
fn round_trip(p: DeflateParams, messages: &[Message], chunk: usize) -> (Vec<Event>, Vec<Event>) {
    let mut n = 0u32;
    let mut client = Connection::client(Limits::default().max_message_size(1 << 22), move || {
        n = n.wrapping_mul(2_654_435_761).wrapping_add(7);
        n.to_be_bytes()
    })
    .with_deflate(p);
    let mut server =
        Connection::server(Limits::default().max_message_size(1 << 22)).with_deflate(p);
    for m in messages {
        client.send(m.clone()).unwrap();
        server.send(m.clone()).unwrap();
    }
    let drain = |c: &mut Connection| {
        let mut wire = Vec::new();
        while let Some(t) = c.poll_transmit() {
            wire.extend_from_slice(&t.to_vec());
        }
        wire
    };
    let feed = |c: &mut Connection, wire: &[u8]| {
        let mut buf = BytesMut::new();
        let mut events = Vec::new();
        for piece in wire.chunks(chunk.max(1)) {
            buf.extend_from_slice(piece);
            c.receive(&mut buf).unwrap();
            events.extend(std::iter::from_fn(|| c.poll_event()));
            while c.receive_pending() {
                c.receive(&mut buf).unwrap();
                events.extend(std::iter::from_fn(|| c.poll_event()));
            }
        }
        events
    };
    let to_server = drain(&mut client);
    let to_client = drain(&mut server);
    (feed(&mut server, &to_server), feed(&mut client, &to_client))
}

fn arb_message() -> impl Strategy<Value = Message> {
    prop_oneof![
        any::<String>().prop_map(Message::from),
        "[a-c ]{0,3000}".prop_map(Message::from),
        proptest::collection::vec(any::<u8>(), 0..5000).prop_map(Message::from),
        proptest::collection::vec(0u8..3, 0..70_000).prop_map(|v| Message::Binary(Bytes::from(v))),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn round_trips_in_every_mode(
        server_nct in any::<bool>(), client_nct in any::<bool>(),
        server_bits in 9u8..=15, client_bits in 9u8..=15,
        messages in proptest::collection::vec(arb_message(), 1..5),
        chunk in prop_oneof![Just(1usize), 1usize..300, Just(1 << 20)],
    ) {
        let p = params(server_nct, client_nct, server_bits, client_bits);
        let (at_server, at_client) = round_trip(p, &messages, chunk);
        let expect: Vec<Event> = messages.iter().cloned().map(Event::Message).collect();
        prop_assert_eq!(&at_server, &expect);
        prop_assert_eq!(at_client, expect);
    }
}

#[test]
fn empty_messages_keep_the_shared_window_in_step() {
    let p = params(false, false, 9, 15);
    let mut tx = Codec::new(p, p);
    let mut rx = codec();
    let a: String = (0..1500)
        .map(|i| ["a", " ", "b", "c"][(i * 7 + i / 3) % 4])
        .collect();
    for (i, m) in [a.as_str(), "", a.as_str(), ""].iter().enumerate() {
        let c = tx.compress(m.as_bytes());
        if m.is_empty() {
            assert_eq!(&c[..], [0x00], "rfc7692 7.2.3.6");
        }
        assert_eq!(
            &rx.decompress(&c, 1 << 20).unwrap()[..],
            m.as_bytes(),
            "message {i}"
        );
    }
}

/// A raw deflate decoder (RFC 1951) that reports the longest distance any
/// back-reference reaches: what a peer inflating with a window of that
/// many bytes needs. Test-only, and strict: it panics on anything invalid.
fn longest_distance(data: &[u8]) -> (Vec<u8>, usize) {
    struct Bits<'a> {
        data: &'a [u8],
        at: usize,
    }
    impl Bits<'_> {
        fn bit(&mut self) -> u32 {
            let b = (self.data[self.at / 8] >> (self.at % 8)) & 1;
            self.at += 1;
            u32::from(b)
        }
        fn bits(&mut self, n: u32) -> u32 {
            (0..n).fold(0, |v, i| v | (self.bit() << i))
        }
        fn decode(&mut self, (counts, symbols): &(Vec<u16>, Vec<u16>)) -> usize {
            let (mut code, mut first, mut index) = (0i32, 0i32, 0i32);
            for &count in &counts[1..] {
                code |= self.bit() as i32;
                let count = i32::from(count);
                if code - first < count {
                    return symbols[(index + code - first) as usize] as usize;
                }
                index += count;
                first = (first + count) << 1;
                code <<= 1;
            }
            panic!("bad huffman code");
        }
    }
    fn table(lengths: &[u8]) -> (Vec<u16>, Vec<u16>) {
        let mut counts = vec![0u16; 16];
        for &l in lengths {
            counts[l as usize] += 1;
        }
        counts[0] = 0;
        let mut symbols = Vec::new();
        for len in 1..16u8 {
            for (s, &l) in lengths.iter().enumerate() {
                if l == len {
                    symbols.push(s as u16);
                }
            }
        }
        (counts, symbols)
    }
    const LEN_BASE: [u16; 29] = [
        3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115,
        131, 163, 195, 227, 258,
    ];
    const LEN_EXTRA: [u32; 29] = [
        0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0,
    ];
    const DIST_BASE: [u16; 30] = [
        1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537,
        2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577,
    ];
    const DIST_EXTRA: [u32; 30] = [
        0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12,
        13, 13,
    ];
    const ORDER: [usize; 19] = [
        16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15,
    ];
    let mut r = Bits { data, at: 0 };
    let (mut out, mut longest) = (Vec::new(), 0);
    while r.at / 8 < data.len() {
        let last = r.bit() == 1;
        match r.bits(2) {
            0 => {
                r.at = r.at.div_ceil(8) * 8;
                let len = r.bits(16) as usize;
                assert_eq!(r.bits(16) as usize, !len & 0xffff);
                for _ in 0..len {
                    out.push(r.bits(8) as u8);
                }
            }
            kind @ (1 | 2) => {
                let (lit, dist) = if kind == 1 {
                    let mut l = vec![8u8; 288];
                    l[144..256].fill(9);
                    l[256..280].fill(7);
                    (table(&l), table(&[5; 30]))
                } else {
                    let (hlit, hdist, hclen) = (
                        r.bits(5) as usize + 257,
                        r.bits(5) as usize + 1,
                        r.bits(4) + 4,
                    );
                    let mut cl = [0u8; 19];
                    for &i in &ORDER[..hclen as usize] {
                        cl[i] = r.bits(3) as u8;
                    }
                    let cl = table(&cl);
                    let mut lengths = Vec::new();
                    while lengths.len() < hlit + hdist {
                        match r.decode(&cl) {
                            s @ 0..=15 => lengths.push(s as u8),
                            16 => {
                                let prev = *lengths.last().unwrap();
                                let n = 3 + r.bits(2) as usize;
                                lengths.extend(std::iter::repeat_n(prev, n));
                            }
                            17 => lengths.extend(std::iter::repeat_n(0, 3 + r.bits(3) as usize)),
                            _ => lengths.extend(std::iter::repeat_n(0, 11 + r.bits(7) as usize)),
                        }
                    }
                    (table(&lengths[..hlit]), table(&lengths[hlit..]))
                };
                loop {
                    match r.decode(&lit) {
                        s @ 0..=255 => out.push(s as u8),
                        256 => break,
                        s => {
                            let i = s - 257;
                            let len = LEN_BASE[i] as usize + r.bits(LEN_EXTRA[i]) as usize;
                            let d = r.decode(&dist);
                            let d = DIST_BASE[d] as usize + r.bits(DIST_EXTRA[d]) as usize;
                            assert!(d <= out.len(), "distance before the start");
                            longest = longest.max(d);
                            for _ in 0..len {
                                out.push(out[out.len() - d]);
                            }
                        }
                    }
                }
            }
            _ => panic!("reserved block type"),
        }
        if last {
            break;
        }
    }
    (out, longest)
}

/// Text whose best matches lie 300 bytes back (past an 8-bit window):
/// a 300-byte pseudo-random line repeated.
fn far_matches(len: usize) -> Vec<u8> {
    let mut x = 0x2545_f491_u32;
    let line: Vec<u8> = (0..300)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            b'a' + (x % 26) as u8
        })
        .collect();
    line.iter().copied().cycle().take(len).collect()
}

#[test]
fn the_checker_sees_distances_past_256_at_a_wider_window() {
    let input = far_matches(4096);
    let mut c = codec();
    let mut data = c.compress(&input).to_vec();
    data.extend_from_slice(&TAIL);
    let (out, longest) = longest_distance(&data);
    assert_eq!(out, input);
    assert!(longest > 256 && longest % 300 == 0, "{longest}");
}

#[test]
fn a_client_held_to_an_8_bit_window_never_reaches_past_256_bytes() {
    // The server answered client_max_window_bits=8: every message this
    // client compresses must inflate with a 256-byte window, in either
    // context mode, at every level.
    for client_nct in [false, true] {
        for level in [1, 6, 9] {
            let agreed = DeflateParams {
                level,
                ..params(false, client_nct, 15, 8)
            };
            let mut c = Codec::new(agreed, agreed.mirrored());
            let mut all = Vec::new();
            let mut sent = Vec::new();
            for len in [4096, 1, 255, 256, 257, 70_000] {
                let input = far_matches(len);
                all.extend_from_slice(&c.compress(&input));
                all.extend_from_slice(&TAIL);
                sent.extend_from_slice(&input);
            }
            let (out, longest) = longest_distance(&all);
            assert_eq!(out, sent);
            assert!(longest <= 256, "distance {longest} at level {level}");
        }
    }
}

#[test]
fn a_client_held_to_an_8_bit_window_round_trips() {
    let p = params(false, false, 15, 8);
    let messages: Vec<Message> = [10, 300, 5000]
        .iter()
        .map(|&n| Message::Binary(Bytes::from(far_matches(n))))
        .collect();
    let (at_server, _) = round_trip(p, &messages, 7);
    let expect: Vec<Event> = messages.into_iter().map(Event::Message).collect();
    assert_eq!(at_server, expect);
}
