//! permessage-deflate (RFC 7692): negotiation (§5, §7.1), and the codec
//! (§7.2): RSV1 on a message's first frame, the `00 00 FF FF` tail stripped
//! and re-appended, context takeover or reset per the negotiated parameters.
//!
//! Deflate itself is zlib-rs through flate2 (raw deflate, no zlib header).
//! Two deliberate choices:
//! - We always inflate with a 15-bit window: a larger window decodes any
//!   stream made with a smaller one, so `client_max_window_bits` only
//!   constrains the client.
//! - zlib cannot deflate with an 8-bit window (it silently uses 9, and
//!   nothing it documents keeps its distances within 256 bytes, which a
//!   peer inflating with 8 bits needs). A server declines an offer
//!   demanding `server_max_window_bits=8` and considers the next one. A
//!   client told `client_max_window_bits=8` honours it by construction: it
//!   compresses each 256-byte piece of a message as a fresh deflate stream
//!   (`compress_narrow`), so no back-reference reaches further than 255
//!   bytes, whatever the deflate implementation does; the price is a worse
//!   ratio for such clients only.
//!
//! Compressors and decompressors without context takeover hold no state
//! between messages, so they are shared per thread instead of owned by a
//! connection: an idle connection in that mode costs no deflate memory.
//! With context takeover, a connection owns its state, allocated when its
//! first compressed message is sent or received.

use std::cell::RefCell;
use std::fmt::Write as _;

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use http::HeaderValue;

use crate::error::ProtocolError;

pub(crate) mod client;

/// The tail a sync flush ends with, stripped on send and re-appended on
/// receive (§7.2.1, §7.2.2).
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// The extension's name in `Sec-WebSocket-Extensions`.
pub const EXTENSION: &str = "permessage-deflate";

/// A server's compression policy.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
#[non_exhaustive]
pub struct DeflateConfig {
    /// Keep an LZ77 window per connection and direction (better ratio, about
    /// 2^(bits+2) bytes to compress and 2^15 to inflate, per connection once
    /// used) instead of resetting per message with per-thread state (no
    /// memory per idle connection). Default `false`: the shared mode.
    pub context_takeover: bool,
    /// The largest window the server compresses with, 9 to 15. Default 15.
    pub server_max_window_bits: u8,
    /// Asks clients that allow it to compress with at most this window, 9 to
    /// 15 (15: no request). Default 15.
    pub client_max_window_bits: u8,
    /// The zlib compression level, 0 to 9. Default 6.
    pub level: u32,
    /// Messages shorter than this are sent uncompressed. Default 64 bytes.
    pub threshold: usize,
}

impl Default for DeflateConfig {
    fn default() -> Self {
        Self {
            context_takeover: false,
            server_max_window_bits: 15,
            client_max_window_bits: 15,
            level: 6,
            threshold: 64,
        }
    }
}

impl DeflateConfig {
    /// The shared mode: no context takeover in either direction, deflate
    /// state shared per thread, nothing held by an idle connection.
    pub fn shared() -> Self {
        Self::default()
    }

    /// The dedicated mode: context takeover in both directions, with at most
    /// `window_bits` (9 to 15) of window for the server's compressor.
    pub fn dedicated(window_bits: u8) -> Self {
        Self {
            context_takeover: true,
            server_max_window_bits: window_bits.clamp(9, 15),
            ..Self::default()
        }
    }

    /// Sets [`DeflateConfig::level`].
    #[must_use]
    pub fn level(mut self, level: u32) -> Self {
        self.level = level.min(9);
        self
    }

    /// Sets [`DeflateConfig::threshold`].
    #[must_use]
    pub fn threshold(mut self, bytes: usize) -> Self {
        self.threshold = bytes;
        self
    }
}

/// The parameters agreed for one connection.
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
#[non_exhaustive]
pub struct DeflateParams {
    /// The server resets its compressor after every message.
    pub server_no_context_takeover: bool,
    /// The client resets its compressor after every message.
    pub client_no_context_takeover: bool,
    /// The server's compression window.
    pub server_max_window_bits: u8,
    /// The client's compression window, as agreed (15 if unconstrained).
    pub client_max_window_bits: u8,
    /// The compression level the server uses.
    pub level: u32,
    /// Messages shorter than this are sent uncompressed.
    pub threshold: usize,
}

impl DeflateParams {
    /// The same agreement seen from the client: the `server_*` fields are
    /// then the client's own compressor's, which is how the codec reads them.
    pub(crate) fn mirrored(self) -> Self {
        Self {
            server_no_context_takeover: self.client_no_context_takeover,
            client_no_context_takeover: self.server_no_context_takeover,
            // 8 stays 8: the codec honours it (`compress_narrow`).
            server_max_window_bits: self.client_max_window_bits,
            client_max_window_bits: self.server_max_window_bits,
            ..self
        }
    }

    /// Whether a frame this connection would send for a message can be
    /// shared with other connections with the same key: true when the
    /// server's compressor keeps no context between messages.
    pub fn shareable(&self) -> bool {
        self.server_no_context_takeover
    }
}

/// One `permessage-deflate` offer as parsed, before it is judged.
#[derive(Clone, Debug, Default, Eq, PartialEq)]
pub(crate) struct Offer {
    params: Vec<(String, Option<String>)>,
}

/// The header was not valid `Sec-WebSocket-Extensions` syntax (RFC 6455
/// §9.1).
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub(crate) struct Malformed;

/// Parses `Sec-WebSocket-Extensions` values, returning the
/// `permessage-deflate` offers in order. Other extensions are skipped.
/// One pass over the input; nothing quadratic.
pub(crate) fn parse_offers<'a>(
    values: impl Iterator<Item = &'a HeaderValue>,
) -> Result<Vec<Offer>, Malformed> {
    parse_answers(values).map(|(offers, _)| offers)
}

/// Parses `Sec-WebSocket-Extensions` values: the `permessage-deflate`
/// elements in order, and how many elements name other extensions (a
/// response may name none that was not offered).
pub(crate) fn parse_answers<'a>(
    values: impl Iterator<Item = &'a HeaderValue>,
) -> Result<(Vec<Offer>, usize), Malformed> {
    let mut others = 0;
    let mut offers = Vec::new();
    for value in values {
        let mut p = Parser {
            s: value.as_bytes(),
            at: 0,
        };
        loop {
            p.skip_ows();
            if p.eat(b',') {
                continue; // empty list elements are allowed (RFC 7230 §7)
            }
            if p.done() {
                break;
            }
            let name = p.token()?;
            let mut offer = Offer::default();
            loop {
                p.skip_ows();
                if !p.eat(b';') {
                    break;
                }
                p.skip_ows();
                let key = p.token()?;
                p.skip_ows();
                let val = if p.eat(b'=') {
                    p.skip_ows();
                    Some(if p.peek() == Some(b'"') {
                        p.quoted()?
                    } else {
                        p.token()?
                    })
                } else {
                    None
                };
                offer.params.push((key.to_ascii_lowercase(), val));
            }
            p.skip_ows();
            if !p.done() && !p.eat(b',') {
                return Err(Malformed);
            }
            if name.eq_ignore_ascii_case(EXTENSION) {
                offers.push(offer);
            } else {
                others += 1;
            }
        }
    }
    Ok((offers, others))
}

struct Parser<'a> {
    s: &'a [u8],
    at: usize,
}

impl Parser<'_> {
    fn done(&self) -> bool {
        self.at >= self.s.len()
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.at).copied()
    }

    fn eat(&mut self, c: u8) -> bool {
        let hit = self.peek() == Some(c);
        self.at += usize::from(hit);
        hit
    }

    fn skip_ows(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.at += 1;
        }
    }

    fn token(&mut self) -> Result<String, Malformed> {
        let start = self.at;
        while self.peek().is_some_and(is_tchar) {
            self.at += 1;
        }
        if self.at == start {
            return Err(Malformed);
        }
        Ok(String::from_utf8_lossy(&self.s[start..self.at]).into_owned())
    }

    /// A quoted string whose content must itself be a token (§9.1).
    fn quoted(&mut self) -> Result<String, Malformed> {
        self.at += 1;
        let mut out = String::new();
        loop {
            match self.peek() {
                None => return Err(Malformed),
                Some(b'"') => {
                    self.at += 1;
                    break;
                }
                Some(b'\\') => {
                    let c = self.s.get(self.at + 1).copied().ok_or(Malformed)?;
                    out.push(char::from(c));
                    self.at += 2;
                }
                Some(c) => {
                    out.push(char::from(c));
                    self.at += 1;
                }
            }
        }
        if out.is_empty() || !out.bytes().all(is_tchar) {
            return Err(Malformed);
        }
        Ok(out)
    }
}

fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

/// A window-bits value: `8` to `15`, no leading zero (RFC 7692 §7.1.2).
fn window_bits(v: &str) -> Option<u8> {
    match v {
        "8" | "9" => v.parse().ok(),
        "10" | "11" | "12" | "13" | "14" | "15" => v.parse().ok(),
        _ => None,
    }
}

/// Picks the first acceptable offer (§5.1): unknown, duplicate or invalid
/// parameters decline an offer, and so does `server_max_window_bits=8`.
/// Returns the agreed parameters and the response header value.
pub(crate) fn negotiate(
    offers: &[Offer],
    config: &DeflateConfig,
) -> Option<(DeflateParams, HeaderValue)> {
    offers.iter().find_map(|offer| accept(offer, config))
}

fn accept(offer: &Offer, config: &DeflateConfig) -> Option<(DeflateParams, HeaderValue)> {
    let mut server_nct = false;
    let mut client_nct = false;
    let mut server_bits: Option<u8> = None;
    let mut client_bits: Option<Option<u8>> = None;
    for (i, (key, val)) in offer.params.iter().enumerate() {
        if offer.params[..i].iter().any(|(k, _)| k == key) {
            return None;
        }
        match (key.as_str(), val.as_deref()) {
            ("server_no_context_takeover", None) => server_nct = true,
            ("client_no_context_takeover", None) => client_nct = true,
            ("server_max_window_bits", Some(v)) => server_bits = Some(window_bits(v)?),
            ("client_max_window_bits", None) => client_bits = Some(None),
            ("client_max_window_bits", Some(v)) => client_bits = Some(Some(window_bits(v)?)),
            _ => return None,
        }
    }
    if server_bits == Some(8) {
        return None;
    }
    let configured = config.server_max_window_bits.clamp(9, 15);
    let server_window = server_bits.map_or(configured, |b| b.min(configured));
    let params = DeflateParams {
        server_no_context_takeover: server_nct || !config.context_takeover,
        client_no_context_takeover: client_nct || !config.context_takeover,
        server_max_window_bits: server_window,
        client_max_window_bits: match client_bits {
            Some(offered) => offered
                .unwrap_or(15)
                .min(config.client_max_window_bits.clamp(8, 15)),
            None => 15,
        },
        level: config.level.min(9),
        threshold: config.threshold,
    };
    let mut header = String::from(EXTENSION);
    if params.server_no_context_takeover {
        header.push_str("; server_no_context_takeover");
    }
    if params.client_no_context_takeover {
        header.push_str("; client_no_context_takeover");
    }
    if server_bits.is_some() {
        let _ = write!(
            header,
            "; server_max_window_bits={}",
            params.server_max_window_bits
        );
    }
    if client_bits.is_some() && params.client_max_window_bits < 15 {
        let _ = write!(
            header,
            "; client_max_window_bits={}",
            params.client_max_window_bits
        );
    }
    let header = HeaderValue::try_from(header).ok()?;
    Some((params, header))
}

/// The deflate state of one connection. `params` is seen from this end:
/// `server_*` describes our compressor, `client_*` the peer's.
#[derive(Debug)]
pub(crate) struct Codec {
    pub(crate) agreed: DeflateParams,
    pub(crate) params: DeflateParams,
    /// Owned only with context takeover, from the first use.
    compressor: Option<Box<Compress>>,
    decompressor: Option<Box<Decompress>>,
}

thread_local! {
    /// Compressors without context takeover, by (window bits, level).
    static COMPRESSORS: RefCell<Vec<((u8, u32), Compress)>> = const { RefCell::new(Vec::new()) };
    /// The decompressor for messages without context takeover.
    static DECOMPRESSOR: RefCell<Option<Decompress>> = const { RefCell::new(None) };
}

impl Codec {
    pub(crate) fn new(agreed: DeflateParams, local: DeflateParams) -> Self {
        Self {
            agreed,
            params: local,
            compressor: None,
            decompressor: None,
        }
    }

    /// Compresses a whole message (§7.2.1), without the sync-flush tail.
    pub(crate) fn compress(&mut self, input: &[u8]) -> Bytes {
        let p = self.params;
        if p.server_max_window_bits < 9 {
            return compress_narrow(p.level, input);
        }
        if p.server_no_context_takeover {
            return compress_shared(p.server_max_window_bits, p.level, input);
        }
        let c = self.compressor.get_or_insert_with(|| {
            Box::new(Compress::new_with_window_bits(
                Compression::new(p.level),
                false,
                p.server_max_window_bits,
            ))
        });
        deflate_into(c, input)
    }

    /// Drops a dedicated compressor; the next message starts a fresh
    /// stream, without references to earlier messages, which the peer's
    /// decompressor (keeping its window) takes like any other (§7.2.3.2).
    pub(crate) fn release_compressor(&mut self) {
        self.compressor = None;
    }

    /// Inflates a whole message (§7.2.2), failing with 1009 the moment the
    /// output would exceed `limit`.
    #[cfg(test)]
    pub(crate) fn decompress(
        &mut self,
        input: &[u8],
        limit: usize,
    ) -> Result<Bytes, ProtocolError> {
        let mut decoder = self.take_decoder();
        let out = decoder.decompress(input, limit);
        self.put_decoder(decoder);
        out
    }

    /// Takes the decompressor out, so that a message can be inflated
    /// outside whatever guards this codec; [`Codec::put_decoder`] puts it
    /// back.
    pub(crate) fn take_decoder(&mut self) -> Decoder {
        if self.params.client_no_context_takeover {
            Decoder::Shared
        } else {
            Decoder::Own(self.decompressor.take())
        }
    }

    pub(crate) fn put_decoder(&mut self, decoder: Decoder) {
        if let Decoder::Own(d) = decoder {
            self.decompressor = d;
        }
    }
}

/// A connection's decompressor, taken out of its codec for one message:
/// this thread's shared one (no context takeover), or the connection's own
/// (allocated on first use).
#[derive(Debug)]
pub(crate) enum Decoder {
    Shared,
    Own(Option<Box<Decompress>>),
}

impl Decoder {
    /// Inflates a whole message (§7.2.2), failing with 1009 the moment the
    /// output would exceed `limit`.
    pub(crate) fn decompress(
        &mut self,
        input: &[u8],
        limit: usize,
    ) -> Result<Bytes, ProtocolError> {
        if input.is_empty() {
            // Not valid deflate (an empty message compresses to 0x00), but
            // unambiguous: accept it as empty without touching the window.
            return Ok(Bytes::new());
        }
        match self {
            Self::Shared => DECOMPRESSOR.with(|cell| {
                let mut slot = cell.borrow_mut();
                let d = slot.get_or_insert_with(|| Decompress::new_with_window_bits(false, 15));
                d.reset(false);
                inflate_into(d, input, limit)
            }),
            Self::Own(d) => {
                let d =
                    d.get_or_insert_with(|| Box::new(Decompress::new_with_window_bits(false, 15)));
                inflate_into(d, input, limit)
            }
        }
    }
}

/// Compresses with this thread's compressor for (window bits, level),
/// resetting it afterwards: the result depends only on the input, so it can
/// be shared by every connection with the same parameters.
pub(crate) fn compress_shared(window_bits: u8, level: u32, input: &[u8]) -> Bytes {
    COMPRESSORS.with(|cell| {
        let mut pool = cell.borrow_mut();
        let key = (window_bits, level);
        let at = match pool.iter().position(|(k, _)| *k == key) {
            Some(at) => at,
            None => {
                pool.push((
                    key,
                    Compress::new_with_window_bits(Compression::new(level), false, window_bits),
                ));
                pool.len() - 1
            }
        };
        let c = &mut pool[at].1;
        let out = deflate_into(c, input);
        c.reset();
        out
    })
}

/// The most bytes one back-reference may span for a peer inflating with an
/// 8-bit window.
const NARROW: usize = 1 << 8;

/// Compresses for a peer that allowed an 8-bit window: each `NARROW`-byte
/// piece is a stream of its own (sync-flushed, then the compressor reset),
/// so that no back-reference reaches past the piece it is in. The pieces'
/// streams follow one another as deflate blocks do, each starting on a
/// byte boundary after the previous one's sync flush; only the last tail is
/// stripped. Without context takeover by construction: nothing refers to an
/// earlier message, which the peer's decompressor takes either way.
fn compress_narrow(level: u32, input: &[u8]) -> Bytes {
    COMPRESSORS.with(|cell| {
        let mut pool = cell.borrow_mut();
        let key = (9, level);
        let at = match pool.iter().position(|(k, _)| *k == key) {
            Some(at) => at,
            None => {
                pool.push((
                    key,
                    Compress::new_with_window_bits(Compression::new(level), false, 9),
                ));
                pool.len() - 1
            }
        };
        let c = &mut pool[at].1;
        let mut out = Vec::with_capacity(input.len() / 2 + 64);
        for piece in input.chunks(NARROW) {
            deflate_raw(c, piece, &mut out);
            c.reset();
        }
        finish(out)
    })
}

fn deflate_into(c: &mut Compress, input: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(input.len() / 2 + 64);
    deflate_raw(c, input, &mut out);
    finish(out)
}

/// The deflate output of a message: the sync-flush tail stripped; an empty
/// message as a single 0x00 (§7.2.3.6).
fn finish(mut out: Vec<u8>) -> Bytes {
    if out.ends_with(&TAIL) {
        out.truncate(out.len() - TAIL.len());
    }
    if out.is_empty() {
        // zlib emits nothing for a flush with nothing new to flush; the
        // compressed form of an empty message is a single 0x00 (§7.2.3.6).
        out.push(0x00);
    }
    out.into()
}

/// Appends `input`, compressed and sync-flushed (tail included), to `out`.
fn deflate_raw(c: &mut Compress, input: &[u8], out: &mut Vec<u8>) {
    let start = c.total_in();
    loop {
        let consumed = (c.total_in() - start) as usize;
        if out.len() == out.capacity() {
            out.reserve(out.capacity().max(64));
        }
        // Compressing into memory cannot fail: the only errors zlib reports
        // are for misuse (a stream error) which this loop never causes.
        if c.compress_vec(&input[consumed..], out, FlushCompress::Sync)
            .is_err()
        {
            break;
        }
        let consumed = (c.total_in() - start) as usize;
        // A sync flush is complete once all input is in and zlib stopped
        // short of filling the output buffer.
        if consumed == input.len() && out.len() < out.capacity() {
            break;
        }
    }
}

fn inflate_into(d: &mut Decompress, input: &[u8], limit: usize) -> Result<Bytes, ProtocolError> {
    let mut out: Vec<u8> =
        Vec::with_capacity((input.len() * 4).clamp(256, 64 << 10).min(limit + 1));
    for part in [input, &TAIL[..]] {
        let start = d.total_in();
        loop {
            if out.len() == out.capacity() {
                // Grow by doubling, never past one byte over the limit.
                let grow = out.capacity().max(256).min(limit + 1 - out.len());
                out.reserve_exact(grow);
            }
            let before = (d.total_in(), d.total_out());
            let status = d
                .decompress_vec(
                    input_at(part, d.total_in() - start),
                    &mut out,
                    FlushDecompress::Sync,
                )
                .map_err(|_| ProtocolError::CompressedDataInvalid)?;
            if out.len() > limit {
                return Err(ProtocolError::MessageTooBig { max: limit });
            }
            if status == Status::StreamEnd {
                // The peer ended the deflate stream (BFINAL): the next
                // message starts a new one.
                d.reset(false);
                return Ok(out.into());
            }
            let consumed = (d.total_in() - start) as usize;
            let stalled = before == (d.total_in(), d.total_out());
            if (consumed == part.len() && out.len() < out.capacity())
                || (stalled && out.len() < out.capacity())
            {
                break;
            }
        }
    }
    Ok(out.into())
}

fn input_at(part: &[u8], consumed: u64) -> &[u8] {
    &part[(consumed as usize).min(part.len())..]
}

#[cfg(test)]
mod tests;
