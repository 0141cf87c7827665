//! Criterion micro-benchmarks for the hot paths of `wharf-proto`: masking,
//! UTF-8 validation, frame header decode and encode, and a server
//! [`Connection`] receiving whole buffers of masked client frames, with and
//! without a rate limit.
//!
//! Every benchmark sets [`Throughput::Bytes`], so criterion reports GB/s.
//!
//! ```text
//! cargo bench -p wharf-proto --bench proto -- mask
//! RUSTFLAGS="-C target-cpu=native" cargo bench -p wharf-proto --bench proto -- mask  # measure only, never commit
//! cargo test -p wharf-proto --benches   # smoke: every benchmark runs once
//! ```

use std::hint::black_box;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput};
use wharf_proto::frame::FrameHeader;
use wharf_proto::{
    Connection, Event, Limits, OpCode, RateAction, RateLimit, Transmit, Utf8Validator, mask,
};

const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// Deterministic, non-constant bytes, so nothing folds to a constant.
fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(31) ^ (i >> 7)) as u8)
        .collect()
}

fn bench_mask(c: &mut Criterion) {
    let mut group = c.benchmark_group("mask");
    for size in [16, 1 << 10, 64 << 10, 1 << 20] {
        group.throughput(Throughput::Bytes(size as u64));
        let mut buf = pattern(size);
        group.bench_function(BenchmarkId::new("apply", size), |b| {
            b.iter(|| mask::apply(black_box(&mut buf), black_box(KEY), black_box(0)));
        });
        group.bench_function(BenchmarkId::new("apply_naive", size), |b| {
            b.iter(|| mask::apply_naive(black_box(&mut buf), black_box(KEY), black_box(0)));
        });
    }
    group.finish();
}

/// `len` bytes of valid UTF-8 mixing 1-, 2-, 3- and 4-byte code points.
fn mixed_text(len: usize) -> Vec<u8> {
    const SAMPLE: &str = "héllo wörld – κόσμε, 世界 🦀 ok; ";
    let mut s = String::with_capacity(len + SAMPLE.len());
    'fill: loop {
        for ch in SAMPLE.chars() {
            if s.len() + ch.len_utf8() > len {
                break 'fill;
            }
            s.push(ch);
        }
    }
    // Pad with ASCII so the length is exact.
    while s.len() < len {
        s.push('.');
    }
    s.into_bytes()
}

fn bench_utf8(c: &mut Criterion) {
    let mut group = c.benchmark_group("utf8");
    for size in [1 << 10, 64 << 10] {
        let ascii: Vec<u8> = (0..size).map(|i| b' ' + (i % 95) as u8).collect();
        let mixed = mixed_text(size);
        group.throughput(Throughput::Bytes(size as u64));
        for (kind, data) in [("ascii", &ascii), ("mixed", &mixed)] {
            assert!(
                std::str::from_utf8(data).is_ok(),
                "{kind} input must be valid"
            );
            group.bench_with_input(
                BenchmarkId::new(format!("validator/{kind}"), size),
                data,
                |b, data| {
                    b.iter(|| {
                        let mut v = Utf8Validator::new();
                        v.feed(black_box(data)).is_ok() && v.finish().is_ok()
                    });
                },
            );
            group.bench_with_input(
                BenchmarkId::new(format!("std_from_utf8/{kind}"), size),
                data,
                |b, data| b.iter(|| std::str::from_utf8(black_box(data)).is_ok()),
            );
        }
    }
    group.finish();
}

fn bench_frame(c: &mut Criterion) {
    let mut group = c.benchmark_group("frame");
    // Masked binary headers in the 7-bit, 16-bit and 64-bit length forms.
    for (form, payload_len) in [("len2", 100u64), ("len4", 1000), ("len10", 1 << 20)] {
        let header = FrameHeader::new(true, OpCode::Binary, Some(KEY), payload_len);
        let mut raw = [0u8; wharf_proto::frame::MAX_HEADER_LEN];
        let n = header.encode(&mut raw);
        group.throughput(Throughput::Bytes(n as u64));
        group.bench_with_input(
            BenchmarkId::new("decode_header", form),
            &raw[..n],
            |b, raw| b.iter(|| FrameHeader::decode(black_box(raw))),
        );
    }
    // `Transmit` shares the payload rather than copying it, so encoding costs
    // the same at every size: read these figures as time per frame.
    for size in [32, 64 << 10] {
        let payload = Bytes::from(pattern(size));
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("encode", size), &payload, |b, payload| {
            b.iter(|| Transmit::unmasked(OpCode::Binary, black_box(payload).clone()));
        });
    }
    group.finish();
}

fn bench_connection(c: &mut Criterion) {
    let mut group = c.benchmark_group("connection");
    // About 256 KiB of frames per buffer, whatever the frame size.
    for (kind, opcode, size) in [
        ("text", OpCode::Text, 32),
        ("binary", OpCode::Binary, 1 << 10),
        ("binary", OpCode::Binary, 64 << 10),
    ] {
        let payload: Vec<u8> = (0..size).map(|i| b'a' + (i % 26) as u8).collect();
        let frame = Transmit::masked(opcode, &payload, KEY).to_vec();
        let count = (256 << 10) / size;
        let wire: Vec<u8> = frame.repeat(count);
        group.throughput(Throughput::Bytes(wire.len() as u64));
        group.bench_with_input(
            BenchmarkId::new(format!("receive/{kind}"), size),
            &wire,
            |b, wire| {
                b.iter_batched_ref(
                    || BytesMut::from(&wire[..]),
                    |buf| {
                        let mut conn = Connection::server(Limits::default());
                        let mut messages = 0usize;
                        // `receive` stops while `MAX_EVENTS` wait: take
                        // them, then parse on, as a transport does.
                        loop {
                            conn.receive(buf).expect("valid frames");
                            while let Some(event) = conn.poll_event() {
                                if let Event::Message(m) = black_box(event) {
                                    messages += usize::from(!m.is_empty());
                                }
                            }
                            if !conn.receive_pending() {
                                break;
                            }
                        }
                        assert_eq!(messages, count);
                    },
                    BatchSize::LargeInput,
                );
            },
        );
    }
    group.finish();
}

/// 8,192 small text messages received and polled: without a rate limit,
/// with one that admits them all (the cost of checking), and with one that
/// drops all but the first (the cost of a flood under `Drop`).
fn bench_rate_limit(c: &mut Criterion) {
    let mut group = c.benchmark_group("rate_limit");
    let count = 8192;
    let wire = Transmit::masked(OpCode::Text, &[b'a'; 32], KEY)
        .to_vec()
        .repeat(count);
    group.throughput(Throughput::Bytes(wire.len() as u64));
    let admit = RateLimit::new(RateAction::Drop).messages(u32::MAX, u32::MAX);
    let flood = RateLimit::new(RateAction::Drop).messages(1, 1);
    for (name, limit, want) in [
        ("off", None, count),
        ("admit", Some(admit), count),
        ("drop", Some(flood), 1),
    ] {
        group.bench_function(name, |b| {
            b.iter_batched_ref(
                || BytesMut::from(&wire[..]),
                |buf| {
                    let now = std::time::Instant::now();
                    let mut conn = Connection::server(Limits::default());
                    if let Some(limit) = limit {
                        conn = conn.with_rate_limit(limit, now);
                    }
                    let mut messages = 0usize;
                    loop {
                        conn.receive(buf).expect("valid frames");
                        while let Some(event) = conn.poll_event() {
                            messages += usize::from(matches!(black_box(event), Event::Message(_)));
                        }
                        if !conn.receive_pending() {
                            break;
                        }
                    }
                    assert_eq!(messages, want);
                },
                BatchSize::LargeInput,
            );
        });
    }
    group.finish();
}

/// Short runs: the machine has two cores, and these are for spotting
/// regressions, not for publication (`--measurement-time` overrides).
fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

// What `criterion_group!` and `criterion_main!` expand to, written out:
// the macro's generated `pub fn` has no doc comment and trips `missing_docs`.
fn main() {
    let mut c = config().configure_from_args();
    bench_mask(&mut c);
    bench_utf8(&mut c);
    bench_frame(&mut c);
    bench_connection(&mut c);
    bench_rate_limit(&mut c);
    c.final_summary();
}
