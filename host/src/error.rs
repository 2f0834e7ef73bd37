//! The errors a subcommand returns instead of an exit status.
//!
//! An invalid configuration is not an error here: the subcommand prints its diagnostics
//! and returns [`exit_codes::CONFIG_INVALID`] itself.
//! A [`CliError`] is what is left: the command could not run at all.

use std::fmt;
use std::io;
use std::path::Path;
use std::process::ExitCode;

use crate::exit_codes;

/// Why a subcommand could not run.
#[derive(Debug)]
pub enum CliError {
    /// Reading or writing a file (or stdout/stderr) failed.
    Io {
        /// What was being done, e.g. `cannot read config.yaml`.
        context: String,
        /// The underlying error.
        source: io::Error,
    },
    /// The arguments are well-formed for clap but make no sense together.
    Usage(String),
    /// Something detour does not expect to happen.
    Unexpected(String),
}

impl CliError {
    /// An I/O error on `path` while doing `what` (`read`, `write`).
    pub fn io_path(what: &str, path: &Path, source: io::Error) -> Self {
        CliError::Io {
            context: format!("cannot {what} {}", path.display()),
            source,
        }
    }

    /// The exit status this error maps to (see [`exit_codes`]).
    pub fn exit_status(&self) -> u8 {
        match self {
            CliError::Io { .. } => exit_codes::IO,
            CliError::Usage(_) => exit_codes::USAGE,
            CliError::Unexpected(_) => exit_codes::UNEXPECTED,
        }
    }

    /// [`Self::exit_status`] as a process exit code.
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.exit_status())
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Io { context, source } => write!(f, "{context}: {source}"),
            CliError::Usage(message) => write!(f, "{message}"),
            CliError::Unexpected(message) => write!(f, "unexpected: {message}"),
        }
    }
}

impl std::error::Error for CliError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CliError::Io { source, .. } => Some(source),
            CliError::Usage(_) | CliError::Unexpected(_) => None,
        }
    }
}

/// Writing to the output or diagnostic stream failed (e.g. a closed pipe).
pub(crate) fn stream_error(stream: &str) -> impl FnOnce(io::Error) -> CliError + '_ {
    move |source| CliError::Io {
        context: format!("cannot write to {stream}"),
        source,
    }
}
