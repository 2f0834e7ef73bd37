"""Every manifest in envoy/ against the schemas the API server would use, offline:

- Kubernetes kinds: the OpenAPI schemas bundled in the kubernetes-validate package,
  strict (unknown fields are errors, as `kubectl apply` with server-side field
  validation makes them), for each Kubernetes minor version from 1.30 to 1.37.
- EnvoyFilter: the CRD schema of Istio 1.28.0 and 1.30.3 (vendored in schemas/istio/),
  made strict the same way, plus the CRD's CEL rules and the Istio webhook's structural
  rules that apply to our patches, written out here (neither is run by a JSON Schema
  validator). The patch values themselves are Envoy protos: Envoy checks them in
  test_envoy.py.

Each family also has a negative control: a broken copy must fail.
"""

from __future__ import annotations

import copy
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from deploy_support import SCHEMAS, load_docs, manifest_files, render_deploy
from deploy_support import detour_bin, wasm  # noqa: F401  (fixtures)

K8S_VERSIONS = [f"1.{minor}.0" for minor in range(30, 38)]
ISTIO_VERSIONS = ["1.28.0", "1.30.3"]


def k8s_docs() -> list[tuple[str, dict]]:
    return [(f"{p.parent.name}/{p.name}", d) for p in manifest_files() for d in load_docs(p)
            if not d["apiVersion"].endswith(".istio.io/v1alpha3")]


def istio_docs() -> list[tuple[str, dict]]:
    return [(f"{p.parent.name}/{p.name}", d) for p in manifest_files() for d in load_docs(p)
            if d["kind"] == "EnvoyFilter"]


def k8s_errors(doc: dict) -> list[str]:
    errors = []
    for version in K8S_VERSIONS:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            errors.append(f"k8s {version}: {'.'.join(map(str, e.path))}: {e.message}")
    return errors


def test_every_manifest_is_covered():
    kinds = sorted({d["kind"] for _, d in k8s_docs() + istio_docs()})
    assert kinds == ["ConfigMap", "Deployment", "EnvoyFilter", "Namespace", "PodDisruptionBudget", "Service"]
    assert len(k8s_docs()) + len(istio_docs()) == sum(len(load_docs(p)) for p in manifest_files())


@pytest.mark.parametrize("name,doc", k8s_docs(), ids=[f"{n}:{d['kind']}/{d['metadata']['name']}" for n, d in k8s_docs()])
def test_kubernetes_manifest_is_valid(name, doc):
    assert k8s_errors(doc) == []


def test_wasm_configmap_is_valid_and_fits(detour_bin, wasm, tmp_path):
    """The ConfigMap render-deploy.sh writes for the module: valid, and under the API
    server's 1 MiB limit for a ConfigMap's data (with room to grow)."""
    out = tmp_path / "detour-wasm.yaml"
    result = render_deploy(detour_bin, tmp_path / "envoy", "--wasm-configmap", str(out), "--wasm", str(wasm))
    assert result.returncode == 0, result.stderr
    (doc,) = load_docs(out)
    assert k8s_errors(doc) == []
    import base64
    size = sum(len(v) for v in doc["data"].values()) + sum(len(base64.b64decode(v)) for v in doc["binaryData"].values())
    assert size < 1024 * 1024 // 2, f"the gzipped module is {size} bytes: half the ConfigMap limit"


def test_kubernetes_validation_catches_errors():
    deployment = next(d for _, d in k8s_docs() if d["kind"] == "Deployment")
    typo = copy.deepcopy(deployment)
    container = typo["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")  # unknown field
    assert k8s_errors(typo)
    wrong_type = copy.deepcopy(deployment)
    wrong_type["spec"]["replicas"] = "one"
    assert k8s_errors(wrong_type)


# ---- Istio ------------------------------------------------------------------------------

def strict(schema):
    """The API server prunes or (with strict field validation) rejects unknown fields of a
    structural schema, except under x-kubernetes-preserve-unknown-fields."""
    if isinstance(schema, dict):
        schema = {k: strict(v) for k, v in schema.items()}
        if ("properties" in schema and "additionalProperties" not in schema
                and not schema.get("x-kubernetes-preserve-unknown-fields")):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


def crd_schema(version: str) -> dict:
    (crd,) = load_docs(SCHEMAS / "istio" / f"envoyfilter-{version}.yaml")
    assert crd["spec"]["names"]["kind"] == "EnvoyFilter"
    (v1alpha3,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha3"]
    schema = copy.deepcopy(v1alpha3["schema"]["openAPIV3Schema"])
    # The API server supplies these for every custom resource.
    schema["properties"].setdefault("apiVersion", {"type": "string", "enum": ["networking.istio.io/v1alpha3"]})
    schema["properties"].setdefault("kind", {"type": "string", "enum": ["EnvoyFilter"]})
    schema["properties"].setdefault("metadata", {"type": "object"})
    return strict(schema)


def cel_errors(doc: dict) -> list[str]:
    """The x-kubernetes-validations rules of the EnvoyFilter CRD (1.28.0 and 1.30.3)."""
    spec, errors = doc["spec"], []
    if "workloadSelector" in spec and "targetRefs" in spec:
        errors.append("only one of targetRefs or workloadSelector can be set")
    for value in spec.get("workloadSelector", {}).get("labels", {}).values():
        if "*" in value:
            errors.append("wildcard is not supported in selector")
    for ref in spec.get("targetRefs", []):
        if ref.get("namespace"):
            errors.append("cross namespace referencing is not currently supported")
    for patch in spec["configPatches"]:
        match = patch.get("match", {})
        if ("waypoint" in match) != (match.get("context") == "WAYPOINT"):
            errors.append("only support waypointMatch when context is WAYPOINT")
    return errors


LISTENER_CLASS = {"LISTENER", "FILTER_CHAIN", "NETWORK_FILTER", "HTTP_FILTER"}
ROUTE_CLASS = {"ROUTE_CONFIGURATION", "VIRTUAL_HOST", "HTTP_ROUTE"}
HCM = "envoy.filters.network.http_connection_manager"


def webhook_errors(doc: dict) -> list[str]:
    """Istio's EnvoyFilter validation (pkg/config/validation/envoyfilter, 1.30.3), the
    structural part; proto parsing of the values is Envoy's job in test_envoy.py."""
    errors = []
    for i, cp in enumerate(doc["spec"]["configPatches"]):
        where = f"configPatches[{i}]"
        patch, match = cp.get("patch"), cp.get("match", {})
        if not cp.get("applyTo"):
            errors.append(f"{where}: missing applyTo")
        if not patch or not patch.get("operation"):
            errors.append(f"{where}: missing patch or operation")
            continue
        if patch["operation"] != "REMOVE" and not patch.get("value"):
            errors.append(f"{where}: missing patch value for non-remove operation")
        kinds = {"listener", "routeConfiguration", "cluster"} & match.keys()
        if cp["applyTo"] in LISTENER_CLASS and kinds - {"listener"}:
            errors.append(f"{where}: applyTo for listener class objects cannot have non listener match")
        if cp["applyTo"] in ROUTE_CLASS and kinds - {"routeConfiguration"}:
            errors.append(f"{where}: applyTo for http route class objects cannot have non route configuration match")
        if cp["applyTo"] == "CLUSTER" and kinds - {"cluster"}:
            errors.append(f"{where}: applyTo for cluster class objects cannot have non cluster match")
        flt = match.get("listener", {}).get("filterChain", {}).get("filter")
        if flt is not None:
            if not flt.get("name"):
                errors.append(f"{where}: filter match has no name to match on")
            if "subFilter" in flt:
                if cp["applyTo"] != "HTTP_FILTER":
                    errors.append(f"{where}: subfilter match can be used with applyTo HTTP_FILTER only")
                if flt.get("name") != HCM:
                    errors.append(f"{where}: subfilter match requires filter match with {HCM}")
                if not flt["subFilter"].get("name"):
                    errors.append(f"{where}: subfilter match has no name to match on")
        if cp["applyTo"] == "EXTENSION_CONFIG" and patch["operation"] != "ADD":
            # istiod only serves ADDed extension configs (envoyfilter/extension_configuration_patch.go)
            errors.append(f"{where}: EXTENSION_CONFIG patches other than ADD are ignored")
    return errors


def istio_errors(doc: dict) -> list[str]:
    errors = []
    for version in ISTIO_VERSIONS:
        validator = jsonschema.Draft7Validator(crd_schema(version))
        errors += [f"istio {version}: {'.'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(doc)]
    return errors + cel_errors(doc) + webhook_errors(doc)


@pytest.mark.parametrize("name,doc", istio_docs(), ids=[f"{n}:{d['kind']}/{d['metadata']['name']}" for n, d in istio_docs()])
def test_istio_manifest_is_valid(name, doc):
    assert istio_errors(doc) == []


def test_istio_validation_catches_errors():
    (_, doc) = istio_docs()[0]
    bad_enum = copy.deepcopy(doc)
    bad_enum["spec"]["configPatches"][0]["applyTo"] = "HTTP_FILTERS"
    assert istio_errors(bad_enum)
    unknown = copy.deepcopy(doc)
    unknown["spec"]["configPatches"][1]["match"]["listener"]["portNumbr"] = 10000
    assert istio_errors(unknown)
    both = copy.deepcopy(doc)
    both["spec"]["targetRefs"] = [{"kind": "Service", "name": "detour"}]
    assert istio_errors(both)
    wrong_match = copy.deepcopy(doc)
    wrong_match["spec"]["configPatches"][2]["match"] = {"listener": {"portNumber": 1}}
    assert istio_errors(wrong_match)


def test_vendored_schemas_are_the_documented_ones():
    readme = (SCHEMAS / "README.md").read_text()
    for path in sorted(SCHEMAS.rglob("*")):
        if path.is_file() and path.name != "README.md":
            assert path.name in readme, f"{path.name} is not listed in schemas/README.md"
    for version in ISTIO_VERSIONS:
        text = (SCHEMAS / "istio" / f"envoyfilter-{version}.yaml").read_text()
        assert f"Istio {version}" in text.splitlines()[0]
    assert yaml.safe_load  # PyYAML is what the manifests are read with
    assert Path(kubernetes_validate.__file__).is_file()
