//! Walking the parsed config tree with field paths, collecting diagnostics.

use std::fmt;

use serde_json::{Map, Value};

use super::duration::parse_duration_ms;

/// A problem found in the config, located by its field path (`model_list[2].litellm_params.api_key`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Where: a dotted path with `[i]` for list items; empty for the whole document.
    pub path: String,
    /// What is wrong, as a sentence fragment that follows the path.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Errors and warnings of one load. Every problem is reported, not only the first.
#[derive(Debug, Default)]
pub(crate) struct Diags {
    pub(crate) errors: Vec<Diagnostic>,
    pub(crate) warnings: Vec<Diagnostic>,
}

impl Diags {
    pub(crate) fn error(&mut self, path: &str, message: impl Into<String>) {
        self.errors.push(Diagnostic {
            path: path.to_string(),
            message: message.into(),
        });
    }

    pub(crate) fn warn(&mut self, path: &str, message: impl Into<String>) {
        self.warnings.push(Diagnostic {
            path: path.to_string(),
            message: message.into(),
        });
    }
}

/// `parent.key`, or `key` at the top.
pub(crate) fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// `parent[idx]`.
pub(crate) fn index(parent: &str, idx: usize) -> String {
    format!("{parent}[{idx}]")
}

/// A mapping node and its path, with typed getters that record what is wrong.
pub(crate) struct Section<'a> {
    pub(crate) path: String,
    pub(crate) map: &'a Map<String, Value>,
}

impl<'a> Section<'a> {
    /// Views `value` as a mapping; records an error and returns `None` otherwise.
    pub(crate) fn of(value: &'a Value, path: String, diags: &mut Diags) -> Option<Self> {
        match value {
            Value::Object(map) => Some(Section { path, map }),
            Value::Null => None,
            _ => {
                diags.error(&path, "must be a mapping");
                None
            }
        }
    }

    pub(crate) fn path_of(&self, key: &str) -> String {
        join(&self.path, key)
    }

    pub(crate) fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    pub(crate) fn string(&self, key: &str, diags: &mut Diags) -> Option<String> {
        match self.get(key)? {
            Value::String(s) => Some(s.clone()),
            // YAML users write `model_name: 4o`-like scalars; numbers read fine as names.
            Value::Number(n) => Some(n.to_string()),
            _ => {
                diags.error(&self.path_of(key), "must be a string");
                None
            }
        }
    }

    pub(crate) fn u64(&self, key: &str, diags: &mut Diags) -> Option<u64> {
        let value = self.get(key)?;
        let parsed = match value {
            Value::Number(n) => n.as_u64().or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f < 9.0e15)
                    .map(crate::num::round_f64_to_u64)
            }),
            Value::String(s) => s.trim().parse::<u64>().ok(),
            _ => None,
        };
        if parsed.is_none() {
            diags.error(&self.path_of(key), "must be a non-negative whole number");
        }
        parsed
    }

    pub(crate) fn i64(&self, key: &str, diags: &mut Diags) -> Option<i64> {
        let value = self.get(key)?;
        let parsed = match value {
            Value::Number(n) => n.as_i64(),
            Value::String(s) => s.trim().parse::<i64>().ok(),
            _ => None,
        };
        if parsed.is_none() {
            diags.error(&self.path_of(key), "must be a whole number");
        }
        parsed
    }

    pub(crate) fn f64(&self, key: &str, diags: &mut Diags) -> Option<f64> {
        let value = self.get(key)?;
        let parsed = match value {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.trim().parse::<f64>().ok(),
            _ => None,
        }
        .filter(|f| f.is_finite() && *f >= 0.0);
        if parsed.is_none() {
            diags.error(&self.path_of(key), "must be a non-negative number");
        }
        parsed
    }

    pub(crate) fn bool(&self, key: &str, diags: &mut Diags) -> Option<bool> {
        match self.get(key)? {
            Value::Bool(b) => Some(*b),
            _ => {
                diags.error(&self.path_of(key), "must be true or false");
                None
            }
        }
    }

    pub(crate) fn duration_ms(&self, key: &str, diags: &mut Diags) -> Option<u64> {
        let value = self.get(key)?;
        match parse_duration_ms(value) {
            Ok(ms) => Some(ms),
            Err(reason) => {
                diags.error(&self.path_of(key), reason);
                None
            }
        }
    }

    /// Keys present in the mapping that are not in `known`.
    pub(crate) fn unknown_keys<'k>(
        &'k self,
        known: &'k [&str],
    ) -> impl Iterator<Item = &'k String> + 'k {
        self.map
            .keys()
            .filter(move |k| !known.contains(&k.as_str()))
    }
}
