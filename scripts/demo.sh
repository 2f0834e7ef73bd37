#!/usr/bin/env bash
# The demo: detour inside real Envoy in front of mock providers, sample traffic that
# visibly falls back. Installs and builds what it needs first (idempotent).
set -euo pipefail
scripts_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=scripts/env.sh
source "${scripts_dir}/env.sh"
cd "${DETOUR_ROOT}"

"${scripts_dir}/bootstrap.sh" >/dev/null
"${scripts_dir}/build-wasm.sh" >/dev/null
rustup_bin="${CARGO_HOME:-${HOME}/.cargo}/bin"
[[ -x "${rustup_bin}/cargo" ]] && PATH="${rustup_bin}:${PATH}"
cargo build -q -p detour
ENVOY_BIN="${ENVOY_BIN:-$(detour_find_envoy)}"
export ENVOY_BIN DETOUR_WASM DETOUR_SKIP_CARGO_BUILD=1
exec "${DETOUR_VENV}/bin/python" examples/demo/demo.py "$@"
