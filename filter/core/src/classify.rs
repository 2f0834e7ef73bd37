//! What an upstream answer means for the chain.
//!
//! | answer | class | the chain … |
//! |---|---|---|
//! | 2xx | `Success` | stops: the client gets it |
//! | 429 | `RateLimited` | moves on at once; the deployment cools down |
//! | 500, 502, 503, 504, 529, 408, timeout, connection failure, reset | `Transient` | retries the same deployment with backoff, then moves on |
//! | 401, 403, 404, other 5xx | `Failed` | moves on at once |
//! | 400/413/422 saying the prompt is too long | `ContextWindow` | follows `context_window_fallbacks` |
//! | 400/413/422 saying the content was refused | `ContentPolicy` | follows `content_policy_fallbacks` |
//! | any other status | `PassThrough` | stops: the client gets the provider's answer untouched |

use crate::flow::Reason;

/// The class of one upstream answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// The answer goes to the client.
    Success,
    /// 429: move on now, cool the deployment down.
    RateLimited,
    /// Worth retrying on the same deployment.
    Transient,
    /// Move on at once without retrying.
    Failed,
    /// The prompt does not fit this deployment's window.
    ContextWindow,
    /// The provider refused the content.
    ContentPolicy,
    /// The client's own mistake (or a status detour does not act on): hand it back untouched.
    PassThrough,
}

/// Error bodies are read up to this many bytes to find the reason.
pub const MAX_CLASSIFY_BODY: usize = 64 * 1024;

/// Whether the class of `status` depends on its body (then the glue buffers the body,
/// at most [`MAX_CLASSIFY_BODY`] bytes, before classifying).
pub fn needs_body(status: u16) -> bool {
    (400..500).contains(&status) && !matches!(status, 401 | 403 | 404 | 408 | 429)
}

/// Classifies an answer. `status` is `None` when no response arrived (reset, or a
/// dispatched call whose response was lost mid-body).
pub fn classify(status: Option<u16>, body: &[u8]) -> (Class, Reason) {
    let Some(status) = status else {
        return (Class::Transient, Reason::Reset);
    };
    match status {
        200..=299 => (Class::Success, Reason::Ok),
        429 => (Class::RateLimited, Reason::RateLimited),
        408 | 504 => (Class::Transient, Reason::Timeout),
        500 | 502 | 503 | 529 => (Class::Transient, transport_reason(body)),
        401 | 403 => (Class::Failed, Reason::AuthError),
        404 => (Class::Failed, Reason::NotFound),
        500..=599 => (Class::Failed, Reason::ServerError),
        400 | 413 | 422 => {
            let text = lowercase_prefix(body);
            if status == 400 && AUTH_MARKERS.iter().any(|m| text.contains(m)) {
                // Google answers a bad key with 400 INVALID_ARGUMENT / API_KEY_INVALID.
                (Class::Failed, Reason::AuthError)
            } else if CONTEXT_WINDOW_MARKERS.iter().any(|m| text.contains(m)) {
                (Class::ContextWindow, Reason::ContextWindow)
            } else if CONTENT_POLICY_MARKERS.iter().any(|m| text.contains(m)) {
                (Class::ContentPolicy, Reason::ContentPolicy)
            } else {
                (Class::PassThrough, Reason::ClientError)
            }
        }
        _ => (Class::PassThrough, Reason::ClientError),
    }
}

/// Envoy's own 503s say what went wrong at the transport level.
fn transport_reason(body: &[u8]) -> Reason {
    let text = lowercase_prefix(body);
    if text.contains("upstream connect error") && !text.contains("connection termination") {
        Reason::ConnectionFailure
    } else if text.contains("reset reason") || text.contains("connection termination") {
        Reason::Reset
    } else if text.contains("upstream request timeout") {
        Reason::Timeout
    } else {
        Reason::ServerError
    }
}

fn lowercase_prefix(body: &[u8]) -> String {
    let end = body.len().min(MAX_CLASSIFY_BODY);
    String::from_utf8_lossy(body.get(..end).unwrap_or_default()).to_lowercase()
}

/// Phrases providers use for "the prompt is too long" (LiteLLM's list, lowercased).
const CONTEXT_WINDOW_MARKERS: [&str; 14] = [
    "context_length_exceeded",
    "maximum context length",
    "context length",
    "context window",
    "exceed context limit",
    "model's maximum context limit",
    "prompt is too long",
    "input is too long",
    "input too long",
    "too many tokens",
    "exceeds the maximum number of tokens",
    "input tokens exceed",
    "exceeds the available context size",
    "reduce the length of the messages",
];

/// Phrases of a 400 that means "the key is wrong" (Google's API_KEY_INVALID).
const AUTH_MARKERS: [&str; 2] = ["api_key_invalid", "api key not valid"];

/// Phrases providers use for "the content was refused".
const CONTENT_POLICY_MARKERS: [&str; 9] = [
    "content filtering policy",
    "output blocked by",
    "content_policy_violation",
    "content_filter",
    "content management policy",
    "responsibleaipolicyviolation",
    "safety system",
    "violating our usage policy",
    "flagged by our moderation",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        assert_eq!(classify(Some(200), b"").0, Class::Success);
        assert_eq!(classify(Some(429), b"").0, Class::RateLimited);
        for s in [500, 502, 503, 504, 529, 408] {
            assert_eq!(classify(Some(s), b"").0, Class::Transient, "{s}");
        }
        for s in [401, 403, 404, 501] {
            assert_eq!(classify(Some(s), b"").0, Class::Failed, "{s}");
        }
        assert_eq!(classify(None, b""), (Class::Transient, Reason::Reset));
        assert_eq!(
            classify(Some(400), b"{\"error\":{\"message\":\"bad temperature\"}}").0,
            Class::PassThrough
        );
        assert_eq!(classify(Some(409), b"").0, Class::PassThrough);
        assert_eq!(classify(Some(302), b"").0, Class::PassThrough);
    }

    #[test]
    fn reasons_from_bodies() {
        let cw = br#"{"error":{"message":"This model's maximum context length is 8192 tokens.","code":"context_length_exceeded"}}"#;
        assert_eq!(classify(Some(400), cw).0, Class::ContextWindow);
        let cp = br#"{"error":{"message":"Your request was rejected as a result of our safety system.","code":"content_policy_violation"}}"#;
        assert_eq!(classify(Some(400), cp).0, Class::ContentPolicy);
        let refused = b"upstream connect error or disconnect/reset before headers. reset reason: remote connection failure";
        assert_eq!(classify(Some(503), refused).1, Reason::ConnectionFailure);
        let closed = b"upstream connect error or disconnect/reset before headers. reset reason: connection termination";
        assert_eq!(classify(Some(503), closed).1, Reason::Reset);
        assert_eq!(
            classify(Some(504), b"upstream request timeout").1,
            Reason::Timeout
        );
        assert_eq!(
            classify(Some(400), &[0xff, 0xfe, 0x00]).0,
            Class::PassThrough
        );
    }

    #[test]
    fn which_statuses_need_a_body() {
        assert!(needs_body(400));
        assert!(needs_body(413));
        assert!(!needs_body(429));
        assert!(!needs_body(401));
        assert!(!needs_body(503));
        assert!(!needs_body(200));
    }

    #[test]
    fn native_provider_error_shapes() {
        let anthropic_refusal = br#"{"type":"error","error":{"type":"invalid_request_error","message":"Output blocked by content filtering policy"}}"#;
        assert_eq!(
            classify(Some(400), anthropic_refusal).0,
            Class::ContentPolicy
        );
        let anthropic_long = br#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 210000 tokens > 200000 maximum"}}"#;
        assert_eq!(classify(Some(400), anthropic_long).0, Class::ContextWindow);
        let gemini_long = br#"{"error":{"code":400,"message":"The input token count (1048577) exceeds the maximum number of tokens allowed (1048576).","status":"INVALID_ARGUMENT"}}"#;
        assert_eq!(classify(Some(400), gemini_long).0, Class::ContextWindow);
        let gemini_key = br#"{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT","details":[{"reason":"API_KEY_INVALID"}]}}"#;
        assert_eq!(
            classify(Some(400), gemini_key),
            (Class::Failed, Reason::AuthError)
        );
        assert_eq!(classify(Some(529), b"{}").0, Class::Transient);
    }
}
