//! Size limits on what a peer may make us hold.

/// Limits on incoming frames and messages. Exceeding one fails the
/// connection: frame and message size with 1009, fragment count with 1008.
///
/// The defaults are safe to expose to the internet: at most 1 MiB held per
/// message. Raise them knowingly (the conformance server needs 16 MiB
/// messages and 65,536 fragments).
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
#[non_exhaustive]
pub struct Limits {
    /// The largest frame payload accepted, checked from the header before
    /// any payload byte is buffered. Default 1 MiB.
    pub max_frame_size: usize,
    /// The largest message accepted (the sum of its fragments), checked from
    /// each frame header before buffering. Default 1 MiB.
    pub max_message_size: usize,
    /// The most frames one message may be split into. Default 4,096.
    pub max_fragments: usize,
}

impl Limits {
    /// The default limits.
    pub const DEFAULT: Self = Self {
        max_frame_size: 1 << 20,
        max_message_size: 1 << 20,
        max_fragments: 4096,
    };

    /// Sets [`Limits::max_frame_size`].
    #[must_use]
    pub fn max_frame_size(mut self, bytes: usize) -> Self {
        self.max_frame_size = bytes;
        self
    }

    /// Sets [`Limits::max_message_size`].
    #[must_use]
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// Sets [`Limits::max_fragments`].
    #[must_use]
    pub fn max_fragments(mut self, count: usize) -> Self {
        self.max_fragments = count;
        self
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self::DEFAULT
    }
}
