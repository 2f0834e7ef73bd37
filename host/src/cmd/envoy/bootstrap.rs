//! Rendering the Envoy bootstrap: a pure function of the config text, the loaded
//! [`Config`] and the [`RenderOptions`]. No I/O, deterministic output (clusters sorted
//! by name, keys in a fixed order), so it can be snapshot-tested.
//!
//! The tree is built as a [`serde_yaml::Value`] (its mappings keep insertion order, so
//! the output reads top-down like a hand-written bootstrap) and serialized by serde_yaml;
//! only the header comment is templated.

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use detour_core::cluster::{Scheme, Upstream};
use detour_core::config::{Config, Diagnostic};
use serde_yaml::{Mapping, Value};

use crate::config_file::{env_names, env_refs};

/// The header the filter reads to pick the upstream cluster (set after reading the body).
pub const CLUSTER_HEADER: &str = "x-detour-cluster";

/// The wasm plugin's `name`, `root_id` and `vm_id`.
pub const PLUGIN_NAME: &str = "detour";

/// The CA bundle upstream TLS certificates are checked against (Debian/Ubuntu path).
pub const TRUSTED_CA: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The least per-connection buffer: LLM request and response bodies are large.
pub const MIN_BUFFER_LIMIT_BYTES: u64 = 16 * 1024 * 1024;

/// What the rendering needs besides the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderOptions {
    /// The config file as the user named it (for the header comment).
    pub source: String,
    /// The output file as the user named it, if any (for the header comment).
    pub output: Option<String>,
    /// The listener's address (port 0: any free port).
    pub listen: SocketAddr,
    /// The admin interface's address (port 0: any free port).
    pub admin: SocketAddr,
    /// Absolute path of the filter's `.wasm` file.
    pub wasm: String,
    /// Worker threads suggested in the "how to run" comment (`envoy --concurrency`).
    pub concurrency: u32,
    /// Whether `--no-env` was given (for the regenerate command in the header comment).
    pub no_env: bool,
}

/// A rendered bootstrap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// The complete YAML file, header comment included.
    pub yaml: String,
    /// The cluster names, sorted.
    pub clusters: Vec<String>,
    /// The environment variables passed through to the VM, sorted.
    pub host_env_keys: Vec<String>,
}

/// Renders the bootstrap for `config`, which must be what `text` loaded to.
///
/// Errors are problems the config loader cannot see but Envoy would: two upstreams whose
/// cluster names collide, a body limit larger than Envoy's buffers allow.
pub fn render(
    text: &str,
    config: &Config,
    opts: &RenderOptions,
) -> Result<Rendered, Vec<Diagnostic>> {
    let (buffer_limit, upstreams) = match (
        buffer_limit_bytes(config.settings.max_request_body_bytes),
        clusters_of(config),
    ) {
        (Ok(buffer_limit), Ok(upstreams)) => (buffer_limit, upstreams),
        (buffer_limit, upstreams) => {
            let mut errors: Vec<Diagnostic> = buffer_limit.err().into_iter().collect();
            errors.extend(upstreams.err().into_iter().flatten());
            return Err(errors);
        }
    };
    let fleet_cluster = config
        .fleet
        .as_ref()
        .map(|fleet| fleet.state.cluster.as_str());

    let host_env_keys = env_names(&env_refs(text));
    let clusters: Vec<Value> = upstreams
        .iter()
        .map(|(name, upstream)| cluster(name, upstream, buffer_limit))
        .collect();

    let bootstrap = map([
        (
            "node",
            map([("id", s(PLUGIN_NAME)), ("cluster", s(PLUGIN_NAME))]),
        ),
        (
            "admin",
            map([(
                "address",
                socket_address(&opts.admin.ip().to_string(), opts.admin.port()),
            )]),
        ),
        ("stats_config", stats_config()),
        (
            "static_resources",
            map([
                (
                    "listeners",
                    seq([listener(text, opts, buffer_limit, &host_env_keys)]),
                ),
                ("clusters", Value::Sequence(clusters)),
            ]),
        ),
    ]);
    let body = serde_yaml::to_string(&bootstrap).map_err(|e| {
        vec![Diagnostic {
            path: String::new(),
            message: format!("cannot serialize the bootstrap: {e}"),
        }]
    })?;
    Ok(Rendered {
        yaml: format!("{}{body}", header(opts, upstreams.len(), fleet_cluster)),
        clusters: upstreams.keys().cloned().collect(),
        host_env_keys,
    })
}

/// detour's metrics carry their labels in the stat name (`name.key=.=value;.;`); these
/// tag extractors turn them into Prometheus labels at `/stats/prometheus`.
fn stats_config() -> Value {
    let tags: Vec<Value> = detour_core::telemetry::stats_tags()
        .into_iter()
        .map(|(name, regex)| map([("tag_name", s(name)), ("regex", Value::String(regex))]))
        .collect();
    map([("stats_tags", Value::Sequence(tags))])
}

/// `max(16 MiB, 2 × max_request_body_bytes)`: the whole request body is buffered while
/// the filter reads it, and twice the limit leaves headroom so that a body at the limit
/// is rejected by the filter (with a clear error), never cut short by Envoy's buffers.
pub fn buffer_limit_bytes(max_request_body_bytes: u64) -> Result<u32, Diagnostic> {
    let wanted = max_request_body_bytes
        .saturating_mul(2)
        .max(MIN_BUFFER_LIMIT_BYTES);
    u32::try_from(wanted).map_err(|_| Diagnostic {
        path: "detour.max_request_body_bytes".into(),
        message: format!(
            "{max_request_body_bytes} is too large: Envoy's buffer limit (twice this) must fit in 32 bits, so at most {}",
            u32::MAX / 2
        ),
    })
}

/// The distinct upstreams by cluster name. Two different authorities whose names
/// collide after sanitising (`a_b` vs `a:b`-like hosts) would silently share a cluster.
fn clusters_of(config: &Config) -> Result<BTreeMap<String, Upstream>, Vec<Diagnostic>> {
    let mut by_name: BTreeMap<String, (usize, Upstream)> = BTreeMap::new();
    let mut errors = Vec::new();
    for (idx, deployment) in config.deployments.iter().enumerate() {
        let up = &deployment.upstream;
        match by_name.entry(up.cluster.clone()) {
            Entry::Vacant(slot) => {
                slot.insert((idx, up.clone()));
            }
            Entry::Occupied(seen) => {
                let (first, other) = seen.get();
                if (other.scheme, &other.host, other.port) != (up.scheme, &up.host, up.port) {
                    errors.push(Diagnostic {
                        path: format!("model_list[{idx}].litellm_params.api_base"),
                        message: format!(
                            "{} and model_list[{first}]'s {} map to the same Envoy cluster name {}; use the same host spelling for both or a different host",
                            up.base_url(),
                            other.base_url(),
                            up.cluster
                        ),
                    });
                }
            }
        }
    }
    // The events webhook is reached through a cluster too (the filter posts by dispatch).
    if let Some(webhook) = &config.webhook {
        let up = &webhook.upstream;
        if let Entry::Vacant(slot) = by_name.entry(up.cluster.clone()) {
            slot.insert((usize::MAX, up.clone()));
        }
    }
    // So is the fleet's state service (leases and spend reports, from the root tick).
    if let Some(fleet) = &config.fleet {
        if !fleet.state_configured {
            errors.push(Diagnostic {
                path: "detour.fleet.state".into(),
                message: "must be set for Envoy: Envoy reaches the fleet through `detour state`, not Redis, so set detour.fleet.state to its URL (e.g. http://detour-state:8081); detour.fleet.redis and LiteLLM's redis_* settings serve only `detour serve` (or set detour.fleet.enabled: false to keep budgets per process)".into(),
            });
        } else {
            let up = &fleet.state;
            match by_name.entry(up.cluster.clone()) {
                Entry::Vacant(slot) => {
                    slot.insert((usize::MAX, up.clone()));
                }
                Entry::Occupied(seen) => {
                    let (_, other) = seen.get();
                    if (other.scheme, &other.host, other.port) != (up.scheme, &up.host, up.port) {
                        errors.push(Diagnostic {
                            path: "detour.fleet.state".into(),
                            message: format!(
                                "{} and {} map to the same Envoy cluster name {}; use the same host spelling for both or a different host",
                                up.base_url(),
                                other.base_url(),
                                up.cluster
                            ),
                        });
                    }
                }
            }
        }
    }
    if errors.is_empty() {
        Ok(by_name
            .into_iter()
            .map(|(name, (_, up))| (name, up))
            .collect())
    } else {
        Err(errors)
    }
}

/// Envoy's own error replies that a client can cause before detour sees the request (today:
/// 431, headers too large) get detour's OpenAI-shaped JSON instead of plain text. Only
/// statuses detour never sends itself are mapped, so detour's own replies stay untouched.
fn local_reply_config() -> Value {
    let error = map([
        ("message", s("%LOCAL_REPLY_BODY%")),
        ("type", s("invalid_request_error")),
        ("code", s("request_header_fields_too_large")),
        ("param", Value::Null),
    ]);
    let mapper = map([
        (
            "filter",
            map([(
                "status_code_filter",
                map([(
                    "comparison",
                    map([
                        ("op", s("EQ")),
                        (
                            "value",
                            map([
                                ("default_value", n(431_u32)),
                                (
                                    "runtime_key",
                                    s("detour.local_reply.header_fields_too_large"),
                                ),
                            ]),
                        ),
                    ]),
                )]),
            )]),
        ),
        (
            "body_format_override",
            map([("json_format", map([("error", error)]))]),
        ),
    ]);
    map([("mappers", seq([mapper]))])
}

fn listener(
    text: &str,
    opts: &RenderOptions,
    buffer_limit: u32,
    host_env_keys: &[String],
) -> Value {
    let route = map([
        ("match", map([("prefix", s("/"))])),
        (
            "route",
            map([("cluster_header", s(CLUSTER_HEADER)), ("timeout", s("0s"))]),
        ),
        // The filter sets the routing header for Envoy, not for the provider: it is
        // removed after the route is chosen, when the router forwards the request.
        ("request_headers_to_remove", seq([s(CLUSTER_HEADER)])),
    ]);
    let route_config = map([
        ("name", s(PLUGIN_NAME)),
        (
            "virtual_hosts",
            seq([map([
                ("name", s(PLUGIN_NAME)),
                ("domains", seq([s("*")])),
                ("routes", seq([route])),
            ])]),
        ),
    ]);
    let hcm = map([
        (
            "@type",
            s("type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"),
        ),
        ("stat_prefix", s(PLUGIN_NAME)),
        ("codec_type", s("AUTO")),
        ("stream_idle_timeout", s("600s")),
        ("request_timeout", s("0s")),
        ("common_http_protocol_options", map([("idle_timeout", s("3600s"))])),
        ("max_request_headers_kb", n(96_u32)),
        ("local_reply_config", local_reply_config()),
        ("route_config", route_config),
        (
            "http_filters",
            seq([
                wasm_filter(text, &opts.wasm, host_env_keys),
                map([
                    ("name", s("envoy.filters.http.router")),
                    (
                        "typed_config",
                        // No x-envoy-* headers towards providers (such as
                        // x-envoy-expected-rq-timeout-ms) or back to clients.
                        map([
                            (
                                "@type",
                                s("type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"),
                            ),
                            ("suppress_envoy_headers", Value::Bool(true)),
                        ]),
                    ),
                ]),
            ]),
        ),
    ]);
    map([
        ("name", s(PLUGIN_NAME)),
        (
            "address",
            socket_address(&opts.listen.ip().to_string(), opts.listen.port()),
        ),
        ("per_connection_buffer_limit_bytes", n(buffer_limit)),
        (
            "filter_chains",
            seq([map([(
                "filters",
                seq([map([
                    ("name", s("envoy.filters.network.http_connection_manager")),
                    ("typed_config", hcm),
                ])]),
            )])]),
        ),
    ])
}

fn wasm_filter(text: &str, wasm: &str, host_env_keys: &[String]) -> Value {
    let vm_config = map([
        ("vm_id", s(PLUGIN_NAME)),
        ("runtime", s("envoy.wasm.runtime.v8")),
        ("code", map([("local", map([("filename", s(wasm))]))])),
        (
            "environment_variables",
            map([(
                "host_env_keys",
                Value::Sequence(host_env_keys.iter().map(s).collect()),
            )]),
        ),
    ]);
    let plugin = map([
        ("name", s(PLUGIN_NAME)),
        ("root_id", s(PLUGIN_NAME)),
        (
            "configuration",
            map([
                (
                    "@type",
                    s("type.googleapis.com/google.protobuf.StringValue"),
                ),
                ("value", s(text)),
            ]),
        ),
        ("failure_policy", s("FAIL_RELOAD")),
        (
            "reload_config",
            map([("backoff", map([("base_interval", s("1s"))]))]),
        ),
        ("allow_on_headers_stop_iteration", Value::Bool(true)),
        ("vm_config", vm_config),
    ]);
    map([
        ("name", s("envoy.filters.http.wasm")),
        (
            "typed_config",
            map([
                (
                    "@type",
                    s("type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"),
                ),
                ("config", plugin),
            ]),
        ),
    ])
}

fn cluster(name: &str, up: &Upstream, buffer_limit: u32) -> Value {
    let ip = up.host.parse::<IpAddr>().ok();
    let mut entries: Vec<(&str, Value)> = vec![("name", s(name))];
    match ip {
        Some(_) => entries.push(("type", s("STATIC"))),
        None => {
            entries.push(("type", s("STRICT_DNS")));
            // AUTO prefers IPv6 and breaks `localhost` upstreams listening on 127.0.0.1
            // and hosts without IPv6 routes; IPv6-only names still resolve.
            entries.push(("dns_lookup_family", s("V4_PREFERRED")));
        }
    }
    let address = ip
        .map(|ip| ip.to_string())
        .unwrap_or_else(|| up.host.clone());
    entries.extend([
        ("connect_timeout", s("5s")),
        ("lb_policy", s("ROUND_ROBIN")),
        ("per_connection_buffer_limit_bytes", n(buffer_limit)),
        (
            "typed_extension_protocol_options",
            map([(
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                map([
                    (
                        "@type",
                        s("type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"),
                    ),
                    (
                        "explicit_http_config",
                        map([("http_protocol_options", Value::Mapping(Mapping::new()))]),
                    ),
                ]),
            )]),
        ),
        (
            "load_assignment",
            map([
                ("cluster_name", s(name)),
                (
                    "endpoints",
                    seq([map([(
                        "lb_endpoints",
                        seq([map([(
                            "endpoint",
                            map([("address", socket_address(&address, up.port))]),
                        )])]),
                    )])]),
                ),
            ]),
        ),
    ]);
    if up.scheme == Scheme::Https {
        entries.push(("transport_socket", tls_socket(up, ip)));
    }
    map(entries)
}

/// TLS to the upstream, verified against the system CA bundle and the host's name.
/// An IP literal gets no SNI (RFC 6066 forbids it) and is matched as an IP SAN.
fn tls_socket(up: &Upstream, ip: Option<IpAddr>) -> Value {
    let (san_type, san) = match ip {
        Some(ip) => ("IP_ADDRESS", ip.to_string()),
        None => ("DNS", up.host.clone()),
    };
    let validation = map([
        ("trusted_ca", map([("filename", s(TRUSTED_CA))])),
        (
            "match_typed_subject_alt_names",
            seq([map([
                ("san_type", s(san_type)),
                ("matcher", map([("exact", s(san))])),
            ])]),
        ),
    ]);
    let mut context = vec![(
        "@type",
        s("type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"),
    )];
    if ip.is_none() {
        context.push(("sni", s(&up.host)));
    }
    context.push((
        "common_tls_context",
        map([("validation_context", validation)]),
    ));
    map([
        ("name", s("envoy.transport_sockets.tls")),
        ("typed_config", map(context)),
    ])
}

fn socket_address(address: &str, port: u16) -> Value {
    map([(
        "socket_address",
        map([("address", s(address)), ("port_value", n(port))]),
    )])
}

fn header(opts: &RenderOptions, clusters: usize, fleet_cluster: Option<&str>) -> String {
    let mut regenerate = vec![
        "detour envoy".to_string(),
        shell_word(&opts.source),
        format!("--listen {}", opts.listen),
        format!("--admin {}", opts.admin),
        format!("--wasm {}", shell_word(&opts.wasm)),
        format!("--concurrency-hint {}", opts.concurrency),
    ];
    if opts.no_env {
        regenerate.push("--no-env".into());
    }
    let run_target = match &opts.output {
        Some(output) => {
            regenerate.push(format!("-o {}", shell_word(output)));
            shell_word(output)
        }
        None => "<this file>".to_string(),
    };
    let mut lines = vec![
        format!(
            "Envoy bootstrap for detour, generated by `detour envoy` from {}.",
            opts.source
        ),
        "DO NOT EDIT: change the config file and regenerate:".into(),
        format!("  {}", regenerate.join(" ")),
        "Run it with:".into(),
        format!("  envoy -c {run_target} --concurrency {}", opts.concurrency),
        "Each worker thread runs its own copy of the filter VM; cooldowns and breakers are".into(),
        "shared between them through Envoy's shared data.".into(),
        String::new(),
        "The filter's configuration (configuration.value) is the config file's text, byte".into(),
        "for byte: the filter parses the same file. environment_variables.host_env_keys".into(),
        "passes every os.environ/NAME the file references; start Envoy with them set.".into(),
        format!("The filter sets {CLUSTER_HEADER} after reading the request body and Envoy routes"),
        format!(
            "on it to one of the {clusters} upstream cluster(s) below (one per api_base host:port)."
        ),
        String::new(),
        "failure_policy: FAIL_RELOAD: if the filter panics, the request it was handling gets"
            .into(),
        "a 503 and the next request gets a fresh VM (reload_config.backoff.base_interval 1s".into(),
        "between reloads); shared data (cooldowns, breaker state) lives in the host and".into(),
        "survives the reload. FAIL_CLOSED would fail every request until Envoy restarts.".into(),
    ];
    if let Some(cluster) = fleet_cluster {
        lines.extend([
            String::new(),
            "Fleet mode (detour.fleet): budgets and RPM/TPM are shared by every Envoy that runs"
                .into(),
            "this config. The filter leases its share from `detour state` and reports its".into(),
            "spend there, through the cluster".into(),
            format!("  {cluster}"),
            "Cooldowns and breakers stay per process.".into(),
        ]);
    }
    let mut out = String::new();
    for line in lines {
        let line = comment_safe(&line);
        if line.is_empty() {
            out.push_str("#\n");
        } else {
            out.push_str("# ");
            out.push_str(&line);
            out.push('\n');
        }
    }
    out
}

/// A comment line must stay one line.
fn comment_safe(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// `word` quoted for a POSIX shell if it needs it.
fn shell_word(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+:,=@%".contains(c));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

fn map<'a>(entries: impl IntoIterator<Item = (&'a str, Value)>) -> Value {
    let mut mapping = Mapping::new();
    for (key, value) in entries {
        mapping.insert(Value::String(key.to_string()), value);
    }
    Value::Mapping(mapping)
}

fn seq(items: impl IntoIterator<Item = Value>) -> Value {
    Value::Sequence(items.into_iter().collect())
}

fn s(text: impl AsRef<str>) -> Value {
    Value::String(text.as_ref().to_string())
}

fn n(number: impl Into<u64>) -> Value {
    Value::Number(number.into().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffer_limit_is_at_least_16_mib_and_fits_u32() {
        assert_eq!(buffer_limit_bytes(1024).ok(), Some(16 * 1024 * 1024));
        assert_eq!(buffer_limit_bytes(10 << 20).ok(), Some(20 << 20));
        assert_eq!(
            buffer_limit_bytes(u64::from(u32::MAX / 2)).ok(),
            Some(u32::MAX - 1)
        );
        assert!(buffer_limit_bytes(u64::from(u32::MAX)).is_err());
    }

    #[test]
    fn shell_words() {
        assert_eq!(shell_word("config.yaml"), "config.yaml");
        assert_eq!(shell_word("my config's.yaml"), r"'my config'\''s.yaml'");
        assert_eq!(shell_word(""), "''");
    }
}
