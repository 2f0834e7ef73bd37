"""The committed manifests in envoy/ are exactly what scripts/render-deploy.sh writes
for the seed config today, and they agree with the bootstrap `detour envoy` renders:
same config text, same clusters, same environment keys, same ports. A change of the
config or of the renderer without re-rendering fails here."""

from __future__ import annotations

import hashlib
import re
import subprocess

import yaml

from deploy_support import ENVOY_DIR, ROOT, SEED, find, render_deploy
from deploy_support import detour_bin  # noqa: F401  (fixture)

RERENDER = "run scripts/render-deploy.sh and commit envoy/"


def rendered_bootstrap(detour_bin) -> str:
    """What `detour envoy` renders for the ingress deployment, as the ConfigMap should hold it."""
    out = subprocess.run(
        [str(detour_bin), "envoy", SEED, "--listen", "0.0.0.0:10000", "--admin", "127.0.0.1:9901",
         "--wasm", "/var/lib/detour/detour.wasm", "--concurrency-hint", "2", "--no-env"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=True,
    )
    return out.stdout


def test_committed_manifests_are_the_renderers_output(detour_bin, tmp_path):
    result = render_deploy(detour_bin, tmp_path)
    assert result.returncode == 0, result.stderr
    fresh = {p.relative_to(tmp_path): p.read_text() for p in tmp_path.rglob("*.yaml")}
    committed = {p.relative_to(ENVOY_DIR): p.read_text() for p in ENVOY_DIR.rglob("*.yaml")}
    assert sorted(fresh) == sorted(committed), f"generated file set differs: {RERENDER}"
    stale = [str(name) for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"out of date: {stale}: {RERENDER}"


def test_configmap_bootstrap_is_what_detour_envoy_renders(detour_bin):
    configmap = find("ConfigMap", "detour-envoy", "kubernetes")
    assert configmap["data"]["envoy.yaml"] == rendered_bootstrap(detour_bin), RERENDER


def test_render_is_deterministic(detour_bin, tmp_path):
    for run in ("a", "b"):
        assert render_deploy(detour_bin, tmp_path / run).returncode == 0
    for path in (tmp_path / "a").rglob("*.yaml"):
        assert path.read_bytes() == (tmp_path / "b" / path.relative_to(tmp_path / "a")).read_bytes()


def _bootstrap():
    return yaml.safe_load(find("ConfigMap", "detour-envoy", "kubernetes")["data"]["envoy.yaml"])


def _wasm_plugin(boot):
    hcm = boot["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    return next(f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.wasm")["typed_config"]["config"]


def _env_names(container):
    return [e["name"] for e in container.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})]


def test_ingress_deployment_matches_its_bootstrap():
    boot = _bootstrap()
    plugin = _wasm_plugin(boot)
    keys = plugin["vm_config"]["environment_variables"]["host_env_keys"]
    assert keys, "the seed config references os.environ/ keys"
    deployment = find("Deployment", "detour", "kubernetes")
    pod = deployment["spec"]["template"]["spec"]
    envoy = next(c for c in pod["containers"] if c["name"] == "envoy")
    # Every key the filter reads comes from the Secret, and nothing else does.
    assert sorted(_env_names(envoy)) == sorted(keys)
    # The module path in the bootstrap is where the init container unpacks it.
    wasm_file = plugin["vm_config"]["code"]["local"]["filename"]
    mounts = {m["name"]: m["mountPath"] for m in envoy["volumeMounts"]}
    assert wasm_file == mounts["wasm"] + "/detour.wasm"
    assert plugin["allow_on_headers_stop_iteration"] is True
    # Ports: listener = containerPort http = the Service's target.
    port = boot["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"]
    ports = {p["name"]: p["containerPort"] for p in envoy["ports"]}
    assert ports["http"] == port
    service = find("Service", "detour", "kubernetes")
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    # The admin interface stays on loopback; probes use the health listener.
    assert boot["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"
    health = yaml.safe_load(find("ConfigMap", "detour-envoy", "kubernetes")["data"]["health.yaml"])
    health_port = health["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"]
    assert ports["health"] == health_port
    assert envoy["readinessProbe"]["httpGet"]["port"] == "health"
    # The pod template changes whenever the ConfigMap does (so pods roll).
    data = find("ConfigMap", "detour-envoy", "kubernetes")["data"]
    digest = hashlib.sha256("".join(f"{k}\0{v}\0" for k, v in sorted(data.items())).encode()).hexdigest()
    assert deployment["spec"]["template"]["metadata"]["annotations"]["checksum/detour-envoy"] == digest


def test_istio_envoyfilter_matches_the_bootstrap():
    boot = _bootstrap()
    plugin = _wasm_plugin(boot)
    seed_text = (ROOT / SEED).read_text()
    ef = find("EnvoyFilter", "detour", "istio")
    patches = ef["spec"]["configPatches"]
    by = {}
    for p in patches:
        by.setdefault(p["applyTo"], []).append(p)

    ext = by["EXTENSION_CONFIG"][0]["patch"]["value"]
    config = ext["typed_config"]["config"]
    # The filter's configuration is the config file, byte for byte, as in the bootstrap.
    assert config["configuration"]["value"] == seed_text == plugin["configuration"]["value"]
    assert config["allow_on_headers_stop_iteration"] is True, "design B needs it (see envoy/istio/README.md)"
    assert config["failure_policy"] == "FAIL_RELOAD"
    assert config["vm_config"]["vm_id"] == "detour"
    assert config["vm_config"]["environment_variables"] == plugin["vm_config"]["environment_variables"]
    assert config["vm_config"]["code"]["remote"]["http_uri"]["uri"].startswith("oci://")
    # Everything else in the plugin config is the standalone one.
    rest = {k: v for k, v in config.items() if k != "vm_config"}
    assert rest == {k: v for k, v in plugin.items() if k != "vm_config"}

    # The HTTP filter refers to that ECDS resource and accepts the agent's RBAC stand-in.
    http_filter = by["HTTP_FILTER"][0]["patch"]["value"]
    assert http_filter["name"] == ext["name"]
    assert "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC" in http_filter["config_discovery"]["type_urls"]

    # Clusters: exactly the bootstrap's, so every x-detour-cluster value exists.
    added = [p["patch"]["value"] for p in by["CLUSTER"]]
    assert added == boot["static_resources"]["clusters"]
    for c in added:
        assert re.fullmatch(r"detour_https?_[A-Za-z0-9._-]+_\d+", c["name"]), c["name"]

    # The route: the bootstrap's cluster_header route, in the detour Service's virtual host.
    route = by["HTTP_ROUTE"][0]
    hcm = boot["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    standalone = hcm["route_config"]["virtual_hosts"][0]["routes"][0]
    assert route["patch"]["value"]["route"] == standalone["route"]
    assert set(standalone["request_headers_to_remove"]) <= set(route["patch"]["value"]["request_headers_to_remove"])
    service = find("Service", "detour", "istio")
    port = service["spec"]["ports"][0]["port"]
    # Every virtual host of the port: after the filter rewrote :authority, Istio's catch-all
    # virtual host is the one that matches (see scripts/render-deploy.sh).
    assert route["match"]["routeConfiguration"] == {"portNumber": port}
    assert "selector" not in service["spec"]
    assert service["metadata"]["namespace"] == ef["metadata"]["namespace"]
    for p in patches:
        if "listener" in p.get("match", {}):
            assert p["match"]["listener"]["portNumber"] == port
    assert by["LISTENER"][0]["patch"]["value"]["per_connection_buffer_limit_bytes"] == \
        boot["static_resources"]["listeners"][0]["per_connection_buffer_limit_bytes"]

    # The example client: selected by the EnvoyFilter, keys in its sidecar's environment.
    client = find("Deployment", "detour-client", "istio")
    labels = client["spec"]["template"]["metadata"]["labels"]
    assert ef["spec"]["workloadSelector"]["labels"].items() <= labels.items()
    sidecar = next(c for c in client["spec"]["template"]["spec"]["containers"] if c["name"] == "istio-proxy")
    assert sorted(_env_names(sidecar)) == sorted(plugin["vm_config"]["environment_variables"]["host_env_keys"])
