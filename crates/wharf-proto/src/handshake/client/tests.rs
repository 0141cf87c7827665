//! The client's handshake: RFC 6455 §4.1's response checks and RFC 7692
//! §7.1's answer rules, one rule per test.

use super::*;
use crate::{Connection, Event, Handshake, Limits, Message};

/// RFC 6455 §1.3's sample nonce, "the sample nonce".
const KEY: [u8; 16] = *b"the sample nonce";
/// Its accept value (§1.3).
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

fn response(extra: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("upgrade", HeaderValue::from_static("websocket"));
    h.insert("connection", HeaderValue::from_static("Upgrade"));
    h.insert(SEC_WEBSOCKET_ACCEPT, HeaderValue::from_static(ACCEPT));
    for (name, value) in extra {
        h.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    h
}

fn check(hs: &ClientHandshake, extra: &[(&str, &str)]) -> Result<Accepted, ResponseError> {
    hs.validate(StatusCode::SWITCHING_PROTOCOLS, &response(extra))
}

fn deflating(config: DeflateConfig) -> ClientHandshake {
    ClientHandshake::new(KEY).deflate(config)
}

fn answer(config: DeflateConfig, ext: &str) -> Result<Option<DeflateParams>, ResponseError> {
    check(&deflating(config), &[("sec-websocket-extensions", ext)]).map(|a| a.deflate())
}

#[test]
fn rfc6455_1_3_key_and_request() {
    let hs = ClientHandshake::new(KEY).protocols(["chat", "superchat", "bad,name", ""]);
    assert_eq!(hs.key(), "dGhlIHNhbXBsZSBub25jZQ==");
    let mut extra = HeaderMap::new();
    extra.insert("origin", HeaderValue::from_static("http://example.com"));
    extra.insert("sec-websocket-key", HeaderValue::from_static("forged"));
    let mut out = Vec::new();
    hs.write_request("server.example.com", "/chat?x=1", &extra, &mut out);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "GET /chat?x=1 HTTP/1.1\r\nhost: server.example.com\r\nupgrade: websocket\r\n\
         connection: Upgrade\r\nsec-websocket-version: 13\r\n\
         sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         sec-websocket-protocol: chat, superchat\r\norigin: http://example.com\r\n\r\n"
    );
}

#[test]
fn the_request_passes_the_servers_own_validation() {
    let hs = deflating(DeflateConfig::default()).protocols(["chat"]);
    let mut out = Vec::new();
    hs.write_request("h", "", &HeaderMap::new(), &mut out);
    let (method, target, map) = split_head(&out);
    assert_eq!((method.as_str(), target.as_str()), ("GET", "/"));
    let server = Handshake::validate(&http::Method::GET, http::Version::HTTP_11, &map).unwrap();
    assert_eq!(server.protocols(), ["chat"]);
    let (params, ext) = server.negotiate_deflate(&DeflateConfig::default()).unwrap();
    let res = server.response(Some("chat"), Some(&ext));
    let accepted = hs.from_response(&res).unwrap();
    assert_eq!(accepted.protocol(), Some("chat"));
    assert_eq!(accepted.deflate(), Some(params));
}

/// Splits a request head without a parser crate: enough for the request
/// this module writes.
fn split_head(head: &[u8]) -> (String, String, HeaderMap) {
    {
        let text = std::str::from_utf8(head).unwrap();
        let mut lines = text.split("\r\n");
        let mut first = lines.next().unwrap().split(' ');
        let (method, target) = (first.next().unwrap(), first.next().unwrap());
        let mut map = HeaderMap::new();
        for line in lines.take_while(|l| !l.is_empty()) {
            let (name, value) = line.split_once(": ").unwrap();
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        (method.into(), target.into(), map)
    }
}

#[test]
fn accepts_a_valid_101() {
    let hs = ClientHandshake::new(KEY);
    let a = check(&hs, &[]).unwrap();
    assert_eq!((a.protocol(), a.deflate()), (None, None));
    // Tokens compare without regard to case, in lists.
    let mut h = response(&[]);
    h.insert("upgrade", HeaderValue::from_static("WebSocket"));
    h.insert(
        "connection",
        HeaderValue::from_static("keep-alive, UPGRADE"),
    );
    assert!(hs.validate(StatusCode::SWITCHING_PROTOCOLS, &h).is_ok());
}

#[test]
fn a_refusal_carries_its_status() {
    let hs = ClientHandshake::new(KEY);
    assert_eq!(
        hs.validate(StatusCode::FORBIDDEN, &HeaderMap::new()),
        Err(ResponseError::Status(StatusCode::FORBIDDEN))
    );
    assert_eq!(
        hs.validate(StatusCode::OK, &response(&[])),
        Err(ResponseError::Status(StatusCode::OK))
    );
}

#[test]
fn rejects_missing_upgrade_and_connection() {
    let hs = ClientHandshake::new(KEY);
    let mut h = response(&[]);
    h.insert("upgrade", HeaderValue::from_static("h2c"));
    assert_eq!(
        hs.validate(StatusCode::SWITCHING_PROTOCOLS, &h),
        Err(ResponseError::Upgrade)
    );
    let mut h = response(&[]);
    h.remove("connection");
    assert_eq!(
        hs.validate(StatusCode::SWITCHING_PROTOCOLS, &h),
        Err(ResponseError::Connection)
    );
}

#[test]
fn rejects_a_missing_wrong_or_repeated_accept() {
    let hs = ClientHandshake::new(KEY);
    let mut h = response(&[]);
    h.remove(SEC_WEBSOCKET_ACCEPT);
    assert_eq!(
        hs.validate(StatusCode::SWITCHING_PROTOCOLS, &h),
        Err(ResponseError::Accept)
    );
    let other = ClientHandshake::new([7; 16]);
    assert_eq!(check(&other, &[]), Err(ResponseError::Accept));
    assert_eq!(
        check(&hs, &[("sec-websocket-accept", ACCEPT)]),
        Err(ResponseError::Accept)
    );
}

#[test]
fn a_subprotocol_only_if_offered_and_only_one() {
    let hs = ClientHandshake::new(KEY).protocols(["a", "b"]);
    assert_eq!(check(&hs, &[]).unwrap().protocol(), None);
    assert_eq!(
        check(&hs, &[("sec-websocket-protocol", "b")])
            .unwrap()
            .protocol(),
        Some("b")
    );
    for bad in [
        &[("sec-websocket-protocol", "c")][..],
        &[("sec-websocket-protocol", "a, b")],
        &[
            ("sec-websocket-protocol", "a"),
            ("sec-websocket-protocol", "b"),
        ],
    ] {
        assert_eq!(check(&hs, bad), Err(ResponseError::Protocol), "{bad:?}");
    }
    let none = ClientHandshake::new(KEY);
    assert_eq!(
        check(&none, &[("sec-websocket-protocol", "a")]),
        Err(ResponseError::Protocol)
    );
}

#[test]
fn an_extension_only_if_offered() {
    let plain = ClientHandshake::new(KEY);
    assert_eq!(
        check(
            &plain,
            &[("sec-websocket-extensions", "permessage-deflate")]
        ),
        Err(ResponseError::Extension)
    );
    let hs = deflating(DeflateConfig::dedicated(15));
    for bad in [
        "x-webkit-deflate-frame",
        "permessage-deflate, foo",
        "permessage-deflate;",
    ] {
        assert_eq!(
            check(&hs, &[("sec-websocket-extensions", bad)]),
            Err(ResponseError::Extension),
            "{bad}"
        );
    }
    // Declining is fine: no header, no deflate.
    assert_eq!(check(&hs, &[]).unwrap().deflate(), None);
}

#[test]
fn the_offer_follows_the_config() {
    let ext = |c: DeflateConfig| deflating(c).extensions().unwrap();
    assert_eq!(
        ext(DeflateConfig::shared()),
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
         client_max_window_bits"
    );
    assert_eq!(
        ext(DeflateConfig::dedicated(15)),
        "permessage-deflate; client_max_window_bits"
    );
    let mut c = DeflateConfig::dedicated(15);
    c.server_max_window_bits = 10;
    c.client_max_window_bits = 9;
    assert_eq!(
        ext(c),
        "permessage-deflate; server_max_window_bits=10; client_max_window_bits=9"
    );
}

#[test]
fn rfc7692_7_1_every_parameter_of_an_answer() {
    let c = DeflateConfig::dedicated(15);
    let p = answer(c, "permessage-deflate").unwrap().unwrap();
    assert!(!p.server_no_context_takeover && !p.client_no_context_takeover);
    assert_eq!(
        (p.server_max_window_bits, p.client_max_window_bits),
        (15, 15)
    );
    let p = answer(
        c,
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
         server_max_window_bits=10; client_max_window_bits=8",
    )
    .unwrap()
    .unwrap();
    assert!(p.server_no_context_takeover && p.client_no_context_takeover);
    assert_eq!(
        (p.server_max_window_bits, p.client_max_window_bits),
        (10, 8)
    );
    // Quoted values are values (RFC 6455 §9.1).
    let p = answer(c, "permessage-deflate; client_max_window_bits=\"12\"")
        .unwrap()
        .unwrap();
    assert_eq!(p.client_max_window_bits, 12);
}

#[test]
fn rfc7692_7_1_rejects_unknown_repeated_and_out_of_range_parameters() {
    let c = DeflateConfig::dedicated(15);
    for bad in [
        "permessage-deflate; foo",
        "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        "permessage-deflate; server_no_context_takeover=1",
        "permessage-deflate; client_max_window_bits",
        "permessage-deflate; server_max_window_bits",
        "permessage-deflate; server_max_window_bits=7",
        "permessage-deflate; server_max_window_bits=16",
        "permessage-deflate; client_max_window_bits=08",
        "permessage-deflate, permessage-deflate",
    ] {
        assert!(
            matches!(answer(c, bad), Err(ResponseError::Deflate(_))),
            "{bad}: {:?}",
            answer(c, bad)
        );
    }
}

#[test]
fn rfc7692_7_1_an_answer_accepts_the_offer_whole() {
    // Asked for server_no_context_takeover: the answer must grant it.
    assert_eq!(
        answer(
            DeflateConfig::shared(),
            "permessage-deflate; client_max_window_bits=15"
        ),
        Err(ResponseError::Deflate(
            "server_no_context_takeover was asked for and not granted"
        ))
    );
    let mut c = DeflateConfig::dedicated(15);
    c.server_max_window_bits = 10;
    assert!(answer(c, "permessage-deflate").is_err());
    assert!(answer(c, "permessage-deflate; server_max_window_bits=11").is_err());
    assert!(answer(c, "permessage-deflate; server_max_window_bits=9").is_ok());
    c.client_max_window_bits = 10;
    assert!(
        answer(
            c,
            "permessage-deflate; server_max_window_bits=9; client_max_window_bits=11"
        )
        .is_err()
    );
    let p = answer(c, "permessage-deflate; server_max_window_bits=9")
        .unwrap()
        .unwrap();
    assert_eq!(p.client_max_window_bits, 10, "our own cap, as offered");
}

#[test]
fn an_agreement_runs_both_ways_between_client_and_server() {
    // The parameters a client agrees to and those its server agreed to
    // are the same; with them the two ends understand each other.
    for server_config in [DeflateConfig::shared(), DeflateConfig::dedicated(10)] {
        let hs = deflating(DeflateConfig::dedicated(15));
        let mut out = Vec::new();
        hs.write_request("h", "/", &HeaderMap::new(), &mut out);
        let (_, _, map) = split_head(&out);
        let server = Handshake::validate(&http::Method::GET, http::Version::HTTP_11, &map).unwrap();
        let (params, ext) = server.negotiate_deflate(&server_config).unwrap();
        let agreed = hs
            .from_response(&server.response(None, Some(&ext)))
            .unwrap();
        // What binds the client is the same; the server may compress with
        // a smaller window than it says (any window inflates with 15 bits).
        let a = agreed.deflate().unwrap();
        assert_eq!(
            (a.server_no_context_takeover, a.client_no_context_takeover),
            (
                params.server_no_context_takeover,
                params.client_no_context_takeover
            )
        );
        assert_eq!(a.client_max_window_bits, params.client_max_window_bits);
        let mut client = Connection::client(Limits::default(), || [1, 2, 3, 4])
            .with_deflate(agreed.deflate().unwrap());
        let mut server = Connection::server(Limits::default()).with_deflate(params);
        let text = "a message long enough to be compressed, ".repeat(8);
        for _ in 0..3 {
            client.send(Message::from(text.clone())).unwrap();
            server.send(Message::from(text.clone())).unwrap();
        }
        pass(&mut client, &mut server, &text);
        pass(&mut server, &mut client, &text);
    }
}

/// Moves every frame `from` sends to `to`, and checks `to` got three
/// compressed copies of `text`.
fn pass(from: &mut Connection, to: &mut Connection, text: &str) {
    let mut wire = bytes::BytesMut::new();
    while let Some(t) = from.poll_transmit() {
        assert!(t.to_vec()[0] & 0x40 != 0, "compressed");
        wire.extend_from_slice(&t.to_vec());
    }
    for _ in 0..3 {
        // One compressed message is inflated per `receive` while events wait.
        to.receive(&mut wire).unwrap();
        assert_eq!(
            to.poll_event(),
            Some(Event::Message(Message::from(text.to_owned())))
        );
    }
}
