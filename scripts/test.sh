#!/usr/bin/env bash
# The whole test suite, in order, stopping at the first failure:
#
#   scripts/test.sh [PYTEST_ARGS...]
#
#   1. scripts/bootstrap.sh (skipped with SKIP_BOOTSTRAP=1)
#   2. cargo fmt --all --check
#   3. cargo clippy --workspace --all-targets -- -D warnings   (native)
#   4. cargo test --workspace                                   (native)
#   5. scripts/build-wasm.sh --clippy                           (wasm32-wasip1)
#   6. scripts/build-wasm.sh                                    (-> target/detour.wasm)
#   7. scripts/check-wasm-imports.sh                            (imports = filter/wasm/imports.allow)
#   8. scripts/fuzz-smoke.sh                                    (every cargo-fuzz target, ~15 s each)
#   9. pytest examples/mock-provider tests/e2e tests/deploy     (Python suites, real Envoy)
#
# PYTEST_ARGS go to pytest (e.g. `-k streaming -x`). The tests get DETOUR_ROOT,
# DETOUR_WASM and ENVOY_BIN in their environment. On failure the script exits with the
# failing step's exit status (so pytest's 5, "no tests collected", stays visible).
set -euo pipefail

scripts_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=scripts/env.sh
source "${scripts_dir}/env.sh"
cd "${DETOUR_ROOT}"

# The native steps must use rustup's toolchain even if a caller put /usr/bin (Debian's
# cargo-web, used only for the wasm build) ahead of it.
rustup_bin="${CARGO_HOME:-${HOME}/.cargo}/bin"
if [[ -x "${rustup_bin}/cargo" ]]; then
    PATH="${rustup_bin}:${PATH}"
fi

readonly total_steps=9
step_no=0
started=${SECONDS}

# step NAME COMMAND...: announce, run, time; on failure report and exit with its status.
step() {
    local name=$1
    shift
    step_no=$((step_no + 1))
    printf '\n==> [%d/%d] %s\n' "${step_no}" "${total_steps}" "${name}"
    local t0=${SECONDS} status=0
    "$@" || status=$?
    if ((status != 0)); then
        printf '\ntest.sh: FAILED at step %d/%d (%s), exit status %d, after %ds\n' \
            "${step_no}" "${total_steps}" "${name}" "${status}" "$((SECONDS - started))" >&2
        exit "${status}"
    fi
    printf -- '--- %s: ok (%ds)\n' "${name}" "$((SECONDS - t0))"
}

if [[ "${SKIP_BOOTSTRAP:-0}" == 1 ]]; then
    step_no=$((step_no + 1))
    printf '\n==> [%d/%d] bootstrap: skipped (SKIP_BOOTSTRAP=1)\n' "${step_no}" "${total_steps}"
else
    step "bootstrap" "${scripts_dir}/bootstrap.sh"
fi
# Bootstrap may just have installed Envoy: look for it again (a pre-set ENVOY_BIN wins).
ENVOY_BIN="${ENVOY_BIN:-$(detour_find_envoy)}"
export ENVOY_BIN

step "cargo fmt --all --check" cargo fmt --all --check
step "cargo clippy (native)" cargo clippy --workspace --all-targets -- -D warnings
step "cargo test (native)" cargo test --workspace
step "clippy (wasm32-wasip1)" "${scripts_dir}/build-wasm.sh" --clippy
step "build target/detour.wasm" "${scripts_dir}/build-wasm.sh"
step "wasm imports (allow-list)" "${scripts_dir}/check-wasm-imports.sh"
step "fuzz smoke (cargo-fuzz)" "${scripts_dir}/fuzz-smoke.sh"

if [[ ! -x "${DETOUR_VENV}/bin/pytest" ]]; then
    echo "test.sh: ${DETOUR_VENV}/bin/pytest missing: run scripts/bootstrap.sh" >&2
    exit 1
fi
step "pytest (mock-provider, e2e, deploy)" \
    "${DETOUR_VENV}/bin/pytest" -q -p no:cacheprovider examples/mock-provider tests/e2e tests/deploy "$@"

printf '\ntest.sh: all %d steps ok in %ds\n' "${total_steps}" "$((SECONDS - started))"
