//! Fuzzes `FrameHeader::decode` on arbitrary bytes. Whatever decodes must
//! re-encode to the very bytes it came from (the encoding is canonical, since
//! decode refuses non-minimal lengths), decode again to the same header, and
//! every shorter prefix must ask for more bytes rather than fail. See
//! `fuzz/common/frame.rs`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = frame_driver::check(data);
});

include!("../common/frame.rs");
