//! `receive` for a connection in a legacy draft's framing
//! ([`Connection::with_legacy`]; the framing is described in
//! [`crate::legacy`]).
//!
//! The frame being received is kept as an `RxFrame`, as for RFC 6455:
//! - a text (or discarded sentinel) frame has `fin` set; `processed` counts
//!   the bytes after its type byte already scanned for the end byte (and,
//!   for text, validated), which stay in the buffer until it comes;
//! - a length-prefixed frame, discarded as it arrives, has `fin` clear and
//!   `len` the bytes still to discard: nothing of it is held.

use bytes::{Buf, BytesMut};

use super::{Connection, Event, MAX_EVENTS, RxFrame};
use crate::close::{CloseCode, CloseFrame};
use crate::error::ProtocolError;
use crate::frame::OpCode;
use crate::legacy::{self, Draft};
use crate::message::{Message, Utf8Bytes};
use crate::utf8::Utf8Validator;

impl Connection {
    pub(super) fn receive_legacy(
        &mut self,
        buf: &mut BytesMut,
        draft: Draft,
    ) -> Result<(), ProtocolError> {
        while !self.input_done {
            if self.events.len() >= MAX_EVENTS {
                self.stopped = true;
                return Ok(());
            }
            let mut frame = match self.frame.take() {
                Some(frame) => frame,
                None => match self.legacy_header(buf, draft)? {
                    Some(frame) => frame,
                    None if self.input_done => break,
                    None => return Ok(()),
                },
            };
            if !frame.fin {
                let n = buf.len().min(frame.len as usize);
                buf.advance(n);
                // Lossless: at most `frame.len`.
                frame.len -= n as u32;
                if frame.len > 0 {
                    self.frame = Some(frame);
                    return Ok(());
                }
                continue;
            }
            let done = frame.processed as usize;
            let max = self.limits.message();
            let at = buf[done..].iter().position(|&b| b == 0xff);
            // Checked in stream order, so that the outcome does not depend
            // on how the input was split: UTF-8 up to the limit, then the
            // limit.
            let end = at.map_or(buf.len(), |at| done + at);
            if frame.text && end.min(max) > done {
                self.utf8
                    .feed(&buf[done..end.min(max)])
                    .map_err(|_| ProtocolError::TextNotUtf8)?;
            }
            if end > max {
                return Err(ProtocolError::MessageTooBig { max });
            }
            if at.is_none() {
                // Lossless: at most the message limit, which is 32 bits.
                frame.processed = buf.len() as u32;
                self.frame = Some(frame);
                return Ok(());
            }
            let payload = buf.split_to(end);
            buf.advance(1);
            if frame.text {
                self.utf8.finish().map_err(|_| ProtocolError::TextNotUtf8)?;
                let text = Utf8Bytes::try_from(payload.freeze())
                    .map_err(|_| ProtocolError::TextNotUtf8)?;
                self.deliver(Message::Text(text))?;
            }
        }
        buf.clear();
        Ok(())
    }

    /// Reads a frame's type byte (and, for a length-prefixed frame, its
    /// length) from the front of `buf`: the frame, or `None` if more bytes
    /// are needed or the frame was -76's closing handshake (then the input
    /// is done).
    fn legacy_header(
        &mut self,
        buf: &mut BytesMut,
        draft: Draft,
    ) -> Result<Option<RxFrame>, ProtocolError> {
        let Some(&kind) = buf.first() else {
            return Ok(None);
        };
        if kind & 0x80 == 0 {
            buf.advance(1);
            let text = kind == 0x00;
            if text {
                self.utf8 = Utf8Validator::new();
            }
            return Ok(Some(RxFrame {
                fin: true,
                opcode: if text { OpCode::Text } else { OpCode::Binary },
                mask: None,
                len: 0,
                processed: 0,
                text,
                compressed: false,
            }));
        }
        let max = self.limits.frame();
        let (len, n) = match legacy::decode_length(&buf[1..], max) {
            Ok(Some(found)) => found,
            Ok(None) => return Ok(None),
            Err(len) => return Err(ProtocolError::FrameTooBig { len, max }),
        };
        buf.advance(1 + n);
        if kind == 0xff && len == 0 && draft.has_closing_handshake() {
            self.input_done = true;
            self.message = None;
            self.events.push_back(Event::Close(CloseFrame {
                code: CloseCode::NO_STATUS_RECEIVED,
                reason: Utf8Bytes::new(),
            }));
            return Ok(None);
        }
        Ok(Some(RxFrame {
            fin: false,
            opcode: OpCode::Binary,
            mask: None,
            // Lossless: at most the frame limit, which is 32 bits.
            len: len as u32,
            processed: 0,
            text: false,
            compressed: false,
        }))
    }
}
