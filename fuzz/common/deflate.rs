// The `connection_deflate` driver, shared with the test that runs its
// committed seeds on stable (crates/wharf-proto/tests/fuzz_seeds.rs). Needs
// `fuzz/common/connection.rs` included beside it.
//
// The input is four setup bytes, then operations:
//
//   byte 0  bit 0: client role (else server); bit 1: the offer has
//           server_no_context_takeover; bit 2: client_no_context_takeover;
//           bit 3: the server keeps context (`DeflateConfig::context_takeover`);
//           bits 4-7: read sizes (0: one read per flush; 1: bytewise;
//           n: pseudo-random sizes in 1..=4n²; at least 1/256 of a flush)
//   byte 1  low nibble: server_max_window_bits offered (0: none, else
//           8 + (n-1) % 8); high nibble: client_max_window_bits (0: none,
//           1: without a value, else 8 + (n-2) % 8)
//   byte 2  the server's configured window bits, 8 + bits 0-3 and
//           8 + bits 4-6 (out-of-range values are clamped by the library);
//           bit 7: inflation deferred (`with_deferred_inflation`, as wharf
//           runs it: taken out, run, given back)
//   byte 3  bits 0-1: message limit, 2-3: frame limit (125 B, 1 KiB, 16 KiB,
//           128 KiB); 4-5: compression threshold (0, 16, 64, 1024);
//           6-7: level (0, 1, 6, 9)
//
// Each operation is a byte `h` whose low nibble says what to do:
//
//   0x0-0x3, 0x8-0xE  the peer sends a frame with that opcode: FIN is h's
//           bit 7, RSV1 bit 6; bit 5 compresses the payload with the peer's
//           deflate stream; bit 4 repeats it (see `payload`)
//   0x4, 0x5  the connection sends a text / binary message (bit 5: let it
//           compress; bit 6, server only: as a broadcast frame, through
//           `Transmit::deflated` and `send_encoded`), checked by inflating it
//           as the peer would
//   0x6     the connection closes (code 1000 + next byte % 16)
//   0x7     the connection pings
//   0xF     raw bytes from the peer: a length byte, then the bytes
//
// A payload is a length byte and that many bytes; with the repeat bit, a
// count byte c follows and the payload is cycled to 64 (c + 1) bytes: up to
// 16 KiB, more than any window but the largest two, and more than most
// limits. Larger payloads only slow the fuzzer (deflate is instrumented too,
// and small windows make it slide its hash table often).
//
// Besides the harness's invariants, a model of the peer's messages checks
// that every well-formed message within the limits is delivered exactly as
// sent, that valid deflate data is never refused, and that the whole run
// gives the same result in one read per flush as in the chosen read sizes.

#[allow(dead_code)] // each user takes a part
mod deflate_driver {
    use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
    use http::{HeaderMap, HeaderValue, Method, Version, header};
    use wharf_proto::{
        CloseCode, Connection, DeflateConfig, DeflateParams, Handshake, Limits, Message,
        ProtocolError, Role, Transmit,
    };

    use super::harness::{Harness, Reads, Seen, Sent, mask_source};

    const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];
    const SIZES: [usize; 4] = [125, 1 << 10, 16 << 10, 128 << 10];
    const THRESHOLDS: [usize; 4] = [0, 16, 64, 1024];
    const LEVELS: [u32; 4] = [0, 1, 6, 9];

    /// What the setup bytes choose.
    #[derive(Clone, Debug)]
    pub(crate) struct Setup {
        pub(crate) role: Role,
        pub(crate) offer: String,
        pub(crate) config: DeflateConfig,
        pub(crate) limits: Limits,
        pub(crate) reads: usize,
        pub(crate) deferred: bool,
    }

    impl Setup {
        pub(crate) fn new(b: [u8; 4]) -> Self {
            let role = if b[0] & 1 != 0 {
                Role::Client
            } else {
                Role::Server
            };
            let mut offer = String::from("permessage-deflate");
            if b[0] & 2 != 0 {
                offer.push_str("; server_no_context_takeover");
            }
            if b[0] & 4 != 0 {
                offer.push_str("; client_no_context_takeover");
            }
            match b[1] & 0xf {
                0 => {}
                n => offer.push_str(&format!("; server_max_window_bits={}", 8 + (n - 1) % 8)),
            }
            match b[1] >> 4 {
                0 => {}
                1 => offer.push_str("; client_max_window_bits"),
                n => offer.push_str(&format!("; client_max_window_bits={}", 8 + (n - 2) % 8)),
            }
            let mut config = DeflateConfig::shared()
                .threshold(THRESHOLDS[usize::from(b[3] >> 4 & 3)])
                .level(LEVELS[usize::from(b[3] >> 6)]);
            config.context_takeover = b[0] & 8 != 0;
            config.server_max_window_bits = 8 + (b[2] & 0xf);
            config.client_max_window_bits = 8 + (b[2] >> 4 & 7);
            let limits = Limits::default()
                .max_message_size(SIZES[usize::from(b[3] & 3)])
                .max_frame_size(SIZES[usize::from(b[3] >> 2 & 3)]);
            let reads = match usize::from(b[0] >> 4) {
                0 => 0,
                1 => 1,
                n => 4 * n * n,
            };
            Self {
                role,
                offer,
                config,
                limits,
                reads,
                deferred: b[2] & 0x80 != 0,
            }
        }
    }

    /// A valid upgrade request's headers (RFC 6455 §1.3's key).
    pub(crate) fn request_headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("server.example.com"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(
            "sec-websocket-key",
            HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="),
        );
        h.insert("sec-websocket-version", HeaderValue::from_static("13"));
        h
    }

    /// Negotiates `offer` under `config` through the public handshake API.
    pub(crate) fn negotiate(offer: &str, config: &DeflateConfig) -> Option<DeflateParams> {
        let mut headers = request_headers();
        headers.insert(
            "sec-websocket-extensions",
            HeaderValue::from_str(offer).ok()?,
        );
        let hs = Handshake::validate(&Method::GET, Version::HTTP_11, &headers)
            .expect("a well-formed offer validates");
        hs.negotiate_deflate(config).map(|(params, _)| params)
    }

    /// Runs the input in the chosen read sizes and, if those are not one
    /// read, again in one read per flush: both must see the same. Returns
    /// the first run.
    pub(crate) fn drive(data: &[u8]) -> Harness {
        let Some((head, ops)) = data.split_first_chunk::<4>() else {
            return Harness::new(Connection::server(Limits::default()));
        };
        let setup = Setup::new(*head);
        let params = negotiate(&setup.offer, &setup.config);
        let split = run(&setup, params, setup.reads, ops);
        if setup.reads != 0 {
            let whole = run(&setup, params, 0, ops);
            assert_eq!(split.h.seen, whole.h.seen, "{setup:?}: split and whole");
            assert_eq!(split.h.conn.state(), whole.h.conn.state());
        }
        split.h
    }

    fn run(setup: &Setup, params: Option<DeflateParams>, reads: usize, ops: &[u8]) -> Run {
        let conn = match setup.role {
            Role::Server => Connection::server(setup.limits),
            Role::Client => Connection::client(setup.limits, mask_source()),
        };
        let conn = match params {
            Some(p) => {
                check_params(&p, &setup.config);
                conn.with_deflate(p)
            }
            None => conn,
        };
        let conn = if setup.deferred {
            conn.with_deferred_inflation()
        } else {
            conn
        };
        let mut run = Run::new(Harness::new(conn), params, reads);
        let mut input = Input { data: ops, at: 0 };
        while let Some(h) = input.byte() {
            run.op(h, &mut input);
        }
        run.flush();
        run.finish();
        run
    }

    /// What negotiation may agree to under `config`.
    pub(crate) fn check_params(p: &DeflateParams, config: &DeflateConfig) {
        assert!((9..=15).contains(&p.server_max_window_bits), "{p:?}");
        assert!(p.server_max_window_bits <= config.server_max_window_bits.clamp(9, 15));
        assert!((8..=15).contains(&p.client_max_window_bits), "{p:?}");
        // 15 when the client did not offer to be constrained.
        assert!(
            p.client_max_window_bits == 15
                || p.client_max_window_bits <= config.client_max_window_bits.clamp(8, 15),
            "{p:?}"
        );
        if !config.context_takeover {
            assert!(
                p.server_no_context_takeover && p.client_no_context_takeover,
                "{p:?}"
            );
        }
        assert!(p.level <= 9);
    }

    struct Input<'a> {
        data: &'a [u8],
        at: usize,
    }

    impl<'a> Input<'a> {
        fn byte(&mut self) -> Option<u8> {
            let b = self.data.get(self.at).copied();
            self.at += 1;
            b
        }

        fn bytes(&mut self, n: usize) -> &'a [u8] {
            let start = self.at.min(self.data.len());
            let end = (start + n).min(self.data.len());
            self.at = end;
            &self.data[start..end]
        }

        /// A length byte and that many bytes, cycled to 64 (c + 1) bytes if
        /// `repeat` (c from the next byte).
        fn payload(&mut self, repeat: bool) -> Vec<u8> {
            let n = self.byte().unwrap_or(0);
            let base = self.bytes(usize::from(n));
            if !repeat {
                return base.to_vec();
            }
            let total = (usize::from(self.byte().unwrap_or(0)) + 1) << 6;
            if base.is_empty() {
                return vec![0; total];
            }
            base.iter().copied().cycle().take(total).collect()
        }
    }

    /// A message the peer is sending, as the model sees it.
    struct Open {
        text: bool,
        compressed: bool,
        plain: Vec<u8>,
        wire: usize,
        fragments: usize,
    }

    /// The peer's messages that must arrive exactly as sent, up to the
    /// first frame whose outcome the model does not predict.
    #[derive(Default)]
    struct Model {
        expected: Vec<(bool, Vec<u8>)>,
        open: Option<Open>,
        diverged: bool,
    }

    struct Run {
        h: Harness,
        params: Option<DeflateParams>,
        reads: usize,
        /// The peer's compressor (its frames to the connection), made on
        /// first use with `deflate_bits` of window.
        deflate: Option<Compress>,
        deflate_bits: u8,
        level: u32,
        /// The peer resets `deflate` after each message.
        deflate_resets: bool,
        /// The peer's decompressor (the connection's frames to it).
        inflate: Option<Decompress>,
        inflate_bits: u8,
        inflate_resets: bool,
        pending: Vec<u8>,
        keys: u32,
        model: Model,
        /// Data messages seen so far and checked against the model.
        messages: usize,
        checked: usize,
    }

    impl Run {
        fn new(h: Harness, params: Option<DeflateParams>, reads: usize) -> Self {
            // Seen from the connection: which direction is whose.
            let (ours, theirs) = match (h.conn.role(), params) {
                (_, None) => ((15, true), (15, true)),
                (Role::Server, Some(p)) => (
                    (p.server_max_window_bits, p.server_no_context_takeover),
                    (p.client_max_window_bits, p.client_no_context_takeover),
                ),
                (Role::Client, Some(p)) => (
                    (p.client_max_window_bits, p.client_no_context_takeover),
                    (p.server_max_window_bits, p.server_no_context_takeover),
                ),
            };
            let level = params.map_or(6, |p| p.level);
            Self {
                h,
                params,
                reads,
                // flate2 takes 9 to 15 bits; 8 means 9 to zlib anyway.
                deflate: None,
                deflate_bits: theirs.0.max(9),
                level,
                deflate_resets: theirs.1,
                inflate: None,
                inflate_bits: ours.0.max(9),
                inflate_resets: ours.1,
                pending: Vec::new(),
                keys: 0,
                model: Model::default(),
                messages: 0,
                checked: 0,
            }
        }

        fn op(&mut self, h: u8, input: &mut Input<'_>) {
            match h & 0xf {
                0xf => {
                    let n = input.byte().unwrap_or(0);
                    let raw = input.bytes(usize::from(n));
                    self.pending.extend_from_slice(raw);
                    self.model.diverged = true;
                }
                0x4 | 0x5 => {
                    let plain = input.payload(h & 0x10 != 0);
                    let message = if h & 0xf == 0x4 {
                        Message::from(String::from_utf8_lossy(&plain).into_owned())
                    } else {
                        Message::Binary(plain.into())
                    };
                    self.flush();
                    if h & 0x40 != 0 && self.h.conn.role() == Role::Server {
                        self.broadcast(message);
                    } else {
                        self.local_send(message, h & 0x20 != 0);
                    }
                }
                0x6 => {
                    let code = CloseCode(1000 + u16::from(input.byte().unwrap_or(0) % 16));
                    let reason = input.payload(false);
                    self.flush();
                    self.h.close(code, &String::from_utf8_lossy(&reason));
                }
                0x7 => {
                    let payload = input.payload(false);
                    self.flush();
                    let sent = self.h.send(Message::Ping(payload.into()), true);
                    assert!(sent.is_none());
                }
                opcode => {
                    let fin = h & 0x80 != 0;
                    let rsv1 = h & 0x40 != 0;
                    let compress = h & 0x20 != 0;
                    let plain = input.payload(h & 0x10 != 0);
                    let wire = if compress {
                        self.compress(&plain, fin)
                    } else {
                        plain.clone()
                    };
                    self.model(fin, rsv1, compress, opcode, &plain, wire.len());
                    self.frame(fin, rsv1, opcode, &wire);
                }
            }
        }

        /// The peer's compressed form of one fragment (§7.2.1): a sync
        /// flush, the tail stripped at the message's end.
        fn compress(&mut self, plain: &[u8], fin: bool) -> Vec<u8> {
            let (bits, level) = (self.deflate_bits, self.level);
            let c = self.deflate.get_or_insert_with(|| {
                Compress::new_with_window_bits(Compression::new(level), false, bits)
            });
            let mut out = Vec::with_capacity(plain.len() / 2 + 64);
            let start = c.total_in();
            loop {
                let done = (c.total_in() - start) as usize;
                if out.len() == out.capacity() {
                    out.reserve(out.capacity().max(64));
                }
                c.compress_vec(&plain[done..], &mut out, FlushCompress::Sync)
                    .expect("the peer's deflate");
                if (c.total_in() - start) as usize == plain.len() && out.len() < out.capacity() {
                    break;
                }
            }
            if fin {
                if out.ends_with(&TAIL) {
                    out.truncate(out.len() - TAIL.len());
                }
                if self.deflate_resets {
                    c.reset();
                }
            }
            out
        }

        fn frame(&mut self, fin: bool, rsv1: bool, opcode: u8, payload: &[u8]) {
            let out = &mut self.pending;
            out.push(u8::from(fin) << 7 | u8::from(rsv1) << 6 | opcode);
            let masked = self.h.conn.role() == Role::Server;
            let bit = u8::from(masked) << 7;
            match payload.len() {
                n @ 0..=125 => out.push(bit | n as u8),
                n @ 126..=0xffff => {
                    out.push(bit | 126);
                    out.extend_from_slice(&(n as u16).to_be_bytes());
                }
                n => {
                    out.push(bit | 127);
                    out.extend_from_slice(&(n as u64).to_be_bytes());
                }
            }
            if masked {
                self.keys = self
                    .keys
                    .wrapping_mul(0x0101_0101)
                    .wrapping_add(0x37fa_213d);
                let key = self.keys.to_be_bytes();
                out.extend_from_slice(&key);
                out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
            } else {
                out.extend_from_slice(payload);
            }
        }

        /// Follows the peer's frame in the model; stops following at the
        /// first frame whose outcome is not simply "delivered as sent".
        fn model(
            &mut self,
            fin: bool,
            rsv1: bool,
            compress: bool,
            opcode: u8,
            plain: &[u8],
            wire: usize,
        ) {
            let m = &mut self.model;
            if m.diverged {
                return;
            }
            let limits = self.h.conn.limits();
            let deflate = self.params.is_some();
            if wire > limits.max_frame_size {
                m.diverged = true;
                return;
            }
            match opcode {
                0x9 | 0xa if fin && !rsv1 && wire <= 125 => {}
                0x1 | 0x2 if m.open.is_none() && rsv1 == compress && (deflate || !rsv1) => {
                    m.open = Some(Open {
                        text: opcode == 0x1,
                        compressed: rsv1,
                        plain: Vec::new(),
                        wire: 0,
                        fragments: 0,
                    });
                }
                0x0 if !rsv1
                    && m.open.as_ref().is_some_and(|o| {
                        o.compressed == compress && o.fragments < limits.max_fragments
                    }) => {}
                _ => {
                    m.diverged = true;
                    return;
                }
            }
            if opcode & 0x8 != 0 {
                return;
            }
            let Some(open) = m.open.as_mut() else {
                m.diverged = true;
                return;
            };
            open.plain.extend_from_slice(plain);
            open.wire += wire;
            open.fragments += 1;
            if open.wire > limits.max_message_size {
                m.diverged = true;
                return;
            }
            if fin {
                let Some(open) = m.open.take() else { return };
                if open.plain.len() > limits.max_message_size
                    || (open.text && std::str::from_utf8(&open.plain).is_err())
                {
                    m.diverged = true;
                    return;
                }
                m.expected.push((open.text, open.plain));
            }
        }

        /// Feeds what the peer wrote since the last flush.
        fn flush(&mut self) {
            let pending = std::mem::take(&mut self.pending);
            // At most a few hundred reads per flush, however large: small
            // reads of a 128 KiB frame explore nothing new, slowly.
            let reads = match self.reads {
                0 => 0,
                n => n.max(pending.len() / 256),
            };
            for read in Reads::sized(reads, &pending) {
                self.h.feed(read);
                self.check_seen();
            }
        }

        fn check_seen(&mut self) {
            while let Some(seen) = self.h.seen.get(self.checked) {
                self.checked += 1;
                let k = self.messages;
                match seen {
                    Seen::Message(m) => {
                        self.messages += 1;
                        match self.model.expected.get(k) {
                            Some((text, plain)) => {
                                assert_eq!(m.as_text().is_some(), *text, "message {k}'s kind");
                                assert!(m.as_bytes() == plain.as_slice(), "message {k} differs");
                            }
                            None => assert!(self.model.diverged, "message {k} was never sent"),
                        }
                    }
                    Seen::Failed(ProtocolError::CompressedDataInvalid) => {
                        // Only a message the model stopped following may
                        // hold bad deflate data.
                        assert!(
                            k >= self.model.expected.len() && self.model.diverged,
                            "valid deflate data refused at message {k}"
                        );
                    }
                    Seen::Failed(e) => assert!(
                        k >= self.model.expected.len(),
                        "{e} before message {k}, which was valid"
                    ),
                    Seen::Close(_) => {
                        assert!(k >= self.model.expected.len(), "a close before message {k}")
                    }
                }
            }
        }

        fn finish(&mut self) {
            assert!(
                self.messages >= self.model.expected.len(),
                "{} of {} valid messages delivered",
                self.messages,
                self.model.expected.len()
            );
        }

        /// Sends from the connection and reads the frame as the peer would:
        /// compressed exactly when it should be, within the agreed window,
        /// without context where none was agreed.
        fn local_send(&mut self, message: Message, compress: bool) {
            let plain = message.as_bytes().to_vec();
            let text = message.as_text().is_some();
            let sent = self.h.send(message, compress);
            let want = compress && self.params.is_some_and(|p| plain.len() >= p.threshold);
            self.check_sent(sent, &plain, text, want);
        }

        /// Sends as a broadcast does: one frame encoded for every connection
        /// with these parameters (compressed only without server context
        /// takeover), queued with `send_encoded`.
        fn broadcast(&mut self, message: Message) {
            let plain = message.as_bytes().to_vec();
            let text = message.as_text().is_some();
            let want = self
                .params
                .is_some_and(|p| p.shareable() && plain.len() >= p.threshold);
            let deflated = self.params.and_then(|p| Transmit::deflated(&message, &p));
            assert_eq!(deflated.is_some(), want, "a shared compressed frame");
            let t = deflated.unwrap_or_else(|| Transmit::message(message));
            let sent = self.h.send_encoded(t);
            self.check_sent(sent, &plain, text, want);
        }

        fn check_sent(&mut self, sent: Option<Sent>, plain: &[u8], text: bool, want: bool) {
            let Some(sent) = sent else {
                return;
            };
            assert_eq!(sent.header.opcode == wharf_proto::OpCode::Text, text);
            let deflated = sent.header.rsv & 0b100 != 0;
            assert_eq!(
                deflated,
                want,
                "compressed a message of {} bytes",
                plain.len()
            );
            if !deflated {
                assert!(sent.payload == plain, "sent payload differs");
                return;
            }
            let bits = self.inflate_bits;
            let d = self
                .inflate
                .get_or_insert_with(|| Decompress::new_with_window_bits(false, bits));
            let inflated = inflate(d, &sent.payload)
                .unwrap_or_else(|e| panic!("the peer cannot inflate our message: {e}"));
            assert!(inflated == *plain, "inflated message differs");
            if self.inflate_resets {
                d.reset(false);
            }
        }
    }

    /// Inflates one message as a peer would (§7.2.2).
    fn inflate(d: &mut Decompress, payload: &[u8]) -> Result<Vec<u8>, String> {
        let mut input = payload.to_vec();
        input.extend_from_slice(&TAIL);
        let mut out = Vec::with_capacity(input.len() * 4 + 64);
        let start = d.total_in();
        loop {
            if out.len() == out.capacity() {
                out.reserve(out.capacity());
            }
            let before = (d.total_in(), d.total_out());
            let done = (d.total_in() - start) as usize;
            let status = d
                .decompress_vec(&input[done..], &mut out, FlushDecompress::Sync)
                .map_err(|e| e.to_string())?;
            if status == Status::StreamEnd {
                return Err("the message ended the deflate stream".into());
            }
            let done = (d.total_in() - start) as usize;
            if done == input.len() && out.len() < out.capacity() {
                return Ok(out);
            }
            if before == (d.total_in(), d.total_out()) && out.len() < out.capacity() {
                return Err("inflate stalled".into());
            }
            if out.len() > 64 << 20 {
                return Err("inflates past 64 MiB".into());
            }
        }
    }
}
