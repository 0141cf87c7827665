//! The pre-standard drafts the seed's programs speak: draft-hixie-75 and
//! draft-hixie-76 (also published as draft-ietf-hybi-00), server side,
//! sans-IO: the opening handshake (validation, the `101`, the -76
//! challenge) and the framing helpers a [`Connection`](crate::Connection)
//! in a legacy mode ([`Connection::with_legacy`](crate::Connection::with_legacy))
//! uses.
//!
//! Framing, both drafts: a text frame is `0x00`, UTF-8, `0xFF`; a frame
//! type with the high bit clear other than `0x00` is read to its `0xFF`
//! and discarded; a frame type with the high bit set is followed by a
//! length (base 128, high bit = more) and that many bytes, discarded. In
//! -76 the frame `0xFF 0x00` is the closing handshake; -75 has none (the
//! transport's end is the close). The drafts have no masking, no binary
//! messages, no ping and no close codes: a legacy connection's close is
//! reported as code 1005 (no status), and its failures send `0xFF 0x00`
//! (-76) or nothing (-75) before the transport closes.
//!
//! Deliberate deviations: the same [`Limits`](crate::Limits) as RFC 6455
//! connections apply (a text frame longer than the message limit, or a
//! discarded frame longer than the frame limit, ends the connection), and
//! invalid UTF-8 ends the connection where the drafts would substitute
//! U+FFFD.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode, Uri, Version};
use md5::{Digest, Md5};

use crate::handshake::{Reject, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL, SEC_WEBSOCKET_VERSION};

/// `Sec-WebSocket-Key1` (-76).
pub const SEC_WEBSOCKET_KEY1: HeaderName = HeaderName::from_static("sec-websocket-key1");
/// `Sec-WebSocket-Key2` (-76).
pub const SEC_WEBSOCKET_KEY2: HeaderName = HeaderName::from_static("sec-websocket-key2");
/// `WebSocket-Protocol` (-75).
pub const WEBSOCKET_PROTOCOL: HeaderName = HeaderName::from_static("websocket-protocol");

/// The bytes a -76 client sends after its request head (`key3`), with no
/// `Content-Length`.
pub const KEY3_LEN: usize = 8;
/// The longest `Sec-WebSocket-Key1`/`-Key2` value taken: a client's key is
/// at most 10 digits, 12 spaces and 12 random characters.
pub const MAX_KEY_LEN: usize = 256;

/// A pre-standard WebSocket draft.
#[allow(clippy::exhaustive_enums)] // the two drafts the seed speaks; there will be no more
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub enum Draft {
    /// draft-hixie-thewebsocketprotocol-75.
    Hixie75,
    /// draft-hixie-thewebsocketprotocol-76 (draft-ietf-hybi-00).
    Hixie76,
}

impl Draft {
    /// The draft's name: `hixie-75` or `hixie-76`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Hixie75 => "hixie-75",
            Self::Hixie76 => "hixie-76",
        }
    }

    /// Whether the draft has a closing handshake (`0xFF 0x00`): -76 only.
    pub fn has_closing_handshake(self) -> bool {
        self == Self::Hixie76
    }
}

/// Which draft an upgrade request speaks, if it is not RFC 6455: one with
/// neither `Sec-WebSocket-Key` nor `Sec-WebSocket-Version` is -76 if it
/// carries `Sec-WebSocket-Key1` or `-Key2`, else -75.
pub fn detect(headers: &HeaderMap) -> Option<Draft> {
    if headers.contains_key(SEC_WEBSOCKET_KEY) || headers.contains_key(SEC_WEBSOCKET_VERSION) {
        return None;
    }
    if headers.contains_key(SEC_WEBSOCKET_KEY1) || headers.contains_key(SEC_WEBSOCKET_KEY2) {
        Some(Draft::Hixie76)
    } else {
        Some(Draft::Hixie75)
    }
}

/// A valid legacy opening handshake, ready to be answered.
#[derive(Clone, Debug)]
pub struct LegacyHandshake {
    draft: Draft,
    origin: HeaderValue,
    host: HeaderValue,
    target: String,
    protocol: Option<String>,
    /// -76: the two key numbers, each divided by its spaces.
    parts: [u32; 2],
}

const fn reject(status: StatusCode, reason: &'static str) -> Reject {
    Reject { status, reason }
}

impl LegacyHandshake {
    /// Validates a request in `draft` (see [`detect`]): GET, HTTP/1.1, one
    /// `Host`, `Upgrade: WebSocket`, `Connection: Upgrade`, one `Origin`,
    /// and for -76 the two keys (digits and spaces: at least one space,
    /// the number a multiple of the spaces and under 2^32).
    ///
    /// # Errors
    /// A [`Reject`] naming the first requirement that failed: 405 for a
    /// method other than GET, 505 before HTTP/1.1, 400 for the rest.
    pub fn validate(
        draft: Draft,
        method: &Method,
        version: Version,
        uri: &Uri,
        headers: &HeaderMap,
    ) -> Result<Self, Reject> {
        if method != Method::GET {
            return Err(reject(
                StatusCode::METHOD_NOT_ALLOWED,
                "websocket upgrade requires GET",
            ));
        }
        if version < Version::HTTP_11 {
            return Err(reject(
                StatusCode::HTTP_VERSION_NOT_SUPPORTED,
                "websocket upgrade requires HTTP/1.1",
            ));
        }
        let host = one(headers, &header::HOST).ok_or(reject(
            StatusCode::BAD_REQUEST,
            "a hixie handshake needs one Host header",
        ))?;
        if !headers
            .get_all(header::UPGRADE)
            .iter()
            .any(|v| v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"websocket"))
        {
            return Err(reject(
                StatusCode::BAD_REQUEST,
                "Upgrade header must be WebSocket",
            ));
        }
        if !headers
            .get_all(header::CONNECTION)
            .iter()
            .any(|v| crate::handshake::lists_token(v.as_bytes(), "upgrade"))
        {
            return Err(reject(
                StatusCode::BAD_REQUEST,
                "Connection header must name upgrade",
            ));
        }
        let origin = one(headers, &header::ORIGIN).ok_or(reject(
            StatusCode::BAD_REQUEST,
            "a hixie handshake needs one Origin header",
        ))?;
        let protocol_header = match draft {
            Draft::Hixie75 => WEBSOCKET_PROTOCOL,
            Draft::Hixie76 => SEC_WEBSOCKET_PROTOCOL,
        };
        let protocol = match headers.get_all(&protocol_header).iter().count() {
            0 => None,
            1 => headers
                .get(&protocol_header)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty()),
            _ => {
                return Err(reject(
                    StatusCode::BAD_REQUEST,
                    "more than one subprotocol header",
                ));
            }
        };
        let parts = match draft {
            Draft::Hixie75 => [0, 0],
            Draft::Hixie76 => [
                key_part(headers, &SEC_WEBSOCKET_KEY1)?,
                key_part(headers, &SEC_WEBSOCKET_KEY2)?,
            ],
        };
        let target = uri
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .to_owned();
        Ok(Self {
            draft,
            origin: origin.clone(),
            host: host.clone(),
            target,
            protocol,
            parts,
        })
    }

    /// The draft the request speaks.
    pub fn draft(&self) -> Draft {
        self.draft
    }

    /// The subprotocol the client asked for (`WebSocket-Protocol` in -75,
    /// `Sec-WebSocket-Protocol` in -76: one value, not a list).
    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }

    /// How many bytes follow the request head before the answer can be
    /// computed: [`KEY3_LEN`] for -76, none for -75.
    pub fn body_len(&self) -> usize {
        match self.draft {
            Draft::Hixie75 => 0,
            Draft::Hixie76 => KEY3_LEN,
        }
    }

    /// The -76 answer to `key3`: the MD5 of the two key parts (big-endian)
    /// and `key3`.
    pub fn challenge(&self, key3: &[u8; KEY3_LEN]) -> [u8; 16] {
        let mut md5 = Md5::new();
        md5.update(self.parts[0].to_be_bytes());
        md5.update(self.parts[1].to_be_bytes());
        md5.update(key3);
        md5.finalize().into()
    }

    /// The `101` head (status line and headers, no body) with the draft's
    /// `Origin` and `Location` echoes (`wss://` if `secure`) and `protocol`
    /// if one was chosen. -75 clients compare the status line and the
    /// `Upgrade` and `Connection` lines byte for byte: use
    /// [`LegacyHandshake::reason`] as the reason phrase and keep the
    /// headers in this order and case.
    pub fn response(&self, secure: bool, protocol: Option<&str>) -> Response<()> {
        let mut res = Response::new(());
        *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        for (name, value) in self.headers(secure, protocol) {
            res.headers_mut().append(name, value);
        }
        res
    }

    /// The reason phrase of the `101`, as each draft's examples give it.
    pub fn reason(&self) -> &'static str {
        match self.draft {
            Draft::Hixie75 => "Web Socket Protocol Handshake",
            Draft::Hixie76 => "WebSocket Protocol Handshake",
        }
    }

    /// The whole answer as bytes appended to `out`: the `101` head of
    /// [`LegacyHandshake::response`] in the drafts' case, then `extra`
    /// headers, then for -76 the 16-byte [`LegacyHandshake::challenge`] of
    /// `key3` (which must then be given).
    pub fn write_response(
        &self,
        secure: bool,
        protocol: Option<&str>,
        extra: &HeaderMap,
        key3: Option<&[u8; KEY3_LEN]>,
        out: &mut Vec<u8>,
    ) {
        out.extend_from_slice(b"HTTP/1.1 101 ");
        out.extend_from_slice(self.reason().as_bytes());
        out.extend_from_slice(b"\r\nUpgrade: WebSocket\r\nConnection: Upgrade\r\n");
        let (origin, location, proto) = self.names();
        out.extend_from_slice(origin.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(self.origin.as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(location.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(self.location(secure).as_bytes());
        out.extend_from_slice(b"\r\n");
        if let Some(p) = protocol.filter(|p| HeaderValue::from_str(p).is_ok()) {
            out.extend_from_slice(proto.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(p.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        for (name, value) in extra {
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        if let Some(key3) = key3.filter(|_| self.draft == Draft::Hixie76) {
            out.extend_from_slice(&self.challenge(key3));
        }
    }

    /// The header names of the Origin, Location and protocol echoes, in
    /// the drafts' case.
    fn names(&self) -> (&'static str, &'static str, &'static str) {
        match self.draft {
            Draft::Hixie75 => (
                "WebSocket-Origin",
                "WebSocket-Location",
                "WebSocket-Protocol",
            ),
            Draft::Hixie76 => (
                "Sec-WebSocket-Origin",
                "Sec-WebSocket-Location",
                "Sec-WebSocket-Protocol",
            ),
        }
    }

    fn location(&self, secure: bool) -> String {
        let scheme = if secure { "wss://" } else { "ws://" };
        let host = String::from_utf8_lossy(self.host.as_bytes());
        format!("{scheme}{host}{}", self.target)
    }

    fn headers(&self, secure: bool, protocol: Option<&str>) -> Vec<(HeaderName, HeaderValue)> {
        let (origin, location, proto) = match self.draft {
            Draft::Hixie75 => (
                HeaderName::from_static("websocket-origin"),
                HeaderName::from_static("websocket-location"),
                WEBSOCKET_PROTOCOL,
            ),
            Draft::Hixie76 => (
                HeaderName::from_static("sec-websocket-origin"),
                HeaderName::from_static("sec-websocket-location"),
                SEC_WEBSOCKET_PROTOCOL,
            ),
        };
        let mut out = vec![
            (header::UPGRADE, HeaderValue::from_static("WebSocket")),
            (header::CONNECTION, HeaderValue::from_static("Upgrade")),
            (origin, self.origin.clone()),
        ];
        if let Ok(v) = HeaderValue::try_from(self.location(secure)) {
            out.push((location, v));
        }
        if let Some(p) = protocol.and_then(|p| HeaderValue::from_str(p).ok()) {
            out.push((proto, p));
        }
        out
    }
}

/// The only value of header `name`, if there is exactly one.
fn one<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a HeaderValue> {
    let mut all = headers.get_all(name).iter();
    match (all.next(), all.next()) {
        (Some(v), None) => Some(v),
        _ => None,
    }
}

/// A -76 key's part: its digits as a number, divided by its spaces.
fn key_part(headers: &HeaderMap, name: &HeaderName) -> Result<u32, Reject> {
    let key = one(headers, name).ok_or(reject(
        StatusCode::BAD_REQUEST,
        "a hixie-76 handshake needs one Sec-WebSocket-Key1 and one Sec-WebSocket-Key2",
    ))?;
    key_number(key.as_bytes())
}

/// The -76 rule for one key (server side, §5.2 of the draft): the digits
/// read as a decimal number, divided by the count of spaces, which must be
/// at least one and divide it exactly.
///
/// # Errors
/// 400 with the rule broken.
pub fn key_number(key: &[u8]) -> Result<u32, Reject> {
    if key.len() > MAX_KEY_LEN {
        return Err(reject(
            StatusCode::BAD_REQUEST,
            "Sec-WebSocket-Key too long",
        ));
    }
    let mut number: u64 = 0;
    let mut spaces: u64 = 0;
    for &b in key {
        match b {
            b'0'..=b'9' => {
                number = number * 10 + u64::from(b - b'0');
                if number > u64::from(u32::MAX) {
                    return Err(reject(
                        StatusCode::BAD_REQUEST,
                        "Sec-WebSocket-Key number over 4294967295",
                    ));
                }
            }
            b' ' => spaces += 1,
            _ => {}
        }
    }
    if spaces == 0 {
        return Err(reject(
            StatusCode::BAD_REQUEST,
            "Sec-WebSocket-Key has no spaces",
        ));
    }
    if !number.is_multiple_of(spaces) {
        return Err(reject(
            StatusCode::BAD_REQUEST,
            "Sec-WebSocket-Key number is not a multiple of its spaces",
        ));
    }
    // Lossless: at most u32::MAX divided by at least one.
    Ok((number / spaces) as u32)
}

/// Decodes a length-prefixed frame's length (base 128, high bit: more
/// bytes) from the front of `buf`, after its type byte: `Ok(None)` if
/// incomplete, else the length and the bytes it took.
///
/// # Errors
/// A length over `max` (checked as it is read, so the loop is bounded).
pub(crate) fn decode_length(buf: &[u8], max: usize) -> Result<Option<(u64, usize)>, u64> {
    let mut len: u64 = 0;
    for (i, &b) in buf.iter().enumerate() {
        len = len * 128 + u64::from(b & 0x7f);
        if len > max as u64 {
            return Err(len);
        }
        if b & 0x80 == 0 {
            return Ok(Some((len, i + 1)));
        }
        if len == 0 && i >= 8 {
            // Leading zero groups carry nothing; a long run of them is
            // bounded here rather than by the caller's buffer.
            return Err(u64::MAX);
        }
    }
    Ok(None)
}

/// A text frame of a legacy draft: `0x00`, the UTF-8 bytes, `0xFF` (the
/// text is copied once, with its end byte).
pub(crate) fn text_payload(text: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(text.len() + 1);
    out.extend_from_slice(text);
    out.push(0xff);
    out.into()
}

#[cfg(test)]
mod tests;
