//! Fuzzes the hixie-75/76 framing of a legacy `Connection`: text to
//! `0xFF`, discarded frames, the -76 closing handshake, limits, UTF-8.
//! See `fuzz/common/legacy.rs`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    legacy_driver::framing(data);
});

include!("../common/legacy.rs");
