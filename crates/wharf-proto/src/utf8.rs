//! Incremental UTF-8 validation (RFC 6455 §8.1) that fails on the first bad
//! byte, even when a code point is split across frames or reads.

/// Validates a text message chunk by chunk.
///
/// State between chunks is at most three bytes of an unfinished code point.
#[derive(Clone, Debug, Default)]
pub struct Utf8Validator {
    pending: [u8; 4],
    pending_len: u8,
}

/// The input is not, and cannot become, valid UTF-8.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub struct InvalidUtf8;

impl Utf8Validator {
    /// A validator at the start of a message.
    pub fn new() -> Self {
        Self::default()
    }

    /// Checks the next chunk of the message.
    ///
    /// # Errors
    /// As soon as the bytes seen so far cannot begin any valid UTF-8 text.
    pub fn feed(&mut self, mut input: &[u8]) -> Result<(), InvalidUtf8> {
        if self.pending_len > 0 {
            let have = usize::from(self.pending_len);
            let need = sequence_len(self.pending[0]) - have;
            let take = need.min(input.len());
            self.pending[have..have + take].copy_from_slice(&input[..take]);
            self.pending_len += take as u8;
            input = &input[take..];
            let seq = &self.pending[..usize::from(self.pending_len)];
            match std::str::from_utf8(seq) {
                Ok(_) => self.pending_len = 0,
                Err(e) if e.error_len().is_none() => return Ok(()),
                Err(_) => return Err(InvalidUtf8),
            }
        }
        match simdutf8::compat::from_utf8(input) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_none() => {
                let tail = &input[e.valid_up_to()..];
                self.pending[..tail.len()].copy_from_slice(tail);
                self.pending_len = tail.len() as u8;
                Ok(())
            }
            Err(_) => Err(InvalidUtf8),
        }
    }

    /// Ends the message.
    ///
    /// # Errors
    /// If the message ended inside a code point.
    pub fn finish(&mut self) -> Result<(), InvalidUtf8> {
        let complete = self.pending_len == 0;
        self.pending_len = 0;
        if complete { Ok(()) } else { Err(InvalidUtf8) }
    }
}

/// The length of the sequence a leading byte starts. Only called on bytes that
/// std already accepted as the start of an incomplete sequence.
fn sequence_len(lead: u8) -> usize {
    match lead {
        0xf0..=0xff => 4,
        0xe0..=0xef => 3,
        _ => 2,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn check_split(data: &[u8], splits: &[usize]) -> Result<(), InvalidUtf8> {
        let mut v = Utf8Validator::new();
        let mut start = 0;
        for &s in splits {
            let s = s.clamp(start, data.len());
            v.feed(&data[start..s])?;
            start = s;
        }
        v.feed(&data[start..])?;
        v.finish()
    }

    proptest! {
        #[test]
        fn agrees_with_std_at_every_split(data in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..40),
            any::<String>().prop_map(String::into_bytes),
        ], a in 0usize..40, b in 0usize..40) {
            let (a, b) = (a.min(b), a.max(b));
            let expect = std::str::from_utf8(&data).is_ok();
            prop_assert_eq!(check_split(&data, &[a, b]).is_ok(), expect);
        }

        #[test]
        fn valid_text_in_single_bytes(s in any::<String>()) {
            let splits: Vec<usize> = (0..s.len()).collect();
            prop_assert!(check_split(s.as_bytes(), &splits).is_ok());
        }
    }

    #[test]
    fn fails_on_first_bad_byte_of_split_sequence() {
        let mut v = Utf8Validator::new();
        v.feed(b"ok \xf0").unwrap();
        // F0 must be followed by 90..=BF: 0x80 is already wrong.
        assert_eq!(v.feed(b"\x80"), Err(InvalidUtf8));
    }

    #[test]
    fn rejects_surrogates_and_overlongs() {
        assert!(Utf8Validator::new().feed(b"\xed\xa0\x80").is_err());
        assert!(Utf8Validator::new().feed(b"\xc0\xaf").is_err());
        assert!(Utf8Validator::new().feed(b"\xf4\x90\x80\x80").is_err());
    }

    #[test]
    fn unfinished_sequence_fails_at_finish() {
        let mut v = Utf8Validator::new();
        v.feed(b"\xe2\x82").unwrap();
        assert_eq!(v.finish(), Err(InvalidUtf8));
    }
}
