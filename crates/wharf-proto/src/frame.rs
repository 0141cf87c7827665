//! Frame headers (RFC 6455 §5.2): decode and encode, for every length form.
//!
//! Decoding checks what the header alone can tell: reserved opcodes, the
//! control-frame rules of §5.5, the 64-bit length's top bit and minimal length
//! encoding. Rules that depend on the connection (masking by role, RSV bits by
//! negotiated extension, limits, fragmentation) live in `connection`.

use bytes::Bytes;

use crate::deflate::{self, DeflateParams};
use crate::error::ProtocolError;
use crate::legacy;
use crate::mask;
use crate::message::Message;

/// The longest possible frame header: 2 + 8 length bytes + 4 mask bytes.
pub const MAX_HEADER_LEN: usize = 14;

/// A frame opcode (§5.2), in wire order. Reserved opcodes are refused at
/// decode time, so every value here is one the RFC defines.
#[allow(clippy::exhaustive_enums)] // complete by RFC 6455; new opcodes need a new RFC
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub enum OpCode {
    /// 0x0: continues a fragmented message.
    Continuation,
    /// 0x1: the first frame of a text message.
    Text,
    /// 0x2: the first frame of a binary message.
    Binary,
    /// 0x8: close.
    Close,
    /// 0x9: ping.
    Ping,
    /// 0xA: pong.
    Pong,
}

impl OpCode {
    /// Close, ping and pong are control frames (§5.5).
    pub fn is_control(self) -> bool {
        matches!(self, Self::Close | Self::Ping | Self::Pong)
    }

    fn from_u8(v: u8) -> Result<Self, ProtocolError> {
        Ok(match v {
            0x0 => Self::Continuation,
            0x1 => Self::Text,
            0x2 => Self::Binary,
            0x8 => Self::Close,
            0x9 => Self::Ping,
            0xa => Self::Pong,
            other => return Err(ProtocolError::OpCodeReserved(other)),
        })
    }

    fn as_u8(self) -> u8 {
        match self {
            Self::Continuation => 0x0,
            Self::Text => 0x1,
            Self::Binary => 0x2,
            Self::Close => 0x8,
            Self::Ping => 0x9,
            Self::Pong => 0xa,
        }
    }
}

/// A decoded frame header.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
#[non_exhaustive]
pub struct FrameHeader {
    /// FIN: this is the final fragment of a message.
    pub fin: bool,
    /// RSV1..RSV3 as the low three bits (RSV1 = `0b100`).
    pub rsv: u8,
    /// The opcode.
    pub opcode: OpCode,
    /// The masking key, if the frame is masked.
    pub mask: Option<[u8; 4]>,
    /// The payload length.
    pub payload_len: u64,
}

impl FrameHeader {
    /// A header with no RSV bits.
    pub fn new(fin: bool, opcode: OpCode, mask: Option<[u8; 4]>, payload_len: u64) -> Self {
        Self {
            fin,
            rsv: 0,
            opcode,
            mask,
            payload_len,
        }
    }

    /// Decodes a header from the front of `buf`.
    ///
    /// Returns `Ok(None)` if `buf` does not yet hold the whole header, else
    /// the header and its length in bytes.
    ///
    /// # Errors
    /// A reserved opcode, a fragmented or over-long control frame, a 64-bit
    /// length with the top bit set, or a length not minimally encoded.
    pub fn decode(buf: &[u8]) -> Result<Option<(Self, usize)>, ProtocolError> {
        let [b0, b1, ..] = *buf else {
            return Ok(None);
        };
        let fin = b0 & 0x80 != 0;
        let rsv = (b0 >> 4) & 0x7;
        let opcode = OpCode::from_u8(b0 & 0x0f)?;
        let masked = b1 & 0x80 != 0;
        let len7 = b1 & 0x7f;
        if opcode.is_control() {
            if !fin {
                return Err(ProtocolError::ControlFragmented);
            }
            if len7 > 125 {
                return Err(ProtocolError::ControlTooLong);
            }
        }
        let (payload_len, mut at) = match len7 {
            126 => {
                let Some(b) = buf.get(2..4) else {
                    return Ok(None);
                };
                let len = u64::from(u16::from_be_bytes([b[0], b[1]]));
                if len < 126 {
                    return Err(ProtocolError::LengthNotMinimal);
                }
                (len, 4)
            }
            127 => {
                let Some(b) = buf.get(2..10) else {
                    return Ok(None);
                };
                let mut raw = [0u8; 8];
                raw.copy_from_slice(b);
                let len = u64::from_be_bytes(raw);
                if len >> 63 != 0 {
                    return Err(ProtocolError::LengthOverflow);
                }
                if len <= u64::from(u16::MAX) {
                    return Err(ProtocolError::LengthNotMinimal);
                }
                (len, 10)
            }
            n => (u64::from(n), 2),
        };
        let mask = if masked {
            let Some(b) = buf.get(at..at + 4) else {
                return Ok(None);
            };
            at += 4;
            Some([b[0], b[1], b[2], b[3]])
        } else {
            None
        };
        let header = Self {
            fin,
            rsv,
            opcode,
            mask,
            payload_len,
        };
        Ok(Some((header, at)))
    }

    /// The encoded length of this header.
    pub fn encoded_len(&self) -> usize {
        let len = match self.payload_len {
            0..=125 => 2,
            126..=0xffff => 4,
            _ => 10,
        };
        len + if self.mask.is_some() { 4 } else { 0 }
    }

    /// Encodes this header into `out`, returning the number of bytes written.
    pub fn encode(&self, out: &mut [u8; MAX_HEADER_LEN]) -> usize {
        out[0] = (u8::from(self.fin) << 7) | ((self.rsv & 0x7) << 4) | self.opcode.as_u8();
        let mask_bit = if self.mask.is_some() { 0x80 } else { 0 };
        let mut at = match self.payload_len {
            len @ 0..=125 => {
                out[1] = mask_bit | len as u8;
                2
            }
            len @ 126..=0xffff => {
                out[1] = mask_bit | 126;
                out[2..4].copy_from_slice(&(len as u16).to_be_bytes());
                4
            }
            len => {
                out[1] = mask_bit | 127;
                out[2..10].copy_from_slice(&len.to_be_bytes());
                10
            }
        };
        if let Some(key) = self.mask {
            out[at..at + 4].copy_from_slice(&key);
            at += 4;
        }
        at
    }
}

/// An encoded frame ready for the socket: a small inline header and a shared
/// payload, written together with one vectored write.
///
/// Cloning is cheap (the payload is reference counted), which is what lets a
/// broadcast encode a frame once and hand it to every receiver.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct Transmit {
    header: [u8; MAX_HEADER_LEN],
    header_len: u8,
    payload: Bytes,
}

impl Transmit {
    /// Encodes a single, final, unmasked frame (the server's form).
    pub fn unmasked(opcode: OpCode, payload: Bytes) -> Self {
        Self::with_header(
            FrameHeader::new(true, opcode, None, payload.len() as u64),
            payload,
        )
    }

    /// Encodes a message as a single, final, unmasked frame (the server's
    /// form), sharing its payload.
    pub fn message(message: Message) -> Self {
        let (opcode, payload) = match message {
            Message::Text(t) => (OpCode::Text, t.into_bytes()),
            Message::Binary(b) => (OpCode::Binary, b),
            Message::Ping(b) => (OpCode::Ping, b),
            Message::Pong(b) => (OpCode::Pong, b),
        };
        Self::unmasked(opcode, payload)
    }

    /// Encodes a message compressed once for every connection whose
    /// permessage-deflate parameters match `params` (no server context
    /// takeover), for a broadcast. `None` if those connections would not
    /// compress it (below the threshold, a control message, or their
    /// compressor keeps context).
    pub fn deflated(message: &Message, params: &DeflateParams) -> Option<Self> {
        let opcode = match message {
            Message::Text(_) => OpCode::Text,
            Message::Binary(_) => OpCode::Binary,
            _ => return None,
        };
        let payload = message.as_bytes();
        if !params.shareable() || payload.len() < params.threshold {
            return None;
        }
        let compressed =
            deflate::compress_shared(params.server_max_window_bits, params.level, payload);
        let mut header = FrameHeader::new(true, opcode, None, compressed.len() as u64);
        header.rsv = 0b100;
        Some(Self::with_header(header, compressed))
    }

    /// Encodes a single, final frame masked with `key` (the client's form).
    /// The payload is copied, since masking changes it.
    pub fn masked(opcode: OpCode, payload: &[u8], key: [u8; 4]) -> Self {
        let mut masked = payload.to_vec();
        mask::apply(&mut masked, key, 0);
        let header = FrameHeader::new(true, opcode, Some(key), payload.len() as u64);
        Self::with_header(header, masked.into())
    }

    /// Encodes a text message as a legacy draft's frame (`0x00`, the text,
    /// `0xFF`; see [`crate::legacy`]), for every legacy receiver of a
    /// broadcast. `None` for any other message: the drafts cannot carry
    /// binary data, and have no ping or pong.
    pub fn legacy(message: &Message) -> Option<Self> {
        match message {
            Message::Text(t) => Some(Self::legacy_text(t.as_bytes())),
            _ => None,
        }
    }

    /// A legacy draft's text frame around `text` (which must be UTF-8).
    pub(crate) fn legacy_text(text: &[u8]) -> Self {
        Self::raw(&[0x00], legacy::text_payload(text))
    }

    /// The closing handshake frame of draft-hixie-76: `0xFF 0x00`.
    pub fn legacy_close() -> Self {
        Self::raw(&[0xff, 0x00], Bytes::new())
    }

    /// Several encoded frames, in order, as one transmit: copied into one
    /// buffer, which every connection that queues the result shares. For a
    /// run of broadcast frames queued on many connections: one queue entry
    /// and one reference count per connection instead of one per frame.
    /// The frames are what [`Connection::send_encoded`] takes (unmasked,
    /// final); [`Transmit::payload`] is then the frames' bytes, headers
    /// included.
    ///
    /// [`Connection::send_encoded`]: crate::Connection::send_encoded
    pub fn concat<'a>(frames: impl IntoIterator<Item = &'a Self> + Clone) -> Self {
        let len = frames.clone().into_iter().map(Self::len).sum();
        let mut buf = bytes::BytesMut::with_capacity(len);
        for t in frames {
            buf.extend_from_slice(t.header());
            buf.extend_from_slice(&t.payload);
        }
        Self::raw(&[], buf.freeze())
    }

    /// A frame from raw header bytes (at most [`MAX_HEADER_LEN`]).
    fn raw(header: &[u8], payload: Bytes) -> Self {
        let mut buf = [0u8; MAX_HEADER_LEN];
        let n = header.len().min(MAX_HEADER_LEN);
        buf[..n].copy_from_slice(&header[..n]);
        Self {
            header: buf,
            header_len: n as u8,
            payload,
        }
    }

    /// Pairs an explicit header with its (already masked, if masked) payload.
    pub fn with_header(header: FrameHeader, payload: Bytes) -> Self {
        let mut buf = [0u8; MAX_HEADER_LEN];
        let header_len = header.encode(&mut buf) as u8;
        Self {
            header: buf,
            header_len,
            payload,
        }
    }

    /// The header bytes.
    pub fn header(&self) -> &[u8] {
        &self.header[..usize::from(self.header_len)]
    }

    /// The payload bytes, as they go on the wire.
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// Header plus payload length.
    pub fn len(&self) -> usize {
        usize::from(self.header_len) + self.payload.len()
    }

    /// Always false: a frame has at least a one-byte header (and frames
    /// joined by [`Transmit::concat`] are at least one frame).
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The whole frame in one buffer (copies; for tests and tools).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len());
        out.extend_from_slice(self.header());
        out.extend_from_slice(&self.payload);
        out
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn decode(buf: &[u8]) -> Result<Option<(FrameHeader, usize)>, ProtocolError> {
        FrameHeader::decode(buf)
    }

    #[test]
    fn concatenated_frames_reach_a_client_as_their_messages_in_order() {
        let messages = [
            Message::from("first"),
            Message::from(vec![7u8; 300]),
            Message::from(""),
            Message::from(vec![1u8; 70_000]),
        ];
        let frames: Vec<Transmit> = messages.iter().cloned().map(Transmit::message).collect();
        let joined = Transmit::concat(&frames);
        let wire: Vec<u8> = frames.iter().flat_map(Transmit::to_vec).collect();
        assert_eq!(joined.to_vec(), wire);
        assert_eq!(joined.len(), wire.len());
        let mut client = crate::Connection::client(crate::Limits::default(), || [1, 2, 3, 4]);
        let mut buf = bytes::BytesMut::from(&wire[..]);
        let mut got = Vec::new();
        loop {
            client.receive(&mut buf).unwrap();
            while let Some(event) = client.poll_event() {
                if let crate::Event::Message(m) = event {
                    got.push(m);
                }
            }
            if !client.receive_pending() {
                break;
            }
        }
        assert_eq!(got, messages);
    }

    #[test]
    fn rfc6455_5_7_unmasked_hello() {
        let (h, n) = decode(&[0x81, 0x05, b'H', b'e']).unwrap().unwrap();
        assert_eq!(
            (h.fin, h.opcode, h.mask, h.payload_len, n),
            (true, OpCode::Text, None, 5, 2)
        );
    }

    #[test]
    fn rfc6455_5_7_masked_hello() {
        let bytes = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        let (h, n) = decode(&bytes).unwrap().unwrap();
        assert_eq!(h.mask, Some([0x37, 0xfa, 0x21, 0x3d]));
        assert_eq!((h.payload_len, n), (5, 6));
    }

    #[test]
    fn rfc6455_5_7_fragmented_text() {
        let (h, _) = decode(&[0x01, 0x03, b'H', b'e', b'l']).unwrap().unwrap();
        assert_eq!((h.fin, h.opcode), (false, OpCode::Text));
        let (h, _) = decode(&[0x80, 0x02, b'l', b'o']).unwrap().unwrap();
        assert_eq!((h.fin, h.opcode), (true, OpCode::Continuation));
    }

    #[test]
    fn rfc6455_5_7_ping_and_pong() {
        let (h, _) = decode(&[0x89, 0x05]).unwrap().unwrap();
        assert_eq!(h.opcode, OpCode::Ping);
        let (h, _) = decode(&[0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d])
            .unwrap()
            .unwrap();
        assert_eq!((h.opcode, h.payload_len), (OpCode::Pong, 5));
    }

    #[test]
    fn rfc6455_5_7_binary_256_and_64k() {
        let (h, n) = decode(&[0x82, 0x7e, 0x01, 0x00]).unwrap().unwrap();
        assert_eq!((h.payload_len, n), (256, 4));
        let (h, n) = decode(&[0x82, 0x7f, 0, 0, 0, 0, 0, 1, 0, 0])
            .unwrap()
            .unwrap();
        assert_eq!((h.payload_len, n), (65536, 10));
    }

    #[test]
    fn needs_more_bytes_for_partial_headers() {
        let full = [0x82, 0xff, 0, 0, 0, 0, 0, 1, 0, 0, 1, 2, 3, 4];
        for end in 0..full.len() {
            assert_eq!(decode(&full[..end]), Ok(None), "prefix of {end}");
        }
        assert!(decode(&full).unwrap().is_some());
    }

    #[test]
    fn rejects_length_with_top_bit_set() {
        let buf = [0x82, 0x7f, 0x80, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(decode(&buf), Err(ProtocolError::LengthOverflow));
    }

    #[test]
    fn rejects_non_minimal_lengths() {
        assert_eq!(
            decode(&[0x82, 0x7e, 0, 125]),
            Err(ProtocolError::LengthNotMinimal)
        );
        let buf = [0x82, 0x7f, 0, 0, 0, 0, 0, 0, 0xff, 0xff];
        assert_eq!(decode(&buf), Err(ProtocolError::LengthNotMinimal));
    }

    #[test]
    fn rejects_reserved_opcodes() {
        for op in [3u8, 4, 5, 6, 7, 0xb, 0xc, 0xd, 0xe, 0xf] {
            assert_eq!(
                decode(&[0x80 | op, 0]),
                Err(ProtocolError::OpCodeReserved(op))
            );
        }
    }

    #[test]
    fn rejects_fragmented_and_long_control_frames() {
        assert_eq!(decode(&[0x09, 0]), Err(ProtocolError::ControlFragmented));
        assert_eq!(
            decode(&[0x89, 126, 0, 126]),
            Err(ProtocolError::ControlTooLong)
        );
    }

    proptest! {
        #[test]
        fn encode_decode_round_trip(fin in any::<bool>(), rsv in 0u8..8,
                                    op in prop::sample::select(vec![OpCode::Continuation, OpCode::Text, OpCode::Binary]),
                                    mask in any::<Option<[u8; 4]>>(), len in prop_oneof![0u64..200, 0u64..70_000, 0u64..(1 << 63)]) {
            let h = FrameHeader { fin, rsv, opcode: op, mask, payload_len: len };
            let mut buf = [0u8; MAX_HEADER_LEN];
            let n = h.encode(&mut buf);
            prop_assert_eq!(n, h.encoded_len());
            prop_assert_eq!(decode(&buf[..n]), Ok(Some((h, n))));
        }
    }
}
