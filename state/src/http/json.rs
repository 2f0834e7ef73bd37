//! Reading request bodies field by field, so every 400 names the field that is wrong, and
//! the one error shape every answer uses: `{"error": {"type", "message", "field"?}}`.

use detour_core::ledger::{LedgerError, ScopeLimit};
use http::{Response, StatusCode};
use serde_json::{json, Map, Value};

use super::Reply;

/// A rejected request: status and body.
#[derive(Debug)]
pub struct Problem {
    status: StatusCode,
    kind: &'static str,
    message: String,
    field: Option<String>,
}

impl Problem {
    /// 400 about `field`.
    pub fn field(field: &str, message: impl Into<String>) -> Problem {
        Problem {
            status: StatusCode::BAD_REQUEST,
            kind: "invalid_request",
            message: format!("{field}: {}", message.into()),
            field: Some(field.to_string()),
        }
    }

    /// Any status with a type and message.
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Problem {
        Problem {
            status,
            kind,
            message: message.into(),
            field: None,
        }
    }

    /// The answer: JSON error body, `retry-after: 1` on 503.
    pub fn into_reply(self) -> Reply {
        let mut error = json!({"type": self.kind, "message": self.message});
        if let (Some(field), Some(obj)) = (self.field, error.as_object_mut()) {
            obj.insert("field".into(), Value::String(field));
        }
        let mut reply = json_reply(self.status, &json!({ "error": error }));
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            reply.headers_mut().insert(
                http::header::RETRY_AFTER,
                http::HeaderValue::from_static("1"),
            );
        }
        reply
    }
}

impl From<LedgerError> for Problem {
    fn from(err: LedgerError) -> Problem {
        match err {
            LedgerError::Invalid(message) => {
                Problem::new(StatusCode::BAD_REQUEST, "invalid_request", message)
            }
            LedgerError::IdReused(id) => Problem::new(
                StatusCode::CONFLICT,
                "id_reused",
                format!("{id:?} names a hold that already ended; ids are single-use"),
            ),
            LedgerError::Backend {
                message,
                transient: true,
            } => Problem::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message),
            LedgerError::Backend {
                message,
                transient: false,
            } => Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "backend_error", message),
        }
    }
}

/// A JSON answer.
pub fn json_reply(status: StatusCode, body: &Value) -> Reply {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    let mut reply = Response::new(http_body_util::Full::new(bytes::Bytes::from(bytes)));
    *reply.status_mut() = status;
    reply.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    reply
}

/// A request body: a JSON object.
pub struct Body(Map<String, Value>);

impl Body {
    /// Parses `bytes` as a JSON object.
    pub fn parse(bytes: &[u8]) -> Result<Body, Problem> {
        match serde_json::from_slice::<Value>(bytes) {
            Ok(Value::Object(map)) => Ok(Body(map)),
            Ok(_) => Err(Problem::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "the body must be a JSON object",
            )),
            Err(e) => Err(Problem::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                format!("the body is not JSON: {e}"),
            )),
        }
    }

    /// A required non-empty string.
    pub fn string(&self, field: &str) -> Result<String, Problem> {
        match self.0.get(field) {
            Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            Some(Value::String(_)) => Err(Problem::field(field, "must not be empty")),
            Some(_) => Err(Problem::field(field, "must be a string")),
            None => Err(Problem::field(field, "is required")),
        }
    }

    /// A required non-negative integer.
    pub fn u64(&self, field: &str) -> Result<u64, Problem> {
        match self.0.get(field) {
            Some(value) => as_u64(value).ok_or_else(|| {
                Problem::field(field, "must be a non-negative integer (nano-dollars, ms)")
            }),
            None => Err(Problem::field(field, "is required")),
        }
    }

    /// An optional non-negative integer.
    pub fn u64_or(&self, field: &str, default: u64) -> Result<u64, Problem> {
        match self.0.get(field) {
            None | Some(Value::Null) => Ok(default),
            Some(_) => self.u64(field),
        }
    }

    /// `scopes`: a non-empty list of `{"key": string, "limit_nanos": integer}`.
    pub fn scopes(&self) -> Result<Vec<ScopeLimit>, Problem> {
        let Some(Value::Array(items)) = self.0.get("scopes") else {
            return Err(Problem::field(
                "scopes",
                "is required: a list of {\"key\", \"limit_nanos\"}",
            ));
        };
        if items.is_empty() {
            return Err(Problem::field("scopes", "must not be empty"));
        }
        let mut scopes = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let key = match item.get("key") {
                Some(Value::String(k)) if !k.is_empty() && !k.contains('\n') => k.clone(),
                _ => {
                    return Err(Problem::field(
                        &format!("scopes[{i}].key"),
                        "must be a non-empty string without newlines",
                    ))
                }
            };
            let Some(limit_nanos) = item.get("limit_nanos").and_then(as_u64) else {
                return Err(Problem::field(
                    &format!("scopes[{i}].limit_nanos"),
                    "must be a non-negative integer",
                ));
            };
            scopes.push(ScopeLimit { key, limit_nanos });
        }
        Ok(scopes)
    }
}

fn as_u64(value: &Value) -> Option<u64> {
    value.as_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_named() {
        let body =
            Body::parse(br#"{"a": "", "n": -1, "scopes": [{"key": "k", "limit_nanos": "x"}]}"#)
                .unwrap();
        assert!(body
            .string("a")
            .unwrap_err()
            .message
            .starts_with("a: must not be empty"));
        assert_eq!(body.u64("n").unwrap_err().field.as_deref(), Some("n"));
        assert_eq!(
            body.u64("missing").unwrap_err().field.as_deref(),
            Some("missing")
        );
        assert_eq!(body.u64_or("missing", 7).unwrap(), 7);
        assert_eq!(
            body.scopes().unwrap_err().field.as_deref(),
            Some("scopes[0].limit_nanos")
        );
        assert!(Body::parse(b"[1]").is_err());
        assert!(Body::parse(b"{").is_err());
    }
}
