//! Protocol violations (RFC 6455 §5, §7) and the close code each one earns.

use crate::close::CloseCode;

/// A violation of RFC 6455 by the peer, or of a configured limit.
///
/// Every variant maps to the close code the connection is failed with
/// ([`ProtocolError::close_code`]); its `Display` text is the close reason
/// sent to the peer. The text is not API.
#[derive(Clone, Debug, Eq, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A close frame's payload held a status code that may not be received (§7.4).
    #[error("invalid close code {0}")]
    CloseCodeInvalid(u16),
    /// A close frame's payload was one byte long: a code needs two (§5.5.1).
    #[error("close payload of one byte")]
    ClosePayloadTruncated,
    /// A close frame's reason was not UTF-8 (§5.5.1).
    #[error("close reason is not valid utf-8")]
    CloseReasonNotUtf8,
    /// A compressed message was not valid deflate data (RFC 7692 §6.2).
    #[error("compressed data is not valid deflate")]
    CompressedDataInvalid,
    /// A continuation frame arrived while no fragmented message was open (§5.4).
    #[error("continuation frame without a message to continue")]
    ContinuationUnexpected,
    /// A control frame had FIN clear: control frames are never fragmented (§5.5).
    #[error("fragmented control frame")]
    ControlFragmented,
    /// A control frame carried more than 125 bytes (§5.5).
    #[error("control frame payload over 125 bytes")]
    ControlTooLong,
    /// A new text or binary frame arrived inside a fragmented message (§5.4).
    #[error("new data frame inside a fragmented message")]
    ContinuationExpected,
    /// A frame's payload exceeded `Limits::max_frame_size`.
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    FrameTooBig {
        /// The length the frame header announced.
        len: u64,
        /// The configured limit.
        max: usize,
    },
    /// A frame length was not encoded in the minimal number of bytes (§5.2).
    #[error("frame length not minimally encoded")]
    LengthNotMinimal,
    /// A 64-bit frame length had its most significant bit set (§5.2).
    #[error("frame length with the most significant bit set")]
    LengthOverflow,
    /// A frame from a client was not masked (§5.1).
    #[error("client frame is not masked")]
    MaskMissing,
    /// A frame from a server was masked (§5.1).
    #[error("server frame is masked")]
    MaskUnexpected,
    /// A message exceeded `Limits::max_message_size`.
    #[error("message exceeds the limit of {max} bytes")]
    MessageTooBig {
        /// The configured limit.
        max: usize,
    },
    /// A message was split into more frames than `Limits::max_fragments`.
    #[error("message split into more than {max} fragments")]
    FragmentsTooMany {
        /// The configured limit.
        max: usize,
    },
    /// A message arrived over the connection's rate limit, under
    /// [`RateAction::Close`](crate::RateAction::Close).
    #[error("rate limit exceeded")]
    RateLimited,
    /// A frame used a reserved opcode (§5.2).
    #[error("reserved opcode {0:#x}")]
    OpCodeReserved(u8),
    /// A frame set an RSV bit that no negotiated extension defines (§5.2).
    #[error("reserved bits set without a negotiated extension")]
    ReservedBitsSet,
    /// A text message was not valid UTF-8 (§8.1).
    #[error("text message is not valid utf-8")]
    TextNotUtf8,
}

impl ProtocolError {
    /// The close code the connection is failed with.
    pub fn close_code(&self) -> CloseCode {
        match self {
            Self::CloseReasonNotUtf8 | Self::TextNotUtf8 | Self::CompressedDataInvalid => {
                CloseCode::INVALID_PAYLOAD
            }
            Self::FrameTooBig { .. } | Self::MessageTooBig { .. } => CloseCode::MESSAGE_TOO_BIG,
            Self::FragmentsTooMany { .. } | Self::RateLimited => CloseCode::POLICY_VIOLATION,
            Self::CloseCodeInvalid(_)
            | Self::ClosePayloadTruncated
            | Self::ContinuationUnexpected
            | Self::ControlFragmented
            | Self::ControlTooLong
            | Self::ContinuationExpected
            | Self::LengthNotMinimal
            | Self::LengthOverflow
            | Self::MaskMissing
            | Self::MaskUnexpected
            | Self::OpCodeReserved(_)
            | Self::ReservedBitsSet => CloseCode::PROTOCOL_ERROR,
        }
    }
}
