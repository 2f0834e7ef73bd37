//! `detour envoy`'s renderer: parse the output back and check its structure.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code: a failed assumption should fail the test loudly"
)]

mod common;

use common::*;
use detour::cmd::envoy::render;
use serde_yaml::Value;

fn strings(value: &Value) -> Vec<&str> {
    value
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect()
}

fn cluster_names(bootstrap: &Value) -> Vec<&str> {
    clusters(bootstrap)
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect()
}

#[test]
fn http_config_renders_the_whole_bootstrap() {
    let rendered = render_text(HTTP_ONLY, &opts());
    let b = parse(&rendered.yaml);

    assert_eq!(
        str_at(&b, "admin.address.socket_address.address"),
        "127.0.0.1"
    );
    assert_eq!(
        at(&b, "admin.address.socket_address.port_value").as_u64(),
        Some(9901)
    );

    let listener = at(&b, "static_resources.listeners.0");
    assert_eq!(
        at(listener, "address.socket_address.port_value").as_u64(),
        Some(10000)
    );
    // Default max_request_body_bytes is 10 MiB: 2x = 20 MiB > 16 MiB.
    assert_eq!(
        listener["per_connection_buffer_limit_bytes"].as_u64(),
        Some(20 << 20)
    );
    let hcm = at(listener, "filter_chains.0.filters.0");
    assert_eq!(
        str_at(hcm, "name"),
        "envoy.filters.network.http_connection_manager"
    );
    let hcm = &hcm["typed_config"];
    assert_eq!(str_at(hcm, "stat_prefix"), "detour");
    assert_eq!(str_at(hcm, "codec_type"), "AUTO");
    assert_eq!(str_at(hcm, "stream_idle_timeout"), "600s");
    assert_eq!(str_at(hcm, "request_timeout"), "0s");
    assert_eq!(
        str_at(hcm, "common_http_protocol_options.idle_timeout"),
        "3600s"
    );
    assert_eq!(hcm["max_request_headers_kb"].as_u64(), Some(96));

    let vhost = at(hcm, "route_config.virtual_hosts.0");
    assert_eq!(strings(&vhost["domains"]), vec!["*"]);
    let routes = vhost["routes"].as_sequence().unwrap();
    assert_eq!(routes.len(), 1);
    assert_eq!(str_at(&routes[0], "match.prefix"), "/");
    assert_eq!(
        str_at(&routes[0], "route.cluster_header"),
        "x-detour-cluster"
    );
    assert_eq!(str_at(&routes[0], "route.timeout"), "0s");

    let filters: Vec<&str> = hcm["http_filters"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        filters,
        vec!["envoy.filters.http.wasm", "envoy.filters.http.router"]
    );
    assert_eq!(
        str_at(hcm, "http_filters.0.typed_config.@type"),
        "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"
    );

    let plugin = plugin_config(&b);
    assert_eq!(str_at(plugin, "name"), "detour");
    assert_eq!(str_at(plugin, "root_id"), "detour");
    assert_eq!(
        str_at(plugin, "configuration.@type"),
        "type.googleapis.com/google.protobuf.StringValue"
    );
    assert_eq!(str_at(plugin, "configuration.value"), HTTP_ONLY);
    assert_eq!(str_at(plugin, "failure_policy"), "FAIL_RELOAD");
    assert_eq!(str_at(plugin, "reload_config.backoff.base_interval"), "1s");
    assert_eq!(
        plugin["allow_on_headers_stop_iteration"].as_bool(),
        Some(true)
    );
    assert_eq!(str_at(plugin, "vm_config.vm_id"), "detour");
    assert_eq!(str_at(plugin, "vm_config.runtime"), "envoy.wasm.runtime.v8");
    assert_eq!(
        str_at(plugin, "vm_config.code.local.filename"),
        "/opt/detour/detour.wasm"
    );
    assert!(strings(at(plugin, "vm_config.environment_variables.host_env_keys")).is_empty());

    assert_eq!(cluster_names(&b), vec!["detour_http_127.0.0.1_18001"]);
    let c = cluster(&b, "detour_http_127.0.0.1_18001");
    assert_eq!(str_at(c, "type"), "STATIC");
    assert_eq!(str_at(c, "connect_timeout"), "5s");
    assert_eq!(str_at(c, "lb_policy"), "ROUND_ROBIN");
    assert_eq!(
        c["per_connection_buffer_limit_bytes"].as_u64(),
        Some(20 << 20)
    );
    let endpoint = at(
        c,
        "load_assignment.endpoints.0.lb_endpoints.0.endpoint.address.socket_address",
    );
    assert_eq!(str_at(endpoint, "address"), "127.0.0.1");
    assert_eq!(endpoint["port_value"].as_u64(), Some(18001));
    // The key has dots in it, so it is looked up without the path helper.
    let options = &c["typed_extension_protocol_options"]
        ["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"];
    assert_eq!(
        str_at(options, "@type"),
        "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    );
    assert!(at(options, "explicit_http_config.http_protocol_options")
        .as_mapping()
        .unwrap()
        .is_empty());
    assert!(c.get("transport_socket").is_none());

    assert_eq!(rendered.clusters, vec!["detour_http_127.0.0.1_18001"]);
    assert!(rendered.host_env_keys.is_empty());
    assert!(rendered.yaml.starts_with(
        "# Envoy bootstrap for detour, generated by `detour envoy` from config.yaml."
    ));
    assert!(rendered.yaml.contains("# DO NOT EDIT"));
    assert!(rendered
        .yaml
        .contains("#   envoy -c envoy.yaml --concurrency 2\n"));
    assert!(rendered.yaml.contains("FAIL_RELOAD: if the filter panics"));
}

#[test]
fn https_upstreams_get_tls_with_sni_and_san_and_env_keys_pass_through() {
    let rendered = render_text(HTTPS_ENV_KEYS, &opts());
    let b = parse(&rendered.yaml);
    assert_eq!(
        cluster_names(&b),
        vec![
            "detour_https_api.groq.com_443",
            "detour_https_api.openai.com_443"
        ]
    );
    for host in ["api.groq.com", "api.openai.com"] {
        let c = cluster(&b, &format!("detour_https_{host}_443"));
        assert_eq!(str_at(c, "type"), "STRICT_DNS");
        let endpoint = at(
            c,
            "load_assignment.endpoints.0.lb_endpoints.0.endpoint.address.socket_address",
        );
        assert_eq!(str_at(endpoint, "address"), host);
        assert_eq!(endpoint["port_value"].as_u64(), Some(443));
        let tls = &c["transport_socket"];
        assert_eq!(str_at(tls, "name"), "envoy.transport_sockets.tls");
        let ctx = &tls["typed_config"];
        assert_eq!(
            str_at(ctx, "@type"),
            "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
        );
        assert_eq!(str_at(ctx, "sni"), host);
        let validation = at(ctx, "common_tls_context.validation_context");
        assert_eq!(
            str_at(validation, "trusted_ca.filename"),
            "/etc/ssl/certs/ca-certificates.crt"
        );
        let san = at(validation, "match_typed_subject_alt_names.0");
        assert_eq!(str_at(san, "san_type"), "DNS");
        assert_eq!(str_at(san, "matcher.exact"), host);
    }
    let plugin = plugin_config(&b);
    assert_eq!(
        strings(at(plugin, "vm_config.environment_variables.host_env_keys")),
        vec!["GROQ_API_KEY", "OPENAI_API_KEY"]
    );
    assert_eq!(
        rendered.host_env_keys,
        vec!["GROQ_API_KEY", "OPENAI_API_KEY"]
    );
    assert_eq!(str_at(plugin, "configuration.value"), HTTPS_ENV_KEYS);
}

#[test]
fn ipv6_literals_are_static_clusters() {
    let b = parse(&render_text(IPV6, &opts()).yaml);
    assert_eq!(
        cluster_names(&b),
        vec!["detour_http___1_9000", "detour_https_2001_db8__1_443"]
    );
    let plain = cluster(&b, "detour_http___1_9000");
    assert_eq!(str_at(plain, "type"), "STATIC");
    let endpoint = at(
        plain,
        "load_assignment.endpoints.0.lb_endpoints.0.endpoint.address.socket_address",
    );
    assert_eq!(str_at(endpoint, "address"), "::1");
    assert_eq!(endpoint["port_value"].as_u64(), Some(9000));

    // TLS to an IP literal: no SNI (RFC 6066), the certificate must carry the IP as a SAN.
    let tls = cluster(&b, "detour_https_2001_db8__1_443");
    assert_eq!(str_at(tls, "type"), "STATIC");
    let ctx = at(tls, "transport_socket.typed_config");
    assert!(ctx.get("sni").is_none());
    let san = at(
        ctx,
        "common_tls_context.validation_context.match_typed_subject_alt_names.0",
    );
    assert_eq!(str_at(san, "san_type"), "IP_ADDRESS");
    assert_eq!(str_at(san, "matcher.exact"), "2001:db8::1");
}

#[test]
fn deployments_on_one_authority_share_a_cluster() {
    let b = parse(&render_text(SHARED_AUTHORITY, &opts()).yaml);
    // LocalHost:8080 and localhost:8080 are one authority; 8081 is another.
    assert_eq!(
        cluster_names(&b),
        vec!["detour_http_localhost_8080", "detour_http_localhost_8081"]
    );
    let c = cluster(&b, "detour_http_localhost_8080");
    assert_eq!(str_at(c, "type"), "STRICT_DNS");
    assert_eq!(str_at(c, "dns_lookup_family"), "V4_PREFERRED");
    // max_request_body_bytes 32 MiB: buffers are 64 MiB on both sides.
    assert_eq!(
        c["per_connection_buffer_limit_bytes"].as_u64(),
        Some(64 << 20)
    );
    assert_eq!(
        at(
            &b,
            "static_resources.listeners.0.per_connection_buffer_limit_bytes"
        )
        .as_u64(),
        Some(64 << 20)
    );
}

#[test]
fn every_deployment_has_its_cluster_and_names_match_the_core() {
    for text in [HTTP_ONLY, HTTPS_ENV_KEYS, IPV6, SHARED_AUTHORITY] {
        let loaded = detour_core::config::load(text, &fake_env).unwrap();
        let b = parse(&render(text, &loaded.config, &opts()).unwrap().yaml);
        let names = cluster_names(&b);
        let mut sorted = names.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(names, sorted, "clusters sorted and distinct");
        for d in &loaded.config.deployments {
            assert!(names.contains(&d.upstream.cluster.as_str()), "{}", d.id);
            let c = cluster(&b, &d.upstream.cluster);
            assert_eq!(
                str_at(c, "load_assignment.cluster_name"),
                d.upstream.cluster
            );
            let port = at(
                c,
                "load_assignment.endpoints.0.lb_endpoints.0.endpoint.address.socket_address.port_value",
            );
            assert_eq!(port.as_u64(), Some(u64::from(d.upstream.port)));
        }
        assert_eq!(names.len(), {
            let mut all: Vec<_> = loaded
                .config
                .deployments
                .iter()
                .map(|d| d.upstream.cluster.clone())
                .collect();
            all.sort_unstable();
            all.dedup();
            all.len()
        });
    }
}

/// Texts YAML emitters like to "normalise": each must come back byte for byte.
fn awkward_variants() -> Vec<(&'static str, String)> {
    let base = HTTP_ONLY;
    vec![
        ("no trailing newline", base.trim_end().to_string()),
        ("extra trailing newlines", format!("{base}\n\n\n")),
        ("CRLF line endings", base.replace('\n', "\r\n")),
        (
            "trailing spaces and a tab",
            base.replace("fast\n", "fast   \n")
                .replace("model_list:\n", "model_list:\t\n"),
        ),
        (
            "comments, quotes, unicode",
            format!("# détour → 路由 🚦 \"quoted\" 'single' \\ back|slash: x\n{base}# end\n"),
        ),
        ("leading blank lines", format!("\n\n{base}")),
        (
            "leading indentation",
            base.lines().map(|l| format!("  {l}\n")).collect(),
        ),
        ("document markers", format!("---\n{base}...\n")),
        ("BOM", format!("\u{feff}{base}")),
        (
            "JSON",
            r#"{"model_list": [{"model_name": "fast", "litellm_params": {"model": "openai/mock-fast", "api_base": "http://127.0.0.1:18001/v1"}}]}"#.to_string(),
        ),
    ]
}

#[test]
fn the_embedded_configuration_is_the_input_byte_for_byte() {
    for (what, text) in awkward_variants() {
        if detour_core::config::load(&text, &fake_env).is_err() {
            panic!("{what}: variant does not load; fix the test");
        }
        let rendered = render_text(&text, &opts());
        let b = parse(&rendered.yaml);
        assert_eq!(
            str_at(plugin_config(&b), "configuration.value"),
            text,
            "{what}"
        );
    }
}

#[test]
fn rendering_is_deterministic_and_independent_of_deployment_order() {
    let a = render_text(HTTPS_ENV_KEYS, &opts());
    let b = render_text(HTTPS_ENV_KEYS, &opts());
    assert_eq!(a, b);
    let reordered = "\
model_list:
  - model_name: cheap
    litellm_params:
      model: openai/gpt-4o-mini
      api_key: os.environ/OPENAI_API_KEY
  - model_name: smart
    litellm_params:
      model: groq/llama-3.3-70b-versatile
      api_key: os.environ/GROQ_API_KEY
";
    let c = render_text(reordered, &opts());
    assert_eq!(a.clusters, c.clusters);
    assert_eq!(a.host_env_keys, c.host_env_keys);
}

#[test]
fn listen_and_admin_addresses_including_ipv6_and_port_zero() {
    let mut o = opts();
    o.listen = "[::1]:0".parse().unwrap();
    o.admin = "0.0.0.0:0".parse().unwrap();
    let b = parse(&render_text(HTTP_ONLY, &o).yaml);
    let listen = at(&b, "static_resources.listeners.0.address.socket_address");
    assert_eq!(str_at(listen, "address"), "::1");
    assert_eq!(listen["port_value"].as_u64(), Some(0));
    let admin = at(&b, "admin.address.socket_address");
    assert_eq!(str_at(admin, "address"), "0.0.0.0");
    assert_eq!(admin["port_value"].as_u64(), Some(0));
}

#[test]
fn colliding_cluster_names_are_an_error() {
    // `[::1]` and the host name `__1` both sanitise to detour_http___1_80.
    let text = "\
model_list:
  - model_name: a
    litellm_params:
      model: openai/m
      api_base: http://[::1]:80
  - model_name: b
    litellm_params:
      model: openai/m
      api_base: http://__1:80
";
    let loaded = detour_core::config::load(text, &fake_env).unwrap();
    let errors = render(text, &loaded.config, &opts()).unwrap_err();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].path, "model_list[1].litellm_params.api_base");
    assert!(
        errors[0].message.contains("detour_http___1_80"),
        "{}",
        errors[0]
    );
}

#[test]
fn a_body_limit_beyond_envoys_buffers_is_an_error() {
    let text = format!("{HTTP_ONLY}detour:\n  max_request_body_bytes: 3000000000\n");
    let loaded = detour_core::config::load(&text, &fake_env).unwrap();
    let errors = render(&text, &loaded.config, &opts()).unwrap_err();
    assert_eq!(errors[0].path, "detour.max_request_body_bytes");
}

#[test]
fn example_configs_render() {
    let dir = repo_root().join("examples/configs");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        eprintln!(
            "note: {} does not exist; no example configs to render",
            dir.display()
        );
        return;
    };
    let mut paths: Vec<_> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    paths.sort();
    for path in paths {
        let text = std::fs::read_to_string(&path).unwrap();
        let loaded = match detour_core::config::load(&text, &fake_env) {
            Ok(loaded) => loaded,
            Err(e) => panic!("{}: {:?}", path.display(), e.errors),
        };
        let rendered = render(&text, &loaded.config, &opts())
            .unwrap_or_else(|e| panic!("{}: {e:?}", path.display()));
        let b = parse(&rendered.yaml);
        assert_eq!(str_at(plugin_config(&b), "configuration.value"), text);
        for d in &loaded.config.deployments {
            cluster(&b, &d.upstream.cluster);
        }
    }
}

const FLEET_STATE: &str = "\
detour:
  fleet:
    state: http://detour-state.detour.svc.cluster.local:8081
    redis: redis://:secret@redis.internal:6379/0
";

#[test]
fn fleet_mode_renders_a_cluster_for_the_state_service() {
    let text = format!("{HTTP_ONLY}{FLEET_STATE}");
    let loaded = detour_core::config::load(&text, &fake_env).unwrap();
    let fleet = loaded.config.fleet.as_ref().expect("fleet mode is on");
    let rendered = render(&text, &loaded.config, &opts()).unwrap();
    let b = parse(&rendered.yaml);
    let name = "detour_http_detour-state.detour.svc.cluster.local_8081";
    // The name the filter dispatches to is the name of the rendered cluster.
    assert_eq!(fleet.state.cluster, name);
    assert_eq!(cluster_names(&b), vec!["detour_http_127.0.0.1_18001", name]);
    assert_eq!(rendered.clusters, cluster_names(&b));
    let c = cluster(&b, name);
    assert_eq!(str_at(c, "type"), "STRICT_DNS");
    assert_eq!(str_at(c, "load_assignment.cluster_name"), name);
    let endpoint = at(
        c,
        "load_assignment.endpoints.0.lb_endpoints.0.endpoint.address.socket_address",
    );
    assert_eq!(
        str_at(endpoint, "address"),
        "detour-state.detour.svc.cluster.local"
    );
    assert_eq!(endpoint["port_value"].as_u64(), Some(8081));
    assert!(c.get("transport_socket").is_none(), "plain http");
    // The header says so; the Redis URL (it may carry a password) is nowhere.
    assert!(rendered.yaml.contains("# Fleet mode (detour.fleet)"));
    assert!(rendered
        .yaml
        .contains(&format!("through the cluster\n#   {name}\n")));
    let header: String = rendered
        .yaml
        .lines()
        .take_while(|l| l.starts_with('#'))
        .collect();
    assert!(!header.contains("redis"), "{header}");
    // The configuration is still the file byte for byte (the filter reads fleet from it).
    assert_eq!(str_at(plugin_config(&b), "configuration.value"), text);

    // https: TLS to the state service, as to any upstream.
    let text = format!("{HTTP_ONLY}detour:\n  fleet:\n    state: https://state.example.com\n");
    let b = parse(&render_text(&text, &opts()).yaml);
    let c = cluster(&b, "detour_https_state.example.com_443");
    assert_eq!(
        str_at(c, "transport_socket.typed_config.sni"),
        "state.example.com"
    );
}

#[test]
fn without_fleet_mode_there_is_no_state_cluster_or_fleet_header() {
    let text = format!("{HTTP_ONLY}detour:\n  fleet:\n    enabled: false\n    redis: redis://redis.internal:6379/0\n");
    let rendered = render_text(&text, &opts());
    assert_eq!(rendered.clusters, vec!["detour_http_127.0.0.1_18001"]);
    assert!(!rendered.yaml.contains("Fleet mode"));
    let rendered = render_text(HTTP_ONLY, &opts());
    assert!(!rendered.yaml.contains("Fleet mode"));
}

#[test]
fn fleet_mode_with_only_redis_is_an_error_naming_the_state_service() {
    for fleet in [
        // detour.fleet names only the Redis `detour serve` uses.
        "detour:\n  fleet:\n    redis: redis://:hunter2@redis.internal:6379/0\n",
        // LiteLLM's router settings name a Redis, which turns fleet mode on.
        "router_settings:\n  redis_host: redis.internal\n  redis_port: 6379\n  redis_password: hunter2\n",
    ] {
        let text = format!("{HTTP_ONLY}{fleet}");
        let loaded = detour_core::config::load(&text, &fake_env).unwrap();
        let fleet_mode = loaded.config.fleet.as_ref().expect("fleet mode is on");
        assert!(!fleet_mode.state_configured);
        let errors = render(&text, &loaded.config, &opts()).unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].path, "detour.fleet.state");
        let message = &errors[0].message;
        assert!(message.contains("`detour state`"), "{message}");
        assert!(message.contains("detour.fleet.state"), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
    }
}

#[test]
fn the_state_service_shares_or_collides_with_an_upstream_cluster() {
    // The same authority as a deployment: one cluster.
    let text = format!("{HTTP_ONLY}detour:\n  fleet:\n    state: http://127.0.0.1:18001\n");
    let rendered = render_text(&text, &opts());
    assert_eq!(rendered.clusters, vec!["detour_http_127.0.0.1_18001"]);
    // Another authority whose name sanitises to a deployment's: an error.
    let text = "\
model_list:
  - model_name: a
    litellm_params:
      model: openai/m
      api_base: http://[::1]:80
detour:
  fleet:
    state: http://__1:80
";
    let loaded = detour_core::config::load(text, &fake_env).unwrap();
    let errors = render(text, &loaded.config, &opts()).unwrap_err();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].path, "detour.fleet.state");
    assert!(
        errors[0].message.contains("detour_http___1_80"),
        "{}",
        errors[0]
    );
}
