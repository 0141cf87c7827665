//! Criterion micro-benchmarks (filled in below).
fn main() {}
