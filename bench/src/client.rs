//! The load generator's side of the protocol, kept minimal so that it is
//! never the bottleneck: a fixed upgrade request, client frames masked once
//! and reused, and a reader that walks server frames in the bytes it was
//! given, copying at most a header and a 16-byte payload prefix (RFC 6455
//! §5.2). It checks only what a benchmark needs (frame boundaries, close).

use std::io::{Read, Write};
use std::net::SocketAddr;

use anyhow::{Context as _, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// `Sec-WebSocket-Key` of every request: any 16 bytes in base64 will do.
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// Bytes of payload the reader keeps from the start of each frame.
pub(crate) const PREFIX: usize = 16;

/// The upgrade request, offering permessage-deflate if `deflate`.
pub(crate) fn request(deflate: bool) -> Vec<u8> {
    let mut req = format!(
        "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n"
    );
    if deflate {
        req.push_str("Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n");
    }
    req.push_str("\r\n");
    req.into_bytes()
}

/// What the server answered to the upgrade request.
#[derive(Debug)]
pub(crate) struct Upgraded {
    /// Bytes read past the response head: the first frames, if any.
    pub(crate) leftover: Vec<u8>,
    /// Whether the response agreed to permessage-deflate.
    pub(crate) deflate: bool,
}

/// Opens a connection and upgrades it. Without `strict`, any response head
/// will do (the raw TCP server echoes the request back).
///
/// # Errors
/// If connecting fails, or (with `strict`) the response is not `101`.
pub(crate) async fn connect(
    addr: SocketAddr,
    req: &[u8],
    strict: bool,
) -> anyhow::Result<(TcpStream, Upgraded)> {
    let mut s = TcpStream::connect(addr).await.context("connect")?;
    s.set_nodelay(true)?;
    s.write_all(req).await?;
    let mut buf = Vec::with_capacity(512);
    loop {
        let mut chunk = [0u8; 512];
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            bail!("connection closed during the handshake");
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(up) = parse_response(&buf, strict)? {
            return Ok((s, up));
        }
    }
}

/// [`connect`] on a blocking socket.
///
/// # Errors
/// As for [`connect`].
pub(crate) fn connect_blocking(
    addr: SocketAddr,
    req: &[u8],
    strict: bool,
) -> anyhow::Result<(std::net::TcpStream, Upgraded)> {
    let mut s = std::net::TcpStream::connect(addr).context("connect")?;
    s.set_nodelay(true)?;
    s.write_all(req)?;
    let mut buf = Vec::with_capacity(512);
    loop {
        let mut chunk = [0u8; 512];
        let n = s.read(&mut chunk)?;
        if n == 0 {
            bail!("connection closed during the handshake");
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(up) = parse_response(&buf, strict)? {
            return Ok((s, up));
        }
    }
}

/// The end of a response head in `buf` (the index past `\r\n\r\n`).
pub(crate) fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// Parses a complete response head; `Ok(None)` if more bytes are needed.
/// With `strict`, anything but `101` is an error.
///
/// # Errors
/// A complete head with another status, under `strict`.
pub(crate) fn parse_response(buf: &[u8], strict: bool) -> anyhow::Result<Option<Upgraded>> {
    let Some(end) = head_end(buf) else {
        return Ok(None);
    };
    let head = &buf[..end];
    if strict && !head.starts_with(b"HTTP/1.1 101") {
        let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
        bail!("upgrade refused: {}", String::from_utf8_lossy(line));
    }
    let lower = head.to_ascii_lowercase();
    let deflate = lower
        .windows(b"permessage-deflate".len())
        .any(|w| w == b"permessage-deflate");
    Ok(Some(Upgraded {
        leftover: buf[end..].to_vec(),
        deflate,
    }))
}

/// Appends one masked client frame: `first` is the first header byte (FIN,
/// RSV and opcode), e.g. `0x82` for a final binary frame.
pub(crate) fn push_masked(out: &mut Vec<u8>, first: u8, payload: &[u8], key: [u8; 4]) {
    out.push(first);
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
    out.extend_from_slice(&key);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
}

/// A small, fast, deterministic generator (xorshift64*), for payloads and
/// mask keys: the load generator needs no cryptographic randomness.
#[derive(Clone, Debug)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub(crate) fn key(&mut self) -> [u8; 4] {
        (self.next_u64() as u32).to_le_bytes()
    }
}

/// `count` masked binary frames of `size` random bytes, each with its own
/// key, back to back: written once per connection, then in slices.
pub(crate) fn binary_frames(size: usize, count: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let payload: Vec<u8> = (0..size).map(|_| rng.next_u64() as u8).collect();
    let mut out = Vec::with_capacity(count * (size + 14));
    for _ in 0..count {
        push_masked(&mut out, 0x82, &payload, rng.key());
    }
    out
}

/// One server frame, as the reader reports it once the frame is complete.
#[derive(Clone, Copy, Debug, Default, Eq, PartialEq)]
pub(crate) struct Frame {
    /// The first header byte: FIN, RSV bits and opcode.
    pub(crate) first: u8,
    /// The payload length.
    pub(crate) len: u64,
    /// The first `min(len, PREFIX)` payload bytes, zero-padded.
    pub(crate) prefix: [u8; PREFIX],
}

impl Frame {
    pub(crate) fn opcode(&self) -> u8 {
        self.first & 0x0f
    }

    /// Text, binary or continuation.
    pub(crate) fn is_data(&self) -> bool {
        self.opcode() < 8
    }

    /// The prefix's two little-endian `u64`s (a sequence number and a send
    /// time, in the broadcast scenario).
    pub(crate) fn stamp(&self) -> (u64, u64) {
        let mut a = [0u8; 8];
        let mut b = [0u8; 8];
        a.copy_from_slice(&self.prefix[..8]);
        b.copy_from_slice(&self.prefix[8..]);
        (u64::from_le_bytes(a), u64::from_le_bytes(b))
    }
}

/// Why the reader gave up.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub(crate) enum ReadError {
    /// The server sent a close frame.
    Closed,
    /// The server sent a masked frame.
    Masked,
}

/// Walks server frames across reads without copying payloads: it skips
/// payload bytes in place and carries at most a header and a prefix (30
/// bytes) from one read to the next.
#[derive(Debug, Default)]
pub(crate) struct FrameReader {
    /// Accept masked frames (their prefix is then still masked).
    masked_ok: bool,
    carry: [u8; 14 + PREFIX],
    carry_len: usize,
    /// The frame whose payload is being skipped, and how much is left.
    pending: Option<Frame>,
    skip: u64,
}

/// The header length and payload length of a frame starting at `b`, if
/// `b` holds its whole header. A masked frame is an error unless
/// `masked_ok` (the raw TCP server echoes our own masked frames).
fn header(b: &[u8], masked_ok: bool) -> Option<Result<(usize, u64), ReadError>> {
    if b.len() < 2 {
        return None;
    }
    let masked = b[1] & 0x80 != 0;
    if masked && !masked_ok {
        return Some(Err(ReadError::Masked));
    }
    let (hl, len) = match b[1] & 0x7f {
        126 => {
            let ext = b.get(2..4)?;
            (4, u64::from(u16::from_be_bytes([ext[0], ext[1]])))
        }
        127 => {
            let mut ext = [0u8; 8];
            ext.copy_from_slice(b.get(2..10)?);
            (10, u64::from_be_bytes(ext))
        }
        n => (2, u64::from(n)),
    };
    let hl = hl + if masked { 4 } else { 0 };
    if b.len() < hl {
        return None;
    }
    Some(Ok((hl, len)))
}

/// Bytes of header plus prefix needed before a frame can be reported.
fn wanted(b: &[u8], masked_ok: bool) -> Result<usize, ReadError> {
    match header(b, masked_ok) {
        None if b.len() < 2 => Ok(2),
        None => {
            let ext = match b[1] & 0x7f {
                126 => 2,
                127 => 8,
                _ => 0,
            };
            Ok(2 + ext + if b[1] & 0x80 != 0 { 4 } else { 0 })
        }
        Some(Err(e)) => Err(e),
        Some(Ok((hl, len))) => Ok(hl + (len.min(PREFIX as u64) as usize)),
    }
}

impl FrameReader {
    /// A reader that accepts masked frames only if `masked_ok`.
    pub(crate) fn new(masked_ok: bool) -> Self {
        Self {
            masked_ok,
            ..Self::default()
        }
    }

    /// Feeds bytes read from the socket, calling `f` for every frame they
    /// complete.
    ///
    /// # Errors
    /// On a close frame or a masked frame; the rest is not parsed.
    pub(crate) fn feed(
        &mut self,
        mut data: &[u8],
        mut f: impl FnMut(&Frame),
    ) -> Result<(), ReadError> {
        loop {
            if let Some(frame) = self.pending {
                let n = self.skip.min(data.len() as u64);
                self.skip -= n;
                data = &data[n as usize..];
                if self.skip > 0 {
                    return Ok(());
                }
                self.pending = None;
                if frame.opcode() == 8 {
                    return Err(ReadError::Closed);
                }
                f(&frame);
            }
            if data.is_empty() {
                return Ok(());
            }
            if self.carry_len > 0 {
                // Complete the carried head byte by byte group: the amount
                // wanted grows once the length byte is known.
                loop {
                    let want = wanted(&self.carry[..self.carry_len], self.masked_ok)?;
                    if self.carry_len >= want {
                        break;
                    }
                    let take = (want - self.carry_len).min(data.len());
                    self.carry[self.carry_len..self.carry_len + take]
                        .copy_from_slice(&data[..take]);
                    self.carry_len += take;
                    data = &data[take..];
                    if self.carry_len < want {
                        return Ok(());
                    }
                }
                let head = self.carry;
                let used = self.carry_len;
                self.carry_len = 0;
                self.start(&head[..used], used);
                continue;
            }
            let want = wanted(data, self.masked_ok)?;
            if data.len() < want {
                self.carry[..data.len()].copy_from_slice(data);
                self.carry_len = data.len();
                return Ok(());
            }
            let avail = data.len();
            let consumed = self.start(data, avail);
            data = &data[consumed..];
        }
    }

    /// Starts the frame whose head (and maybe more) is at `b[..avail]`;
    /// returns how many bytes of `b` it consumed.
    fn start(&mut self, b: &[u8], avail: usize) -> usize {
        let Some(Ok((hl, len))) = header(b, self.masked_ok) else {
            unreachable!("start is called with a complete head");
        };
        let mut frame = Frame {
            first: b[0],
            len,
            prefix: [0; PREFIX],
        };
        let p = (len.min(PREFIX as u64)) as usize;
        frame.prefix[..p].copy_from_slice(&b[hl..hl + p]);
        let in_buf = ((avail - hl) as u64).min(len);
        self.skip = len - in_buf;
        self.pending = Some(frame);
        hl + in_buf as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![first];
        match payload.len() {
            n @ 0..=125 => out.push(n as u8),
            n @ 126..=0xffff => {
                out.push(126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(payload);
        out
    }

    fn stream() -> (Vec<u8>, Vec<Frame>) {
        let mut bytes = Vec::new();
        let mut frames = Vec::new();
        for (i, size) in [0usize, 5, 16, 32, 125, 126, 1024, 65535, 65536, 70_000]
            .into_iter()
            .enumerate()
        {
            let payload: Vec<u8> = (0..size).map(|j| (i * 31 + j) as u8).collect();
            let mut prefix = [0u8; PREFIX];
            let p = size.min(PREFIX);
            prefix[..p].copy_from_slice(&payload[..p]);
            frames.push(Frame {
                first: 0x82,
                len: size as u64,
                prefix,
            });
            bytes.extend(server_frame(0x82, &payload));
        }
        (bytes, frames)
    }

    #[test]
    fn reads_frames_at_every_chunk_size() {
        let (bytes, expected) = stream();
        for chunk in [1, 2, 3, 7, 13, 64, 1000, 65536, bytes.len()] {
            let mut reader = FrameReader::default();
            let mut got = Vec::new();
            for part in bytes.chunks(chunk) {
                reader.feed(part, |f| got.push(*f)).unwrap();
            }
            assert_eq!(got, expected, "chunk size {chunk}");
        }
    }

    #[test]
    fn stops_at_close_and_masked_frames() {
        let mut reader = FrameReader::default();
        let close = server_frame(0x88, &[0x03, 0xe8]);
        assert_eq!(reader.feed(&close, |_| {}), Err(ReadError::Closed));
        let mut reader = FrameReader::default();
        assert_eq!(
            reader.feed(&[0x82, 0x81, 1, 2, 3, 4, 5], |_| {}),
            Err(ReadError::Masked)
        );
    }

    #[test]
    fn masked_frames_decode_with_wharf_proto() {
        use bytes::BytesMut;
        use wharf_proto::{Connection, Event, Limits, Message};

        let frames = binary_frames(1000, 3, 7);
        let mut server = Connection::server(Limits::default());
        let mut buf = BytesMut::from(&frames[..]);
        server.receive(&mut buf).unwrap();
        let mut n = 0;
        while let Some(event) = server.poll_event() {
            let Event::Message(Message::Binary(b)) = event else {
                panic!("unexpected {event:?}");
            };
            assert_eq!(b.len(), 1000);
            n += 1;
        }
        assert_eq!(n, 3);
    }

    #[test]
    fn reads_its_own_masked_frames_when_told_to() {
        let frames = binary_frames(300, 5, 3);
        for chunk in [1, 5, 17, frames.len()] {
            let mut reader = FrameReader::new(true);
            let mut n = 0;
            for part in frames.chunks(chunk) {
                reader
                    .feed(part, |f| {
                        assert_eq!(f.len, 300);
                        n += 1;
                    })
                    .unwrap();
            }
            assert_eq!(n, 5);
        }
    }

    #[test]
    fn parses_the_response_head() {
        let resp = b"HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n\x82\x00";
        let up = parse_response(resp, true).unwrap().unwrap();
        assert!(up.deflate);
        assert_eq!(up.leftover, b"\x82\x00");
        assert!(
            parse_response(b"HTTP/1.1 101 Switching", true)
                .unwrap()
                .is_none()
        );
        assert!(parse_response(b"HTTP/1.1 400 Bad\r\n\r\n", true).is_err());
    }
}
