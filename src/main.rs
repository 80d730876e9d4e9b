//! The `xfer` binary: parse, run, map errors to `xfer: error: ...` and an
//! exit code.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = match xfer::cli::Cli::try_parse() {
        Ok(cli) => cli,
        // Help and --version go to stdout as they are; a usage error reads
        // like every other error.
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            eprint!("xfer: {}", e.render());
            return ExitCode::from(xfer::error::EXIT_USAGE);
        }
    };
    match xfer::run(cli) {
        Ok(code) => ExitCode::from(code),
        // Quietly, with the status of a process killed by SIGPIPE (128 + 13).
        Err(e) if e.is_closed_output() => ExitCode::from(141),
        Err(e) => {
            eprintln!("xfer: error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
