//! Fuzzes a client `Connection` with arbitrary server bytes: the
//! `connection_server` target's checks from the other end (server frames are
//! unmasked, the client's are masked with a fixed key source).
//!
//! The first input byte chooses the read sizes (0: one read; n: pseudo-random
//! sizes in 1..=n); the rest is the byte stream. See
//! `fuzz/common/connection.rs`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    harness::drive(wharf_proto::Role::Client, data);
});

include!("../common/connection.rs");
