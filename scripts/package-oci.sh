#!/usr/bin/env bash
# Packages target/detour.wasm as an OCI image layout that Istio's Wasm image fetcher
# accepts (the "compat" variant with OCI media types), reproducibly and without Docker.
#
#   scripts/package-oci.sh [--wasm FILE] [--out DIR] [--tag TAG] [--tar FILE]
#
#   --wasm FILE  the module (default: $DETOUR_WASM, i.e. target/detour.wasm)
#   --out DIR    the OCI image layout directory to (re)create (default: target/oci/detour-wasm)
#   --tag TAG    the tag recorded in index.json (default: the workspace version)
#   --tar FILE   also write the layout as one tar file (for `skopeo copy oci-archive:…`)
#
# The image (see envoy/istio/README.md, "The OCI image"):
#   manifest  application/vnd.oci.image.manifest.v1+json, schemaVersion 2
#   config    application/vnd.oci.image.config.v1+json  {"architecture":"wasm","os":"wasip1",…}
#   layer     application/vnd.oci.image.layer.v1.tar+gzip: a tar holding one file, plugin.wasm
# Istio (pkg/wasm/imagefetcher.go) takes the last layer of an OCI manifest of that media
# type and reads the file named plugin.wasm from it; the same image unpacks to /plugin.wasm
# wherever an OCI image's layers are unpacked (crane export, Kubernetes image volumes).
#
# Reproducible: the same .wasm gives byte-identical blobs and digests on every run (tar
# entry with mtime 0, or SOURCE_DATE_EPOCH, uid/gid 0, mode 0644; gzip without name or
# time at level 9; JSON with sorted keys and no spaces). The one outside factor is zlib:
# another zlib build may compress differently; the digest is then different but stable.
#
# Pushing is the user's step (no registry is contacted here), e.g.:
#   oras cp --from-oci-layout target/oci/detour-wasm:0.1.0 REGISTRY/REPO:0.1.0
#   crane push target/oci/detour-wasm REGISTRY/REPO:0.1.0
#   skopeo copy oci:target/oci/detour-wasm:0.1.0 docker://REGISTRY/REPO:0.1.0
# Push the image manifest itself (these do), not an index around it: Istio resolves an
# index by platform (linux/amd64) and would not find this wasm/wasip1 image in one.
#
# Exit status: 0 ok, 2 usage, 4 a file could not be read or written.
set -euo pipefail

scripts_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=scripts/env.sh
source "${scripts_dir}/env.sh"

usage() {
    sed -n '2,10p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

wasm="${DETOUR_WASM}"
out="${DETOUR_ROOT}/target/oci/detour-wasm"
tag=""
tar_out=""
while (($# > 0)); do
    case "$1" in
        --wasm) wasm="${2:?--wasm needs a file}"; shift 2 ;;
        --out) out="${2:?--out needs a directory}"; shift 2 ;;
        --tag) tag="${2:?--tag needs a value}"; shift 2 ;;
        --tar) tar_out="${2:?--tar needs a file}"; shift 2 ;;
        -h | --help) usage ;;
        *) echo "package-oci: unknown argument: $1" >&2; usage ;;
    esac
done
if [[ -z "${tag}" ]]; then
    # [workspace.package] version = "X.Y.Z" in the root Cargo.toml.
    tag="$(sed -n '/^\[workspace.package\]/,/^\[/{s/^version *= *"\([^"]*\)".*/\1/p}' "${DETOUR_ROOT}/Cargo.toml" | head -n1)"
    tag="${tag:-latest}"
fi
if [[ ! -f "${wasm}" ]]; then
    echo "package-oci: ${wasm} not found: build it with scripts/build-wasm.sh" >&2
    exit 4
fi

exec python3 - "${wasm}" "${out}" "${tag}" "${tar_out}" "${SOURCE_DATE_EPOCH:-0}" <<'PY'
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import sys
import tarfile

wasm_path, out, tag, tar_out, epoch = sys.argv[1:6]

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
INDEX = "application/vnd.oci.image.index.v1+json"


def fail(message: str, status: int = 4) -> None:
    print(f"package-oci: {message}", file=sys.stderr)
    sys.exit(status)


# A tag per the OCI distribution spec, so `oras`/`skopeo` accept the layout's ref name.
if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}", tag):
    fail(f"--tag {tag!r} is not a valid OCI tag", 2)
try:
    mtime = int(epoch)
except ValueError:
    fail(f"SOURCE_DATE_EPOCH={epoch!r} is not an integer", 2)

try:
    with open(wasm_path, "rb") as f:
        wasm = f.read()
except OSError as e:
    fail(f"cannot read {wasm_path}: {e}")
if wasm[:4] != b"\0asm":
    fail(f"{wasm_path} is not a WebAssembly module (no \\0asm header)")


def canonical(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# The layer: an uncompressed tar with exactly one regular file, then gzip.
entry = tarfile.TarInfo("plugin.wasm")
entry.size = len(wasm)
entry.mode = 0o644
entry.mtime = mtime
entry.uid = entry.gid = 0
entry.uname = entry.gname = ""
entry.type = tarfile.REGTYPE
raw_tar = io.BytesIO()
with tarfile.open(fileobj=raw_tar, mode="w", format=tarfile.USTAR_FORMAT) as tar:
    tar.addfile(entry, io.BytesIO(wasm))
raw_tar = raw_tar.getvalue()
layer_gz = io.BytesIO()
with gzip.GzipFile(filename="", mode="wb", fileobj=layer_gz, compresslevel=9, mtime=0) as gz:
    gz.write(raw_tar)
layer = layer_gz.getvalue()

config = canonical({
    "architecture": "wasm",
    "os": "wasip1",
    "config": {},
    "rootfs": {"type": "layers", "diff_ids": [sha256(raw_tar)]},
})
manifest = canonical({
    "schemaVersion": 2,
    "mediaType": MANIFEST,
    "config": {"mediaType": CONFIG, "digest": sha256(config), "size": len(config)},
    "layers": [{"mediaType": LAYER, "digest": sha256(layer), "size": len(layer)}],
    "annotations": {
        "org.opencontainers.image.title": "detour",
        "org.opencontainers.image.description": "detour proxy-wasm filter (plugin.wasm), Istio Wasm OCI compat layout",
        "org.opencontainers.image.version": tag,
    },
})
index = canonical({
    "schemaVersion": 2,
    "mediaType": INDEX,
    "manifests": [{
        "mediaType": MANIFEST,
        "digest": sha256(manifest),
        "size": len(manifest),
        "annotations": {"org.opencontainers.image.ref.name": tag},
    }],
})
layout = canonical({"imageLayoutVersion": "1.0.0"})

files = {"oci-layout": layout, "index.json": index}
for blob in (layer, config, manifest):
    files["blobs/sha256/" + sha256(blob).split(":", 1)[1]] = blob

# Recreate --out, but never delete a directory that is not an OCI layout we wrote.
if os.path.lexists(out):
    if not os.path.isdir(out) or (os.listdir(out) and not os.path.isfile(os.path.join(out, "oci-layout"))):
        fail(f"--out {out} exists and is not an OCI image layout; refusing to replace it", 2)
    shutil.rmtree(out)
try:
    for name, data in files.items():
        path = os.path.join(out, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
    if tar_out:
        # The same files as a tar (directories first, then files, all sorted, fixed metadata).
        dirs = sorted({os.path.dirname(n) for n in files if os.path.dirname(n)} | {"blobs"})
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for name in dirs + sorted(files):
                info = tarfile.TarInfo(name)
                info.mtime, info.uid, info.gid, info.uname, info.gname = mtime, 0, 0, "", ""
                if name in files:
                    info.size, info.mode = len(files[name]), 0o644
                    tar.addfile(info, io.BytesIO(files[name]))
                else:
                    info.type, info.mode = tarfile.DIRTYPE, 0o755
                    tar.addfile(info)
        os.makedirs(os.path.dirname(os.path.abspath(tar_out)), exist_ok=True)
        with open(tar_out, "wb") as f:
            f.write(buf.getvalue())
except OSError as e:
    fail(f"cannot write the layout: {e}")

print(f"wrote OCI image layout {out} (tag {tag})")
if tar_out:
    print(f"wrote {tar_out}")
print(f"  wasm      {sha256(wasm)}  {len(wasm)} bytes")
print(f"  layer     {sha256(layer)}  {len(layer)} bytes ({LAYER}, plugin.wasm)")
print(f"  config    {sha256(config)}")
print(f"  manifest  {sha256(manifest)}")
print("Push it, then refer to it by digest, e.g. in envoy/istio/envoyfilter.yaml:")
print(f"  oci://REGISTRY/REPO@{sha256(manifest)}")
PY
