"""scripts/package-oci.sh: an OCI image layout of the filter that Istio's Wasm fetcher
accepts, byte-for-byte reproducible.

What Istio does with a pulled image (istio/istio pkg/wasm/imagefetcher.go, 1.28-1.30):
a Docker manifest goes to the Docker path; an OCI manifest is read as the "compat"
variant first (the *last* layer must be application/vnd.oci.image.layer.v1.tar+gzip, and
the file whose base name is plugin.wasm in it is the module), then as the "oci" variant
(exactly two layers, one application/vnd.module.wasm.content.layer.v1+wasm). `istio_extract`
below follows the compat path step by step.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import jsonschema
import pytest
import referencing

from deploy_support import ROOT, SCHEMAS
from deploy_support import wasm  # noqa: F401  (fixture)

SCRIPT = ROOT / "scripts" / "package-oci.sh"
OCI_SCHEMAS = SCHEMAS / "oci-image-spec-v1.1.1"


def package(wasm: Path, out: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), "--wasm", str(wasm), "--out", str(out), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def blob(layout: Path, digest: str) -> bytes:
    algorithm, hexdigest = digest.split(":")
    data = (layout / "blobs" / algorithm / hexdigest).read_bytes()
    assert hashlib.sha256(data).hexdigest() == hexdigest
    return data


def manifest_of(layout: Path, tag: str) -> dict:
    index = json.loads((layout / "index.json").read_text())
    (desc,) = [m for m in index["manifests"] if m["annotations"]["org.opencontainers.image.ref.name"] == tag]
    data = blob(layout, desc["digest"])
    assert len(data) == desc["size"]
    return json.loads(data)


def istio_extract(layout: Path, tag: str) -> bytes:
    """Istio's compat-variant extraction (extractOCIStandardImage + extractWasmPluginBinary)."""
    manifest = manifest_of(layout, tag)
    assert manifest["mediaType"] != "application/vnd.docker.distribution.manifest.v2+json"
    layers = manifest["layers"]
    assert len(layers) > 0
    last = layers[-1]
    assert last["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"
    data = blob(layout, last["digest"])
    assert len(data) == last["size"]
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(data)), mode="r:") as tar:
        for member in tar:
            if os.path.basename(member.name) == "plugin.wasm":
                return tar.extractfile(member).read()
    raise AssertionError("plugin.wasm not found in the archive")


@pytest.fixture
def fake_wasm(tmp_path) -> Path:
    path = tmp_path / "fake.wasm"
    path.write_bytes(b"\0asm\x01\0\0\0" + bytes(range(256)) * 64)
    return path


def test_layout_is_what_istio_extracts(wasm, tmp_path):
    result = package(wasm, tmp_path / "layout", "--tag", "1.2.3")
    assert result.returncode == 0, result.stderr
    layout = tmp_path / "layout"
    assert json.loads((layout / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    assert istio_extract(layout, "1.2.3") == wasm.read_bytes()

    manifest = manifest_of(layout, "1.2.3")
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert manifest["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
    assert len(manifest["layers"]) == 1
    config = json.loads(blob(layout, manifest["config"]["digest"]))
    assert (config["os"], config["architecture"]) == ("wasip1", "wasm")
    # diff_id: the digest of the uncompressed layer, as image tools check it.
    uncompressed = gzip.decompress(blob(layout, manifest["layers"][0]["digest"]))
    assert config["rootfs"] == {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(uncompressed).hexdigest()]}
    with tarfile.open(fileobj=io.BytesIO(uncompressed)) as tar:
        (member,) = tar.getmembers()
        assert (member.name, member.mode, member.uid, member.gid, member.isreg()) == ("plugin.wasm", 0o644, 0, 0, True)
    # Every file under blobs/ is named by its content's digest, nothing is left over.
    blobs = {p.name for p in (layout / "blobs" / "sha256").iterdir()}
    referenced = {d["digest"].split(":")[1] for d in [manifest["config"], *manifest["layers"]]}
    index = json.loads((layout / "index.json").read_text())
    referenced |= {m["digest"].split(":")[1] for m in index["manifests"]}
    assert blobs == referenced
    # The script prints the manifest digest to pin in the image reference.
    assert index["manifests"][0]["digest"] in result.stdout


def test_two_runs_give_identical_bytes(wasm, tmp_path):
    for run in ("a", "b"):
        result = package(wasm, tmp_path / run, "--tar", str(tmp_path / f"{run}.tar"))
        assert result.returncode == 0, result.stderr
    assert tree(tmp_path / "a") == tree(tmp_path / "b")
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()
    # Another module gives another digest (the digest is the content's, not a constant).
    other = tmp_path / "other.wasm"
    other.write_bytes(wasm.read_bytes() + b"\0")
    assert package(other, tmp_path / "c").returncode == 0
    assert (tmp_path / "c" / "index.json").read_bytes() != (tmp_path / "a" / "index.json").read_bytes()


def test_source_date_epoch_sets_the_tar_time(fake_wasm, tmp_path):
    assert package(fake_wasm, tmp_path / "a", env={"SOURCE_DATE_EPOCH": "1700000000"}).returncode == 0
    index = json.loads((tmp_path / "a" / "index.json").read_text())
    tag = index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"]
    manifest = manifest_of(tmp_path / "a", tag)
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob(tmp_path / "a", manifest["layers"][0]["digest"])))) as tar:
        assert tar.getmembers()[0].mtime == 1700000000


def test_tarball_holds_the_layout(fake_wasm, tmp_path):
    assert package(fake_wasm, tmp_path / "layout", "--tar", str(tmp_path / "l.tar")).returncode == 0
    with tarfile.open(tmp_path / "l.tar") as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    assert files == tree(tmp_path / "layout")


def _oci_validator(schema_file: str) -> jsonschema.Validator:
    resources = []
    for path in OCI_SCHEMAS.glob("*.json"):
        resource = referencing.Resource.from_contents(
            json.loads(path.read_text()), default_specification=referencing.jsonschema.DRAFT4)
        # Relative $refs resolve against .../schema/ or .../schema/image/.
        resources += [(f"https://opencontainers.org/schema/{path.name}", resource),
                      (f"https://opencontainers.org/schema/image/{path.name}", resource)]
    registry = referencing.Registry().with_resources(resources)
    schema = json.loads((OCI_SCHEMAS / schema_file).read_text())
    return jsonschema.Draft4Validator(schema, registry=registry)


def test_layout_matches_the_oci_image_spec_schemas(fake_wasm, tmp_path):
    layout = tmp_path / "layout"
    assert package(fake_wasm, layout).returncode == 0
    index = json.loads((layout / "index.json").read_text())
    manifest_desc = index["manifests"][0]
    manifest = json.loads(blob(layout, manifest_desc["digest"]))
    config = json.loads(blob(layout, manifest["config"]["digest"]))
    checks = [
        ("image-layout-schema.json", json.loads((layout / "oci-layout").read_text())),
        ("image-index-schema.json", index),
        ("image-manifest-schema.json", manifest),
        ("config-schema.json", config),
    ]
    for schema_file, document in checks:
        errors = [e.message for e in _oci_validator(schema_file).iter_errors(document)]
        assert errors == [], schema_file
    # Negative control: the schemas do reject a broken manifest.
    broken = {**manifest, "layers": []}
    assert list(_oci_validator("image-manifest-schema.json").iter_errors(broken))


def test_refuses_bad_input(tmp_path):
    not_wasm = tmp_path / "x.wasm"
    not_wasm.write_bytes(b"hello")
    result = package(not_wasm, tmp_path / "out")
    assert result.returncode == 4 and "not a WebAssembly module" in result.stderr
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "keep.txt").write_text("x")
    fake = tmp_path / "f.wasm"
    fake.write_bytes(b"\0asm\x01\0\0\0")
    result = package(fake, precious)
    assert result.returncode == 2 and (precious / "keep.txt").exists()
    assert package(fake, tmp_path / "o", "--tag", "bad tag").returncode == 2


@pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo (Debian package) not installed")
def test_skopeo_reads_the_layout(fake_wasm, tmp_path):
    """An independent reader (containers/image) when it is installed; optional."""
    assert package(fake_wasm, tmp_path / "layout", "--tar", str(tmp_path / "l.tar")).returncode == 0
    out = subprocess.run(["skopeo", "inspect", "oci:" + str(tmp_path / "layout") + ":0.1.0"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["Architecture"] == "wasm"
    copied = subprocess.run(["skopeo", "copy", "oci-archive:" + str(tmp_path / "l.tar") + ":0.1.0",
                             "dir:" + str(tmp_path / "copy")], capture_output=True, text=True, timeout=60)
    assert copied.returncode == 0, copied.stderr
