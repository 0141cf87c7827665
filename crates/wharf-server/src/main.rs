//! `wharf`: parses arguments and calls [`wharf_server::run`].

use std::process::ExitCode;

use clap::Parser;
use wharf_server::Cli;

fn main() -> ExitCode {
    match wharf_server::run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wharf: {e:#}");
            ExitCode::FAILURE
        }
    }
}
