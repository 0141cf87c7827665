//! The committed seeds of the `connection_server` fuzz target, run as an
//! ordinary test on stable (the fuzz crate needs nightly and is not a
//! workspace member, so the driver is duplicated below; a test keeps the two
//! copies identical).
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

/// The module at the end of a source file, from its `mod driver {` line.
fn driver_source(src: &str) -> &str {
    let start = src.find("\nmod driver {\n").expect("a `mod driver` block");
    &src[start..]
}

#[test]
fn driver_matches_the_fuzz_target() {
    let path = fuzz_dir().join("fuzz_targets/connection_server.rs");
    let target = fs::read_to_string(&path).expect("fuzz target source");
    assert!(
        driver_source(&target) == driver_source(include_str!("fuzz_seeds.rs")),
        "the drivers in {} and tests/fuzz_seeds.rs differ",
        path.display()
    );
}

mod driver {
    use bytes::BytesMut;
    use wharf_proto::frame::{FrameHeader, MAX_HEADER_LEN};
    use wharf_proto::{CloseFrame, Connection, Event, Limits, OpCode, State};

    /// Frame and message limit for the fuzzed connection.
    pub(crate) const MAX: usize = 64 << 10;

    /// Feeds `data[1..]` to a server connection in reads sized by `data[0]`,
    /// checking the invariants after each read. Returns the connection.
    pub(crate) fn drive(data: &[u8]) -> Connection {
        let limits = Limits::default().max_message_size(MAX).max_frame_size(MAX);
        let mut conn = Connection::server(limits);
        let Some((&seed, mut rest)) = data.split_first() else {
            return conn;
        };
        let mut rng = u32::from(seed);
        let mut buf = BytesMut::new();
        while !rest.is_empty() {
            let len = if seed == 0 {
                rest.len()
            } else {
                rng = rng.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                1 + (rng >> 16) as usize % usize::from(seed)
            };
            let (read, tail) = rest.split_at(len.min(rest.len()));
            rest = tail;
            buf.extend_from_slice(read);

            let was_closed = conn.state() == State::Closed;
            let result = conn.receive(&mut buf);
            if was_closed {
                assert!(result.is_ok(), "a closed connection discards input");
            }
            if result.is_err() || conn.state() == State::Closed {
                assert!(buf.is_empty(), "input left after the connection closed");
            }
            // What is held back is at most a partial header or one partial frame.
            assert!(
                buf.len() < MAX_HEADER_LEN.max(MAX),
                "held {} bytes",
                buf.len()
            );

            let mut peer_close = None;
            while let Some(event) = conn.poll_event() {
                match event {
                    Event::Message(m) => {
                        assert!(m.len() <= MAX, "message of {} bytes", m.len());
                        if m.is_control() {
                            assert!(m.len() <= 125, "control payload of {} bytes", m.len());
                        }
                    }
                    Event::Close(frame) => {
                        assert!(peer_close.is_none(), "two close events");
                        assert_eq!(conn.state(), State::Closed);
                        peer_close = Some(frame.code);
                    }
                    _ => {}
                }
            }

            let mut sent_close = None;
            while let Some(t) = conn.poll_transmit() {
                let (header, n) = FrameHeader::decode(t.header())
                    .expect("our header decodes")
                    .expect("our header is whole");
                assert_eq!(n, t.header().len());
                assert_eq!(header.payload_len, t.payload().len() as u64);
                assert!(header.fin && header.rsv == 0 && header.mask.is_none());
                match header.opcode {
                    OpCode::Pong => assert!(t.payload().len() <= 125),
                    OpCode::Close => {
                        assert!(sent_close.is_none(), "two close frames");
                        let frame = CloseFrame::decode(t.payload().clone())
                            .expect("our close frame is valid");
                        sent_close = Some(frame.code);
                    }
                    other => panic!("server sent {other:?} unprompted"),
                }
            }
            assert_eq!(conn.buffered_amount(), 0);

            match result {
                Err(e) => {
                    assert_eq!(conn.state(), State::Closed);
                    assert_eq!(conn.error(), Some(&e));
                    assert_eq!(sent_close, Some(e.close_code()), "close frame for {e}");
                }
                Ok(()) => {
                    if let Some(code) = peer_close {
                        assert_eq!(sent_close, Some(code), "the close echo");
                    } else if !was_closed {
                        assert_eq!(conn.state(), State::Open);
                        assert_eq!(sent_close, None);
                    }
                }
            }
            if conn.state() == State::Closed {
                assert!(conn.is_finished());
            }
        }
        conn
    }
}
