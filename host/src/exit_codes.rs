//! The exit statuses of every `detour` subcommand, in one place.
//!
//! Scripts and CI branch on these, so they are part of the interface: never renumber.

/// Success: the command did what it was asked (`validate`: the config is valid).
pub const OK: u8 = 0;

/// A bug or an unexpected condition in detour itself.
pub const UNEXPECTED: u8 = 1;

/// The command line is wrong: unknown flag, bad value, missing argument (clap's own
/// usage errors use the same status).
pub const USAGE: u8 = 2;

/// The configuration file was read but is not valid; every error was printed to stderr.
pub const CONFIG_INVALID: u8 = 3;

/// A file could not be read or written (the config, `-o` output, stdout).
pub const IO: u8 = 4;

/// `detour serve` could not start: the filter module does not compile or instantiate,
/// its start-up trapped, or a listener could not be bound. (A filter that rejects its
/// configuration is [`CONFIG_INVALID`].)
pub const SERVE_FAILED: u8 = 5;

/// `detour check`: the config loads but breaks a rule of the policy (a FAIL finding);
/// the summary and the report name each one. Warnings alone exit [`OK`].
pub const CHECK_FAILED: u8 = 6;
