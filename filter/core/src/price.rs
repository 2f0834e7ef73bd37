//! What tokens cost: prices as integers, the cost of an answer, and built-in list prices.
//!
//! Money is counted in nano-dollars (10⁻⁹ $) per token: list prices are quoted per million
//! tokens with at most three decimals ($0.175 / M = 175 n$ per token), so they stay exact
//! integers, and a u64 of nano-dollars holds $18 billion of spend.
//!
//! ## The built-in table ([`builtin`])
//!
//! List prices of the seed's models as of **2026-11-23**, from each provider's public pricing
//! page (named per entry), cross-checked against LiteLLM's `model_prices_and_context_window.json`
//! where it lists the model. **Verify before relying on it:** providers change prices and
//! this table does not follow. A deployment's own `input_cost_per_token` /
//! `output_cost_per_token` in the config override it.
//!
//! What the table does not model, so that the cost it gives can be *lower* than the bill:
//! - long-context tiers (Gemini Pro above 200k prompt tokens costs 2× input and 1.5× output;
//!   Claude Sonnet's 1M-context beta above 200k likewise);
//! - 1-hour prompt-cache writes (Anthropic bills them at 2× input; the table prices every
//!   write at the 5-minute rate, 1.25×);
//! - audio/image input rates, batch/flex/priority tiers, regional uplifts, web-search fees.

use crate::usage::Usage;

/// Dollar prices per token in nano-dollars (10⁻⁹ $), so that sub-micro-dollar prices
/// (e.g. $0.15 per million tokens = 0.15 µ$ per token = 150 n$) stay exact integers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Price {
    /// One prompt token that was not served from the provider's cache.
    pub input_nanos: u64,
    /// One completion token (reasoning tokens included).
    pub output_nanos: u64,
    /// One prompt token served from the provider's prompt cache.
    pub cached_input_nanos: u64,
    /// One prompt token written to the provider's prompt cache (Anthropic bills 1.25×
    /// input for 5-minute writes); the input price where the provider bills no writes.
    pub cache_write_nanos: u64,
}

impl Price {
    /// Costs nothing: self-hosted models (their cost is the machine, not the token).
    pub const FREE: Price = Price {
        input_nanos: 0,
        output_nanos: 0,
        cached_input_nanos: 0,
        cache_write_nanos: 0,
    };
}

/// Highest price per token believed, in dollars: today's dearest models cost a few hundred
/// dollars per *million* tokens; a dollar per token is a typo (a per-million price written
/// as per-token), and would exhaust any budget with one request.
const MAX_DOLLARS_PER_TOKEN: f64 = 1.0;

/// Converts a config price in dollars per token (e.g. `0.000015`) to nano-dollars, rounding
/// to the nearest (prices below half a nano-dollar become 0).
///
/// `None` for negative, NaN, infinite or absurd (> $1 per token) values.
pub fn dollars_per_token_to_nanos(dollars: f64) -> Option<u64> {
    if !(0.0..=MAX_DOLLARS_PER_TOKEN).contains(&dollars) {
        return None;
    }
    // In range by the check above: at most 1e9, exact in both f64 and u64.
    Some(crate::num::round_f64_to_u64(dollars * 1e9))
}

/// The cost of an answer in nano-dollars: plain prompt tokens × input price + cache reads
/// × cached-input price + cache writes × cache-write price + completion tokens × output
/// price.
///
/// Cache reads and writes are subsets of prompt tokens; a provider reporting more than
/// that is clamped (reads first, then writes). Saturates at `u64::MAX`; never panics.
pub fn cost_nanos(price: &Price, usage: &Usage) -> u64 {
    let cached = usage.cached_prompt_tokens.min(usage.prompt_tokens);
    let written = usage
        .cache_write_tokens
        .min(usage.prompt_tokens.saturating_sub(cached));
    let plain = usage
        .prompt_tokens
        .saturating_sub(cached)
        .saturating_sub(written);
    // A u64 × u64 product always fits in a u128; only the sum can saturate.
    let total = u128::from(plain)
        .saturating_mul(u128::from(price.input_nanos))
        .saturating_add(u128::from(cached).saturating_mul(u128::from(price.cached_input_nanos)))
        .saturating_add(u128::from(written).saturating_mul(u128::from(price.cache_write_nanos)))
        .saturating_add(
            u128::from(usage.completion_tokens).saturating_mul(u128::from(price.output_nanos)),
        );
    u64::try_from(total).unwrap_or(u64::MAX)
}

/// Formats nano-dollars as dollars for messages and events: `"$12.345678"` (6 decimals,
/// truncated toward zero, so a report never shows more spend than there was).
pub fn format_dollars(nanos: u64) -> String {
    const NANOS_PER_DOLLAR: u64 = 1_000_000_000;
    format!(
        "${}.{:06}",
        nanos / NANOS_PER_DOLLAR,
        (nanos % NANOS_PER_DOLLAR) / 1_000
    )
}

/// A table row: nano-dollars per token, which is dollars per *million* tokens × 1000, so
/// rows read like the providers' pages (`$1.75 / M` is `1_750`). Cache writes cost the
/// input price (providers that bill no writes).
const fn list_price(input: u64, output: u64, cached_input: u64) -> Price {
    with_cache_writes(input, output, cached_input, input)
}

/// A table row for a provider that bills prompt-cache writes (Anthropic).
const fn with_cache_writes(input: u64, output: u64, cached_input: u64, write: u64) -> Price {
    Price {
        input_nanos: input,
        output_nanos: output,
        cached_input_nanos: cached_input,
        cache_write_nanos: write,
    }
}

/// Built-in list prices by model name (lower case, without provider prefix or date suffix).
/// Columns: input, output, cached input, in $ per million tokens × 1000.
const TABLE: &[(&str, Price)] = &[
    // --- Anthropic: https://www.anthropic.com/pricing (Claude API), as of 2026-11-23. ---
    // $5 / $25, cache reads $0.50, 5-minute cache writes $6.25. Matches LiteLLM.
    (
        "claude-opus-4-5",
        with_cache_writes(5_000, 25_000, 500, 6_250),
    ),
    // $3 / $15, cache reads $0.30, cache writes $3.75, for prompts up to 200k tokens
    // (above: $6 / $22.50, not modelled). Matches LiteLLM.
    (
        "claude-sonnet-4-5",
        with_cache_writes(3_000, 15_000, 300, 3_750),
    ),
    // --- OpenAI: https://openai.com/api/pricing/ (standard tier), as of 2026-11-23. ---
    // $1.75 / $14, cached input $0.175. Matches LiteLLM.
    ("gpt-5.2", list_price(1_750, 14_000, 175)),
    // Same prices as gpt-5.2. LiteLLM lists it for /v1/responses only: it may not be
    // callable through the Chat Completions API detour speaks.
    ("gpt-5.2-codex", list_price(1_750, 14_000, 175)),
    // --- Google: https://ai.google.dev/gemini-api/docs/pricing (paid tier, text input),
    // as of 2026-11-23. ---
    // $2 / $12, cached $0.20 for prompts up to 200k tokens (above: $4 / $18 / $0.40, not
    // modelled). Matches LiteLLM, which marks the preview deprecated from 2026-03-09 in
    // favour of gemini-3.1-pro-preview (same prices).
    ("gemini-3-pro-preview", list_price(2_000, 12_000, 200)),
    // The name the seed and demo use for the same model (Google's id has `-preview`).
    ("gemini-3-pro", list_price(2_000, 12_000, 200)),
    ("gemini-3.1-pro-preview", list_price(2_000, 12_000, 200)),
    // $0.50 / $3, cached $0.05. Matches LiteLLM.
    ("gemini-3-flash-preview", list_price(500, 3_000, 50)),
    // $0.30 / $2.50, cached $0.03 (audio input $1 not modelled). Matches LiteLLM.
    ("gemini-2.5-flash", list_price(300, 2_500, 30)),
    // $0.10 / $0.40, cached $0.01. Matches LiteLLM.
    ("gemini-2.5-flash-lite", list_price(100, 400, 10)),
    // $0.25 / $1.50, cached $0.025. From LiteLLM's entry (source: Google's pricing page).
    ("gemini-3.1-flash-lite-preview", list_price(250, 1_500, 25)),
    ("gemini-3.1-flash-lite", list_price(250, 1_500, 25)),
    // --- Z.ai (GLM), international pay-as-you-go in USD:
    // https://docs.z.ai/guides/overview/pricing, as of 2026-11-23. Not cross-checked against
    // LiteLLM. bigmodel.cn (mainland China) bills in CNY at other prices. ---
    // $0.60 / $2.20, cached $0.11.
    ("glm-4.7", list_price(600, 2_200, 110)),
    ("glm-4.6", list_price(600, 2_200, 110)),
    ("glm-4.5", list_price(600, 2_200, 110)),
    // $0.20 / $1.10, cached $0.03.
    ("glm-4.5-air", list_price(200, 1_100, 30)),
    // $1.00 / $3.20, cached $0.20: APPROXIMATE — taken from third-party listings that quote
    // Z.ai, not read on Z.ai's own page.
    ("glm-5", list_price(1_000, 3_200, 200)),
];

/// LiteLLM provider prefixes of self-hosted servers: no per-token price.
const LOCAL_PROVIDERS: &[&str] = &[
    "ollama",
    "ollama_chat",
    "hosted_vllm",
    "vllm",
    "lm_studio",
    "llamafile",
];

/// Built-in list price for a model, looked up case-insensitively by name with or without
/// a LiteLLM provider prefix (`openai/gpt-5.2`, `gemini/gemini-2.5-flash`,
/// `openrouter/anthropic/claude-opus-4-5`) and with or without a snapshot date
/// (`claude-opus-4-5-20251101`, `gpt-5.2-2025-12-11`, Vertex's `@20251101`).
///
/// Names are otherwise matched exactly: other spellings (OpenRouter's `claude-opus-4.5`,
/// Bedrock's `anthropic.claude-…-v1:0`) are not recognised.
///
/// Models behind a self-hosted provider prefix (`ollama/…`, `hosted_vllm/…`, …) cost
/// nothing. A local model behind `openai/` plus a local `api_base` is not recognised here:
/// the config must say `0`. See the module doc for what the table does not model.
pub fn builtin(model: &str) -> Option<Price> {
    let model = model.trim().to_ascii_lowercase();
    if let Some((provider, _)) = model.split_once('/') {
        if LOCAL_PROVIDERS.contains(&provider) {
            return Some(Price::FREE);
        }
    }
    let name = model.rsplit('/').next().unwrap_or(&model);
    lookup(name).or_else(|| lookup(without_date(name)?))
}

fn lookup(name: &str) -> Option<Price> {
    TABLE
        .iter()
        .find(|(known, _)| *known == name)
        .map(|(_, price)| *price)
}

/// The name without a trailing snapshot date: `-YYYYMMDD`, `@YYYYMMDD` or `-YYYY-MM-DD`.
fn without_date(name: &str) -> Option<&str> {
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let (base, date) = name.rsplit_once(['-', '@'])?;
    if date.len() == 8 && all_digits(date) {
        return Some(base);
    }
    // `-YYYY-MM-DD`: three dash-separated numeric parts.
    let (base, day) = name.rsplit_once('-')?;
    let (base, month) = base.rsplit_once('-')?;
    let (base, year) = base.rsplit_once('-')?;
    let shaped = day.len() == 2 && month.len() == 2 && year.len() == 4;
    (shaped && all_digits(day) && all_digits(month) && all_digits(year)).then_some(base)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(prompt: u64, completion: u64, cached: u64) -> Usage {
        Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            cached_prompt_tokens: cached,
            cache_write_tokens: 0,
        }
    }

    #[test]
    fn dollars_to_nanos() {
        assert_eq!(dollars_per_token_to_nanos(0.000015), Some(15_000));
        assert_eq!(dollars_per_token_to_nanos(0.00000175), Some(1_750));
        assert_eq!(dollars_per_token_to_nanos(0.00000015), Some(150));
        assert_eq!(dollars_per_token_to_nanos(1.75e-7), Some(175));
        assert_eq!(dollars_per_token_to_nanos(2.5e-8), Some(25));
        assert_eq!(dollars_per_token_to_nanos(1.875e-8), Some(19));
        assert_eq!(dollars_per_token_to_nanos(0.0), Some(0));
        assert_eq!(dollars_per_token_to_nanos(-0.0), Some(0));
        assert_eq!(dollars_per_token_to_nanos(4e-10), Some(0));
        assert_eq!(dollars_per_token_to_nanos(1.0), Some(1_000_000_000));
        assert_eq!(dollars_per_token_to_nanos(1.000001), None);
        assert_eq!(dollars_per_token_to_nanos(15.0), None);
        assert_eq!(dollars_per_token_to_nanos(-0.000001), None);
        assert_eq!(dollars_per_token_to_nanos(f64::NAN), None);
        assert_eq!(dollars_per_token_to_nanos(f64::INFINITY), None);
        assert_eq!(dollars_per_token_to_nanos(f64::NEG_INFINITY), None);
    }

    #[test]
    fn every_seed_config_price_is_exact() {
        // examples/configs/seed.yaml's prices, in dollars per token.
        for (dollars, nanos) in [
            (0.000005, 5_000),
            (0.000025, 25_000),
            (0.00000175, 1_750),
            (0.000014, 14_000),
            (0.0000003, 300),
            (0.0000025, 2_500),
            (0.000003, 3_000),
            (0.000015, 15_000),
            (0.000002, 2_000),
            (0.000012, 12_000),
        ] {
            assert_eq!(
                dollars_per_token_to_nanos(dollars),
                Some(nanos),
                "{dollars}"
            );
        }
    }

    #[test]
    fn cost_of_an_answer() {
        let opus = builtin("claude-opus-4-5").unwrap();
        // 1000 × 5000 + 200 × 25000 = 10_000_000 n$ = $0.01
        assert_eq!(cost_nanos(&opus, &usage(1_000, 200, 0)), 10_000_000);
        // 800 uncached × 5000 + 200 cached × 500 + 200 × 25000
        assert_eq!(cost_nanos(&opus, &usage(1_000, 200, 200)), 9_100_000);
        // More cached than prompt tokens: clamped to all-cached.
        assert_eq!(cost_nanos(&opus, &usage(1_000, 0, 5_000)), 500_000);
        assert_eq!(cost_nanos(&opus, &Usage::default()), 0);
        assert_eq!(cost_nanos(&Price::FREE, &usage(u64::MAX, u64::MAX, 7)), 0);
    }

    #[test]
    fn cost_saturates() {
        let dear = list_price(u64::MAX, u64::MAX, u64::MAX);
        assert_eq!(cost_nanos(&dear, &usage(u64::MAX, u64::MAX, 3)), u64::MAX);
        assert_eq!(cost_nanos(&dear, &usage(2, 0, 0)), u64::MAX);
        let max = list_price(1_000_000_000, 1_000_000_000, 1_000_000_000);
        let huge = usage(1_000_000_000_000, 1_000_000_000_000, 0);
        assert_eq!(cost_nanos(&max, &huge), u64::MAX);
    }

    #[test]
    fn formats_dollars() {
        assert_eq!(format_dollars(0), "$0.000000");
        assert_eq!(format_dollars(999), "$0.000000");
        assert_eq!(format_dollars(1_000), "$0.000001");
        assert_eq!(format_dollars(12_345_678_999), "$12.345678");
        assert_eq!(format_dollars(50_000_000_000), "$50.000000");
        assert_eq!(format_dollars(u64::MAX), "$18446744073.709551");
    }

    #[test]
    fn strips_dates() {
        assert_eq!(
            without_date("claude-opus-4-5-20251101"),
            Some("claude-opus-4-5")
        );
        assert_eq!(
            without_date("claude-opus-4-5@20251101"),
            Some("claude-opus-4-5")
        );
        assert_eq!(without_date("gpt-5.2-2025-12-11"), Some("gpt-5.2"));
        assert_eq!(without_date("gpt-5.2"), None);
        assert_eq!(without_date("claude-opus-4-5"), None);
        assert_eq!(without_date("gemini-2.5-flash-preview-09-2025"), None);
        assert_eq!(without_date("x-2025-1-11"), None);
        assert_eq!(without_date("-20251101"), Some(""));
        assert_eq!(without_date(""), None);
    }

    #[test]
    fn table_names_are_canonical() {
        for (i, (name, _)) in TABLE.iter().enumerate() {
            assert_eq!(*name, name.to_ascii_lowercase(), "{name} is not lower case");
            assert!(!name.contains('/'), "{name} has a provider prefix");
            assert_eq!(without_date(name), None, "{name} has a date suffix");
            let later = TABLE.get(i + 1..).unwrap_or_default();
            assert!(
                later.iter().all(|(n, _)| n != name),
                "{name} is listed twice"
            );
        }
    }
}
