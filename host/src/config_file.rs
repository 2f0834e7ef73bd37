//! Reading and loading the one configuration file every subcommand starts from.
//!
//! Loading goes through [`detour_core::config::load`], exactly as the filter does, so
//! `detour validate` accepts a file if and only if the filter would.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;

use detour_core::config::{self, Diagnostic, Loaded};
use serde_json::Value;

use crate::error::{stream_error, CliError};

/// How `os.environ/NAME` references are resolved while loading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvMode {
    /// From this process's environment, as Envoy will (through `host_env_keys`).
    Real,
    /// Every name resolves to [`NO_ENV_PLACEHOLDER`] (`--no-env`): CI can check a config
    /// without holding the keys.
    Placeholder,
}

/// The value every `os.environ/NAME` takes under `--no-env`.
///
/// It is shaped like a URL so that an `api_base: os.environ/NAME` also passes; as an
/// `api_key` any non-empty string does. The `.invalid` TLD (RFC 2606) never resolves.
pub const NO_ENV_PLACEHOLDER: &str = "http://no-env-placeholder.invalid";

impl EnvMode {
    /// `--no-env` given or not.
    pub fn from_no_env(no_env: bool) -> Self {
        if no_env {
            EnvMode::Placeholder
        } else {
            EnvMode::Real
        }
    }

    /// Resolves one `os.environ/NAME`.
    pub fn resolve(self, name: &str) -> Option<String> {
        match self {
            EnvMode::Real => std::env::var(name).ok(),
            EnvMode::Placeholder => Some(NO_ENV_PLACEHOLDER.to_string()),
        }
    }
}

/// The result of reading and loading a config file.
#[derive(Debug)]
pub enum Outcome {
    /// The config is valid.
    Valid {
        /// The file's text, exactly as read.
        text: String,
        /// What it means (boxed: a `Config` is large next to `Invalid`).
        loaded: Box<Loaded>,
    },
    /// The config is invalid; its errors were printed.
    Invalid {
        /// How many errors were printed.
        errors: usize,
    },
}

/// Reads `path`, loads it, and prints every warning and error to `err`
/// (`warning: <path>: <message>`, `error: <path>: <message>`).
///
/// A file that cannot be read is a [`CliError::Io`]; a file that is not UTF-8 is an
/// invalid config (YAML and JSON are Unicode).
pub fn read_and_load(path: &Path, env: EnvMode, err: &mut dyn Write) -> Result<Outcome, CliError> {
    let bytes = std::fs::read(path).map_err(|e| CliError::io_path("read", path, e))?;
    let text = match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(utf8) => {
            writeln!(
                err,
                "error: {}: is not UTF-8 (invalid byte at offset {})",
                path.display(),
                utf8.utf8_error().valid_up_to()
            )
            .map_err(stream_error("stderr"))?;
            return Ok(Outcome::Invalid { errors: 1 });
        }
    };
    let result = config::load(&text, &|name| env.resolve(name));
    let (warnings, errors) = match &result {
        Ok(loaded) => (&loaded.warnings, None),
        Err(load_error) => (&load_error.warnings, Some(&load_error.errors)),
    };
    print_diagnostics(err, "warning", warnings)?;
    if let Some(errors) = errors {
        print_diagnostics(err, "error", errors)?;
    }
    Ok(match result {
        Ok(loaded) => Outcome::Valid {
            text,
            loaded: Box::new(loaded),
        },
        Err(load_error) => Outcome::Invalid {
            errors: load_error.errors.len(),
        },
    })
}

fn print_diagnostics(
    err: &mut dyn Write,
    level: &str,
    diagnostics: &[Diagnostic],
) -> Result<(), CliError> {
    for diagnostic in diagnostics {
        writeln!(err, "{level}: {diagnostic}").map_err(stream_error("stderr"))?;
    }
    Ok(())
}

/// One `os.environ/NAME` reference in the config text.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct EnvRef {
    /// Field path in the core's notation (`model_list[0].litellm_params.api_key`).
    pub path: String,
    /// The environment variable's name.
    pub name: String,
}

/// Every string value of the form `os.environ/NAME` in the config text, in document
/// order. Text that does not parse yields none (loading reports that).
pub fn env_refs(text: &str) -> Vec<EnvRef> {
    let mut refs = Vec::new();
    if let Ok(root) = serde_yaml::from_str::<Value>(text) {
        collect_env_refs(&root, String::new(), &mut refs);
    }
    refs
}

/// The distinct names of [`env_refs`], sorted: Envoy's `host_env_keys`.
pub fn env_names(refs: &[EnvRef]) -> Vec<String> {
    refs.iter()
        .map(|r| r.name.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

fn collect_env_refs(value: &Value, path: String, refs: &mut Vec<EnvRef>) {
    match value {
        Value::String(text) => {
            if let Some(name) = text.strip_prefix("os.environ/") {
                if !name.is_empty() {
                    refs.push(EnvRef {
                        path,
                        name: name.to_string(),
                    });
                }
            }
        }
        Value::Array(items) => {
            for (idx, item) in items.iter().enumerate() {
                collect_env_refs(item, format!("{path}[{idx}]"), refs);
            }
        }
        Value::Object(map) => {
            for (key, item) in map {
                let child = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                collect_env_refs(item, child, refs);
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_env_refs_anywhere_with_paths() {
        let text = "model_list:\n  - model_name: a\n    litellm_params:\n      model: openai/x\n      api_key: os.environ/B_KEY\n      api_base: os.environ/A_BASE\ngeneral_settings:\n  master_key: os.environ/B_KEY\n  other: [os.environ/C, 'os.environ/', plain]\n";
        let refs = env_refs(text);
        let paths: Vec<_> = refs.iter().map(|r| r.path.as_str()).collect();
        assert!(paths.contains(&"model_list[0].litellm_params.api_base"));
        assert!(paths.contains(&"general_settings.other[0]"));
        assert_eq!(env_names(&refs), vec!["A_BASE", "B_KEY", "C"]);
        assert!(env_refs(": : not yaml [").is_empty());
    }
}
