//! Close status codes and the close frame payload (RFC 6455 §5.5.1, §7.4).

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::ProtocolError;
use crate::message::Utf8Bytes;

/// A close status code (RFC 6455 §7.4): an open newtype, so codes that this
/// crate has no name for (3000–4999) are ordinary values.
#[derive(Clone, Copy, Debug, Eq, Hash, Ord, PartialEq, PartialOrd)]
pub struct CloseCode(pub u16);

impl CloseCode {
    /// 1000: the purpose of the connection has been fulfilled.
    pub const NORMAL: Self = Self(1000);
    /// 1001: the endpoint is going away (server shutdown, page navigation).
    pub const GOING_AWAY: Self = Self(1001);
    /// 1002: the peer violated the protocol.
    pub const PROTOCOL_ERROR: Self = Self(1002);
    /// 1003: the endpoint cannot accept this type of data.
    pub const UNSUPPORTED_DATA: Self = Self(1003);
    /// 1005: no status code was present. Never sent on the wire.
    pub const NO_STATUS_RECEIVED: Self = Self(1005);
    /// 1006: the connection closed without a close frame. Never sent on the wire.
    pub const ABNORMAL: Self = Self(1006);
    /// 1007: a message's data was inconsistent with its type (bad UTF-8).
    pub const INVALID_PAYLOAD: Self = Self(1007);
    /// 1008: a message violated the endpoint's policy.
    pub const POLICY_VIOLATION: Self = Self(1008);
    /// 1009: a message was too big to process.
    pub const MESSAGE_TOO_BIG: Self = Self(1009);
    /// 1010: the client expected an extension the server did not negotiate.
    pub const MANDATORY_EXTENSION: Self = Self(1010);
    /// 1011: the server met an unexpected condition.
    pub const INTERNAL_ERROR: Self = Self(1011);
    /// 1012: the service is restarting (IANA registry).
    pub const SERVICE_RESTART: Self = Self(1012);
    /// 1013: try again later (IANA registry).
    pub const TRY_AGAIN_LATER: Self = Self(1013);
    /// 1014: a gateway received an invalid response (IANA registry).
    pub const BAD_GATEWAY: Self = Self(1014);
    /// 1015: the TLS handshake failed. Never sent on the wire.
    pub const TLS_HANDSHAKE: Self = Self(1015);

    /// Whether this code may appear in a close frame we send.
    pub fn is_sendable(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }

    /// Whether this code is valid in a close frame we receive (§7.4.1, §7.4.2).
    pub fn is_receivable(self) -> bool {
        self.is_sendable()
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl From<u16> for CloseCode {
    fn from(code: u16) -> Self {
        Self(code)
    }
}

impl From<CloseCode> for u16 {
    fn from(code: CloseCode) -> Self {
        code.0
    }
}

/// The payload of a close frame: a status code and a UTF-8 reason.
///
/// A close frame with an empty payload is represented with
/// [`CloseCode::NO_STATUS_RECEIVED`] and an empty reason.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct CloseFrame {
    /// The status code.
    pub code: CloseCode,
    /// The reason, at most 123 bytes on the wire.
    pub reason: Utf8Bytes,
}

/// The longest reason that fits a control frame after the two-byte code.
pub const MAX_REASON_LEN: usize = 123;

impl CloseFrame {
    /// A close frame with `code` and `reason`, the reason cut at a character
    /// boundary to fit [`MAX_REASON_LEN`].
    pub fn new(code: CloseCode, reason: &str) -> Self {
        let mut end = reason.len().min(MAX_REASON_LEN);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        Self {
            code,
            reason: Utf8Bytes::from(reason[..end].to_owned()),
        }
    }

    /// Parses a received close payload (§5.5.1).
    ///
    /// # Errors
    /// A payload of one byte, a code that may not be received, or a reason
    /// that is not UTF-8.
    pub fn decode(payload: Bytes) -> Result<Self, ProtocolError> {
        match payload.len() {
            0 => Ok(Self {
                code: CloseCode::NO_STATUS_RECEIVED,
                reason: Utf8Bytes::default(),
            }),
            1 => Err(ProtocolError::ClosePayloadTruncated),
            _ => {
                let code = CloseCode(u16::from_be_bytes([payload[0], payload[1]]));
                if !code.is_receivable() {
                    return Err(ProtocolError::CloseCodeInvalid(code.0));
                }
                let reason = Utf8Bytes::try_from(payload.slice(2..))
                    .map_err(|_| ProtocolError::CloseReasonNotUtf8)?;
                Ok(Self { code, reason })
            }
        }
    }

    /// The wire payload: empty for [`CloseCode::NO_STATUS_RECEIVED`], else the
    /// code and reason.
    pub fn encode(&self) -> Bytes {
        if self.code == CloseCode::NO_STATUS_RECEIVED {
            return Bytes::new();
        }
        let mut out = BytesMut::with_capacity(2 + self.reason.len());
        out.put_u16(self.code.0);
        out.put_slice(self.reason.as_bytes());
        out.freeze()
    }
}
