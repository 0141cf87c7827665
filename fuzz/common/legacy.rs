// The `legacy_handshake` and `legacy_framing` drivers (draft-hixie-75 and
// -76), shared with the test that runs their committed seeds on stable
// (crates/wharf-proto/tests/fuzz_seeds.rs). Standalone: needs only
// wharf-proto, bytes and http.

#[allow(dead_code)] // each user takes a part
mod legacy_driver {
    use bytes::BytesMut;
    use http::header::{HeaderMap, HeaderName, HeaderValue};
    use http::{Method, StatusCode, Uri, Version};
    use wharf_proto::legacy::{self, Draft, KEY3_LEN, LegacyHandshake};
    use wharf_proto::{Connection, Event, Limits, Message, ProtocolError, Reject, State};

    /// Byte 0 chooses the method (bit 0: POST), the version (bit 1:
    /// HTTP/1.0) and `wss://` (bit 2); the rest is header lines
    /// (`name:value`, `\n`-terminated, `\r` dropped; invalid ones skipped),
    /// then, after an empty line, the -76 `key3`. The draft is detected as
    /// the server does; the outcome is checked and returned.
    pub(crate) fn handshake(data: &[u8]) -> Option<Result<Draft, Reject>> {
        let (&b, rest) = data.split_first()?;
        let method = if b & 1 != 0 { Method::POST } else { Method::GET };
        let version = if b & 2 != 0 { Version::HTTP_10 } else { Version::HTTP_11 };
        let secure = b & 4 != 0;
        let (head, body) = match rest.windows(2).position(|w| w == b"\n\n") {
            Some(at) => (&rest[..at], &rest[at + 2..]),
            None => (rest, &[][..]),
        };
        let mut headers = HeaderMap::new();
        for line in head.split(|&c| c == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let Some(colon) = line.iter().position(|&c| c == b':') else {
                continue;
            };
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(&line[..colon]),
                HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
            ) {
                headers.append(name, value);
            }
        }
        let Some(draft) = legacy::detect(&headers) else {
            return Some(Err(Reject {
                status: StatusCode::UPGRADE_REQUIRED,
                reason: "not a legacy handshake",
            }));
        };
        let uri = Uri::from_static("/fuzz?q=1");
        let hs = match LegacyHandshake::validate(draft, &method, version, &uri, &headers) {
            Ok(hs) => hs,
            Err(r) => {
                assert!(r.status.is_client_error() || r.status.is_server_error(), "{r:?}");
                assert!(!r.reason.is_empty() && !r.reason.contains(['\r', '\n']), "{r:?}");
                return Some(Err(r));
            }
        };
        assert_eq!(hs.draft(), draft);
        assert_eq!(hs.body_len(), if draft == Draft::Hixie76 { KEY3_LEN } else { 0 });
        let key3 = body.get(..KEY3_LEN).and_then(|k| <[u8; KEY3_LEN]>::try_from(k).ok());
        let mut out = Vec::new();
        hs.write_response(secure, hs.protocol(), &HeaderMap::new(), key3.as_ref(), &mut out);
        let end = out.windows(4).position(|w| w == b"\r\n\r\n").expect("a blank line") + 4;
        // Lossy: the Origin and Host echoes are the client's bytes.
        let text = String::from_utf8_lossy(&out[..end]);
        assert!(text.starts_with("HTTP/1.1 101 "), "{text}");
        assert_eq!(text.matches("\r\n\r\n").count(), 1, "one head: {text}");
        let scheme = if secure { "wss://" } else { "ws://" };
        assert!(text.contains(scheme), "{text}");
        let tail = if draft == Draft::Hixie76 && key3.is_some() { 16 } else { 0 };
        assert_eq!(out.len() - end, tail);
        let res = hs.response(secure, hs.protocol());
        assert_eq!(res.status(), StatusCode::SWITCHING_PROTOCOLS);
        Some(Ok(draft))
    }

    /// What a legacy server connection did with an input.
    #[derive(Debug, PartialEq)]
    pub(crate) struct Outcome {
        pub(crate) texts: Vec<String>,
        pub(crate) closed_by_peer: bool,
        pub(crate) sent: Vec<u8>,
        pub(crate) error: Option<ProtocolError>,
        pub(crate) state: State,
    }

    const MAX_MESSAGE: usize = 256;
    const MAX_FRAME: usize = 1024;

    fn run(draft: Draft, input: &[u8], size: usize) -> Outcome {
        let limits = Limits::default()
            .max_message_size(MAX_MESSAGE)
            .max_frame_size(MAX_FRAME);
        let mut conn = Connection::server(limits).with_legacy(draft);
        let mut buf = BytesMut::new();
        let mut out = Outcome {
            texts: Vec::new(),
            closed_by_peer: false,
            sent: Vec::new(),
            error: None,
            state: State::Open,
        };
        for chunk in input.chunks(size.max(1)) {
            buf.extend_from_slice(chunk);
            loop {
                if let Err(e) = conn.receive(&mut buf) {
                    out.error.get_or_insert(e);
                }
                // Nothing held past the limit and one read.
                assert!(buf.len() <= MAX_MESSAGE + 1 + size, "{} held", buf.len());
                while let Some(event) = conn.poll_event() {
                    match event {
                        Event::Message(Message::Text(t)) => {
                            assert!(t.len() <= MAX_MESSAGE);
                            // Echoed, as the seed's first server does.
                            let _ = conn.send(Message::Text(t.clone()));
                            out.texts.push(t.as_str().to_owned());
                        }
                        Event::Close(_) => out.closed_by_peer = true,
                        other => panic!("a legacy connection gave {other:?}"),
                    }
                }
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

    /// Byte 0 chooses the draft (bit 0: -76) and a read size; the rest is
    /// what a client sends. Fed whole, byte by byte and in reads of that
    /// size, the outcome must be the same; what is sent back is echoed
    /// text frames and, for -76, at most one closing handshake at the end.
    pub(crate) fn framing(data: &[u8]) -> Option<Outcome> {
        let (&b, input) = data.split_first()?;
        let draft = if b & 1 != 0 { Draft::Hixie76 } else { Draft::Hixie75 };
        let size = 1 + usize::from(b >> 1) * 3;
        let whole = run(draft, input, input.len());
        assert_eq!(run(draft, input, 1), whole, "byte by byte");
        assert_eq!(run(draft, input, size), whole, "in reads of {size}");
        let mut expected = Vec::new();
        for t in &whole.texts {
            expected.push(0x00);
            expected.extend_from_slice(t.as_bytes());
            expected.push(0xff);
        }
        let ended = whole.closed_by_peer || whole.error.is_some();
        if draft == Draft::Hixie76 && ended {
            expected.extend_from_slice(b"\xff\x00");
        }
        assert_eq!(whole.sent, expected);
        assert_eq!(whole.state == State::Closed, ended, "{whole:?}");
        Some(whole)
    }
}
