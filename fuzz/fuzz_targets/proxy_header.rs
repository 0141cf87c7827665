//! Fuzzes the PROXY protocol parser of `wharf` (`proxy_protocol.rs`): the
//! input is what arrives first on a connection. Parsed whole and in the
//! steps the reader takes (each read no longer than the parser asked for),
//! it must give the same outcome, never read past the header's end, and
//! never panic. Seeds: `fuzz/seeds/proxy_header/`, also run as a test of
//! crates/wharf (`proxy_protocol::tests::proxy_header_fuzz_seeds`).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    wharf::fuzz_proxy_header(data);
});
