"""The committed manifests in envoy/ are exactly what scripts/render-deploy.sh writes
for the seed config today, and they agree with the bootstrap `detour envoy` renders:
same config text, same clusters, same environment keys, same ports. A change of the
config or of the renderer without re-rendering fails here.

Fleet mode: the script adds `detour.fleet.state` (the detour-state Service) to a config
that has no `detour.fleet`; the ConfigMap carries that config as config.yaml, the
bootstrap is rendered from it, and detour state (state.yaml) reads it."""

from __future__ import annotations

import difflib
import hashlib
import re
import subprocess

import yaml

from deploy_support import ENVOY_DIR, ROOT, SEED, find, load_docs, render_deploy
from deploy_support import detour_bin  # noqa: F401  (fixture)

RERENDER = "run scripts/render-deploy.sh and commit envoy/"


STATE_URL = "http://detour-state.detour.svc.cluster.local:8081"


def rendered_bootstrap(detour_bin, tmp_path, config_text: str) -> str:
    """What `detour envoy` renders for the ingress deployment from the ConfigMap's
    config.yaml, as the ConfigMap should hold it."""
    (tmp_path / "config.yaml").write_text(config_text)
    out = subprocess.run(
        [str(detour_bin), "envoy", "config.yaml", "--listen", "0.0.0.0:10000", "--admin", "127.0.0.1:9901",
         "--wasm", "/var/lib/detour/detour.wasm", "--concurrency-hint", "2", "--no-env"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, check=True,
    )
    return out.stdout


def _config_text() -> str:
    return find("ConfigMap", "detour-envoy", "kubernetes")["data"]["config.yaml"]


def test_committed_manifests_are_the_renderers_output(detour_bin, tmp_path):
    result = render_deploy(detour_bin, tmp_path)
    assert result.returncode == 0, result.stderr
    fresh = {p.relative_to(tmp_path): p.read_text() for p in tmp_path.rglob("*.yaml")}
    committed = {p.relative_to(ENVOY_DIR): p.read_text() for p in ENVOY_DIR.rglob("*.yaml")}
    assert sorted(fresh) == sorted(committed), f"generated file set differs: {RERENDER}"
    stale = [str(name) for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"out of date: {stale}: {RERENDER}"


def test_configmap_bootstrap_is_what_detour_envoy_renders(detour_bin, tmp_path):
    configmap = find("ConfigMap", "detour-envoy", "kubernetes")
    assert configmap["data"]["envoy.yaml"] == rendered_bootstrap(detour_bin, tmp_path, _config_text()), RERENDER


def test_configmap_config_is_the_seed_plus_fleet_state():
    seed_text = (ROOT / SEED).read_text()
    text = _config_text()
    # Only lines added, none changed or removed: the seed's comments and layout stay.
    seed_lines, lines = seed_text.splitlines(), text.splitlines()
    ops = difflib.SequenceMatcher(a=seed_lines, b=lines, autojunk=False).get_opcodes()
    assert all(tag in ("equal", "insert") for tag, *_ in ops), ops
    added = [line for tag, _, _, j1, j2 in ops if tag == "insert" for line in lines[j1:j2]]
    assert [l for l in added if l.strip() and not l.lstrip().startswith("#")] == [
        "  fleet:", f"    state: {STATE_URL}"]
    # The same config with detour.fleet.state.
    expected = yaml.safe_load(seed_text)
    expected["detour"]["fleet"] = {"state": STATE_URL}
    assert yaml.safe_load(text) == expected
    # The bootstrap embeds this text and has the state service's cluster.
    assert _wasm_plugin(_bootstrap())["configuration"]["value"] == text
    names = [c["name"] for c in _bootstrap()["static_resources"]["clusters"]]
    assert "detour_http_detour-state.detour.svc.cluster.local_8081" in names


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
    # Fleet mode: several replicas share the budgets, drained one at a time.
    assert deployment["spec"]["replicas"] == 3
    pdb = find("PodDisruptionBudget", "detour", "kubernetes")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()


def _state_flags(detour_bin) -> set[str]:
    out = subprocess.run([str(detour_bin), "state", "--help"], capture_output=True, text=True,
                         timeout=60, check=True)
    return set(re.findall(r"--[a-z][a-z0-9-]*", out.stdout))


def test_state_deployment_is_what_detour_state_and_the_filter_expect(detour_bin):
    deployment = find("Deployment", "detour-state", "kubernetes")
    service = find("Service", "detour-state", "kubernetes")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    args = container["args"]
    # `detour state` and flags it has, each with a value.
    assert args[0] == "state"
    flags = args[1::2]
    assert all(f.startswith("--") for f in flags) and len(args) % 2 == 1, args
    assert set(flags) <= _state_flags(detour_bin), flags
    opts = dict(zip(args[1::2], args[2::2]))
    # The Redis URL (it may hold a password) comes from the environment, never an argument.
    assert "--redis" not in opts
    (env,) = container["env"]
    assert env["name"] == "DETOUR_REDIS_URL" and env["valueFrom"]["secretKeyRef"]["key"] == "REDIS_URL"
    # --config is the ConfigMap's config.yaml, and the pods roll when it changes.
    mount = next(m for m in container["volumeMounts"] if opts["--config"].startswith(m["mountPath"] + "/"))
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["configMap"]["name"] == "detour-envoy"
    (item,) = volume["configMap"]["items"]
    assert (item["key"], f"{mount['mountPath']}/{item['path']}") == ("config.yaml", opts["--config"])
    assert deployment["spec"]["template"]["metadata"]["annotations"]["checksum/config"] == \
        hashlib.sha256(_config_text().encode()).hexdigest()
    # Ports: --listen and --grpc are the container's ports, which the Service exposes.
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert (opts["--listen"], opts["--grpc"]) == (f"0.0.0.0:{ports['http']}", f"0.0.0.0:{ports['grpc']}")
    service_ports = {p["name"]: (p["port"], p["targetPort"]) for p in service["spec"]["ports"]}
    assert service_ports == {"http": (8081, "http"), "grpc": (8082, "grpc")}
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert deployment["spec"]["replicas"] == 2
    # The filter's detour.fleet.state is this Service, and the bootstrap's cluster goes there.
    host = f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc.cluster.local"
    assert yaml.safe_load(_config_text())["detour"]["fleet"]["state"] == f"http://{host}:8081"
    (cluster,) = [c for c in _bootstrap()["static_resources"]["clusters"]
                  if c["name"] == f"detour_http_{host}_8081"]
    endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert endpoint["address"]["socket_address"] == {"address": host, "port_value": 8081}


def test_trial_redis_matches_the_secret_the_readme_creates():
    redis = find("Service", "detour-redis", "kubernetes")
    deployment = find("Deployment", "detour-redis", "kubernetes")
    assert deployment["spec"]["replicas"] == 1
    assert redis["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    (port,) = redis["spec"]["ports"]
    url = f"redis://{redis['metadata']['name']}.{redis['metadata']['namespace']}.svc.cluster.local:{port['port']}/0"
    secret = find("Deployment", "detour-state", "kubernetes")["spec"]["template"]["spec"]["containers"][0][
        "env"][0]["valueFrom"]["secretKeyRef"]["name"]
    readme = (ENVOY_DIR / "kubernetes" / "README.md").read_text()
    assert f"create secret generic {secret} --from-literal=REDIS_URL={url}" in readme


def test_without_fleet_mode_one_replica_and_no_state_service(detour_bin, tmp_path):
    result = render_deploy(detour_bin, tmp_path, "--fleet-state", "none")
    assert result.returncode == 0, result.stderr
    k8s = tmp_path / "kubernetes"
    assert sorted(p.name for p in k8s.glob("*.yaml")) == [
        "configmap.yaml", "deployment.yaml", "namespace.yaml", "service.yaml"]
    (configmap,) = load_docs(k8s / "configmap.yaml")
    assert configmap["data"]["config.yaml"] == (ROOT / SEED).read_text()
    (deployment,) = load_docs(k8s / "deployment.yaml")
    assert deployment["spec"]["replicas"] == 1
    assert "topologySpreadConstraints" not in deployment["spec"]["template"]["spec"]
    boot = yaml.safe_load(configmap["data"]["envoy.yaml"])
    assert not [c for c in boot["static_resources"]["clusters"] if "detour-state" in c["name"]]
    assert "Fleet mode" not in configmap["data"]["envoy.yaml"]
    # Rendering again with fleet mode into the same directory brings the state files back;
    # without it, they go again.
    assert render_deploy(detour_bin, tmp_path).returncode == 0
    assert (k8s / "state.yaml").exists() and (k8s / "redis.yaml").exists()
    assert render_deploy(detour_bin, tmp_path, "--fleet-state", "none").returncode == 0
    assert not (k8s / "state.yaml").exists() and not (k8s / "redis.yaml").exists()


BASE = "model_list:\n  - model_name: m\n    litellm_params: {model: openai/m, api_base: http://127.0.0.1:9/v1}\n"


def _rendered_config(out):
    (configmap,) = load_docs(out / "kubernetes" / "configmap.yaml")
    return configmap["data"]["config.yaml"], yaml.safe_load(configmap["data"]["envoy.yaml"])


def test_fleet_state_is_added_only_where_missing(detour_bin, tmp_path):
    # No detour section: one is appended, with the namespace's state service.
    config = tmp_path / "bare.yaml"
    config.write_text(BASE)
    out = tmp_path / "bare"
    result = render_deploy(detour_bin, out, str(config), "--namespace", "llm")
    assert result.returncode == 0, result.stderr
    text, boot = _rendered_config(out)
    assert text.startswith(BASE)
    url = "http://detour-state.llm.svc.cluster.local:8081"
    assert yaml.safe_load(text)["detour"] == {"fleet": {"state": url}}
    assert "detour_http_detour-state.llm.svc.cluster.local_8081" in [c["name"] for c in boot["static_resources"]["clusters"]]
    (state, _, _) = load_docs(out / "kubernetes" / "state.yaml")
    assert state["metadata"]["namespace"] == "llm"

    # detour.fleet as written: left alone.
    own = BASE + "detour:\n  fleet:\n    state: http://my-state.ops:9000\n    lease_ttl: 2m\n"
    config.write_text(own)
    out = tmp_path / "own"
    result = render_deploy(detour_bin, out, str(config))
    assert result.returncode == 0, result.stderr
    text, boot = _rendered_config(out)
    assert text == own
    assert "detour_http_my-state.ops_9000" in [c["name"] for c in boot["static_resources"]["clusters"]]
    assert (out / "kubernetes" / "state.yaml").exists()

    # A detour section this cannot edit line by line: refused, nothing guessed.
    config.write_text(BASE + "detour: {max_request_body_bytes: 1048576}\n")
    result = render_deploy(detour_bin, tmp_path / "flow", str(config))
    assert result.returncode != 0
    assert "cannot add detour.fleet.state" in result.stderr and "--fleet-state none" in result.stderr

    # Fleet mode with only a Redis: `detour envoy` refuses, naming detour.fleet.state.
    config.write_text(BASE + "detour:\n  fleet:\n    redis: redis://:hunter2@redis.internal:6379/0\n")
    result = render_deploy(detour_bin, tmp_path / "redis", str(config))
    assert result.returncode != 0
    assert "detour.fleet.state" in result.stderr and "`detour state`" in result.stderr
    assert "hunter2" not in result.stderr


def test_istio_envoyfilter_matches_the_bootstrap():
    boot = _bootstrap()
    plugin = _wasm_plugin(boot)
    config_text = _config_text()
    ef = find("EnvoyFilter", "detour", "istio")
    patches = ef["spec"]["configPatches"]
    by = {}
    for p in patches:
        by.setdefault(p["applyTo"], []).append(p)

    ext = by["EXTENSION_CONFIG"][0]["patch"]["value"]
    config = ext["typed_config"]["config"]
    # The filter's configuration is the config file, byte for byte, as in the bootstrap.
    assert config["configuration"]["value"] == config_text == plugin["configuration"]["value"]
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
