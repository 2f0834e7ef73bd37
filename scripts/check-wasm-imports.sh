#!/usr/bin/env bash
# Checks that the built filter imports exactly what Envoy provides: the import list of
# the module (default target/detour.wasm) must equal the committed allow-list
# filter/wasm/imports.allow, one `module name` per line.
#
#   scripts/check-wasm-imports.sh [WASM]            compare (exit 1 on any difference)
#   scripts/check-wasm-imports.sh --print [WASM]    print the module's imports
#
# A new import means a new host function the filter needs (a crate that pulled in a WASI
# call, say); Envoy refuses to load a module that imports anything it does not provide.
# Update the allow-list only after checking that Envoy 1.40 implements the new import.
set -euo pipefail

# shellcheck source=scripts/env.sh
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

print_only=0
if [[ "${1:-}" == --print ]]; then
    print_only=1
    shift
fi
wasm="${1:-${DETOUR_WASM}}"
allow="${DETOUR_ROOT}/filter/wasm/imports.allow"
[[ -f "${wasm}" ]] || {
    echo "check-wasm-imports: ${wasm} not found (run scripts/build-wasm.sh)" >&2
    exit 1
}

# The import section (id 2) of a wasm binary: a tiny parser, so no tool is needed.
imports="$(python3 - "${wasm}" <<'PY'
import sys

data = open(sys.argv[1], "rb").read()
if data[:4] != b"\0asm":
    sys.exit("not a wasm module")
pos = 8

def leb():
    global pos
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return result

def name():
    global pos
    n = leb()
    text = data[pos:pos + n].decode()
    pos += n
    return text

kinds = {0: "func", 1: "table", 2: "memory", 3: "global", 4: "tag"}
out = []
while pos < len(data):
    section, size = data[pos], None
    pos += 1
    size = leb()
    end = pos + size
    if section == 2:
        for _ in range(leb()):
            module, field = name(), name()
            kind = data[pos]
            pos += 1
            if kind == 0:
                leb()  # type index
            elif kind == 1:
                pos += 1  # reftype
                flags = leb(); leb()
                if flags & 1: leb()
            elif kind == 2:
                flags = leb(); leb()
                if flags & 1: leb()
            elif kind == 3:
                pos += 2  # valtype, mutability
            elif kind == 4:
                pos += 1; leb()
            out.append(f"{module} {field}" + ("" if kind == 0 else f" ({kinds.get(kind, kind)})"))
    pos = end
print("\n".join(sorted(out)))
PY
)"

if ((print_only)); then
    printf '%s\n' "${imports}"
    exit 0
fi

expected="$(grep -v '^\s*\(#\|$\)' "${allow}" | sort)"
if [[ "${imports}" != "${expected}" ]]; then
    echo "check-wasm-imports: ${wasm#"${DETOUR_ROOT}/"} imports differ from ${allow#"${DETOUR_ROOT}/"}:" >&2
    diff <(printf '%s\n' "${expected}") <(printf '%s\n' "${imports}") \
        --label imports.allow --label "${wasm##*/}" -u >&2 || true
    exit 1
fi
echo "check-wasm-imports: ${wasm#"${DETOUR_ROOT}/"} imports $(printf '%s\n' "${imports}" | wc -l) functions, all on the allow-list"
