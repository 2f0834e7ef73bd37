//! Prices: config conversion, the cost of answers, the built-in table and formatting.

// Helpers outside #[test] fns may unwrap and panic too (clippy allows it under cfg(test)).
#![cfg(test)]

use detour_core::price::{self, Price};
use detour_core::usage::{self, Usage};

/// SplitMix64: reproducible cases without a clock or extra crates.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

fn usage(prompt: u64, completion: u64, cached: u64) -> Usage {
    Usage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        cached_prompt_tokens: cached,
        cache_write_tokens: 0,
    }
}

fn per_million(input: f64, output: f64, cached: f64) -> Price {
    let nanos = |dollars_per_million: f64| {
        price::dollars_per_token_to_nanos(dollars_per_million / 1e6).unwrap()
    };
    Price {
        input_nanos: nanos(input),
        output_nanos: nanos(output),
        cached_input_nanos: nanos(cached),
        cache_write_nanos: nanos(input),
    }
}

fn with_writes(mut price: Price, write_per_million: f64) -> Price {
    price.cache_write_nanos = price::dollars_per_token_to_nanos(write_per_million / 1e6).unwrap();
    price
}

#[test]
fn builtin_prices_of_the_seed_models() {
    let cases = [
        (
            "claude-opus-4-5",
            with_writes(per_million(5.0, 25.0, 0.5), 6.25),
        ),
        (
            "claude-sonnet-4-5",
            with_writes(per_million(3.0, 15.0, 0.3), 3.75),
        ),
        ("gpt-5.2", per_million(1.75, 14.0, 0.175)),
        ("gpt-5.2-codex", per_million(1.75, 14.0, 0.175)),
        ("gemini-3-pro-preview", per_million(2.0, 12.0, 0.2)),
        ("gemini-3-pro", per_million(2.0, 12.0, 0.2)),
        ("gemini-2.5-flash", per_million(0.3, 2.5, 0.03)),
        ("gemini-2.5-flash-lite", per_million(0.1, 0.4, 0.01)),
        ("gemini-3-flash-preview", per_million(0.5, 3.0, 0.05)),
        ("glm-4.6", per_million(0.6, 2.2, 0.11)),
        ("glm-4.5-air", per_million(0.2, 1.1, 0.03)),
    ];
    for (model, want) in cases {
        assert_eq!(price::builtin(model), Some(want), "{model}");
    }
}

#[test]
fn cache_writes_are_priced_at_their_own_rate() {
    let opus = price::builtin("anthropic/claude-opus-4-5").unwrap();
    let u = Usage {
        prompt_tokens: 3_000,
        completion_tokens: 100,
        cached_prompt_tokens: 1_000,
        cache_write_tokens: 1_500,
    };
    // 500 plain × $5/M + 1000 read × $0.50/M + 1500 written × $6.25/M + 100 × $25/M
    // = 2_500_000 + 500_000 + 9_375_000 + 2_500_000 n$
    assert_eq!(price::cost_nanos(&opus, &u), 14_875_000);
    // More reads and writes than prompt tokens are clamped: reads first, then writes.
    let absurd = Usage {
        prompt_tokens: 10,
        completion_tokens: 0,
        cached_prompt_tokens: 6,
        cache_write_tokens: 100,
    };
    assert_eq!(price::cost_nanos(&opus, &absurd), 6 * 500 + 4 * 6_250);
}

#[test]
fn builtin_lookup_forms() {
    let opus = price::builtin("claude-opus-4-5").unwrap();
    for name in [
        "openai/claude-opus-4-5",
        "anthropic/claude-opus-4-5",
        "OPENAI/Claude-Opus-4-5",
        "  claude-opus-4-5 ",
        "claude-opus-4-5-20251101",
        "anthropic/claude-opus-4-5-20251101",
        "vertex_ai/claude-opus-4-5@20251101",
        "openrouter/anthropic/claude-opus-4-5",
    ] {
        assert_eq!(price::builtin(name), Some(opus), "{name}");
    }
    let gpt = price::builtin("gpt-5.2").unwrap();
    for name in ["openai/gpt-5.2", "gpt-5.2-2025-12-11", "azure/GPT-5.2"] {
        assert_eq!(price::builtin(name), Some(gpt), "{name}");
    }
    assert!(price::builtin("gemini/gemini-2.5-flash").is_some());
    assert!(price::builtin("zai/glm-4.6").is_some());
}

#[test]
fn self_hosted_models_are_free() {
    for name in [
        "ollama/llama3.1:8b",
        "ollama_chat/qwen3-coder",
        "hosted_vllm/qwen3-coder",
        "HOSTED_VLLM/Qwen3-Coder",
        "vllm/meta-llama/Llama-3.1-8B-Instruct",
        "lm_studio/some-model",
        "llamafile/mistral",
        // Even a paid model's name, served by a local server.
        "ollama/gpt-5.2",
    ] {
        assert_eq!(price::builtin(name), Some(Price::FREE), "{name}");
    }
}

#[test]
fn unknown_models_have_no_builtin_price() {
    for name in [
        "",
        "/",
        "openai/",
        // A local model behind the openai/ prefix is not recognisable by name.
        "openai/llama3.1:8b",
        "gemini-flash",
        "gpt-5.2-pro",
        "gpt-5",
        "claude-opus-4-5-latest",
        "claude-opus-4",
        "gemini-2.5-flash-preview-09-2025",
        "claude-opus-4-5-2025110",
        "gpt-5.2-2025-12",
        "mystery-model",
        "ollama",
    ] {
        assert_eq!(price::builtin(name), None, "{name:?}");
    }
}

#[test]
fn builtin_agrees_with_the_seed_config() {
    // examples/configs/seed.yaml writes its prices by hand; the table must say the same.
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/configs/seed.yaml"
    );
    let text = std::fs::read_to_string(path).unwrap();
    let yaml: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let mut checked = 0;
    for entry in yaml["model_list"].as_sequence().unwrap() {
        let params = &entry["litellm_params"];
        let model = params["model"].as_str().unwrap();
        let (Some(input), Some(output)) = (
            params["input_cost_per_token"].as_f64(),
            params["output_cost_per_token"].as_f64(),
        ) else {
            continue;
        };
        if let Some(builtin) = price::builtin(model) {
            assert_eq!(
                builtin.input_nanos,
                price::dollars_per_token_to_nanos(input).unwrap(),
                "{model} input"
            );
            assert_eq!(
                builtin.output_nanos,
                price::dollars_per_token_to_nanos(output).unwrap(),
                "{model} output"
            );
            checked += 1;
        }
    }
    assert!(
        checked > 0,
        "no seed model with a configured price is in the table"
    );
}

#[test]
fn dollars_per_token_round_trip() {
    // Every price a config can write with up to nine decimals comes back exact.
    for nanos in (0..200_000).chain((0..1_000_000_001).step_by(9_999_991)) {
        let dollars = nanos as f64 / 1e9;
        assert_eq!(
            price::dollars_per_token_to_nanos(dollars),
            Some(nanos),
            "{dollars}"
        );
    }
    let mut rng = Rng(11);
    for _ in 0..100_000 {
        let dollars = f64::from_bits(rng.next());
        let got = price::dollars_per_token_to_nanos(dollars);
        if dollars.is_finite() && (0.0..=1.0).contains(&dollars) {
            let nanos = got.unwrap();
            assert!(nanos <= 1_000_000_000);
            assert!(
                (nanos as f64 - dollars * 1e9).abs() <= 0.5 + 1e-6,
                "{dollars}"
            );
        } else {
            assert_eq!(got, None, "{dollars}");
        }
    }
}

#[test]
fn costs_of_recorded_answers() {
    let cached =
        usage::from_json_body(include_bytes!("fixtures/json/chat_completion_cached.json")).unwrap();
    let opus = price::builtin("openai/claude-opus-4-5").unwrap();
    // 86 uncached × $5/M + 1920 cached × $0.50/M + 300 × $25/M
    // = 430_000 + 960_000 + 7_500_000 n$
    let cost = price::cost_nanos(&opus, &cached);
    assert_eq!(cost, 8_890_000);
    assert_eq!(price::format_dollars(cost), "$0.008890");

    let embeddings =
        usage::from_json_body(include_bytes!("fixtures/json/embeddings.json")).unwrap();
    let small = Price {
        input_nanos: 20,
        output_nanos: 0,
        cached_input_nanos: 20,
        cache_write_nanos: 20,
    };
    assert_eq!(price::cost_nanos(&small, &embeddings), 160);

    let (_, streamed) =
        usage::from_sse_body(include_bytes!("fixtures/sse/chat_include_usage.sse"), true);
    let gpt = price::builtin("openai/gpt-5.2").unwrap();
    // 19 × $1.75/M + 10 × $14/M = 33_250 + 140_000 n$
    assert_eq!(price::cost_nanos(&gpt, &streamed.unwrap()), 173_250);
}

#[test]
fn cost_properties() {
    let mut rng = Rng(5);
    let small = |rng: &mut Rng| rng.next() % 10_000_000;
    for _ in 0..20_000 {
        let price = Price {
            input_nanos: rng.next() % 100_000,
            output_nanos: rng.next() % 100_000,
            cached_input_nanos: rng.next() % 100_000,
            cache_write_nanos: rng.next() % 100_000,
        };
        let u = usage(small(&mut rng), small(&mut rng), small(&mut rng));
        let cost = price::cost_nanos(&price, &u);
        // The formula, in u128 for reference (these inputs cannot saturate).
        let cached = u.cached_prompt_tokens.min(u.prompt_tokens);
        let want = u128::from(u.prompt_tokens - cached) * u128::from(price.input_nanos)
            + u128::from(cached) * u128::from(price.cached_input_nanos)
            + u128::from(u.completion_tokens) * u128::from(price.output_nanos);
        assert_eq!(u128::from(cost), want);
        // More tokens never cost less.
        let more = usage(
            u.prompt_tokens + 1,
            u.completion_tokens + 1,
            u.cached_prompt_tokens,
        );
        assert!(price::cost_nanos(&price, &more) >= cost);
        // Caching never costs more when the cached price is not above the input price.
        if price.cached_input_nanos <= price.input_nanos {
            let uncached = usage(u.prompt_tokens, u.completion_tokens, 0);
            assert!(price::cost_nanos(&price, &uncached) >= cost);
        }
    }
    // Arbitrary (including absurd) values never panic.
    for _ in 0..20_000 {
        let price = Price {
            input_nanos: rng.next(),
            output_nanos: rng.next(),
            cached_input_nanos: rng.next(),
            cache_write_nanos: rng.next(),
        };
        let u = usage(rng.next(), rng.next(), rng.next());
        let _ = price::cost_nanos(&price, &u);
    }
}

#[test]
fn formatting_truncates_to_micro_dollars() {
    let mut rng = Rng(8);
    for _ in 0..20_000 {
        let nanos = rng.next() >> (rng.next() % 64);
        let text = price::format_dollars(nanos);
        let (whole, frac) = text.strip_prefix('$').unwrap().split_once('.').unwrap();
        assert_eq!(frac.len(), 6, "{text}");
        let micros: u64 = whole.parse::<u64>().unwrap() * 1_000_000 + frac.parse::<u64>().unwrap();
        assert_eq!(micros, nanos / 1_000, "{text}");
    }
    assert_eq!(price::format_dollars(100_000_000_000), "$100.000000");
    assert_eq!(price::format_dollars(1_999), "$0.000001");
}
