//! Builders of canonical values and fixture readers for the protocol codec tests.

use std::path::PathBuf;

use detour_core::protocol::{Message, Part, Role, ToolCall, ToolResult};

/// `tests/fixtures/protocol/<protocol>/<name>`.
pub fn fixture_path(protocol: &str, name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/protocol")
        .join(protocol)
        .join(name)
}

/// The bytes of a fixture (the test fails, naming it, when it cannot be read).
pub fn fixture_bytes(protocol: &str, name: &str) -> Vec<u8> {
    std::fs::read(fixture_path(protocol, name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

pub fn text(t: &str) -> Part {
    Part::Text(t.to_string())
}

pub fn user(content: Vec<Part>) -> Message {
    Message {
        role: Role::User,
        content,
    }
}

pub fn assistant(content: Vec<Part>) -> Message {
    Message {
        role: Role::Assistant,
        content,
    }
}

pub fn call(id: &str, name: &str, arguments: &str) -> Part {
    Part::ToolCall(ToolCall {
        id: id.to_string(),
        name: name.to_string(),
        arguments: arguments.to_string(),
    })
}

pub fn result(call_id: &str, name: Option<&str>, content: Vec<Part>, is_error: bool) -> Part {
    Part::ToolResult(ToolResult {
        call_id: call_id.to_string(),
        name: name.map(str::to_string),
        content,
        is_error,
    })
}
