//! Fuzzes the client-address resolution of `wharf` (`forwarded.rs`):
//! `Forwarded`, `X-Forwarded-For`, `X-Forwarded-Proto` and
//! `X-Forwarded-Host` as a proxy (or an impostor) sends them, and CIDR
//! parsing. It must never panic, and from an untrusted peer never believe
//! a header. Seeds: `fuzz/seeds/forwarded/`, also run as a test of
//! crates/wharf (`forwarded::tests::forwarded_fuzz_seeds`).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    wharf::fuzz_forwarded(data);
});
