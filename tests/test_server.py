"""The embedding server: a real uvicorn server on a loopback port, every route, bad input, auth, load."""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import uvicorn
from conftest import tiny_model, tiny_tokenizer

from nosink import Encoder
from nosink.server.app import create_app
from nosink.server.settings import ServerSettings

TEXTS = ["the cat sat on the mat", "a little girl named lily", "the bank refused my card", "sun"]
PLAN = "mask0&bidir:k=3,k0=1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def running(encoder: Encoder, **overrides: object) -> Iterator[str]:
    """A real uvicorn server in a thread on 127.0.0.1; yields its base URL, then shuts it down gracefully."""
    settings = ServerSettings(model="tiny-llama", plan=PLAN, port=free_port(), **overrides)
    config = uvicorn.Config(create_app(encoder, settings), host="127.0.0.1", port=settings.port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not server.started:
        assert time.time() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{settings.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    return Encoder.from_model(tiny_model("llama"), tiny_tokenizer(), plan=PLAN)


@pytest.fixture(scope="module")
def url(encoder: Encoder) -> Iterator[str]:
    with running(encoder, max_inputs=16, max_length=64, max_body_bytes=64 * 1024) as base:
        yield base


def test_openai_route_matches_encode(url: str, encoder: Encoder) -> None:
    expected = encoder.encode(TEXTS, normalize=True)
    answer = httpx.post(f"{url}/v1/embeddings", json={"input": TEXTS, "model": "x"}).json()
    assert answer["object"] == "list" and answer["model"] == "tiny-llama"
    assert [item["index"] for item in answer["data"]] == [0, 1, 2, 3]
    np.testing.assert_allclose(np.array([item["embedding"] for item in answer["data"]]), expected, atol=1e-5)
    tokens = sum(len(ids) for ids in tiny_tokenizer()(TEXTS)["input_ids"])
    assert answer["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}
    single = httpx.post(f"{url}/v1/embeddings", json={"input": TEXTS[1]}).json()
    np.testing.assert_allclose(single["data"][0]["embedding"], expected[1], atol=1e-5)


def test_token_ids_base64_and_dimensions(url: str, encoder: Encoder) -> None:
    ids = tiny_tokenizer()(TEXTS[0], add_special_tokens=False)["input_ids"]
    expected = encoder.encode(TEXTS[:1], normalize=True)[0]
    for body in ({"input": ids}, {"input": [ids, ids]}):
        data = httpx.post(f"{url}/v1/embeddings", json=body).json()["data"]
        np.testing.assert_allclose(data[0]["embedding"], expected, atol=1e-5)
    packed = httpx.post(f"{url}/v1/embeddings", json={"input": TEXTS[0], "encoding_format": "base64"}).json()
    vector = np.frombuffer(base64.b64decode(packed["data"][0]["embedding"]), dtype="<f4")
    np.testing.assert_allclose(vector, expected, atol=1e-5)
    short = httpx.post(f"{url}/v1/embeddings", json={"input": TEXTS[0], "dimensions": 8}).json()
    head = expected[:8] / np.linalg.norm(expected[:8])
    np.testing.assert_allclose(short["data"][0]["embedding"], head, atol=1e-5)


def test_concurrent_requests_are_batched_and_equal_offline(url: str, encoder: Encoder) -> None:
    texts = [f"{TEXTS[i % 4]} number {i}" for i in range(48)]
    expected = encoder.encode(texts, normalize=True)

    def one(i: int) -> list[float]:
        return httpx.post(f"{url}/v1/embeddings", json={"input": texts[i]}).json()["data"][0]["embedding"]

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        got = np.array(list(pool.map(one, range(len(texts)))))
    np.testing.assert_allclose(got, expected, atol=1e-5)
    metrics = httpx.get(f"{url}/metrics").text
    count = next(float(line.split()[-1]) for line in metrics.splitlines() if line.startswith("nosink_batch_size_count"))
    total = next(float(line.split()[-1]) for line in metrics.splitlines() if line.startswith("nosink_batch_size_sum"))
    assert total / count > 1, "concurrent requests should share model batches"


def test_tei_routes(url: str, encoder: Encoder) -> None:
    vectors = httpx.post(f"{url}/embed", json={"inputs": TEXTS}).json()
    np.testing.assert_allclose(vectors, encoder.encode(TEXTS, normalize=True), atol=1e-5)
    raw = httpx.post(f"{url}/embed", json={"inputs": TEXTS[0], "normalize": False, "instruction": "find it"}).json()
    np.testing.assert_allclose(raw[0], encoder.encode(TEXTS[:1], instruction="find it")[0], atol=1e-5)
    [tokens] = httpx.post(f"{url}/tokenize", json={"inputs": "the cat"}).json()
    assert tokens[0] == {"id": 1, "text": "<s>", "special": True, "start": None, "stop": None}
    assert [t["id"] for t in tokens] == tiny_tokenizer()("the cat")["input_ids"]
    assert tokens[1]["start"] == 0 and tokens[-1]["stop"] == len("the cat")


def test_operations_routes(url: str, encoder: Encoder) -> None:
    health = httpx.get(f"{url}/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    info = httpx.get(f"{url}/info").json()
    assert info["plan"] == PLAN and info["dimension"] == encoder.dim and info["max_length"] == 64
    assert info["dtype"] == "float32" and info["version"]
    metrics = httpx.get(f"{url}/metrics").text
    for name in ("nosink_requests_total", "nosink_request_latency_seconds_bucket", "nosink_batch_tokens_bucket"):
        assert name in metrics
    assert "nosink_queue_tokens" in metrics


BAD = [
    ("malformed JSON", {"content": b"{not json", "headers": {"content-type": "application/json"}}, 400),
    ("wrong type", {"json": {"input": 3}}, 400),
    ("mixed list", {"json": {"input": ["a", 1]}}, 400),
    ("empty list", {"json": {"input": []}}, 400),
    ("empty text", {"json": {"input": [""]}}, 400),
    ("unknown field", {"json": {"input": "a", "temperature": 1}}, 400),
    ("bad format", {"json": {"input": "a", "encoding_format": "int8"}}, 400),
    ("bad dimensions", {"json": {"input": "a", "dimensions": 0}}, 400),
    ("too many dimensions", {"json": {"input": "a", "dimensions": 10_000}}, 400),
    ("token id out of range", {"json": {"input": [1, 99_999]}}, 400),
    ("too many inputs", {"json": {"input": ["a"] * 17}}, 413),
    ("too long input", {"json": {"input": "the cat " * 40}}, 413),
    ("body too large", {"json": {"input": ["x" * 70_000]}}, 413),
]


@pytest.mark.parametrize(("case", "request_kwargs", "status"), BAD, ids=[case for case, _, _ in BAD])
def test_bad_input_gets_a_4xx_in_openai_format_and_the_server_keeps_serving(
    url: str, case: str, request_kwargs: dict, status: int
) -> None:
    answer = httpx.post(f"{url}/v1/embeddings", **request_kwargs)
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert error["message"] and error["type"] and set(error) == {"message", "type", "param", "code"}
    assert "Traceback" not in answer.text and "/work" not in answer.text and "site-packages" not in answer.text
    assert httpx.post(f"{url}/v1/embeddings", json={"input": "still here"}).status_code == 200


def test_a_chunked_body_over_the_limit_is_refused(url: str) -> None:
    def chunks():
        yield b'{"input": ["'
        for _ in range(100):
            yield b"x" * 1024
        yield b'"]}'

    answer = httpx.post(f"{url}/v1/embeddings", content=chunks(), headers={"content-type": "application/json"})
    assert answer.status_code == 413 and answer.json()["error"]["code"] == 413
    assert httpx.post(f"{url}/v1/embeddings", json={"input": "still here"}).status_code == 200
    metrics = httpx.get(f"{url}/metrics").text
    assert 'nosink_request_errors_total{code="413",route="/v1/embeddings"}' in metrics


def test_truncation_by_setting_and_per_request(url: str, encoder: Encoder) -> None:
    long = "the cat sat on the mat " * 20
    assert httpx.post(f"{url}/embed", json={"inputs": long}).status_code == 413
    cut = httpx.post(f"{url}/embed", json={"inputs": long, "truncate": True})
    assert cut.status_code == 200
    truncated = Encoder.from_model(encoder.model, encoder.tokenizer, plan=PLAN, max_length=64)
    with pytest.warns(UserWarning, match="truncated"):
        expected = truncated.encode([long], normalize=True)
    np.testing.assert_allclose(cut.json()[0], expected[0], atol=1e-5)


def test_unknown_route_and_method(url: str) -> None:
    assert httpx.get(f"{url}/nope").json()["error"]["code"] == 404
    assert httpx.get(f"{url}/v1/embeddings").status_code == 405


def test_openai_client_works_unmodified(url: str, encoder: Encoder) -> None:
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused")
    answer = client.embeddings.create(model="tiny-llama", input=TEXTS)
    got = np.array([item.embedding for item in answer.data])
    np.testing.assert_allclose(got, encoder.encode(TEXTS, normalize=True), atol=1e-5)
    assert answer.usage.prompt_tokens > 0


def test_api_keys(encoder: Encoder) -> None:
    with running(encoder, api_keys=["s3cret", "other"]) as base:
        body = {"input": "a cat"}
        assert httpx.post(f"{base}/v1/embeddings", json=body).status_code == 401
        wrong = httpx.post(f"{base}/v1/embeddings", json=body, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.json()["error"]["type"] == "authentication_error"
        ok = httpx.post(f"{base}/v1/embeddings", json=body, headers={"Authorization": "Bearer other"})
        assert ok.status_code == 200
        assert httpx.get(f"{base}/health").status_code == 200  # probes need no key
        assert httpx.get(f"{base}/info").status_code == 401


def test_overload_is_refused_with_retry_after(encoder: Encoder) -> None:
    texts = ["the cat sat on the mat and looked at the dog"] * 6
    tokens = sum(len(ids) for ids in encoder.tokenizer(texts)["input_ids"])
    with running(encoder, max_queued_tokens=tokens + 10, overload_status=503, retry_after_s=2) as base:  # one fits

        def one(_: int) -> httpx.Response:
            return httpx.post(f"{base}/v1/embeddings", json={"input": texts})

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(one, range(16)))
        refused = [a for a in answers if a.status_code == 503]
        assert refused and all(a.headers["retry-after"] == "2" for a in refused)
        assert {a.status_code for a in answers} <= {200, 503}
        assert httpx.post(f"{base}/v1/embeddings", json={"input": "a"}).status_code == 200


def test_a_request_that_can_never_fit_the_queue_gets_413_not_a_retry(encoder: Encoder) -> None:
    """Before: 429 with Retry-After forever, even on an idle server."""
    texts = ["the cat sat on the mat and looked at the dog"] * 6
    tokens = sum(len(ids) for ids in encoder.tokenizer(texts)["input_ids"])
    with running(encoder, max_queued_tokens=tokens - 1) as base:
        answer = httpx.post(f"{base}/v1/embeddings", json={"input": texts})
        assert answer.status_code == 413 and "retry-after" not in answer.headers
        assert f"more than the queue takes ({tokens - 1})" in answer.json()["error"]["message"]
        assert httpx.post(f"{base}/v1/embeddings", json={"input": texts[:5]}).status_code == 200


def test_a_failed_batch_fails_only_its_requests(encoder: Encoder, monkeypatch) -> None:
    """A model error answers 500 to the requests of that batch; the next batch works again."""
    failing = Encoder.from_model(encoder.model, encoder.tokenizer, plan=PLAN)
    original = failing.pool_rows
    calls = {"n": 0}

    def flaky(rows, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("boom at /secret/path")
        return original(rows, **kwargs)

    monkeypatch.setattr(failing, "pool_rows", flaky)
    with running(failing) as base:
        first = httpx.post(f"{base}/v1/embeddings", json={"input": "a cat"})
        assert first.status_code == 500 and "/secret" not in first.text and "boom" not in first.text
        assert httpx.post(f"{base}/v1/embeddings", json={"input": "a cat"}).status_code == 200


def test_graceful_shutdown_finishes_in_flight_requests(encoder: Encoder) -> None:
    slow = Encoder.from_model(encoder.model, encoder.tokenizer, plan=PLAN)
    original = slow.pool_rows

    def delayed(rows, **kwargs):
        time.sleep(0.5)
        return original(rows, **kwargs)

    slow.pool_rows = delayed
    results: list[int] = []
    with running(slow) as base:
        thread = threading.Thread(
            target=lambda: results.append(httpx.post(f"{base}/v1/embeddings", json={"input": "a cat"}).status_code)
        )
        thread.start()
        time.sleep(0.2)  # the request is in flight when shutdown begins
    thread.join(timeout=10)
    assert results == [200]


def test_nosink_serve_command_end_to_end(tmp_path) -> None:
    """`nosink serve` as users run it: env + flags, a real process, SIGTERM, a clean exit."""
    import os
    import signal
    import subprocess
    import sys

    from conftest import STORIES

    if not STORIES.exists():
        pytest.skip("../shared/models/stories260k is not available")
    port = free_port()
    plan = "mask0&bidir:k=2,k0=1,res=3"  # a reference-mode plan, with the released code's pooling
    env = {**os.environ, "NOSINK_API_KEYS": "k1", "NOSINK_PLAN": plan, "NOSINK_POOLING": "reference_mean"}
    command = [sys.executable, "-m", "nosink.cli", "serve", "--model", str(STORIES), "--port", str(port)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        base, headers = f"http://127.0.0.1:{port}", {"Authorization": "Bearer k1"}
        deadline = time.time() + 60
        while True:
            assert process.poll() is None, process.stdout.read()
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{base}/health").status_code == 200:
                    break
            assert time.time() < deadline, "the server did not come up"
            time.sleep(0.2)
        info = httpx.get(f"{base}/info", headers=headers).json()
        assert (info["plan"], info["pooling"]) == (plan, "reference_mean")
        answer = httpx.post(f"{base}/v1/embeddings", json={"input": ["Once upon a time"]}, headers=headers)
        expected = Encoder.from_pretrained(str(STORIES), plan=plan, pooling="reference_mean").encode(
            ["Once upon a time"], normalize=True
        )
        np.testing.assert_allclose(answer.json()["data"][0]["embedding"], expected[0], atol=1e-5)
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    # uvicorn shuts down gracefully, then re-raises SIGTERM so that the exit status says how it ended
    assert process.returncode in (0, -signal.SIGTERM), output
    assert "Application shutdown complete" in output and "127.0.0.1" in output and "Traceback" not in output


def test_serve_refuses_bad_settings_in_one_line(capsys, monkeypatch) -> None:
    from nosink.cli import main

    monkeypatch.delenv("NOSINK_MODEL", raising=False)
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: bad server settings") and "NOSINK_MODEL" in err and err.count("\n") == 1
    assert main(["serve", "--model", "m", "--port", "99999"]) == 2
    err = capsys.readouterr().err
    assert "port" in err and "NOSINK_MODEL" not in err  # the model was given: no hint about it


def test_docs_list_every_setting() -> None:
    from pathlib import Path

    from nosink.server.settings import settings_table

    page = (Path(__file__).resolve().parents[1] / "docs" / "server.md").read_text()
    for flag, variable, _, _ in settings_table():
        assert f"`{flag}`" in page and f"`{variable}`" in page, variable


def test_server_max_length_is_capped_at_the_model_positions(encoder: Encoder) -> None:
    """The setting's default 512 is more than the tiny Llama's 128 positions: the server uses 128."""
    assert encoder.max_length == 128
    long_text = " ".join(["the cat sat on the mat"] * 60)  # about 360 tokens
    with running(encoder) as base:
        assert httpx.get(f"{base}/info").json()["max_length"] == 128
        answer = httpx.post(f"{base}/v1/embeddings", json={"input": long_text})
        assert answer.status_code == 413 and "128 tokens" in answer.json()["error"]["message"]
