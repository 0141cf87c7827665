//! Fuzzes a server `Connection` with arbitrary client bytes, split into reads
//! of varying size so that partial headers and payloads are explored.
//!
//! The first input byte chooses the read sizes (0: one read of everything;
//! n: pseudo-random sizes in 1..=n); the rest is the byte stream. After each
//! read, events and transmits are drained and checked: nothing over the
//! limits is held or delivered, the server only ever sends pongs and close
//! frames, what it queues is bounded by what it read, and a failed or
//! peer-closed connection is `Closed` with the right close frame sent. The
//! same stream in one read must give the same messages, close and error.
//!
//! The harness lives in `fuzz/common/connection.rs`, shared with
//! `crates/wharf-proto/tests/fuzz_seeds.rs`, which runs the committed seeds
//! on stable.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    harness::drive(wharf_proto::Role::Server, data);
});

include!("../common/connection.rs");
