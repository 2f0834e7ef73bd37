//! LiteLLM provider prefixes (`openai/gpt-4o`) and what detour does with them.
//!
//! The prefix picks the protocol detour speaks to the deployment: `anthropic/` the
//! Anthropic Messages API, `gemini/` Google's Gemini API (AI Studio), and the
//! OpenAI-compatible prefixes (and unprefixed names) OpenAI Chat Completions. Providers
//! with other native protocols (Vertex, Bedrock, Azure's own API, …) are a config error,
//! not a request sent in the wrong shape.

use crate::protocol::Protocol;

/// What a `litellm_params.model` value resolves to.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ProviderModel {
    /// The model name sent to the provider (in the body, or in Gemini's path).
    pub(crate) provider_model: String,
    /// The provider's public endpoint, used when `api_base` is absent.
    pub(crate) default_api_base: Option<&'static str>,
    /// The protocol the deployment speaks.
    pub(crate) protocol: Protocol,
}

/// OpenAI-compatible providers: prefix and default base URL (`None`: `api_base` required).
const OPENAI_COMPATIBLE: [(&str, Option<&str>); 14] = [
    ("openai", Some("https://api.openai.com/v1")),
    ("text-completion-openai", Some("https://api.openai.com/v1")),
    ("openai_like", None),
    ("hosted_vllm", None),
    ("vllm", None),
    ("ollama_chat", None),
    ("lm_studio", None),
    ("llamafile", None),
    ("groq", Some("https://api.groq.com/openai/v1")),
    ("deepseek", Some("https://api.deepseek.com/v1")),
    ("openrouter", Some("https://openrouter.ai/api/v1")),
    ("mistral", Some("https://api.mistral.ai/v1")),
    ("xai", Some("https://api.x.ai/v1")),
    ("together_ai", Some("https://api.together.xyz/v1")),
];

/// Native protocols detour speaks: prefix, protocol, public endpoint.
const NATIVE: [(&str, Protocol, &str); 2] = [
    (
        "anthropic",
        Protocol::Anthropic,
        "https://api.anthropic.com",
    ),
    (
        "gemini",
        Protocol::Gemini,
        "https://generativelanguage.googleapis.com",
    ),
];

/// Prefixes LiteLLM knows whose native protocol detour does not speak.
const NATIVE_ONLY: [&str; 8] = [
    "vertex_ai",
    "azure",
    "azure_ai",
    "bedrock",
    "cohere",
    "ollama",
    "sagemaker",
    "huggingface",
];

/// Splits `provider/model` and checks that detour can talk to that provider.
pub(crate) fn resolve(model: &str) -> Result<ProviderModel, String> {
    let Some((prefix, rest)) = model.split_once('/') else {
        // LiteLLM infers OpenAI for bare names such as `gpt-4o`.
        return Ok(ProviderModel {
            provider_model: model.to_string(),
            default_api_base: Some("https://api.openai.com/v1"),
            protocol: Protocol::OpenAiChat,
        });
    };
    if let Some((_, protocol, base)) = NATIVE.iter().find(|(p, _, _)| *p == prefix) {
        if rest.is_empty() {
            return Err(format!(
                "{model:?} names no model after the provider prefix"
            ));
        }
        return Ok(ProviderModel {
            provider_model: rest.to_string(),
            default_api_base: Some(base),
            protocol: *protocol,
        });
    }
    if let Some((_, base)) = OPENAI_COMPATIBLE.iter().find(|(p, _)| *p == prefix) {
        if rest.is_empty() {
            return Err(format!(
                "{model:?} names no model after the provider prefix"
            ));
        }
        return Ok(ProviderModel {
            provider_model: rest.to_string(),
            default_api_base: *base,
            protocol: Protocol::OpenAiChat,
        });
    }
    if NATIVE_ONLY.contains(&prefix) {
        return Err(format!(
            "provider {prefix:?} needs its native protocol, which detour does not speak; \
             detour speaks `anthropic/`, `gemini/` and OpenAI-compatible endpoints \
             (`openai/<model>` with `api_base`)"
        ));
    }
    // An unknown prefix is most likely part of the model name (e.g. `meta-llama/Llama-3`
    // on an OpenAI-compatible server): keep the whole string, require api_base.
    Ok(ProviderModel {
        provider_model: model.to_string(),
        default_api_base: None,
        protocol: Protocol::OpenAiChat,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        let pm = resolve("openai/gpt-4o").unwrap();
        assert_eq!(pm.provider_model, "gpt-4o");
        assert_eq!(pm.default_api_base, Some("https://api.openai.com/v1"));
        assert_eq!(resolve("gpt-4o").unwrap().provider_model, "gpt-4o");
        let pm = resolve("hosted_vllm/meta-llama/Llama-3").unwrap();
        assert_eq!(pm.provider_model, "meta-llama/Llama-3");
        assert_eq!(pm.default_api_base, None);
        let pm = resolve("anthropic/claude-opus-4-5").unwrap();
        assert_eq!(
            (pm.provider_model.as_str(), pm.protocol),
            ("claude-opus-4-5", Protocol::Anthropic)
        );
        let pm = resolve("gemini/gemini-3-pro-preview").unwrap();
        assert_eq!(pm.protocol, Protocol::Gemini);
        assert!(resolve("bedrock/anthropic.claude-v2")
            .unwrap_err()
            .contains("native protocol"));
        assert!(resolve("openai/").is_err());
        assert_eq!(resolve("org/model").unwrap().provider_model, "org/model");
    }
}
