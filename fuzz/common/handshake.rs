// The `handshake` and `extensions` drivers, shared with the test that runs
// their committed seeds on stable (crates/wharf-proto/tests/fuzz_seeds.rs).
// Needs `fuzz/common/connection.rs` and `fuzz/common/deflate.rs` included
// beside it.
//
// Both read header lines from the input: lines end at `\n` (a `\r` before
// it is dropped), and a line is `name:value` (split at the first colon,
// the value taken as it is) for `handshake`, or a whole
// `Sec-WebSocket-Extensions` value for `extensions`. Lines that are not
// valid header names or values are skipped.

#[allow(dead_code)] // each user takes a part
mod handshake_driver {
    use bytes::BytesMut;
    use http::header::{self, HeaderMap, HeaderName, HeaderValue};
    use http::{Method, Request, StatusCode, Version};
    use wharf_proto::handshake::{SEC_WEBSOCKET_EXTENSIONS, accept_key, is_upgrade_request};
    use wharf_proto::{
        Connection, DeflateConfig, DeflateParams, Event, Handshake, Limits, Message, Reject,
    };

    use super::deflate_driver::{check_params, negotiate, request_headers};
    use super::harness::mask_source;

    /// Subprotocols a server supports, for `select_protocol`.
    const SUPPORTED: &[&str] = &["chat", "superchat", "wharf.chat.v1"];

    /// RFC 6455 §1.3's key and accept value.
    const SAMPLE_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
    const SAMPLE_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

    fn lines(data: &[u8]) -> impl Iterator<Item = &[u8]> {
        data.split(|&b| b == b'\n')
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
    }

    /// Byte 0 chooses the method (bits 0-2), the version (bits 3-5) and
    /// whether the headers of a valid request come first (bit 6); the rest
    /// is header lines. Validates the request, then checks everything built
    /// from a valid one.
    pub(crate) fn handshake(data: &[u8]) -> Option<Result<Handshake, Reject>> {
        let (&b, rest) = data.split_first()?;
        let method = match b & 7 {
            1 => Method::POST,
            2 => Method::HEAD,
            3 => Method::PUT,
            4 => Method::OPTIONS,
            5 => Method::CONNECT,
            6 => Method::from_bytes(b"get").expect("an extension method"),
            _ => Method::GET,
        };
        let versions = [
            Version::HTTP_09,
            Version::HTTP_10,
            Version::HTTP_11,
            Version::HTTP_2,
            Version::HTTP_3,
        ];
        let version = versions[usize::from(b >> 3 & 7) % versions.len()];
        let mut headers = if b & 0x40 != 0 {
            request_headers()
        } else {
            HeaderMap::new()
        };
        for line in lines(rest) {
            let Some(colon) = line.iter().position(|&c| c == b':') else {
                continue;
            };
            let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(&line[..colon]),
                HeaderValue::from_bytes(&line[colon + 1..]),
            ) else {
                continue;
            };
            headers.append(name, value);
        }

        let result = Handshake::validate(&method, version, &headers);
        let mut req = Request::new(());
        *req.method_mut() = method.clone();
        *req.version_mut() = version;
        *req.headers_mut() = headers.clone();
        match (&result, Handshake::from_request(&req)) {
            (Ok(a), Ok(b)) => assert_eq!(a.accept(), b.accept()),
            (Err(a), Err(b)) => assert_eq!(a, &b),
            (a, b) => panic!("validate gave {a:?}, from_request {b:?}"),
        }
        let hs = match result {
            Ok(hs) => hs,
            Err(reject) => {
                check_reject(&reject, &method, version);
                return Some(Err(reject));
            }
        };

        assert!(method == Method::GET && version >= Version::HTTP_11);
        assert!(headers.contains_key(header::HOST));
        assert!(is_upgrade_request(&req));
        let keys: Vec<_> = headers.get_all("sec-websocket-key").iter().collect();
        assert_eq!(keys.len(), 1, "exactly one key");
        let key = keys[0].as_bytes().trim_ascii();
        assert!(
            key.len() == 24 && key.ends_with(b"=="),
            "a 16-byte key in base64"
        );
        assert_eq!(hs.accept().as_bytes(), accept_key(key).as_bytes());
        if key == SAMPLE_KEY.as_bytes() {
            assert_eq!(hs.accept(), SAMPLE_ACCEPT);
        }

        for p in hs.protocols() {
            assert!(!p.is_empty() && !p.contains(','), "protocol {p:?}");
            assert_eq!(p.trim_matches([' ', '\t']), p, "protocol {p:?} is trimmed");
        }
        let selected = hs.select_protocol(SUPPORTED);
        let first = hs
            .protocols()
            .iter()
            .find(|p| SUPPORTED.contains(&p.as_str()));
        assert_eq!(selected, first.map(String::as_str));

        let mut agreed = vec![None];
        for config in [
            DeflateConfig::shared(),
            DeflateConfig::dedicated(15),
            DeflateConfig::dedicated(9),
        ] {
            if let Some((params, value)) = hs.negotiate_deflate(&config) {
                check_params(&params, &config);
                agreed.push(Some(value));
            }
        }
        let first = hs.protocols().first().map(String::as_str);
        for protocol in [
            None,
            selected,
            first,
            Some("bad\r\nvalue"),
            Some("caf\u{e9}"),
        ] {
            for extensions in &agreed {
                check_response(&hs, protocol, extensions.as_ref());
            }
        }
        Some(Ok(hs))
    }

    fn check_reject(reject: &Reject, method: &Method, version: Version) {
        let status = reject.status;
        let expected = if method != Method::GET {
            Some(StatusCode::METHOD_NOT_ALLOWED)
        } else if version < Version::HTTP_11 {
            Some(StatusCode::HTTP_VERSION_NOT_SUPPORTED)
        } else {
            None
        };
        match expected {
            Some(s) => assert_eq!(status, s, "{reject}"),
            None => assert!(
                status == StatusCode::BAD_REQUEST || status == StatusCode::UPGRADE_REQUIRED,
                "{reject}"
            ),
        }
        assert!(!reject.reason.is_empty());
        assert!(
            !reject.reason.contains(|c: char| c.is_control()),
            "one line"
        );
        let res = reject.to_response();
        assert_eq!(res.status(), status);
        assert_eq!(*res.body(), reject.reason);
        let h = res.headers();
        assert_eq!(
            h.get("sec-websocket-version").is_some(),
            status == StatusCode::UPGRADE_REQUIRED
        );
        assert_eq!(
            h.get(header::ALLOW).is_some(),
            status == StatusCode::METHOD_NOT_ALLOWED
        );
    }

    /// `response` and `write_response` say the same, and nothing a caller
    /// passes can add a line to the response head.
    fn check_response(hs: &Handshake, protocol: Option<&str>, extensions: Option<&HeaderValue>) {
        let res = hs.response(protocol, extensions);
        assert_eq!(res.status(), StatusCode::SWITCHING_PROTOCOLS);
        let h = res.headers();
        assert_eq!(h.get(header::UPGRADE).expect("upgrade"), "websocket");
        assert_eq!(h.get(header::CONNECTION).expect("connection"), "Upgrade");
        assert_eq!(h.get("sec-websocket-accept"), Some(hs.accept()));
        let mut expected: Vec<(Vec<u8>, Vec<u8>)> = h
            .iter()
            .map(|(n, v)| (n.as_str().as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect();
        expected.sort();

        let mut out = Vec::new();
        hs.write_response(protocol, extensions, &mut out);
        let head = out
            .strip_prefix(b"HTTP/1.1 101 Switching Protocols\r\n")
            .expect("the status line");
        let head = head.strip_suffix(b"\r\n\r\n").expect("the blank line");
        let mut written: Vec<(Vec<u8>, Vec<u8>)> = head
            .split(|&b| b == b'\n')
            .map(|line| {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                assert!(!line.contains(&b'\r'), "a bare CR in {line:?}");
                let at = line
                    .windows(2)
                    .position(|w| w == b": ")
                    .expect("name: value");
                (line[..at].to_vec(), line[at + 2..].to_vec())
            })
            .collect();
        written.sort();
        assert_eq!(written, expected);
    }

    /// Bytes 0-1 choose the server's `DeflateConfig` (any values, even out
    /// of range); the rest is `Sec-WebSocket-Extensions` values. Checks the
    /// parser against a rearranged header, the agreed parameters against
    /// the config, the response header by offering it back, and the
    /// parameters by a message each way between a client and a server.
    pub(crate) fn extensions(data: &[u8]) -> Option<Result<Option<DeflateParams>, Reject>> {
        let (head, rest) = data.split_first_chunk::<2>()?;
        let mut config = DeflateConfig::shared();
        config.context_takeover = head[0] & 1 != 0;
        config.server_max_window_bits = head[0] >> 1;
        config.client_max_window_bits = head[1] & 0x1f;
        config.level = u32::from(head[1] >> 5) * 2;

        let values: Vec<HeaderValue> = lines(rest)
            .filter_map(|l| HeaderValue::from_bytes(l).ok())
            .collect();
        let mut headers = request_headers();
        for v in &values {
            headers.append(SEC_WEBSOCKET_EXTENSIONS, v.clone());
        }
        let result = Handshake::validate(&Method::GET, Version::HTTP_11, &headers);

        // One header listing every value says the same as many headers.
        let mut joined = Vec::new();
        for (i, v) in values.iter().enumerate() {
            if i > 0 {
                joined.extend_from_slice(b", ");
            }
            joined.extend_from_slice(v.as_bytes());
        }
        let mut one = request_headers();
        if !values.is_empty() {
            let value = HeaderValue::from_bytes(&joined).expect("joined values are a value");
            one.insert(SEC_WEBSOCKET_EXTENSIONS, value);
        }
        let same = Handshake::validate(&Method::GET, Version::HTTP_11, &one);

        let hs = match (result, same) {
            (Ok(hs), Ok(same)) => {
                assert_eq!(
                    hs.negotiate_deflate(&config),
                    same.negotiate_deflate(&config)
                );
                hs
            }
            (Err(reject), Err(same)) => {
                assert_eq!(reject, same);
                assert_eq!(reject.status, StatusCode::BAD_REQUEST);
                assert!(
                    reject.reason.contains("Sec-WebSocket-Extensions"),
                    "{reject}"
                );
                return Some(Err(reject));
            }
            (a, b) => panic!("{} headers: {a:?}; one: {b:?}", values.len()),
        };
        let Some((params, value)) = hs.negotiate_deflate(&config) else {
            return Some(Ok(None));
        };
        check_params(&params, &config);
        let text = value.to_str().expect("our header is ASCII");
        assert!(text.starts_with("permessage-deflate"), "{text}");
        assert_eq!(
            text.contains("server_no_context_takeover"),
            params.server_no_context_takeover
        );
        assert_eq!(
            text.contains("client_no_context_takeover"),
            params.client_no_context_takeover
        );
        // What we answer is an offer we would accept, with the same result.
        assert_eq!(
            negotiate(text, &config),
            Some(params),
            "offering back {text}"
        );
        round_trip(params);
        Some(Ok(Some(params)))
    }

    /// Two messages each way between a client and a server that agreed to
    /// `params`: both ends compress, and each inflates what the other sent.
    fn round_trip(params: DeflateParams) {
        let mut server = Connection::server(Limits::default()).with_deflate(params);
        let mut client = Connection::client(Limits::default(), mask_source()).with_deflate(params);
        let text = "Hello, permessage-deflate! ".repeat(40);
        for _ in 0..2 {
            deliver(&mut client, &mut server, Message::from(text.as_str()));
            deliver(&mut server, &mut client, Message::from(text.as_str()));
        }
    }

    fn deliver(from: &mut Connection, to: &mut Connection, message: Message) {
        from.send(message.clone()).expect("open");
        let mut wire = BytesMut::new();
        while let Some(t) = from.poll_transmit() {
            assert_eq!(t.header()[0] & 0x40, 0x40, "compressed");
            wire.extend_from_slice(&t.to_vec());
        }
        to.receive(&mut wire).expect("the message arrives");
        assert_eq!(to.poll_event(), Some(Event::Message(message)));
    }
}
