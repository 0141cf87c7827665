//! Broadcast to legacy-draft connections (hixie-75/76): one more
//! encode-once framing beside plain and deflated RFC 6455. A text message is
//! framed once (`0x00 … 0xFF`) for every legacy receiver on every worker; a
//! binary message cannot be carried by the drafts and is skipped, and
//! counted, for each.

use std::sync::OnceLock;

use wharf_proto::{Message, Transmit};

use crate::conn::Shared;
use crate::error::SendError;

/// The legacy frame of one broadcast, encoded at the first legacy receiver.
#[derive(Default)]
pub(super) struct LegacyFrame(OnceLock<Option<Transmit>>);

impl LegacyFrame {
    /// Queues the message for a legacy-draft receiver, or counts it
    /// skipped (binary).
    pub(super) fn send(&self, shared: &Shared, message: &Message) -> Result<(), SendError> {
        match self.0.get_or_init(|| Transmit::legacy(message)) {
            Some(frame) => shared.send_encoded(frame.clone()),
            None => {
                shared.skipped();
                Err(SendError::NotInDraft)
            }
        }
    }
}
