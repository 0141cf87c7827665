//! The connection state machine (RFC 6455 §5–§7), in quinn-proto's shape.
//!
//! Calling order, repeated for as long as the transport is open:
//!
//! 1. [`Connection::receive`] with the bytes read from the transport (the
//!    same buffer each time: unconsumed bytes stay at its front);
//! 2. [`Connection::poll_event`] until `None`, handing events to the
//!    application, which may call [`Connection::send`], [`Connection::ping`]
//!    or [`Connection::close`];
//! 3. [`Connection::poll_transmit`] until `None`, writing each frame;
//! 4. once [`Connection::state`] is [`State::Closed`] and no transmit is
//!    left, the server closes the transport (§7.1.1).
//!
//! `receive` never needs a writer: pongs are queued as transmits like any
//! other frame. The close echo, and the close frame that fails the
//! connection on a protocol violation, are queued when `poll_event` reaches
//! the point in the stream where they happened, so the application's replies
//! to the messages before them are sent first (Autobahn 3.2, 4.1.3, 5.15).

use std::collections::VecDeque;
use std::fmt;

use bytes::{Buf, Bytes, BytesMut};

use crate::close::{CloseCode, CloseFrame};
use crate::deflate::{Codec, DeflateParams};
use crate::error::ProtocolError;
use crate::frame::{FrameHeader, OpCode, Transmit};
use crate::limits::Limits;
use crate::mask;
use crate::message::{Message, Utf8Bytes};
use crate::utf8::Utf8Validator;

/// Which end of the connection this is.
#[allow(clippy::exhaustive_enums)] // a connection has exactly two ends
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub enum Role {
    /// The end that opened the connection; its frames are masked.
    Client,
    /// The end that accepted it; its frames are never masked.
    Server,
}

/// Where the close handshake stands (the WebSocket API's ready states after
/// the opening handshake, in their spec order).
#[allow(clippy::exhaustive_enums)] // the ready states of the WebSocket API
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub enum State {
    /// Messages flow both ways.
    Open,
    /// We sent a close frame and wait for the peer's.
    Closing,
    /// Both close frames were exchanged, or the connection failed.
    Closed,
}

/// What [`Connection::poll_event`] yields.
#[derive(Clone, Debug, Eq, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// A complete message.
    Message(Message),
    /// The peer's close frame. If we had not sent one, the echo is queued.
    Close(CloseFrame),
}

/// Why a command could not be carried out.
#[derive(Clone, Copy, Debug, Eq, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// A close frame was already sent or the connection failed.
    #[error("the connection is closing or closed")]
    Closed,
    /// A ping or pong payload was over 125 bytes.
    #[error("control frame payload over 125 bytes")]
    ControlTooLong,
    /// The close code may not be sent (1005, 1006, 1015 or out of range).
    #[error("close code {0} may not be sent")]
    CodeNotSendable(CloseCode),
}

/// Where a client's masking keys come from.
type MaskSource = Box<dyn FnMut() -> [u8; 4] + Send + Sync>;

/// A sans-IO WebSocket connection after the opening handshake.
pub struct Connection {
    role: Role,
    state: State,
    limits: Caps,
    rsv_allowed: u8,
    frame: Option<RxFrame>,
    /// Boxed: it exists only while a fragmented message is arriving.
    message: Option<Box<RxMessage>>,
    utf8: Utf8Validator,
    events: VecDeque<Event>,
    transmits: VecDeque<Transmit>,
    queued: usize,
    /// Boxed, like the other rare parts: a connection is mostly idle state.
    error: Option<Box<ProtocolError>>,
    peer_close: Option<Box<CloseFrame>>,
    /// The input is over: a close frame or a violation was parsed.
    input_done: bool,
    /// A violation found behind events not yet polled.
    deferred: Option<Box<ProtocolError>>,
    /// Client only; a thin box, so a server pays 8 bytes for it.
    mask_source: Option<Box<MaskSource>>,
    deflate: Option<Box<Codec>>,
}

/// [`Limits`] in 32 bits each, as a connection holds them: it is mostly idle
/// state. A limit above `u32::MAX` (4 GiB) counts as 4 GiB, more than a
/// frame or message could be buffered anyway.
#[derive(Clone, Copy, Debug)]
struct Caps {
    frame: u32,
    message: u32,
    fragments: u32,
}

impl Caps {
    fn new(l: Limits) -> Self {
        let cap = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        Self {
            frame: cap(l.max_frame_size),
            message: cap(l.max_message_size),
            fragments: cap(l.max_fragments),
        }
    }

    fn frame(self) -> usize {
        self.frame as usize
    }

    fn message(self) -> usize {
        self.message as usize
    }

    fn fragments(self) -> usize {
        self.fragments as usize
    }
}

/// The frame being received: header decoded, payload not yet complete.
/// Lengths fit 32 bits: a frame is at most `Caps::frame`.
#[derive(Debug)]
struct RxFrame {
    fin: bool,
    opcode: OpCode,
    mask: Option<[u8; 4]>,
    len: u32,
    /// Payload bytes at the front of the buffer already unmasked (and, for
    /// uncompressed text, validated).
    processed: u32,
    /// Whether the message is text.
    text: bool,
    /// Whether the message is compressed (permessage-deflate).
    compressed: bool,
}

/// A fragmented message being assembled.
#[derive(Debug)]
struct RxMessage {
    text: bool,
    compressed: bool,
    data: BytesMut,
    fragments: usize,
}

impl Connection {
    /// A server-side connection.
    pub fn server(limits: Limits) -> Self {
        Self::new(Role::Server, limits, None)
    }

    /// A client-side connection; `mask_source` supplies a fresh, unpredictable
    /// masking key for every frame (RFC 6455 §5.3).
    pub fn client(
        limits: Limits,
        mask_source: impl FnMut() -> [u8; 4] + Send + Sync + 'static,
    ) -> Self {
        Self::new(Role::Client, limits, Some(Box::new(Box::new(mask_source))))
    }

    fn new(role: Role, limits: Limits, mask_source: Option<Box<MaskSource>>) -> Self {
        Self {
            role,
            state: State::Open,
            limits: Caps::new(limits),
            rsv_allowed: 0,
            frame: None,
            message: None,
            utf8: Utf8Validator::new(),
            events: VecDeque::new(),
            transmits: VecDeque::new(),
            queued: 0,
            error: None,
            peer_close: None,
            input_done: false,
            deferred: None,
            mask_source,
            deflate: None,
        }
    }

    /// Turns on permessage-deflate with the parameters agreed in the
    /// handshake: RSV1 becomes legal on a message's first frame.
    #[must_use]
    pub fn with_deflate(mut self, params: DeflateParams) -> Self {
        self.rsv_allowed = 0b100;
        let local = match self.role {
            Role::Server => params,
            Role::Client => params.mirrored(),
        };
        self.deflate = Some(Box::new(Codec::new(params, local)));
        self
    }

    /// The permessage-deflate parameters in force, as agreed in the
    /// handshake, if negotiated.
    pub fn deflate(&self) -> Option<&DeflateParams> {
        self.deflate.as_ref().map(|c| &c.agreed)
    }

    /// This end's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The close handshake's progress.
    pub fn state(&self) -> State {
        self.state
    }

    /// The limits in force (each at most `u32::MAX`).
    pub fn limits(&self) -> Limits {
        Limits {
            max_frame_size: self.limits.frame(),
            max_message_size: self.limits.message(),
            max_fragments: self.limits.fragments(),
        }
    }

    /// The protocol error that failed the connection, if one did.
    pub fn error(&self) -> Option<&ProtocolError> {
        self.error.as_deref()
    }

    /// The close frame the peer sent, once it has.
    pub fn peer_close(&self) -> Option<&CloseFrame> {
        self.peer_close.as_deref()
    }

    /// Bytes queued for the transport and not yet taken by `poll_transmit`.
    pub fn buffered_amount(&self) -> usize {
        self.queued
    }

    /// Lets go of the storage of empty queues, for a connection that has
    /// gone quiet; they grow again on use.
    pub fn shrink(&mut self) {
        if self.events.is_empty() {
            self.events = VecDeque::new();
        }
        if self.transmits.is_empty() {
            self.transmits = VecDeque::new();
        }
    }

    /// Whether nothing is left to do but close the transport: the state is
    /// `Closed` and every transmit was taken.
    pub fn is_finished(&self) -> bool {
        self.state == State::Closed && self.transmits.is_empty()
    }

    /// Bytes of the frame being received that have not arrived yet: `0`
    /// between frames (or while a header is incomplete). A reader that has
    /// this much room left in its buffer before the next read receives the
    /// frame without moving it.
    pub fn input_needed(&self) -> usize {
        self.frame
            .as_ref()
            .map_or(0, |f| (f.len - f.processed) as usize)
    }

    /// Feeds bytes read from the transport.
    ///
    /// Whole frames are consumed from the front of `buf` and their payloads
    /// unmasked in place; a partial frame stays in `buf` (text already
    /// unmasked and validated, so bad UTF-8 fails before the frame ends).
    /// Pass the same buffer again, with more bytes appended, on the next
    /// call; [`Connection::input_needed`] tells how many bytes the partial
    /// frame still lacks, so that a reader can make room for it at once.
    ///
    /// # Errors
    /// On a protocol violation or exceeded limit. Once the events before it
    /// are polled, the connection is `Closed` with a close frame carrying
    /// [`ProtocolError::close_code`] queued. Later calls discard their input.
    pub fn receive(&mut self, buf: &mut BytesMut) -> Result<(), ProtocolError> {
        if self.input_done || self.state == State::Closed {
            buf.clear();
            return Ok(());
        }
        match self.receive_frames(buf) {
            Ok(()) => Ok(()),
            Err(e) => {
                buf.clear();
                self.input_done = true;
                self.frame = None;
                self.message = None;
                self.error = Some(Box::new(e.clone()));
                if self.events.is_empty() {
                    self.fail(e.clone());
                } else {
                    self.deferred = Some(Box::new(e.clone()));
                }
                Err(e)
            }
        }
    }

    /// Whether events are waiting for [`Connection::poll_event`].
    pub fn has_events(&self) -> bool {
        !self.events.is_empty() || self.deferred.is_some()
    }

    /// The next event, if any. Reaching the peer's close frame queues its
    /// echo; reaching a protocol violation queues the failing close frame.
    pub fn poll_event(&mut self) -> Option<Event> {
        let Some(event) = self.events.pop_front() else {
            if let Some(e) = self.deferred.take() {
                self.fail(*e);
            }
            return None;
        };
        if let Event::Close(close) = &event {
            if self.state == State::Open {
                let echo = CloseFrame {
                    code: close.code,
                    reason: Utf8Bytes::new(),
                };
                self.send_close(&echo);
            }
            self.state = State::Closed;
            self.peer_close = Some(Box::new(close.clone()));
        }
        Some(event)
    }

    /// The next frame to write, if any.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        let t = self.transmits.pop_front()?;
        self.queued -= t.len();
        Some(t)
    }

    /// Queues a message.
    ///
    /// # Errors
    /// If the close handshake has begun, or a ping/pong payload is over 125
    /// bytes.
    pub fn send(&mut self, message: Message) -> Result<(), SendError> {
        self.send_with(message, true)
    }

    /// Queues a message that is never compressed, even with permessage-deflate
    /// on: for payloads mixing secrets with attacker-chosen data (CRIME,
    /// BREACH).
    ///
    /// # Errors
    /// As for [`Connection::send`].
    pub fn send_uncompressed(&mut self, message: Message) -> Result<(), SendError> {
        self.send_with(message, false)
    }

    fn send_with(&mut self, message: Message, compress: bool) -> Result<(), SendError> {
        let (opcode, payload) = match message {
            Message::Text(t) => (OpCode::Text, t.into_bytes()),
            Message::Binary(b) => (OpCode::Binary, b),
            Message::Ping(b) => (OpCode::Ping, b),
            Message::Pong(b) => (OpCode::Pong, b),
        };
        if opcode.is_control() && payload.len() > 125 {
            return Err(SendError::ControlTooLong);
        }
        if self.state != State::Open {
            return Err(SendError::Closed);
        }
        let t = match self.deflate.as_mut() {
            Some(codec)
                if compress && !opcode.is_control() && payload.len() >= codec.params.threshold =>
            {
                let compressed = codec.compress(&payload);
                self.encode_rsv(opcode, compressed, 0b100)
            }
            _ => self.encode(opcode, payload),
        };
        self.push(t);
        Ok(())
    }

    /// Queues a frame encoded elsewhere, such as one broadcast frame shared
    /// by many connections. Only for the server role: the frame must be
    /// unmasked and final.
    ///
    /// # Errors
    /// If the close handshake has begun.
    pub fn send_encoded(&mut self, transmit: Transmit) -> Result<(), SendError> {
        if self.state != State::Open {
            return Err(SendError::Closed);
        }
        self.push(transmit);
        Ok(())
    }

    /// Drops every queued frame not yet taken by `poll_transmit`, returning
    /// how many bytes were dropped. For a peer that reads too slowly: drop
    /// its backlog, then [`Connection::close`] it.
    pub fn discard_transmits(&mut self) -> usize {
        self.transmits.clear();
        std::mem::take(&mut self.queued)
    }

    /// Queues a ping.
    ///
    /// # Errors
    /// As for [`Connection::send`].
    pub fn ping(&mut self, payload: Bytes) -> Result<(), SendError> {
        self.send(Message::Ping(payload))
    }

    /// Starts the close handshake (§7.1.2) with `code` and `reason` (cut to
    /// 123 bytes at a character boundary).
    ///
    /// # Errors
    /// If a close frame was already sent, or `code` may not be sent.
    pub fn close(&mut self, code: CloseCode, reason: &str) -> Result<(), SendError> {
        if !code.is_sendable() {
            return Err(SendError::CodeNotSendable(code));
        }
        if self.state != State::Open {
            return Err(SendError::Closed);
        }
        self.send_close(&CloseFrame::new(code, reason));
        self.state = State::Closing;
        Ok(())
    }

    fn receive_frames(&mut self, buf: &mut BytesMut) -> Result<(), ProtocolError> {
        while !self.input_done {
            let frame = match self.frame.take() {
                Some(frame) => frame,
                None => match FrameHeader::decode(buf)? {
                    Some((header, n)) => {
                        let frame = self.check_header(header)?;
                        buf.advance(n);
                        frame
                    }
                    None => return Ok(()),
                },
            };
            if buf.len() < frame.len as usize {
                self.partial(frame, buf)?;
                return Ok(());
            }
            let mut payload = buf.split_to(frame.len as usize);
            let done = frame.processed as usize;
            if let Some(key) = frame.mask {
                mask::apply(&mut payload[done..], key, done);
            }
            self.complete(frame, payload)?;
        }
        buf.clear();
        Ok(())
    }

    /// Checks a header against role, extensions, fragmentation and limits,
    /// before any of its payload is buffered.
    fn check_header(&mut self, h: FrameHeader) -> Result<RxFrame, ProtocolError> {
        let rsv1 = h.rsv & 0b100 != 0;
        if h.rsv & !self.rsv_allowed != 0
            || (rsv1
                && matches!(
                    h.opcode,
                    OpCode::Continuation | OpCode::Close | OpCode::Ping | OpCode::Pong
                ))
        {
            return Err(ProtocolError::ReservedBitsSet);
        }
        match (self.role, h.mask.is_some()) {
            (Role::Server, false) => return Err(ProtocolError::MaskMissing),
            (Role::Client, true) => return Err(ProtocolError::MaskUnexpected),
            _ => {}
        }
        let (held, fragments) = match &self.message {
            Some(m) => (m.data.len(), m.fragments),
            None => (0, 0),
        };
        let (text, compressed) = match h.opcode {
            OpCode::Continuation => match &self.message {
                Some(m) => (m.text, m.compressed),
                None => return Err(ProtocolError::ContinuationUnexpected),
            },
            OpCode::Text | OpCode::Binary if self.message.is_some() => {
                return Err(ProtocolError::ContinuationExpected);
            }
            op => (op == OpCode::Text, rsv1),
        };
        let max_frame = self.limits.frame;
        let len = u32::try_from(h.payload_len)
            .ok()
            .filter(|&len| len <= max_frame)
            .ok_or(ProtocolError::FrameTooBig {
                len: h.payload_len,
                max: max_frame as usize,
            })?;
        if !h.opcode.is_control() {
            if held + len as usize > self.limits.message() {
                return Err(ProtocolError::MessageTooBig {
                    max: self.limits.message(),
                });
            }
            if h.opcode == OpCode::Continuation && fragments >= self.limits.fragments() {
                return Err(ProtocolError::FragmentsTooMany {
                    max: self.limits.fragments(),
                });
            }
        }
        Ok(RxFrame {
            fin: h.fin,
            opcode: h.opcode,
            mask: h.mask,
            len,
            processed: 0,
            text,
            compressed,
        })
    }

    /// Handles the part of a frame that has arrived: it is unmasked now,
    /// while the bytes are fresh in cache, and text is validated so that bad
    /// UTF-8 fails fast (Autobahn 6.4.x).
    fn partial(&mut self, mut frame: RxFrame, buf: &mut BytesMut) -> Result<(), ProtocolError> {
        let done = frame.processed as usize;
        if buf.len() > done {
            let fresh = &mut buf[done..];
            if let Some(key) = frame.mask {
                mask::apply(fresh, key, done);
            }
            if frame.text && !frame.compressed {
                if frame.processed == 0 && self.message.is_none() {
                    self.utf8 = Utf8Validator::new();
                }
                self.utf8
                    .feed(fresh)
                    .map_err(|_| ProtocolError::TextNotUtf8)?;
            }
            // Lossless: fewer bytes than the frame's 32-bit length.
            frame.processed = buf.len() as u32;
        }
        self.frame = Some(frame);
        Ok(())
    }

    fn complete(&mut self, frame: RxFrame, payload: BytesMut) -> Result<(), ProtocolError> {
        match frame.opcode {
            OpCode::Ping => {
                let payload = payload.freeze();
                if self.state == State::Open {
                    let pong = self.encode(OpCode::Pong, payload.clone());
                    self.push(pong);
                }
                self.events
                    .push_back(Event::Message(Message::Ping(payload)));
            }
            OpCode::Pong => self
                .events
                .push_back(Event::Message(Message::Pong(payload.freeze()))),
            OpCode::Close => {
                let close = CloseFrame::decode(payload.freeze())?;
                self.input_done = true;
                self.message = None;
                self.events.push_back(Event::Close(close));
            }
            OpCode::Text | OpCode::Binary if frame.fin && frame.compressed => {
                let message = self.inflate(frame.text, &payload)?;
                self.events.push_back(Event::Message(message));
            }
            OpCode::Text | OpCode::Binary if frame.fin => {
                let message = if frame.text {
                    if frame.processed > 0 {
                        self.check_utf8(&payload[frame.processed as usize..], true)?;
                    }
                    let text = Utf8Bytes::try_from(payload.freeze())
                        .map_err(|_| ProtocolError::TextNotUtf8)?;
                    Message::Text(text)
                } else {
                    Message::Binary(payload.freeze())
                };
                self.events.push_back(Event::Message(message));
            }
            OpCode::Text | OpCode::Binary => {
                if frame.text && !frame.compressed {
                    if frame.processed == 0 {
                        self.utf8 = Utf8Validator::new();
                    }
                    self.check_utf8(&payload[frame.processed as usize..], false)?;
                }
                self.message = Some(Box::new(RxMessage {
                    text: frame.text,
                    compressed: frame.compressed,
                    data: payload,
                    fragments: 1,
                }));
            }
            OpCode::Continuation => {
                if frame.text && !frame.compressed {
                    self.check_utf8(&payload[frame.processed as usize..], frame.fin)?;
                }
                let Some(message) = self.message.as_mut() else {
                    return Err(ProtocolError::ContinuationUnexpected);
                };
                message.data.extend_from_slice(&payload);
                message.fragments += 1;
                if frame.fin
                    && let Some(m) = self.message.take()
                {
                    let message = if m.compressed {
                        self.inflate(m.text, &m.data)?
                    } else if m.text {
                        Message::Text(
                            Utf8Bytes::try_from(m.data.freeze())
                                .map_err(|_| ProtocolError::TextNotUtf8)?,
                        )
                    } else {
                        Message::Binary(m.data.freeze())
                    };
                    self.events.push_back(Event::Message(message));
                }
            }
        }
        Ok(())
    }

    /// Inflates a whole compressed message, bounded by the message limit.
    fn inflate(&mut self, text: bool, payload: &[u8]) -> Result<Message, ProtocolError> {
        let limit = self.limits.message();
        let Some(codec) = self.deflate.as_mut() else {
            return Err(ProtocolError::ReservedBitsSet);
        };
        let data = codec.decompress(payload, limit)?;
        Ok(if text {
            Message::Text(Utf8Bytes::try_from(data).map_err(|_| ProtocolError::TextNotUtf8)?)
        } else {
            Message::Binary(data)
        })
    }

    fn check_utf8(&mut self, bytes: &[u8], fin: bool) -> Result<(), ProtocolError> {
        self.utf8
            .feed(bytes)
            .map_err(|_| ProtocolError::TextNotUtf8)?;
        if fin {
            self.utf8.finish().map_err(|_| ProtocolError::TextNotUtf8)?;
        }
        Ok(())
    }

    /// Fails the connection (§7.1.7): queue a close frame with the error's
    /// code and reason, and process no more input.
    fn fail(&mut self, e: ProtocolError) {
        if self.state == State::Open {
            self.send_close(&CloseFrame::new(e.close_code(), &e.to_string()));
        }
        self.state = State::Closed;
        self.error = Some(Box::new(e));
    }

    fn send_close(&mut self, frame: &CloseFrame) {
        let t = self.encode(OpCode::Close, frame.encode());
        self.push(t);
    }

    fn encode(&mut self, opcode: OpCode, payload: Bytes) -> Transmit {
        self.encode_rsv(opcode, payload, 0)
    }

    fn encode_rsv(&mut self, opcode: OpCode, payload: Bytes, rsv: u8) -> Transmit {
        let mut header = FrameHeader::new(true, opcode, None, payload.len() as u64);
        header.rsv = rsv;
        match (self.role, self.mask_source.as_mut()) {
            (Role::Client, Some(source)) => {
                let key = source();
                header.mask = Some(key);
                let mut masked = payload.to_vec();
                mask::apply(&mut masked, key, 0);
                Transmit::with_header(header, masked.into())
            }
            _ => Transmit::with_header(header, payload),
        }
    }

    fn push(&mut self, t: Transmit) {
        self.queued += t.len();
        self.transmits.push_back(t);
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("role", &self.role)
            .field("state", &self.state)
            .field("limits", &self.limits)
            .field("frame", &self.frame)
            .field("message", &self.message)
            .field("events", &self.events.len())
            .field("transmits", &self.transmits.len())
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}
