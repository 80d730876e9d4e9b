//! The `xfer` binary: parse, run, map errors to `xfer: error: ...` and an
//! exit code.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = xfer::cli::Cli::parse();
    match xfer::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("xfer: error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
