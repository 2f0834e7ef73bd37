#!/usr/bin/env bash
# Renders the Kubernetes and Istio manifests in envoy/ from a detour config, using the
# bootstrap `detour envoy` renders for it (so the clusters, the filter's configuration and
# host_env_keys are exactly the standalone ones).
#
#   scripts/render-deploy.sh [CONFIG] [options]
#
#   CONFIG                    the detour config (default: examples/configs/seed.yaml)
#   --out DIR                 where kubernetes/ and istio/ go (default: envoy)
#   --namespace NS            the ingress deployment's namespace (default: detour)
#   --istio-namespace NS      the application namespace for sidecars (default: default)
#   --port N                  the port clients call, both deployments (default: 10000)
#   --image REF               the OCI image of the filter for Istio, without oci://
#                             (default: registry.example.com/detour/detour-wasm:0.1.0;
#                             use REPO@sha256:<manifest digest> from scripts/package-oci.sh)
#   --wasm-configmap FILE     also write the ConfigMap that carries the module to the
#                             ingress deployment (gzip + sha256), from --wasm
#   --wasm FILE               the module for --wasm-configmap (default: target/detour.wasm)
#   --fleet-state URL|none    fleet mode: budgets and RPM/TPM shared by every replica through
#                             `detour state` (kubernetes/state.yaml, redis.yaml). A config
#                             without detour.fleet gets `detour.fleet.state: URL` added
#                             (default: http://detour-state.NS.svc.cluster.local:8081, NS
#                             from --namespace); one with detour.fleet is used as written.
#                             `none`: per-process state, one ingress replica, no state files
#   --state-image REF         the image of the `detour` command for detour state (its
#                             entrypoint must be `detour`; default:
#                             registry.example.com/detour/detour:0.1.0)
#
# Relative paths (CONFIG, --out, --wasm-configmap, --wasm) are taken from the repository
# root. The committed files under envoy/ are this script's output for the seed config with
# the defaults; tests/deploy checks that running it again gives the same bytes.
# Environment: DETOUR_BIN  the detour command (default: `cargo run -q -p detour --`).
set -euo pipefail

scripts_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=scripts/env.sh
source "${scripts_dir}/env.sh"

usage() {
    sed -n '2,32p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

config="examples/configs/seed.yaml"
out="envoy"
namespace="detour"
istio_namespace="default"
port="10000"
image="registry.example.com/detour/detour-wasm:0.1.0"
wasm_configmap=""
wasm="${DETOUR_WASM}"
fleet_state=""
state_image="registry.example.com/detour/detour:0.1.0"
config_set=0
while (($# > 0)); do
    case "$1" in
        --out) out="${2:?--out needs a directory}"; shift 2 ;;
        --namespace) namespace="${2:?--namespace needs a value}"; shift 2 ;;
        --istio-namespace) istio_namespace="${2:?--istio-namespace needs a value}"; shift 2 ;;
        --port) port="${2:?--port needs a value}"; shift 2 ;;
        --image) image="${2:?--image needs a value}"; shift 2 ;;
        --wasm-configmap) wasm_configmap="${2:?--wasm-configmap needs a file}"; shift 2 ;;
        --wasm) wasm="${2:?--wasm needs a file}"; shift 2 ;;
        --fleet-state) fleet_state="${2:?--fleet-state needs a URL or none}"; shift 2 ;;
        --state-image) state_image="${2:?--state-image needs a value}"; shift 2 ;;
        -h | --help) usage ;;
        -*) echo "render-deploy: unknown option: $1" >&2; usage ;;
        *)
            ((config_set == 0)) || { echo "render-deploy: one CONFIG only" >&2; usage; }
            config="$1"; config_set=1; shift ;;
    esac
done

python="${DETOUR_VENV}/bin/python"
[[ -x "${python}" ]] || { echo "render-deploy: ${python} missing: run scripts/bootstrap.sh" >&2; exit 1; }
if [[ -n "${DETOUR_BIN:-}" ]]; then
    read -r -a detour <<<"${DETOUR_BIN}"
else
    # --manifest-path: `detour envoy` runs in a scratch directory (below).
    detour=(cargo run -q --manifest-path "${DETOUR_ROOT}/Cargo.toml" -p detour --)
fi
[[ -n "${fleet_state}" ]] || fleet_state="http://detour-state.${namespace}.svc.cluster.local:8081"

# Relative paths are taken from the repository root.
cd "${DETOUR_ROOT}"
work="$(mktemp -d)"
trap 'rm -rf "${work}"' EXIT
"${python}" - "${work}" "${config}" "${out}" "${namespace}" "${istio_namespace}" \
    "${port}" "${image}" "${wasm_configmap}" "${wasm}" "${fleet_state}" "${state_image}" \
    "${detour[@]}" <<'PY'
import copy
import gzip
import hashlib
import os
import subprocess
import sys

import yaml

(work, config_path, out, namespace, istio_ns, port, image, wasm_configmap, wasm_path,
 fleet_state, state_image) = sys.argv[1:12]
detour = sys.argv[12:]
port = int(port)
WASM_IN_POD = "/var/lib/detour/detour.wasm"


def fail(message):
    print(f"render-deploy: {message}", file=sys.stderr)
    sys.exit(1)


# ---- the config: as given, or with detour.fleet.state added ----------------------------
def add_fleet_state(text, url):
    """`text` with `fleet: {state: url}` as the first entry of its `detour:` section (added
    at the end when there is none), comments and layout untouched; None if the section
    is not a block mapping this can edit line by line."""
    newline = "\r\n" if "\r\n" in text else "\n"
    lines = text.splitlines(keepends=True)
    at = next((i for i, line in enumerate(lines)
               if line.split("#", 1)[0].rstrip() == "detour:"), None)
    if at is None:
        if "detour" in (yaml.safe_load(text) or {}):
            return None
        prefix = text if text.endswith("\n") or not text else text + newline
        indent, head = "  ", prefix + "detour:" + newline
        tail, blank = "", ""
    else:
        child = next((line for line in lines[at + 1:]
                      if line.strip() and not line.lstrip().startswith("#")), "")
        indent = child[:len(child) - len(child.lstrip())] or "  "
        head, tail, blank = "".join(lines[:at + 1]), "".join(lines[at + 1:]), newline
    block = [
        "# Fleet mode, added by scripts/render-deploy.sh: every replica leases its share of",
        "# the budgets and RPM/TPM from detour state (envoy/kubernetes/state.yaml).",
        "fleet:",
        f"{indent}state: {url}",
    ]
    return head + "".join(indent + line + newline for line in block) + blank + tail


def fleet_of(config):
    """detour.fleet of a parsed config, None when absent or `enabled: false`."""
    fleet = ((config or {}).get("detour") or {}).get("fleet")
    if fleet is None or (isinstance(fleet, dict) and fleet.get("enabled") is False):
        return None
    return fleet if isinstance(fleet, dict) else {}


with open(config_path, newline="") as f:
    original_text = f.read()
original = yaml.safe_load(original_text)
config_text, fleet_added = original_text, False
if fleet_state != "none" and "fleet" not in ((original or {}).get("detour") or {}):
    if not fleet_state.startswith(("http://", "https://")):
        fail(f"--fleet-state {fleet_state}: must be an http:// or https:// URL, or none")
    config_text = add_fleet_state(original_text, fleet_state)
    expected = copy.deepcopy(original) or {}
    detour_section = expected.get("detour") or {}
    expected["detour"] = {"fleet": {"state": fleet_state}, **detour_section}
    try:
        ok = config_text is not None and yaml.safe_load(config_text) == expected
    except yaml.YAMLError:
        ok = False
    if not ok:
        fail(f"cannot add detour.fleet.state to {config_path} (its detour: section is not a "
             "block mapping): add it yourself, or pass --fleet-state none")
    fleet_added = True
fleet = fleet_of(yaml.safe_load(config_text))

# `detour envoy` renders the config as the ConfigMap carries it (config.yaml), so the
# bootstrap's header names that file and is the same wherever this runs.
with open(os.path.join(work, "config.yaml"), "w", newline="") as f:
    f.write(config_text)
if detour and "/" in detour[0] and not os.path.isabs(detour[0]):
    detour[0] = os.path.abspath(detour[0])
# --no-env: the manifests carry the names of the keys, never their values.
rendered = subprocess.run(
    detour + ["envoy", "config.yaml", "--listen", f"0.0.0.0:{port}", "--admin", "127.0.0.1:9901",
              "--wasm", WASM_IN_POD, "--concurrency-hint", "2", "--no-env"],
    cwd=work, capture_output=True, text=True)
sys.stderr.write("".join(line for line in rendered.stderr.splitlines(keepends=True)
                         if "does not exist yet" not in line))
if rendered.returncode != 0:
    fail(f"detour envoy failed for {config_path} (exit {rendered.returncode})")
bootstrap_text = rendered.stdout
boot = yaml.safe_load(bootstrap_text)

HEALTH_PORT = 9902
ADMIN_PORT = 9901
ENVOY_IMAGE = "envoyproxy/envoy:v1.40.0"
WASM_DIR = "/var/lib/detour"
SECRET = "detour-provider-keys"
HCM = "envoy.filters.network.http_connection_manager"
WASM_TYPE = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"
RBAC_TYPE = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"
HCM_TYPE = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"


class Dumper(yaml.SafeDumper):
    """Block style, keys in insertion order, multi-line strings as `|` blocks."""

    def increase_indent(self, flow=False, indentless=False):  # lists indented under keys
        return super().increase_indent(flow, False)

    def ignore_aliases(self, data):  # no &anchors / *aliases: every object spelled out
        return True


def _str(dumper, value):
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


Dumper.add_representer(str, _str)


def dump_docs(header, docs):
    body = "---\n".join(yaml.dump(d, Dumper=Dumper, sort_keys=False, width=100, allow_unicode=True) for d in docs)
    return header + body


def write(rel, text):
    path = os.path.join(out, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    print(f"wrote {path}")


def header(lines):
    return "".join(f"# {line}\n" if line else "#\n" for line in lines)


generated = [
    f"Generated by scripts/render-deploy.sh from {config_path}. Do not edit: change the",
    "config and run scripts/render-deploy.sh again (tests/deploy fails on any drift).",
] + ([f"It added detour.fleet.state: {fleet_state} to the config."] if fleet_added else [])

# ---- what the rendered bootstrap says -------------------------------------------------
listener = boot["static_resources"]["listeners"][0]
clusters = boot["static_resources"]["clusters"]
hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
wasm_filter = next(f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.wasm")
plugin = wasm_filter["typed_config"]["config"]
env_keys = plugin["vm_config"]["environment_variables"]["host_env_keys"]
route = hcm["route_config"]["virtual_hosts"][0]["routes"][0]
assert "cluster_header" in route["route"], "the rendered route is not a cluster_header route"


def secret_env(keys):
    return [{"name": k, "valueFrom": {"secretKeyRef": {"name": SECRET, "key": k}}} for k in keys]


# ---- Kubernetes: Envoy as the cluster's LLM gateway ---------------------------------
labels = {"app.kubernetes.io/name": "detour", "app.kubernetes.io/component": "llm-gateway"}
selector = {"app.kubernetes.io/name": "detour"}

health_yaml = yaml.dump({
    "static_resources": {
        "listeners": [{
            "name": "detour_health",
            "address": {"socket_address": {"address": "0.0.0.0", "port_value": HEALTH_PORT}},
            "filter_chains": [{"filters": [{
                "name": HCM,
                "typed_config": {
                    "@type": HCM_TYPE,
                    "stat_prefix": "detour_health",
                    "route_config": {
                        "name": "detour_health",
                        "virtual_hosts": [{
                            "name": "detour_health",
                            "domains": ["*"],
                            "routes": [
                                # readiness: Envoy's own /ready (LIVE → 200; initializing
                                # or draining → 503), and nothing else of the admin API
                                {"match": {"path": "/ready"},
                                 "route": {"cluster": "detour_admin", "timeout": "2s"}},
                                # liveness: answered by a worker thread, unaffected by a drain
                                {"match": {"path": "/livez"},
                                 "direct_response": {"status": 200, "body": {"inline_string": "alive\n"}}},
                            ],
                        }],
                    },
                    "http_filters": [{"name": "envoy.filters.http.router",
                                      "typed_config": {"@type": ROUTER_TYPE}}],
                },
            }]}],
        }],
        "clusters": [{
            "name": "detour_admin",
            "type": "STATIC",
            "connect_timeout": "1s",
            "load_assignment": {
                "cluster_name": "detour_admin",
                "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                    "address": "127.0.0.1", "port_value": ADMIN_PORT}}}}]}],
            },
        }],
    }
}, Dumper=Dumper, sort_keys=False, width=100, allow_unicode=True)
health_yaml = (
    "# Merged into envoy.yaml with --config-yaml: a probe listener on :9902 that exposes\n"
    "# only GET /ready (proxied to the admin interface, which stays on 127.0.0.1:9901)\n"
    "# and GET /livez. Kubelet probes reach the pod IP, never the pod's loopback.\n"
) + health_yaml

unpack_sh = f"""#!/bin/sh
# Init container: unpacks the filter module from the detour-wasm ConfigMap into the
# emptyDir Envoy reads it from, and refuses to start the pod if its sha256 is wrong.
set -eu
src="${{DETOUR_WASM_SRC:-/etc/detour-wasm}}"
dst="${{DETOUR_WASM_DST:-{WASM_DIR}}}"
want="$(tr -d ' \\n' < "$src/detour.wasm.sha256")"
gzip -dc "$src/detour.wasm.gz" > "$dst/detour.wasm.tmp"
got="$(sha256sum "$dst/detour.wasm.tmp" | cut -d ' ' -f 1)"
if [ "$got" != "$want" ]; then
    echo "unpack-wasm: detour.wasm has sha256 $got, the ConfigMap says $want" >&2
    rm -f "$dst/detour.wasm.tmp"
    exit 1
fi
mv "$dst/detour.wasm.tmp" "$dst/detour.wasm"
echo "unpack-wasm: $dst/detour.wasm ok (sha256 $got)"
"""

prestop_sh = """#!/bin/bash
# preStop hook: stop taking new requests, then wait (bounded) for the ones in flight, so
# a rollout or node drain does not cut LLM answers short. Envoy exits on the SIGTERM
# that follows. Plain bash (/dev/tcp): the Envoy image has no curl.
set -u
admin="${DETOUR_ADMIN:-127.0.0.1:9901}"
limit="${DETOUR_DRAIN_SECONDS:-620}"

# admin METHOD PATH: one request to the admin interface; prints the response body.
admin() {
    local reply
    exec 3<>"/dev/tcp/${admin%:*}/${admin##*:}" || return 1
    printf '%s %s HTTP/1.1\\r\\nHost: %s\\r\\nContent-Length: 0\\r\\nConnection: close\\r\\n\\r\\n' \\
        "$1" "$2" "${admin}" >&3
    reply="$(cat <&3)"
    exec 3<&-
    printf '%s\\n' "${reply#*$'\\r\\n\\r\\n'}"
}

# /ready turns 503 (the endpoint leaves the Service); connections are closed as their
# requests finish (HTTP/1.1 connection: close, HTTP/2 GOAWAY).
admin POST /healthcheck/fail >/dev/null
admin POST '/drain_listeners?graceful' >/dev/null
deadline=$((SECONDS + limit))
while ((SECONDS < deadline)); do
    active="$(admin GET '/stats?filter=downstream_rq_active' |
        awk -F': ' '$1 == "http.detour.downstream_rq_active" { n += $2 } END { print n + 0 }')"
    [[ "${active}" == 0 ]] && exit 0
    sleep 1
done
echo "preStop: requests still in flight after ${limit}s" >&2
"""

# config.yaml: the config itself, as the bootstrap embeds it (detour state reads its rpm/tpm).
config_data = {"config.yaml": config_text, "envoy.yaml": bootstrap_text, "health.yaml": health_yaml,
               "unpack-wasm.sh": unpack_sh, "prestop.sh": prestop_sh}
config_hash = hashlib.sha256(
    "".join(f"{k}\0{v}\0" for k, v in sorted(config_data.items())).encode()).hexdigest()

k8s_namespace = {
    "apiVersion": "v1", "kind": "Namespace",
    "metadata": {"name": namespace, "labels": {
        # the pod below meets the "restricted" Pod Security Standard
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/enforce-version": "latest",
    }},
}
configmap = {
    "apiVersion": "v1", "kind": "ConfigMap",
    "metadata": {"name": "detour-envoy", "namespace": namespace, "labels": labels},
    "data": config_data,
}
restricted = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
}


def spread(match_labels):
    """Replicas on different nodes where the cluster has them (a preference, not a rule)."""
    return {"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
            "whenUnsatisfiable": "ScheduleAnyway", "labelSelector": {"matchLabels": match_labels}}


def disruption_budget(name, object_labels, match_labels):
    """Node drains take one pod down at a time."""
    return {
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": {"name": name, "namespace": namespace, "labels": object_labels},
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": match_labels}},
    }


deployment = {
    "apiVersion": "apps/v1", "kind": "Deployment",
    "metadata": {"name": "detour", "namespace": namespace, "labels": labels},
    "spec": {
        # Fleet mode: each replica leases its share of the budgets and RPM/TPM from detour
        # state, so replicas share them. Without it they live in each Envoy's memory and N
        # replicas would each allow the whole budget: one replica (envoy/kubernetes/README.md).
        "replicas": 3 if fleet else 1,
        "revisionHistoryLimit": 3,
        "strategy": {"type": "RollingUpdate",
                     "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
        "selector": {"matchLabels": selector},
        "template": {
            "metadata": {
                "labels": labels,
                # a changed bootstrap rolls the pods
                "annotations": {"checksum/detour-envoy": config_hash},
            },
            "spec": {
                "automountServiceAccountToken": False,
                "enableServiceLinks": False,
                **({"topologySpreadConstraints": [spread(selector)]} if fleet else {}),
                # request_deadline (600 s) plus the preStop drain's margin
                "terminationGracePeriodSeconds": 630,
                "securityContext": {
                    "runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532,
                    "fsGroup": 65532, "seccompProfile": {"type": "RuntimeDefault"},
                },
                "initContainers": [{
                    "name": "unpack-wasm",
                    "image": ENVOY_IMAGE,
                    "command": ["/bin/sh", "/etc/detour/unpack-wasm.sh"],
                    "securityContext": restricted,
                    "resources": {"requests": {"cpu": "50m", "memory": "32Mi"},
                                  "limits": {"memory": "64Mi"}},
                    "volumeMounts": [
                        {"name": "envoy-config", "mountPath": "/etc/detour", "readOnly": True},
                        {"name": "wasm-configmap", "mountPath": "/etc/detour-wasm", "readOnly": True},
                        {"name": "wasm", "mountPath": WASM_DIR},
                    ],
                }],
                "containers": [{
                    "name": "envoy",
                    "image": ENVOY_IMAGE,
                    "command": ["/usr/local/bin/envoy"],
                    "args": [
                        "-c", "/etc/detour/envoy.yaml",
                        "--config-yaml", "$(DETOUR_HEALTH_YAML)",
                        # Envoy sizes its workers from the node's cores, not the pod's
                        # limit: say it. Each worker runs its own filter VM.
                        "--concurrency", "2",
                        "--disable-hot-restart",
                        "--drain-time-s", "600",
                    ],
                    "env": [{"name": "DETOUR_HEALTH_YAML", "valueFrom": {"configMapKeyRef": {
                        "name": "detour-envoy", "key": "health.yaml"}}}] + secret_env(env_keys),
                    "ports": [
                        {"name": "http", "containerPort": port, "protocol": "TCP"},
                        {"name": "health", "containerPort": HEALTH_PORT, "protocol": "TCP"},
                    ],
                    "readinessProbe": {"httpGet": {"path": "/ready", "port": "health"},
                                       "periodSeconds": 5, "timeoutSeconds": 2,
                                       "failureThreshold": 2},
                    "livenessProbe": {"httpGet": {"path": "/livez", "port": "health"},
                                      "initialDelaySeconds": 10, "periodSeconds": 10,
                                      "timeoutSeconds": 3, "failureThreshold": 6},
                    "lifecycle": {"preStop": {"exec": {
                        "command": ["/bin/bash", "/etc/detour/prestop.sh"]}}},
                    "resources": {
                        # 2 workers; the VMs and 20 MiB per-connection buffers need memory
                        "requests": {"cpu": "500m", "memory": "256Mi"},
                        "limits": {"cpu": "2", "memory": "1Gi"},
                    },
                    "securityContext": restricted,
                    "volumeMounts": [
                        {"name": "envoy-config", "mountPath": "/etc/detour", "readOnly": True},
                        {"name": "wasm", "mountPath": WASM_DIR, "readOnly": True},
                        {"name": "tmp", "mountPath": "/tmp"},
                    ],
                }],
                "volumes": [
                    {"name": "envoy-config", "configMap": {"name": "detour-envoy"}},
                    {"name": "wasm-configmap", "configMap": {"name": "detour-wasm"}},
                    {"name": "wasm", "emptyDir": {"sizeLimit": "32Mi"}},
                    {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}},
                ],
            },
        },
    },
}
service = {
    "apiVersion": "v1", "kind": "Service",
    "metadata": {"name": "detour", "namespace": namespace, "labels": labels},
    "spec": {
        # In-cluster only: detour does not authenticate clients and spends your keys.
        "type": "ClusterIP",
        "selector": selector,
        "ports": [{"name": "http", "port": port, "targetPort": "http",
                   "protocol": "TCP", "appProtocol": "http"}],
    },
}
k8s_header = header(generated + [
    "",
    "Envoy with detour as the cluster's LLM gateway: kubectl apply -f envoy/kubernetes/",
    "after creating the Secrets and the detour-wasm ConfigMap (envoy/kubernetes/README.md).",
])
write("kubernetes/namespace.yaml", dump_docs(k8s_header, [k8s_namespace]))
write("kubernetes/configmap.yaml", dump_docs(k8s_header, [configmap]))
write("kubernetes/deployment.yaml", dump_docs(
    k8s_header, [deployment] + ([disruption_budget("detour", labels, selector)] if fleet else [])))
write("kubernetes/service.yaml", dump_docs(k8s_header, [service]))

# ---- Kubernetes: detour state and a Redis to try it with (fleet mode) -------------------
STATE_HTTP_PORT = 8081
STATE_GRPC_PORT = 8082
STATE_SECRET = "detour-state-redis"
REDIS_IMAGE = "redis:7.4-alpine"
state_labels = {"app.kubernetes.io/name": "detour-state", "app.kubernetes.io/component": "fleet-state",
                "app.kubernetes.io/part-of": "detour"}
state_selector = {"app.kubernetes.io/name": "detour-state"}
redis_labels = {"app.kubernetes.io/name": "detour-redis", "app.kubernetes.io/component": "fleet-store",
                "app.kubernetes.io/part-of": "detour"}
redis_selector = {"app.kubernetes.io/name": "detour-redis"}
state_deployment = {
    "apiVersion": "apps/v1", "kind": "Deployment",
    "metadata": {"name": "detour-state", "namespace": namespace, "labels": state_labels},
    "spec": {
        # Stateless (everything is in Redis): any number of replicas behind the Service.
        "replicas": 2,
        "revisionHistoryLimit": 3,
        "strategy": {"type": "RollingUpdate",
                     "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
        "selector": {"matchLabels": state_selector},
        "template": {
            "metadata": {
                "labels": state_labels,
                # a changed config (its rpm/tpm) rolls the pods
                "annotations": {"checksum/config": hashlib.sha256(config_text.encode()).hexdigest()},
            },
            "spec": {
                "automountServiceAccountToken": False,
                "enableServiceLinks": False,
                "topologySpreadConstraints": [spread(state_selector)],
                "securityContext": {
                    "runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532,
                    "fsGroup": 65532, "seccompProfile": {"type": "RuntimeDefault"},
                },
                "containers": [{
                    "name": "state",
                    "image": state_image,
                    # the image's entrypoint is `detour`
                    "args": [
                        "state",
                        # --redis comes from DETOUR_REDIS_URL: a password in an
                        # argument would show in every process listing
                        "--listen", f"0.0.0.0:{STATE_HTTP_PORT}",
                        "--grpc", f"0.0.0.0:{STATE_GRPC_PORT}",
                        "--config", "/etc/detour/config.yaml",
                    ],
                    "env": [{"name": "DETOUR_REDIS_URL", "valueFrom": {"secretKeyRef": {
                        "name": STATE_SECRET, "key": "REDIS_URL"}}}],
                    "ports": [
                        {"name": "http", "containerPort": STATE_HTTP_PORT, "protocol": "TCP"},
                        {"name": "grpc", "containerPort": STATE_GRPC_PORT, "protocol": "TCP"},
                    ],
                    # /healthz PINGs Redis: a replica that cannot reach it leaves the Service.
                    "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"},
                                       "periodSeconds": 5, "timeoutSeconds": 2,
                                       "failureThreshold": 2},
                    # Liveness does not ask Redis: a Redis outage must not restart every replica.
                    "livenessProbe": {"tcpSocket": {"port": "http"},
                                      "initialDelaySeconds": 5, "periodSeconds": 10,
                                      "timeoutSeconds": 3, "failureThreshold": 6},
                    "resources": {"requests": {"cpu": "100m", "memory": "64Mi"},
                                  "limits": {"cpu": "1", "memory": "256Mi"}},
                    "securityContext": restricted,
                    "volumeMounts": [{"name": "config", "mountPath": "/etc/detour", "readOnly": True}],
                }],
                "volumes": [{"name": "config", "configMap": {
                    "name": "detour-envoy", "items": [{"key": "config.yaml", "path": "config.yaml"}]}}],
            },
        },
    },
}
state_service = {
    "apiVersion": "v1", "kind": "Service",
    "metadata": {"name": "detour-state", "namespace": namespace, "labels": state_labels},
    "spec": {
        "type": "ClusterIP",
        "selector": state_selector,
        "ports": [
            {"name": "http", "port": STATE_HTTP_PORT, "targetPort": "http",
             "protocol": "TCP", "appProtocol": "http"},
            {"name": "grpc", "port": STATE_GRPC_PORT, "targetPort": "grpc",
             "protocol": "TCP", "appProtocol": "kubernetes.io/h2c"},
        ],
    },
}
redis_deployment = {
    "apiVersion": "apps/v1", "kind": "Deployment",
    "metadata": {"name": "detour-redis", "namespace": namespace, "labels": redis_labels},
    "spec": {
        "replicas": 1,
        "strategy": {"type": "Recreate"},
        "selector": {"matchLabels": redis_selector},
        "template": {
            "metadata": {"labels": redis_labels},
            "spec": {
                "automountServiceAccountToken": False,
                "enableServiceLinks": False,
                "securityContext": {
                    "runAsNonRoot": True, "runAsUser": 999, "runAsGroup": 1000,
                    "fsGroup": 1000, "seccompProfile": {"type": "RuntimeDefault"},
                },
                "containers": [{
                    "name": "redis",
                    "image": REDIS_IMAGE,
                    "command": ["redis-server"],
                    # In memory only, no password: reachable only inside the cluster.
                    "args": ["--port", "6379", "--protected-mode", "no", "--save", "",
                             "--appendonly", "no", "--maxmemory", "200mb",
                             "--maxmemory-policy", "noeviction"],
                    "ports": [{"name": "redis", "containerPort": 6379, "protocol": "TCP"}],
                    "readinessProbe": {"exec": {"command": ["redis-cli", "ping"]},
                                       "periodSeconds": 5, "timeoutSeconds": 2},
                    "livenessProbe": {"tcpSocket": {"port": "redis"},
                                      "initialDelaySeconds": 5, "periodSeconds": 10},
                    "resources": {"requests": {"cpu": "50m", "memory": "64Mi"},
                                  "limits": {"cpu": "1", "memory": "256Mi"}},
                    "securityContext": restricted,
                    "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                }],
                "volumes": [{"name": "data", "emptyDir": {"sizeLimit": "64Mi"}}],
            },
        },
    },
}
redis_service = {
    "apiVersion": "v1", "kind": "Service",
    "metadata": {"name": "detour-redis", "namespace": namespace, "labels": redis_labels},
    "spec": {
        "type": "ClusterIP",
        "selector": redis_selector,
        "ports": [{"name": "redis", "port": 6379, "targetPort": "redis", "protocol": "TCP"}],
    },
}
if fleet:
    write("kubernetes/state.yaml", dump_docs(header(generated + [
        "",
        "detour state: the fleet ledger (budgets over HTTP JSON on :8081, Envoy RLS v3 over gRPC",
        "on :8082) that every Envoy replica leases from, on the Redis named by the Secret",
        f"{STATE_SECRET} (key REDIS_URL). Stateless: run as many replicas as you like.",
    ]), [state_deployment, state_service,
         disruption_budget("detour-state", state_labels, state_selector)]))
    write("kubernetes/redis.yaml", dump_docs(header(generated + [
        "",
        "A single Redis for trying fleet mode out: in memory only, no password, no replica, so",
        "a restart loses the fleet's spend. Production uses a managed Redis (or Redis Sentinel,",
        f"Redis Cluster, Valkey) named by the URL in the Secret {STATE_SECRET}, and does not",
        f"apply this file. Its URL: redis://detour-redis.{namespace}.svc.cluster.local:6379/0",
    ]), [redis_deployment, redis_service]))
else:
    # Per-process state: no state service (and none left over from an earlier render).
    for stale in ("kubernetes/state.yaml", "kubernetes/redis.yaml"):
        if os.path.exists(os.path.join(out, stale)):
            os.remove(os.path.join(out, stale))
            print(f"removed {os.path.join(out, stale)}")

if wasm_configmap:
    with open(wasm_path, "rb") as f:
        module = f.read()
    packed = gzip.compress(module, compresslevel=9, mtime=0)
    import base64
    wasm_cm = {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "detour-wasm", "namespace": namespace, "labels": labels},
        "data": {"detour.wasm.sha256": hashlib.sha256(module).hexdigest() + "\n"},
        "binaryData": {"detour.wasm.gz": base64.b64encode(packed).decode()},
    }
    text = dump_docs(header([
        f"The filter module {wasm_path} (gzip, {len(packed)} bytes; {len(module)} unpacked).",
        "Create it with `kubectl create -f` (or replace it with `kubectl replace -f`), not",
        "`kubectl apply`: apply's last-applied annotation is limited to 256 KiB.",
    ]), [wasm_cm])
    os.makedirs(os.path.dirname(os.path.abspath(wasm_configmap)), exist_ok=True)
    with open(wasm_configmap, "w") as f:
        f.write(text)
    print(f"wrote {wasm_configmap}")

# ---- Istio: the filter in application sidecars ---------------------------------------
ext_name = f"{istio_ns}/detour"
sidecar_label = {"detour-sidecar": "enabled"}

istio_plugin = copy.deepcopy(plugin)
# The Istio agent downloads oci:// modules named in ECDS and hands Envoy a local file;
# "nil" is Istio's sentinel for "no checksum" (pin the digest in the image reference).
istio_plugin["vm_config"]["code"] = {"remote": {
    "http_uri": {"uri": f"oci://{image}", "cluster": "_", "timeout": "30s"},
    "sha256": "nil",
}}
listener_match = {"portNumber": port}
hcm_match = {"portNumber": port, "filterChain": {"filter": {"name": HCM}}}
istio_route = copy.deepcopy(route)
istio_route["request_headers_to_remove"] = list(istio_route.get("request_headers_to_remove", [])) + [
    # Istio's metadata exchange may add these; pod metadata is not the provider's business.
    "x-envoy-peer-metadata", "x-envoy-peer-metadata-id",
]
patches = [
    {   # 1. The filter's configuration, as the standalone bootstrap has it, served over ECDS.
        "applyTo": "EXTENSION_CONFIG",
        "patch": {"operation": "ADD", "value": {
            "name": ext_name,
            "typed_config": {"@type": WASM_TYPE, "config": istio_plugin},
        }},
    },
    {   # 2. The filter in the outbound HTTP listener of the detour port, before the router.
        "applyTo": "HTTP_FILTER",
        "match": {"context": "SIDECAR_OUTBOUND", "listener": {
            "portNumber": port,
            "filterChain": {"filter": {"name": HCM, "subFilter": {"name": "envoy.filters.http.router"}}},
        }},
        "patch": {"operation": "INSERT_BEFORE", "value": {
            "name": ext_name,
            "config_discovery": {
                "config_source": {"ads": {}, "initial_fetch_timeout": "0s",
                                  "resource_api_version": "V3"},
                # RBAC: what the agent substitutes when it cannot fetch the module (deny all,
                # since failure_policy is not FAIL_OPEN).
                "type_urls": [WASM_TYPE, RBAC_TYPE],
            },
        }},
    },
    {   # 3. Attempt 1 goes where the filter's x-detour-cluster header says. Every virtual
        # host of the port's route configuration gets the route first: the filter rewrites
        # :authority to the provider's before the route is chosen, so the request is then
        # matched by Istio's catch-all virtual host ("allow_any" or "block_all", domain *),
        # not by the detour Service's.
        "applyTo": "HTTP_ROUTE",
        "match": {"context": "SIDECAR_OUTBOUND", "routeConfiguration": {"portNumber": port}},
        "patch": {"operation": "INSERT_FIRST", "value": istio_route},
    },
    {   # 4. The whole request body is held while the filter reads it.
        "applyTo": "LISTENER",
        "match": {"context": "SIDECAR_OUTBOUND", "listener": listener_match},
        "patch": {"operation": "MERGE", "value": {
            "per_connection_buffer_limit_bytes": listener["per_connection_buffer_limit_bytes"]}},
    },
    {   # 5. Long generations: the standalone stream idle timeout and header limit.
        "applyTo": "NETWORK_FILTER",
        "match": {"context": "SIDECAR_OUTBOUND", "listener": hcm_match},
        "patch": {"operation": "MERGE", "value": {"name": HCM, "typed_config": {
            "@type": HCM_TYPE,
            "stream_idle_timeout": hcm["stream_idle_timeout"],
            "max_request_headers_kb": hcm["max_request_headers_kb"],
        }}},
    },
] + [
    {   # 6. One cluster per upstream, named as the filter names them (detour_<scheme>_<host>_<port>),
        # and in fleet mode one for detour state (the filter dispatches its leases there).
        "applyTo": "CLUSTER",
        "match": {"context": "SIDECAR_OUTBOUND"},
        "patch": {"operation": "ADD", "value": c},
    }
    for c in clusters
]
envoyfilter = {
    "apiVersion": "networking.istio.io/v1alpha3", "kind": "EnvoyFilter",
    "metadata": {"name": "detour", "namespace": istio_ns},
    "spec": {"workloadSelector": {"labels": sidecar_label}, "configPatches": patches},
}
istio_service = {
    "apiVersion": "v1", "kind": "Service",
    "metadata": {"name": "detour", "namespace": istio_ns, "labels": {"app.kubernetes.io/name": "detour"}},
    "spec": {
        # No selector and no endpoints: the name only gives applications an address and
        # the sidecars an outbound listener and virtual host for the port, which the
        # EnvoyFilter takes over. Without the filter, requests fail (no endpoints).
        "ports": [{"name": "http", "port": port, "protocol": "TCP", "appProtocol": "http"}],
    },
}
client = {
    "apiVersion": "apps/v1", "kind": "Deployment",
    "metadata": {"name": "detour-client", "namespace": istio_ns},
    "spec": {
        "replicas": 1,
        "selector": {"matchLabels": {"app": "detour-client"}},
        "template": {
            "metadata": {"labels": {
                "app": "detour-client",
                "sidecar.istio.io/inject": "true",
                **sidecar_label,
            }},
            "spec": {
                "containers": [
                    {
                        "name": "client",
                        "image": "curlimages/curl:8.11.1",
                        "command": ["/bin/sh", "-c", "while true; do sleep 3600; done"],
                        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"},
                                      "limits": {"memory": "64Mi"}},
                    },
                    {
                        # Istio merges this into the injected sidecar: the filter runs there
                        # and reads the provider keys from the sidecar's environment.
                        "name": "istio-proxy",
                        "image": "auto",
                        "env": secret_env(env_keys),
                    },
                ],
            },
        },
    },
}
istio_header = header(generated + [
    "",
    f"detour in the Istio sidecars of namespace {istio_ns} (Istio >= 1.28): see envoy/istio/README.md.",
] + ([
    "Fleet mode: the sidecars share budgets and RPM/TPM through detour state at",
    f"{fleet.get('state')} (envoy/kubernetes/state.yaml, redis.yaml).",
] if fleet else []))
write("istio/service.yaml", dump_docs(istio_header, [istio_service]))
write("istio/envoyfilter.yaml", dump_docs(istio_header, [envoyfilter]))
write("istio/client-example.yaml", dump_docs(istio_header, [client]))
PY
