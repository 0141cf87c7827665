//! Fuzzes the first-request parser of `wharf` (`head.rs`): the first byte
//! chooses a read size, the rest is what a client sends. Read with that
//! size, byte by byte and whole, it must give the same outcome, and keep
//! the head limits (16 KiB head, 64 headers, 8 KiB target, 414 and 431
//! with a one-line reason). Seeds: `fuzz/seeds/request_head/`, also run
//! as a test of crates/wharf (`head::tests::request_head_fuzz_seeds`).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    wharf::fuzz_request_head(data);
});
