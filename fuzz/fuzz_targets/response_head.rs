//! Fuzzes the client's reading of an upgrade response (`wharf::client`):
//! the head parser (httparse, 16 KiB, 64 headers) and
//! `wharf_proto::ClientHandshake::validate`, permessage-deflate answers
//! included. The first byte picks the offer (bit 0: deflate with context
//! takeover, bit 1: shared mode, bit 2: subprotocols). Nothing may panic,
//! and an accepted deflate agreement must be one a client can use. Seeds:
//! `fuzz/seeds/response_head/`, also run as a test of crates/wharf
//! (`client::tests::response_head_fuzz_seeds`).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    wharf::fuzz_response_head(data);
});
