// The `frame` driver, shared with the test that runs its committed seeds on
// stable (crates/wharf-proto/tests/fuzz_seeds.rs).

mod frame_driver {
    use wharf_proto::ProtocolError;
    use wharf_proto::frame::{FrameHeader, MAX_HEADER_LEN};

    /// Decodes a frame header from arbitrary bytes. Whatever decodes must
    /// re-encode to the very bytes it came from (the encoding is canonical,
    /// since decode refuses non-minimal lengths), decode again to the same
    /// header, and every shorter prefix must ask for more bytes rather than
    /// fail. Returns the decode result.
    pub(crate) fn check(data: &[u8]) -> Result<Option<(FrameHeader, usize)>, ProtocolError> {
        let result = FrameHeader::decode(data);
        let Ok(Some((header, n))) = result else {
            return result;
        };
        assert!((2..=MAX_HEADER_LEN).contains(&n) && n <= data.len());
        assert_eq!(n, header.encoded_len());
        assert!(header.payload_len >> 63 == 0);
        if header.opcode.is_control() {
            assert!(header.fin && header.payload_len <= 125);
        }

        let mut out = [0u8; MAX_HEADER_LEN];
        let m = header.encode(&mut out);
        assert_eq!(m, n);
        assert_eq!(&out[..m], &data[..n], "re-encoding {header:?}");
        assert_eq!(FrameHeader::decode(&out[..m]), Ok(Some((header, m))));

        for end in 0..n {
            assert_eq!(
                FrameHeader::decode(&data[..end]),
                Ok(None),
                "prefix of {end}"
            );
        }
        result
    }
}
