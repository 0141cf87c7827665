//! The committed seeds of the `connection_server` fuzz target, run as an
//! ordinary test on stable (the fuzz crate needs nightly and is not a
//! workspace member, so its driver is shared with `include!`).
//!
//! Each seed in `fuzz/seeds/connection_server/` is one byte choosing the read
//! sizes, then the client's bytes; its name says what the server must do:
//! `ok_*` stays open, `close_*` closes on the peer's close frame, `err_*`
//! fails with a close frame sent. `fuzz/seeds/make_connection_server.py`
//! writes them. Every seed also runs with other read sizes, so that each one
//! is fed whole, byte by byte and in odd splits.

use std::fs;
use std::path::{Path, PathBuf};

use wharf_proto::State;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

fn seeds() -> Vec<(String, Vec<u8>)> {
    let dir = fuzz_dir().join("seeds/connection_server");
    let mut seeds: Vec<_> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("directory entry").path();
            let name = path.file_name().expect("file name");
            let name = name.to_string_lossy().into_owned();
            (name, fs::read(&path).expect("seed file"))
        })
        .collect();
    seeds.sort();
    seeds
}

#[test]
fn connection_server_seeds() {
    let seeds = seeds();
    assert!(seeds.len() >= 10, "only {} seeds", seeds.len());
    for (name, data) in &seeds {
        assert!(!data.is_empty(), "{name} is empty");
        // The seed's own read sizes, then one read, bytewise and odd splits.
        for reads in [data[0], 0, 1, 2, 13] {
            let mut input = data.clone();
            input[0] = reads;
            let conn = driver::drive(&input);
            let what = format!("{name} with reads byte {reads}: {conn:?}");
            if name.starts_with("ok_") {
                assert_eq!(conn.state(), State::Open, "{what}");
                assert!(conn.error().is_none(), "{what}");
            } else if name.starts_with("close_") {
                assert_eq!(conn.state(), State::Closed, "{what}");
                assert!(conn.error().is_none(), "{what}");
                assert!(conn.peer_close().is_some(), "{what}");
            } else if name.starts_with("err_") {
                assert_eq!(conn.state(), State::Closed, "{what}");
                assert!(conn.error().is_some(), "{what}");
            } else {
                panic!("seed {name} must start with ok_, close_ or err_");
            }
        }
    }
}

#[test]
fn empty_input_and_reads_byte_alone() {
    assert_eq!(driver::drive(&[]).state(), State::Open);
    assert_eq!(driver::drive(&[7]).state(), State::Open);
}

// The fuzz target's driver, shared rather than copied.
include!("../../../fuzz/common/connection_server.rs");
