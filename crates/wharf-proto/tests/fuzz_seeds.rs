//! The committed seeds of every fuzz target, run as ordinary tests on stable
//! (the fuzz crate needs nightly or `RUSTC_BOOTSTRAP=1` and is not a
//! workspace member, so its drivers in `fuzz/common/` are shared with
//! `include!`). One test per target, with the targets' own checks.
//!
//! Each seed's name says what must happen to it (see
//! `fuzz/seeds/make_seeds.py` and `fuzz/seeds/make_connection_server.py`,
//! which write them). Connection seeds also run with other read sizes, so
//! that each one is fed whole, byte by byte and in odd splits. Inputs the
//! fuzzer once failed on are kept in `fuzz/regressions/<target>/` and run
//! too.

use std::fs;
use std::path::{Path, PathBuf};

use http::StatusCode;
use wharf_proto::{Message, Role, State};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

/// The files in `fuzz/<kind>/<target>/`, sorted by name; none if the
/// directory does not exist.
fn inputs(kind: &str, target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = fuzz_dir().join(kind).join(target);
    let Ok(entries) = fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut inputs: Vec<_> = entries
        .map(|entry| {
            let path = entry.expect("directory entry").path();
            let name = path.file_name().expect("file name");
            let name = name.to_string_lossy().into_owned();
            (name, fs::read(&path).expect("seed file"))
        })
        .collect();
    inputs.sort();
    inputs
}

fn seeds(target: &str, at_least: usize) -> Vec<(String, Vec<u8>)> {
    let seeds = inputs("seeds", target);
    assert!(
        seeds.len() >= at_least,
        "only {} seeds for {target}",
        seeds.len()
    );
    seeds
}

/// Checks a connection seed's outcome against its name.
fn check_outcome(name: &str, h: &harness::Harness, what: &str) {
    let conn = &h.conn;
    let what = format!("{what}: {conn:?}");
    let (state, error) = (conn.state(), conn.error());
    match name.split('_').next() {
        Some("ok") => assert!(state == State::Open && error.is_none(), "{what}"),
        Some("closing") => assert!(state == State::Closing && error.is_none(), "{what}"),
        Some("close") => {
            assert!(state == State::Closed && error.is_none(), "{what}");
            assert!(conn.peer_close().is_some(), "{what}");
        }
        Some("err") => assert!(state == State::Closed && error.is_some(), "{what}"),
        _ => panic!("seed {name} must start with ok_, closing_, close_ or err_"),
    }
    if name.contains("hello") {
        let messages: Vec<_> = h
            .seen
            .iter()
            .filter_map(|s| match s {
                harness::Seen::Message(m) => Some(m),
                _ => None,
            })
            .collect();
        assert!(!messages.is_empty(), "{what}");
        for m in messages {
            assert_eq!(m, &Message::from("Hello"), "{what}");
        }
    }
}

fn connection_seeds(role: Role, target: &str) {
    let seeds = seeds(target, 10);
    for (name, data) in &seeds {
        assert!(!data.is_empty(), "{name} is empty");
        // The seed's own read sizes, then one read, bytewise and odd splits.
        for reads in [data[0], 0, 1, 2, 13] {
            let mut input = data.clone();
            input[0] = reads;
            let h = harness::drive(role, &input);
            check_outcome(name, &h, &format!("{name} with reads byte {reads}"));
        }
    }
    for (name, data) in inputs("regressions", target) {
        harness::drive(role, &data);
        println!("regression {name} passes");
    }
}

#[test]
fn connection_server_seeds() {
    connection_seeds(Role::Server, "connection_server");
}

#[test]
fn connection_client_seeds() {
    connection_seeds(Role::Client, "connection_client");
}

#[test]
fn empty_input_and_reads_byte_alone() {
    for role in [Role::Server, Role::Client] {
        assert_eq!(harness::drive(role, &[]).conn.state(), State::Open);
        assert_eq!(harness::drive(role, &[7]).conn.state(), State::Open);
    }
    assert_eq!(deflate_driver::drive(&[1, 2, 3]).conn.state(), State::Open);
}

#[test]
fn connection_deflate_seeds() {
    let seeds = seeds("connection_deflate", 10);
    for (name, data) in &seeds {
        assert!(data.len() > 4, "{name} is too short");
        // The seed's own read sizes, then one read, bytewise and odd splits.
        for reads in [data[0] >> 4, 0, 1, 2, 7] {
            let mut input = data.clone();
            input[0] = input[0] & 0xf | reads << 4;
            let h = deflate_driver::drive(&input);
            check_outcome(name, &h, &format!("{name} with reads nibble {reads}"));
        }
    }
    for (name, data) in inputs("regressions", "connection_deflate") {
        deflate_driver::drive(&data);
        println!("regression {name} passes");
    }
}

#[test]
fn handshake_seeds() {
    for (name, data) in seeds("handshake", 10) {
        let result = handshake_driver::handshake(&data).expect("a seed is not empty");
        if name.starts_with("ok_") {
            assert!(result.is_ok(), "{name}: {result:?}");
        } else if let Some(status) = name.strip_prefix("rej").and_then(|s| s.get(..3)) {
            let status = StatusCode::from_bytes(status.as_bytes()).expect("a status");
            assert_eq!(result.err().map(|r| r.status), Some(status), "{name}");
        } else {
            panic!("seed {name} must start with ok_ or rej<status>_");
        }
    }
    for (name, data) in inputs("regressions", "handshake") {
        handshake_driver::handshake(&data);
        println!("regression {name} passes");
    }
}

#[test]
fn extensions_seeds() {
    for (name, data) in seeds("extensions", 10) {
        let result = handshake_driver::extensions(&data).expect("a seed has a config");
        match name.split('_').next() {
            Some("ok") => assert!(matches!(result, Ok(Some(_))), "{name}: {result:?}"),
            Some("none") => assert!(matches!(result, Ok(None)), "{name}: {result:?}"),
            Some("bad") => assert!(result.is_err(), "{name}: {result:?}"),
            _ => panic!("seed {name} must start with ok_, none_ or bad_"),
        }
    }
    for (name, data) in inputs("regressions", "extensions") {
        handshake_driver::extensions(&data);
        println!("regression {name} passes");
    }
}

#[test]
fn frame_seeds() {
    for (name, data) in seeds("frame", 10) {
        let result = frame_driver::check(&data);
        match name.split('_').next() {
            Some("ok") => assert!(matches!(result, Ok(Some(_))), "{name}: {result:?}"),
            Some("more") => assert!(matches!(result, Ok(None)), "{name}: {result:?}"),
            Some("err") => assert!(result.is_err(), "{name}: {result:?}"),
            _ => panic!("seed {name} must start with ok_, more_ or err_"),
        }
    }
    for (name, data) in inputs("regressions", "frame") {
        let _ = frame_driver::check(&data);
        println!("regression {name} passes");
    }
}

#[test]
fn legacy_handshake_seeds() {
    use wharf_proto::Draft;
    for (name, data) in seeds("legacy_handshake", 10) {
        let result = legacy_driver::handshake(&data).expect("a seed is not empty");
        let status = result.as_ref().err().map(|r| r.status.as_u16());
        match name.split('_').next() {
            Some("ok75") => assert_eq!(result, Ok(Draft::Hixie75), "{name}"),
            Some("ok76") => assert_eq!(result, Ok(Draft::Hixie76), "{name}"),
            Some("rej400") => assert_eq!(status, Some(400), "{name}: {result:?}"),
            Some("rej405") => assert_eq!(status, Some(405), "{name}: {result:?}"),
            Some("rej505") => assert_eq!(status, Some(505), "{name}: {result:?}"),
            Some("not") => assert_eq!(status, Some(426), "{name}: {result:?}"),
            _ => panic!("seed {name} must start with ok75_, ok76_, rej<status>_ or not_"),
        }
    }
    for (name, data) in inputs("regressions", "legacy_handshake") {
        legacy_driver::handshake(&data);
        println!("regression {name} passes");
    }
}

#[test]
fn legacy_framing_seeds() {
    for (name, data) in seeds("legacy_framing", 10) {
        let out = legacy_driver::framing(&data).expect("a seed is not empty");
        match name.split('_').next() {
            Some("ok") => assert!(
                out.state == State::Open && out.error.is_none(),
                "{name}: {out:?}"
            ),
            Some("close") => assert!(out.closed_by_peer && out.error.is_none(), "{name}: {out:?}"),
            Some("err") => assert!(out.error.is_some(), "{name}: {out:?}"),
            _ => panic!("seed {name} must start with ok_, close_ or err_"),
        }
    }
    for (name, data) in inputs("regressions", "legacy_framing") {
        legacy_driver::framing(&data);
        println!("regression {name} passes");
    }
}

// The fuzz targets' drivers, shared rather than copied.
include!("../../../fuzz/common/connection.rs");
include!("../../../fuzz/common/deflate.rs");
include!("../../../fuzz/common/frame.rs");
include!("../../../fuzz/common/handshake.rs");
include!("../../../fuzz/common/legacy.rs");
