//! One module per subcommand: its clap arguments and its `run`, which returns an exit
//! status from [`crate::exit_codes`].

pub mod check;
pub mod envoy;
pub mod report;
pub mod serve;
pub mod state;
pub mod validate;
