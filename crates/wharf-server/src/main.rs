//! `wharf`: parses arguments and calls [`wharf_server::run`].

use std::process::ExitCode;

use clap::Parser;
use wharf_server::Cli;

/// mimalloc rather than glibc's malloc: tokio's task and socket
/// registration are 128-byte-aligned blocks, and glibc leaves a hole beside
/// each, ~450 B per idle connection in all; mimalloc serves them from size
/// classes (docs/BENCHMARKS.md, memory). Version 2, built to commit memory
/// as it is used (`.cargo/config.toml`).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    match wharf_server::run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wharf: {e:#}");
            ExitCode::FAILURE
        }
    }
}
