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
        Err(e) if std::env::args().any(|a| a == "--json") => {
            let words = e.render().to_string();
            let words = words.trim().trim_start_matches("error: ").lines().next().unwrap_or("").to_string();
            json_ui().error(&xfer::error::Error::Usage(words));
            return ExitCode::from(xfer::error::EXIT_USAGE);
        }
        Err(e) => {
            eprint!("xfer: {}", e.render());
            return ExitCode::from(xfer::error::EXIT_USAGE);
        }
    };
    let json = cli.json;
    match xfer::run(cli) {
        Ok(code) => ExitCode::from(code),
        // Quietly, with the status of a process killed by SIGPIPE (128 + 13).
        Err(e) if e.is_closed_output() => ExitCode::from(141),
        Err(e) => {
            match json {
                true => json_ui().error(&e),
                false => eprintln!("xfer: error: {e}"),
            }
            ExitCode::from(e.exit_code())
        }
    }
}

/// Output as `--json` asks.
fn json_ui() -> xfer::ui::Ui {
    xfer::ui::Ui { json: true, ..xfer::ui::Ui::default() }
}
