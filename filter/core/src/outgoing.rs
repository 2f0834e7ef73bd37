//! What one attempt sends: path, headers and body in the deployment's own protocol.
//!
//! | deployment | path (after `api_base`'s path) | auth |
//! |---|---|---|
//! | OpenAI-compatible | `/chat/completions` (or the client's `/completions`, `/embeddings`) | `authorization: Bearer <key>` |
//! | `anthropic/` | `/v1/messages` (`/messages` when `api_base` already ends in `/v1`) | `x-api-key: <key>`, `anthropic-version: 2023-06-01` |
//! | `gemini/` | `/v1beta/models/<model>:generateContent`, or `:streamGenerateContent?alt=sse` | `x-goog-api-key: <key>` |
//!
//! The Gemini key goes in a header, not in `?key=` (Google accepts both): a URL ends up in
//! access logs, a header does not.

use crate::config::Deployment;
use crate::protocol::Protocol;

/// The Messages API version detour's Anthropic codec follows.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// One attempt, ready for the host to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// `:path`, query included.
    pub path: String,
    /// Content type and the provider's auth.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

/// The upstream path for a deployment: `suffix` is the OpenAI endpoint's path for
/// OpenAI-compatible deployments; `query` (without `?`) is the client's, passed on only
/// when the request goes untranslated.
pub fn path(deployment: &Deployment, suffix: &str, stream: bool, query: &str) -> String {
    let prefix = deployment.upstream.path_prefix.as_str();
    let mut path = match deployment.protocol {
        Protocol::OpenAiChat | Protocol::OpenAiResponses => format!("{prefix}{suffix}"),
        Protocol::Anthropic => {
            if prefix.ends_with("/v1") {
                format!("{prefix}/messages")
            } else {
                format!("{prefix}/v1/messages")
            }
        }
        Protocol::Gemini => {
            let version = if prefix.ends_with("/v1beta") || prefix.ends_with("/v1") {
                ""
            } else {
                "/v1beta"
            };
            let method = if stream {
                "streamGenerateContent?alt=sse"
            } else {
                "generateContent"
            };
            format!(
                "{prefix}{version}/models/{}:{method}",
                deployment.provider_model
            )
        }
    };
    if !query.is_empty() {
        path.push(if path.contains('?') { '&' } else { '?' });
        path.push_str(query);
    }
    path
}

/// Content type and auth headers for a deployment.
pub fn headers(deployment: &Deployment) -> Vec<(String, String)> {
    let mut headers = vec![("content-type".to_string(), "application/json".to_string())];
    let key = deployment.api_key.as_ref().map(|k| k.expose().to_string());
    match deployment.protocol {
        Protocol::OpenAiChat | Protocol::OpenAiResponses => {
            if let Some(key) = key {
                headers.push(("authorization".to_string(), format!("Bearer {key}")));
            }
        }
        Protocol::Anthropic => {
            if let Some(key) = key {
                headers.push(("x-api-key".to_string(), key));
            }
            headers.push((
                "anthropic-version".to_string(),
                ANTHROPIC_VERSION.to_string(),
            ));
        }
        Protocol::Gemini => {
            if let Some(key) = key {
                headers.push(("x-goog-api-key".to_string(), key));
            }
        }
    }
    headers
}

/// OpenAI's own API, whose reasoning models take `max_completion_tokens` only.
pub fn is_openai_platform(deployment: &Deployment) -> bool {
    deployment
        .upstream
        .host
        .eq_ignore_ascii_case("api.openai.com")
}
