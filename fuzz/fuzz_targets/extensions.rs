//! Fuzzes the `Sec-WebSocket-Extensions` parser and permessage-deflate offer
//! negotiation (RFC 7692 §5, §7.1) under any `DeflateConfig`: many headers
//! and one joined header must agree, the agreed parameters must respect the
//! config, our response header offered back must give the same agreement,
//! and a client and a server with those parameters must understand each
//! other. The input format is described in `fuzz/common/handshake.rs`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    handshake_driver::extensions(data);
});

include!("../common/connection.rs");
include!("../common/deflate.rs");
include!("../common/handshake.rs");
