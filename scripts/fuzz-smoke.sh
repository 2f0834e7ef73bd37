#!/usr/bin/env bash
# A short run of every cargo-fuzz target in filter/fuzz (CI's smoke test; README.md,
# "Fuzzing", has the long run):
#
#   scripts/fuzz-smoke.sh [SECONDS_PER_TARGET]      default 15 (8 targets: under 3 minutes with the build)
#
# Installs cargo-fuzz into ~/.cargo/bin if it is missing. libFuzzer needs nightly
# compiler flags: rustup's nightly toolchain when installed, else the stable one with
# RUSTC_BOOTSTRAP=1. No sanitizer (`-s none`: the policy core has no unsafe code, and the
# sanitizer runtime is not always installed); debug assertions on (`-a`), so an integer
# overflow is a crash. Seeds come from filter/fuzz/corpus/<target>/ (read-only); what the
# run finds goes to a scratch corpus, crashes to filter/fuzz/artifacts/<target>/.
set -euo pipefail

# shellcheck source=scripts/env.sh
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "${DETOUR_ROOT}"

seconds="${1:-15}"
fuzz_dir=filter/fuzz
targets=(config request usage_json sse classify retry_after flow protocol)

cargo_bin="${CARGO_HOME:-${HOME}/.cargo}/bin"
PATH="${cargo_bin}:${PATH}"
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz-smoke: installing cargo-fuzz into ${cargo_bin}"
    cargo install cargo-fuzz --locked
fi

if rustup run nightly rustc --version >/dev/null 2>&1; then
    toolchain=(+nightly)
    export -n RUSTC_BOOTSTRAP 2>/dev/null || true
else
    toolchain=()
    export RUSTC_BOOTSTRAP=1
fi
fuzz_flags=(--fuzz-dir "${fuzz_dir}" -a -s none)

echo "fuzz-smoke: building ${#targets[@]} targets (cargo ${toolchain[*]:-stable with RUSTC_BOOTSTRAP=1})"
cargo "${toolchain[@]}" fuzz build "${fuzz_flags[@]}"

scratch="$(mktemp -d "${TMPDIR:-/tmp}/detour-fuzz.XXXXXX")"
trap 'rm -rf "${scratch}"' EXIT
for target in "${targets[@]}"; do
    mkdir -p "${scratch}/${target}"
    log="${scratch}/${target}.log"
    status=0
    cargo "${toolchain[@]}" fuzz run "${fuzz_flags[@]}" "${target}" \
        "${scratch}/${target}" "${fuzz_dir}/corpus/${target}" \
        -- -max_total_time="${seconds}" -max_len=65536 -rss_limit_mb=2048 -print_final_stats=1 >"${log}" 2>&1 || status=$?
    summary="$(grep -E '^#[0-9]+' "${log}" | tail -1 || true)"
    execs="$(grep -E '^stat::number_of_executed_units' "${log}" | awk '{print $2}' || true)"
    if ((status != 0)); then
        tail -40 "${log}" >&2
        echo "fuzz-smoke: ${target} FAILED (exit ${status}); the input is in ${fuzz_dir}/artifacts/${target}/" >&2
        exit "${status}"
    fi
    printf 'fuzz-smoke: %-12s ok  %s execs in %ss  %s\n' "${target}" "${execs:-?}" "${seconds}" "${summary}"
done
