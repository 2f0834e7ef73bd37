//! The `detour` binary: parse the command line, run it, exit with its status.

use std::io::{self, Write};
use std::process::ExitCode;

use clap::Parser;
use detour::{exit_codes, Cli};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(usage) => {
            // --help and --version are "errors" that print to stdout and succeed.
            // If even that print fails there is nobody left to tell.
            let _ = usage.print();
            return if usage.use_stderr() {
                ExitCode::from(exit_codes::USAGE)
            } else {
                ExitCode::from(exit_codes::OK)
            };
        }
    };
    // Not locked for the whole run: `detour serve`'s worker threads log to stderr too.
    let mut out = io::stdout();
    let mut err = io::stderr();
    let result = detour::run(cli, &mut out, &mut err);
    let flushed = out.flush();
    match result {
        Ok(code) => match flushed {
            Ok(()) => code,
            Err(e) => {
                let _ = writeln!(err, "error: cannot write to stdout: {e}");
                ExitCode::from(exit_codes::IO)
            }
        },
        Err(error) => {
            let _ = writeln!(err, "error: {error}");
            error.exit_code()
        }
    }
}
