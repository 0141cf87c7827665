//! Fuzzes `Handshake::validate` with arbitrary methods, versions and
//! headers, then everything built from a valid request: the accept key,
//! subprotocol selection, deflate negotiation and the `101` response in both
//! forms (`response`, `write_response`), which must agree and never let a
//! caller's value add a line. Refusals must carry the right status and a
//! one-line reason. The input format is described in
//! `fuzz/common/handshake.rs`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    handshake_driver::handshake(data);
});

include!("../common/connection.rs");
include!("../common/deflate.rs");
include!("../common/handshake.rs");
