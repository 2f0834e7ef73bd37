"""detour's demo: real Envoy with the compiled filter in front of mock providers, sample
traffic from the OpenAI Python SDK, and the fallbacks it makes, as they happen.

Run it with `scripts/demo.sh` (which installs and builds what it needs first)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import openai

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

from harness import DetourServe, EnvoyWithDetour, MockProvider, new_workdir, remove_workdir  # noqa: E402

BOLD, DIM, GREEN, YELLOW, RED, RESET = ("\033[1m", "\033[2m", "\033[32m", "\033[33m", "\033[31m", "\033[0m")
if not sys.stdout.isatty():
    BOLD = DIM = GREEN = YELLOW = RED = RESET = ""


def say(text: str) -> None:
    print(f"\n{BOLD}{text}{RESET}", flush=True)


class Demo:
    def __init__(self, envoy: EnvoyWithDetour, mock: MockProvider):
        self.envoy = envoy
        self.mock = mock
        self.sdk = openai.OpenAI(base_url=f"{envoy.url}/v1", api_key="your-team-token", max_retries=0)
        self.n_events = 0

    def ask(self, model: str | None, stage: str | None = None, stream: bool = False) -> None:
        label = f"model={model}" if model else f"x-detour-stage: {stage}"
        headers = {"x-detour-stage": stage} if stage else {}
        try:
            raw = self.sdk.chat.completions.with_raw_response.create(
                model=model or "auto",
                messages=[{"role": "user", "content": "Summarise the design doc"}],
                stream=stream,
                extra_headers=headers,
            )
            served = raw.headers.get("x-detour-deployment")
            attempts = raw.headers.get("x-detour-attempts")
            if stream:
                text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
                kind = "streamed"
            else:
                text = raw.parse().choices[0].message.content
                kind = "answered"
            print(f"  {label:<32} {GREEN}200{RESET} {kind} by {BOLD}{served}{RESET} after {attempts} attempt(s): {text!r}")
        except openai.APIStatusError as err:
            body = err.response.json().get("error", {})
            print(f"  {label:<32} {RED}{err.status_code}{RESET} {body.get('code')}: {body.get('message')}")
        self.show_events()

    def show_events(self) -> None:
        events = self.envoy.events()
        for event in events[self.n_events:]:
            kind = event.pop("event")
            event.pop("ts", None)
            colour = YELLOW if kind in ("fallback", "retry", "cooldown") else RED if kind in ("breaker_opened", "all_failed") else GREEN
            print(f"      {colour}{kind:<15}{RESET} {DIM}{json.dumps(event)}{RESET}")
        self.n_events = len(events)


def main() -> int:
    workdir = new_workdir("demo-")
    mock = MockProvider(workdir).start()
    envoy = None
    try:
        config = (ROOT / "examples" / "demo" / "demo.yaml").read_text().replace("${MOCK}", mock.url)
        (workdir / "envoy").mkdir()
                # DETOUR_DEMO_HOST=serve runs the same demo on detour's own host instead of Envoy.
        host = DetourServe if os.environ.get("DETOUR_DEMO_HOST") == "serve" else EnvoyWithDetour
        envoy = host(workdir / "envoy", config, env={"DEMO_PROVIDER_KEY": "sk-demo-not-a-real-key"}).start()
        where = "detour serve" if host is DetourServe else "Envoy"
        print(f"detour is running inside {where} at {envoy.url} (2 workers), mock providers at {mock.url}")
        demo = Demo(envoy, mock)

        say("1. Everything healthy: each purpose goes to the head of its chain")
        demo.ask("high-precision")
        demo.ask(None, stage="Build")
        demo.ask("economy", stream=True)

        say("2. claude-opus answers 429 (Retry-After: 30): detour moves on at once and cools it down")
        mock.script("claude-opus", [{"error": "rate_limit", "retry_after": 30}])
        demo.ask(None, stage="Spec")
        demo.ask(None, stage="Review")

        say("3. gpt-5.2 has an outage (503): retried with backoff, then the chain moves on")
        mock.script("gpt-5.2", [], default={"error": "unavailable"})
        demo.ask(None, stage="Build")

        say("4. A streaming request whose first choice is rate limited still streams from the next one")
        demo.ask(None, stage="Design", stream=True)

        say("5. Every cloud model fails: the local model keeps work going")
        for name in ("claude-sonnet", "gemini-3-pro", "gemini-flash"):
            mock.script(name, [], default={"error": "server"})
        demo.ask("high-precision")

        say("6. Even the local model is down: one clear error listing every attempt")
        mock.script("local", [], default={"error": "unavailable"})
        demo.ask("economy")
        return 0
    finally:
        if envoy is not None:
            envoy.stop()
        mock.stop()
        remove_workdir(workdir)


if __name__ == "__main__":
    sys.exit(main())
