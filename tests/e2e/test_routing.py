"""Routing: the request's `model` (or stage tag) picks the group; the request is rewritten
per deployment; client credentials never reach a provider."""

import openai

from conftest import E2E_KEY, chat


def test_model_names_the_group_and_request_is_rewritten_for_the_deployment(client, mock, envoy):
    before = len(mock.requests("basic-a"))
    resp = client.post(
        "/v1/chat/completions",
        json=chat("basic"),
        headers={"authorization": "Bearer client-token", "x-detour-cluster": "evil", "x-detour-stage": "Build"},
    )
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-detour-deployment"] == "basic/openai/basic-model"
    assert resp.headers["x-detour-group"] == "basic"
    assert len(mock.requests("basic-a")) == before + 1
    got = mock.requests("basic-a")[-1]
    assert got["path"] == "/basic-a/v1/chat/completions"
    assert got["body"]["model"] == "basic-model"
    assert got["body"]["messages"] == [{"role": "user", "content": "hello"}]
    # The provider gets the deployment's key, never the client's credential or our headers.
    assert got["headers"]["authorization"] == f"Bearer {E2E_KEY}"
    assert "client-token" not in str(got["headers"])
    assert not any(k.startswith(("x-detour", "x-envoy")) for k in got["headers"])
    assert got["headers"]["host"] == f"127.0.0.1:{mock.port}"


def test_stage_tag_selects_the_group_when_the_model_is_not_a_group(client, mock):
    resp = client.post("/v1/chat/completions", json=chat("whatever-the-tool-sends"), headers={"x-detour-stage": "Build"})
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-detour-group"] == "stage-build"
    assert [r["body"]["model"] for r in mock.requests("stage-b")] == ["build-model"]


def test_openai_sdk_client_works_against_detour(envoy, mock):
    sdk = openai.OpenAI(base_url=f"{envoy.url}/v1", api_key="client-key-not-forwarded", max_retries=0)
    completion = sdk.chat.completions.create(model="basic", messages=[{"role": "user", "content": "hi"}])
    assert completion.choices[0].message.content == "hello from basic-a"
    assert completion.model == "basic-model"
    assert "client-key-not-forwarded" not in str(mock.requests("basic-a")[-1]["headers"])


def test_provider_key_never_appears_in_logs(client, envoy):
    client.post("/v1/chat/completions", json=chat("basic"))
    client.post("/v1/chat/completions", json=chat("allfail"))
    assert E2E_KEY not in envoy.log_text()
