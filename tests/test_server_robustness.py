"""The server under bad input (issue 13): OpenAI-format 4xx for every malformed request, never a 5xx; limits that
apply before the work; unhandled errors counted; API keys that cannot be left empty by mistake."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator

import pytest
from conftest import tiny_model, tiny_tokenizer
from starlette.testclient import TestClient

from nosink import Encoder, NosinkError
from nosink.server.app import create_app
from nosink.server.cli import settings_from
from nosink.server.settings import ServerSettings

PLAN = "mask0-bidir:k=2"


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    return Encoder.from_model(tiny_model("llama"), tiny_tokenizer(), plan=PLAN)


def client_for(encoder: Encoder, **overrides: object) -> TestClient:
    settings = ServerSettings(**{"model": "tiny-llama", "plan": PLAN, **overrides})
    return TestClient(create_app(encoder, settings), raise_server_exceptions=False)


@pytest.fixture(scope="module")
def client(encoder: Encoder) -> Iterator[TestClient]:
    with client_for(encoder, max_inputs=16, max_length=64, max_body_bytes=64 * 1024) as test_client:
        yield test_client


def post_raw(client: TestClient, route: str, body: str) -> object:
    return client.post(route, content=body.encode("utf-8"), headers={"content-type": "application/json"})


@pytest.mark.parametrize(
    ("route", "body", "where"),
    [
        ("/v1/embeddings", '{"input": "\\ud800"}', "input 0"),
        ("/v1/embeddings", '{"input": ["fine", "a \\udfff b"]}', "input 1"),
        ("/embed", '{"inputs": "\\ud800"}', "input 0"),
        ("/embed", '{"inputs": "fine", "instruction": "find \\ud83d"}', "the instruction"),
        ("/tokenize", '{"inputs": ["ok", "\\udc00"]}', "input 1"),
    ],
)
def test_a_lone_surrogate_is_a_400_naming_the_input(client: TestClient, route: str, body: str, where: str) -> None:
    """Before: 500 from a TypeError inside the tokenizer."""
    answer = post_raw(client, route, body)
    assert answer.status_code == 400, answer.text
    message = answer.json()["error"]["message"]
    assert message.startswith(where) and "lone UTF-16 surrogate" in message


@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
def test_empty_and_whitespace_only_texts_get_the_same_400(client: TestClient, text: str) -> None:
    """Before: "   " was embedded while "" got 400."""
    for route, body in [("/v1/embeddings", {"input": ["ok", text]}), ("/embed", {"inputs": ["ok", text]})]:
        answer = client.post(route, json=body)
        assert answer.status_code == 400 and "1 is empty" in answer.json()["error"]["message"], answer.text


def test_the_library_refuses_a_lone_surrogate_too(encoder: Encoder) -> None:
    with pytest.raises(NosinkError, match="text at index 1 holds a lone UTF-16 surrogate at character 2"):
        encoder.encode(["fine", "ab\ud800"])


def test_text_too_long_to_fit_is_refused_before_tokenizing(encoder: Encoder, monkeypatch) -> None:
    """Before: a 7.9 MB string was tokenized for 17 s before its 413; /tokenize answered 323 MB."""
    with client_for(encoder, max_length=8, max_body_bytes=1024 * 1024) as client:
        service = client.app.state.service
        calls = []
        original = service.encoder.tokenizer.__call__
        monkeypatch.setattr(
            type(service.encoder.tokenizer), "__call__", lambda self, *a, **k: calls.append(1) or original(*a, **k)
        )
        text = "a" * (service.max_chars + 1)
        for route, body in [("/v1/embeddings", {"input": text}), ("/tokenize", {"inputs": text})]:
            answer = client.post(route, json=body)
            assert answer.status_code == 413 and "more than can fit in 8 tokens" in answer.json()["error"]["message"]
        assert not calls  # refused on its character count alone
        monkeypatch.undo()
        truncated = client.post("/embed", json={"inputs": text, "truncate": True})
        assert truncated.status_code == 200


def test_an_unhandled_error_is_counted_in_metrics(encoder: Encoder) -> None:
    """Before: a 500 from an exception passed the guard middleware before it counted the request."""
    with client_for(encoder) as client:

        def broken(*args: object, **kwargs: object) -> None:
            raise RuntimeError("unexpected")

        client.app.state.service.tokens = broken
        answer = client.post("/tokenize", json={"inputs": "a cat"})
        assert answer.status_code == 500 and "unexpected" not in answer.text
        metrics = client.get("/metrics").text
        assert 'nosink_requests_total{code="500",route="/tokenize"} 1.0' in metrics


@pytest.mark.parametrize("keys", ["", " , ", ","])
def test_an_api_key_list_given_empty_is_refused(keys: str, monkeypatch) -> None:
    """Before: --api-keys "" (or NOSINK_API_KEYS=) started an open server."""
    import argparse

    with pytest.raises(NosinkError, match="the API key list is empty"):
        settings_from(argparse.Namespace(model="m", api_keys=keys))
    monkeypatch.setenv("NOSINK_API_KEYS", keys)
    with pytest.raises(NosinkError, match="the API key list is empty"):
        settings_from(argparse.Namespace(model="m"))
    monkeypatch.delenv("NOSINK_API_KEYS")
    assert settings_from(argparse.Namespace(model="m")).api_keys == []  # not given: open, as documented
    assert settings_from(argparse.Namespace(model="m", api_keys=" k1 , k2 ")).api_keys == ["k1", "k2"]


def malformed_requests(count: int, seed: int = 13) -> list[tuple[str, str, str | bytes]]:
    """(method, route, body) of malformed requests: bad JSON, wrong types, surrogates, bad values, odd routes."""
    rng = random.Random(seed)
    routes = ["/v1/embeddings", "/embed", "/tokenize"]
    values: list[object] = [
        None, 1, -1, 2.5, True, "", "   ", [], [[]], [None], [1.5], [-3], [10**12], [[1, "a"]], {"a": 1},
        ["ok", 3], "x" * 5000, [["nested", ["deep"]]], float("nan"), "\u0000", [""] * 3, ["a"] * 40,
        "a\ud800b", ["ok", "\udfff"], "\ud83d",
    ]  # fmt: skip
    keys = ["input", "inputs", "instruction", "normalize", "truncate", "dimensions", "encoding_format", "model", "zz"]
    broken = ["", "{", "[", "null", "42", '"text"', '{"input": }', "{'input': 'a'}", '{"input": "a"', "\x00\x01"]
    requests: list[tuple[str, str, str | bytes]] = []
    while len(requests) < count:
        kind = rng.random()
        route = rng.choice(routes)
        if kind < 0.25:
            requests.append(("POST", route, rng.choice(broken)))
        elif kind < 0.35:
            requests.append(("POST", route, bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40)))))
        elif kind < 0.42:
            requests.append((rng.choice(["GET", "PUT", "DELETE"]), route, "{}"))
        elif kind < 0.47:
            requests.append(("POST", rng.choice(["/v2/embeddings", "/embed/", "/../etc", "/%ff"]), "{}"))
        else:
            body = {rng.choice(keys): rng.choice(values) for _ in range(rng.randrange(1, 4))}
            requests.append(("POST", route, json.dumps(body, allow_nan=True)))
    return requests


def test_fuzz_of_malformed_requests_gets_no_5xx(client: TestClient) -> None:
    """300 malformed requests (a fixed seed): every answer is a 4xx with OpenAI's error body, or a valid 200."""
    statuses: dict[int, int] = {}
    for method, route, body in malformed_requests(300):
        content = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body
        answer = client.request(method, route, content=content, headers={"content-type": "application/json"})
        statuses[answer.status_code] = statuses.get(answer.status_code, 0) + 1
        assert answer.status_code < 500, (method, route, body, answer.text)
        if answer.status_code >= 400:
            assert set(answer.json()["error"]) == {"message", "type", "param", "code"}, answer.text
    assert sum(n for code, n in statuses.items() if code >= 400) >= 200, statuses


def test_health_answers_at_once_while_the_model_is_busy(encoder: Encoder, monkeypatch) -> None:
    """Before: /health ran a forward through the model queue and took 79 s behind ten clients' work."""
    import threading
    import time

    import httpx
    from test_server import running

    slow = Encoder.from_model(encoder.model, encoder.tokenizer, plan=PLAN)
    original = slow.pool_rows

    def sluggish(rows: list, **kwargs: object) -> object:
        time.sleep(1.5)
        return original(rows, **kwargs)

    monkeypatch.setattr(slow, "pool_rows", sluggish)
    with running(slow) as base:
        busy = threading.Thread(target=lambda: httpx.post(f"{base}/v1/embeddings", json={"input": "a cat"}, timeout=30))
        busy.start()
        time.sleep(0.3)  # the model is now inside the slow batch
        start = time.perf_counter()
        health = httpx.get(f"{base}/health")
        waited = time.perf_counter() - start
        busy.join()
        assert health.status_code == 200 and health.json() == {"status": "ok"}
        assert waited < 1.0, f"liveness waited {waited:.2f} s for the model"
        ready = httpx.get(f"{base}/ready", timeout=30)  # readiness runs a real forward
        assert ready.status_code == 200 and ready.json()["status"] == "ok" and ready.json()["latency_ms"] > 0


def test_models_route_no_local_paths_and_no_openapi_when_docs_are_off(encoder: Encoder) -> None:
    with client_for(encoder, model="/very/secret/place/tiny-llama") as client:
        listed = client.get("/v1/models").json()
        assert listed["object"] == "list" and [m["id"] for m in listed["data"]] == ["tiny-llama"]
        assert client.get("/info").json()["model"] == "tiny-llama"
        assert "/very/secret" not in client.post("/v1/embeddings", json={"input": "a"}).text
        assert client.get("/openapi.json").status_code == 404
    with client_for(encoder, model="org/hub-model") as client:
        assert client.get("/info").json()["model"] == "org/hub-model"  # a hub name is kept as given


def test_serve_checks_the_model_path_and_the_port_before_loading(tmp_path, monkeypatch) -> None:
    """Before: ./nope gave a hub 'Repo id' error; a busy port loaded the model, then exited 3 with uvicorn's text."""
    import socket

    from nosink.server import serve

    loads = []
    monkeypatch.setattr(serve, "load_app", lambda settings: loads.append(settings))
    with pytest.raises(NosinkError, match=r"model folder '\./nope' does not exist"):
        serve.run(ServerSettings(model="./nope"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(NosinkError, match=f"cannot listen on 127.0.0.1:{port}: .*pick another --port"):
            serve.run(ServerSettings(model=str(tmp_path), port=port))
    assert not loads
