//! Fuzzes a server or client `Connection` with permessage-deflate negotiated
//! (every context-takeover and window-bits combination, chosen by the first
//! input bytes), fed frames built from the input: compressed or not, RSV1 or
//! not, fragmented, repeated up to 16 KiB, interleaved with the
//! connection's own sends, pings and close.
//!
//! Checks the harness's invariants (no panic, output bounded by input, no
//! message over the limit, every failure closed with its code), that valid
//! messages arrive exactly as sent, that valid deflate data is never refused,
//! that what the connection compresses inflates with the agreed window and
//! context rules, and that read sizes do not change the outcome. The input
//! format is described in `fuzz/common/deflate.rs`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    deflate_driver::drive(data);
});

include!("../common/connection.rs");
include!("../common/deflate.rs");
