//! Fuzzes the hixie-75/76 opening handshake: validation, the -76 key
//! rules, the `101` and its answer.
//! See `fuzz/common/legacy.rs`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    legacy_driver::handshake(data);
});

include!("../common/legacy.rs");
