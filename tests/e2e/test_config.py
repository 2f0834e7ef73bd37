"""The filter refuses to start with a config it would misread, and says why."""


def test_envoy_with_a_broken_config_does_not_start_and_names_the_field(workdir, mock, host_class):
    # The config parses (Envoy's bootstrap renders from names only), but inside the host
    # the filter cannot resolve the key: the variable is not in the host's environment.
    text = f"""
model_list:
  - model_name: g
    litellm_params: {{model: openai/m, api_base: "{mock.base('cfg-a')}", api_key: os.environ/DETOUR_E2E_MISSING}}
"""
    (workdir / "broken").mkdir()
    proxy = host_class(workdir / "broken", text)
    try:
        proxy.start(wait_ready=False)
        code = proxy.wait_exit(timeout=60)
    finally:
        proxy.stop()
    assert code != 0
    log = proxy.log_text()
    assert "model_list[0].litellm_params.api_key: environment variable DETOUR_E2E_MISSING is not set" in log
    assert "refusing to start" in log
