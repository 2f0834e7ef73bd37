#!/usr/bin/env bash
# Builds the Envoy filter (cargo package detour-filter, filter/wasm/) for wasm32-wasip1
# and copies it to target/detour.wasm, the one place the tests and configs look for it.
#
#   scripts/build-wasm.sh [--debug] [CARGO_ARGS...]   build (release profile by default)
#   scripts/build-wasm.sh --clippy [CARGO_ARGS...]    clippy for the wasm target, -D warnings
#
# Toolchain (detour_wasm_toolchain in scripts/env.sh):
#   rustup  rustup with the wasm32-wasip1 target installed: plain `cargo`.
#   debian  Debian's rustc-web/cargo-web (see scripts/bootstrap.sh), with -Z build-std
#           since Debian ships no prebuilt std for wasm32-wasip1. Its artifacts live in
#           target/wasm-debian so they never mix with rustup-built ones in target/.
# Profiles come from the workspace Cargo.toml; none are set here.
set -euo pipefail

# shellcheck source=scripts/env.sh
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

readonly package=detour-filter
readonly lib_name=detour_filter
readonly target=wasm32-wasip1

mode=build
profile=release
cargo_args=()
for arg in "$@"; do
    case "${arg}" in
        --debug) profile=debug ;;
        --clippy) mode=clippy ;;
        -h | --help)
            sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
            exit 0
            ;;
        *) cargo_args+=("${arg}") ;;
    esac
done

toolchain="$(detour_wasm_toolchain)"
cd "${DETOUR_ROOT}"

# run_cargo SUBCOMMAND ARGS... [-- CLIPPY_ARGS...]: cargo for the wasm target with the
# chosen toolchain; ${wasm_target_dir} is where its artifacts land.
if [[ "${toolchain}" == rustup ]]; then
    wasm_target_dir="${CARGO_TARGET_DIR:-${DETOUR_ROOT}/target}"
    run_cargo() {
        local subcommand=$1
        shift
        cargo "${subcommand}" --target "${target}" "$@"
    }
else
    wasm_target_dir="${DETOUR_ROOT}/target/wasm-debian"
    run_cargo() {
        local subcommand=$1
        shift
        # /usr/bin first so cargo finds Debian's cargo-clippy/rustc, not rustup's proxies.
        # RUSTC_BOOTSTRAP=1: -Z build-std is unstable and Debian's rustc is a stable one.
        # RUSTFLAGS: link with lld-22's wasm-ld against Debian's wasi-libc instead of the
        #   self-contained CRT a rustup target would bring.
        env PATH="/usr/bin:${PATH}" \
            RUSTC_BOOTSTRAP=1 \
            RUSTFLAGS="-C linker=/usr/lib/llvm-22/bin/wasm-ld -C link-self-contained=no -L /usr/lib/wasm32-wasi" \
            CARGO_TARGET_DIR="${wasm_target_dir}" \
            /usr/bin/cargo "${subcommand}" --target "${target}" -Z build-std=std,panic_abort "$@"
    }
fi

if [[ "${mode}" == clippy ]]; then
    if [[ "${toolchain}" == debian && ! -x /usr/bin/cargo-clippy ]]; then
        # Only if the rust-web-clippy package is absent (bootstrap.sh installs it).
        echo "build-wasm: clippy for wasm is not available on the Debian toolchain" \
            "(no /usr/bin/cargo-clippy; install rust-web-clippy); running cargo check instead" >&2
        run_cargo check -p "${package}" "${cargo_args[@]}"
    else
        echo "build-wasm: clippy -p ${package} --target ${target} (${toolchain} toolchain)"
        run_cargo clippy -p "${package}" "${cargo_args[@]}" -- -D warnings
    fi
    exit 0
fi

profile_args=()
# The filter's release build uses the `wasm` profile (Cargo.toml): opt-level 3, which the
# profile in BENCHMARKS.md measured at 16 µs less CPU per request in Envoy than "s".
[[ "${profile}" == release ]] && profile=wasm && profile_args=(--profile wasm)

echo "build-wasm: building ${package} (${profile}, ${toolchain} toolchain)"
run_cargo build -p "${package}" "${profile_args[@]}" "${cargo_args[@]}"

artifact="${wasm_target_dir}/${target}/${profile}/${lib_name}.wasm"
[[ -f "${artifact}" ]] || {
    echo "build-wasm: error: expected artifact ${artifact} not found" >&2
    exit 1
}
mkdir -p "$(dirname "${DETOUR_WASM}")"
cp -f "${artifact}" "${DETOUR_WASM}"
size="$(stat -c %s "${DETOUR_WASM}")"
echo "build-wasm: ${DETOUR_WASM#"${DETOUR_ROOT}/"} ${size} bytes ($((size / 1024)) KiB) from ${artifact#"${DETOUR_ROOT}/"}"
