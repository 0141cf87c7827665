//! Masking (RFC 6455 §5.3): XOR of the payload with a 4-byte key.
//!
//! [`apply`] XORs 8-byte words against the key rotated to `offset`, which the
//! compiler unrolls into vector XORs; [`apply_naive`] is the byte-at-a-time
//! reference the property tests hold it to.

/// XORs `buf` with `key`, as if `buf` started `offset` bytes into the payload.
///
/// Applying the same key and offset twice restores the input.
pub fn apply(buf: &mut [u8], key: [u8; 4], offset: usize) {
    // Rotate as an integer: `<[u8]>::rotate_left` is an out-of-line routine
    // that cost more than masking a whole small frame.
    let shift = 8 * (offset % 4) as u32;
    let [a, b, c, d] = u32::from_be_bytes(key).rotate_left(shift).to_be_bytes();
    let pattern = [a, b, c, d, a, b, c, d];
    let word = u64::from_ne_bytes(pattern);
    let mut words = buf.chunks_exact_mut(8);
    for w in &mut words {
        let mut v = [0u8; 8];
        v.copy_from_slice(w);
        w.copy_from_slice(&(u64::from_ne_bytes(v) ^ word).to_ne_bytes());
    }
    // The remainder starts at a multiple of 8, so the key phase is unchanged.
    for (b, k) in words.into_remainder().iter_mut().zip(pattern) {
        *b ^= k;
    }
}

/// The reference implementation: one byte at a time.
pub fn apply_naive(buf: &mut [u8], key: [u8; 4], offset: usize) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b ^= key[(offset + i) % 4];
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn equals_naive(data in proptest::collection::vec(any::<u8>(), 0..300),
                        key in any::<[u8; 4]>(), offset in 0usize..8) {
            let mut fast = data.clone();
            let mut slow = data.clone();
            apply(&mut fast, key, offset);
            apply_naive(&mut slow, key, offset);
            prop_assert_eq!(&fast, &slow);
            apply(&mut fast, key, offset);
            prop_assert_eq!(fast, data);
        }

        #[test]
        fn split_at_any_point_equals_whole(data in proptest::collection::vec(any::<u8>(), 0..200),
                                           key in any::<[u8; 4]>(), split in 0usize..200) {
            let split = split.min(data.len());
            let mut whole = data.clone();
            apply(&mut whole, key, 0);
            let mut parts = data;
            let (a, b) = parts.split_at_mut(split);
            apply(a, key, 0);
            apply(b, key, split);
            prop_assert_eq!(parts, whole);
        }
    }

    #[test]
    fn rfc6455_5_7_masked_hello() {
        let mut payload = *b"Hello";
        apply(&mut payload, [0x37, 0xfa, 0x21, 0x3d], 0);
        assert_eq!(payload, [0x7f, 0x9f, 0x4d, 0x51, 0x58]);
    }
}
