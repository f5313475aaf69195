"""Clients that go away or crawl (issue, items 5 and 6): a disconnected client's queued inputs are dropped before any
batch takes them; slow headers, slow bodies and connections past the limit are cut off, and normal requests go on."""

from __future__ import annotations

import asyncio
import contextlib
import json
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import numpy as np
import pytest
import uvicorn
from conftest import tiny_model, tiny_tokenizer

from nosink import Encoder
from nosink.inputs import TokenizedText
from nosink.server.app import create_app
from nosink.server.batcher import MicroBatcher
from nosink.server.settings import ServerSettings

PLAN = "mask0&bidir:k=3,k0=1"
WAIT_S = 10.0  # the most any step waits for the server; a step that needs it has failed
GATE_S = 3 * WAIT_S  # how long the stand-in model holds its first batch at most: longer than any wait


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    return Encoder.from_model(tiny_model("llama"), tiny_tokenizer(), plan=PLAN)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(condition: Callable[[], bool], what: str) -> None:
    """Poll ``condition`` (a counter of the server's) until it holds; fail after WAIT_S."""
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.01)


@contextlib.contextmanager
def serving(app: object, **options: object) -> Iterator[uvicorn.Server]:
    """``app`` under a real uvicorn server (``options``: uvicorn's) in a thread; yields the server, then stops it."""
    config = uvicorn.Config(app, **{**options, "log_level": "warning"})
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started or not thread.is_alive(), "the server started")
    assert thread.is_alive(), "the server did not start"
    try:
        yield server
    finally:
        server.should_exit = True
        thread.join(timeout=20)


@contextlib.contextmanager
def hardened(encoder: Encoder, **overrides: object) -> Iterator[tuple[str, uvicorn.Server]]:
    """The app under uvicorn with the options ``nosink serve`` passes; yields (base URL, server)."""
    from nosink.server.serve import uvicorn_options

    settings = ServerSettings(model="tiny-llama", plan=PLAN, port=free_port(), **overrides)
    with serving(create_app(encoder, settings), **uvicorn_options(settings)) as server:
        yield f"http://127.0.0.1:{settings.port}", server


# -------------------------------------------------------------------- item 5: work for clients that have gone


def row(*ids: int) -> TokenizedText:
    return TokenizedText(ids=list(ids), text_start=0, text_end=len(ids), offsets=None, truncated=False)


class GatedModel:
    """A stand-in model: records every batch's rows (their ids) and holds its first batch until ``release``."""

    def __init__(self) -> None:
        self.batches: list[list[tuple[int, ...]]] = []
        self.entered, self.release = threading.Event(), threading.Event()

    def __call__(self, rows: list[TokenizedText]) -> np.ndarray:
        self.batches.append([tuple(item.ids) for item in rows])
        self.entered.set()
        assert self.release.wait(GATE_S)
        return np.ones((len(rows), 4), dtype=np.float32)


async def settle(condition: Callable[[], bool]) -> None:
    """Let the event loop run until ``condition`` holds (a bounded number of turns, no sleeping)."""
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the batcher never reached the expected state")


def test_a_cancelled_request_s_queued_inputs_never_reach_the_model() -> None:
    """Before: a cancelled request's rows stayed queued, were computed in the next batch, and held their tokens."""

    async def scenario() -> None:
        model = GatedModel()
        batcher = MicroBatcher(model, max_batch_size=64, max_batch_tokens=10_000, wait_s=0.0, max_queued_tokens=10_000)
        await batcher.start()
        first = asyncio.create_task(batcher.embed([row(1, 2, 3)]))
        assert await asyncio.to_thread(model.entered.wait, WAIT_S)  # B's batch is in the model
        gone = asyncio.create_task(batcher.embed([row(7, 7), row(8, 8, 8), row(9)]))
        await settle(lambda: batcher.queued_rows == 3)
        assert batcher.queued_tokens == 3 + 6
        gone.cancel()  # what the server does when this client disconnects
        with pytest.raises(asyncio.CancelledError):
            await gone
        assert (batcher.queued_rows, batcher.queued_tokens) == (0, 3)  # only the running batch's tokens
        model.release.set()
        assert (await first).shape == (1, 4)
        assert (await batcher.embed([row(5)])).shape == (1, 4)
        assert model.batches == [[(1, 2, 3)], [(5,)]]  # the cancelled rows never went into a batch
        assert batcher.queued_tokens == 0 and batcher.dropped_rows == 3
        await batcher.stop()

    asyncio.run(scenario())


def test_a_row_cancelled_while_its_batch_gathers_is_left_out_of_it() -> None:
    """Before: a row already taken into a gathering batch was computed although its request had been cancelled."""

    async def scenario() -> None:
        model = GatedModel()
        model.release.set()
        batcher = MicroBatcher(model, max_batch_size=2, max_batch_tokens=10_000, wait_s=60.0, max_queued_tokens=100)
        await batcher.start()
        gone = asyncio.create_task(batcher.embed([row(7, 7)]))
        await settle(lambda: batcher.queued_rows == 0 and batcher.queued_tokens == 2)  # taken, batch waits for more
        gone.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gone
        assert (await batcher.embed([row(1, 2, 3)])).shape == (1, 4)  # fills the batch: it runs at once
        assert model.batches == [[(1, 2, 3)]]
        assert batcher.queued_tokens == 0 and batcher.dropped_rows == 1
        await batcher.stop()

    asyncio.run(scenario())


def test_a_client_that_disconnects_has_its_queued_inputs_dropped(encoder: Encoder, monkeypatch) -> None:
    """Before: 10 clients that closed their connection still had 472 inputs computed while live clients waited."""
    gated = Encoder.from_model(encoder.model, encoder.tokenizer, plan=PLAN)
    model, original = GatedModel(), gated.pool_rows

    def pool_rows(rows: list[TokenizedText], **kwargs: object) -> np.ndarray:
        model(rows)
        return original(rows, **kwargs)

    monkeypatch.setattr(gated, "pool_rows", pool_rows)
    settings = ServerSettings(model="tiny-llama", plan=PLAN, port=free_port())
    app = create_app(gated, settings)
    batcher = app.state.service.batcher
    gone_texts = ["the bank refused my card payment yesterday", "she was happy", "once upon a time"]
    gone_ids = {tuple(ids) for ids in tiny_tokenizer()(gone_texts)["input_ids"]}
    with serving(app, host="127.0.0.1", port=settings.port) as server, contextlib.ExitStack() as cleanup:
        cleanup.callback(model.release.set)  # a failed step does not leave the model held
        base = f"http://127.0.0.1:{settings.port}"
        busy = threading.Thread(target=lambda: httpx.post(f"{base}/v1/embeddings", json={"input": "a cat"}, timeout=30))
        busy.start()
        assert model.entered.wait(WAIT_S)  # the model is busy with the first client's batch
        body = json.dumps({"input": gone_texts}).encode()
        with socket.create_connection(("127.0.0.1", settings.port), timeout=WAIT_S) as client:
            client.sendall(
                b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            wait_until(lambda: batcher.queued_rows == 3, "the client's inputs were queued")
        # the client has closed its connection before its answer
        wait_until(lambda: batcher.queued_rows == 0, "the gone client's inputs left the queue")
        model.release.set()
        busy.join(timeout=30)
        assert httpx.post(f"{base}/embed", json={"inputs": "sun"}, timeout=30).status_code == 200
        assert not gone_ids & {ids for batch in model.batches for ids in batch}, "a gone client's input was computed"
        assert batcher.queued_tokens == 0  # the queue limit did not leak
        metrics = httpx.get(f"{base}/metrics").text
        assert "nosink_dropped_inputs_total 3.0" in metrics
        assert 'nosink_requests_total{code="499",route="/v1/embeddings"} 1.0' in metrics
        assert server.started


# -------------------------------------------------------------------- item 6: slow headers, slow bodies, many


HEADERS = b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"


def connect(port: int, data: bytes = b"") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT_S)
    if data:
        sock.sendall(data)
    return sock


def answers_of(socks: list[socket.socket], *, trickle: socket.socket, byte: bytes) -> dict[socket.socket, tuple]:
    """Read every socket until the server closes it, sending ``byte`` on ``trickle`` every 0.2 s meanwhile.

    Returns (raw answer, seconds from the call to the close) per socket; fails if one is still open after WAIT_S.
    """
    start, found = time.monotonic(), {sock: [b"", None] for sock in socks}
    waiting = set(socks)
    while waiting and time.monotonic() < start + WAIT_S:
        readable, _, _ = select.select(list(waiting), [], [], 0.2)
        for sock in readable:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            found[sock][0] += chunk
            if not chunk:
                found[sock][1] = time.monotonic() - start
                waiting.discard(sock)
        if trickle in waiting:
            with contextlib.suppress(OSError):
                trickle.send(byte)
    assert not waiting, f"{len(waiting)} slow connection(s) still open after {WAIT_S} s"
    return {sock: tuple(value) for sock, value in found.items()}


def status(raw: bytes) -> int:
    return int(raw.split(b" ", 2)[1]) if raw.startswith(b"HTTP/1.1 ") else 0


def error_body(raw: bytes) -> dict:
    return json.loads(raw.partition(b"\r\n\r\n")[2])["error"]


def test_slow_bodies_get_408_and_connections_past_the_limit_get_503(encoder: Encoder) -> None:
    """Before: 300 partial bodies held every descriptor (Errno 24) and normal requests timed out."""
    timeout = 3.0
    with hardened(encoder, max_connections=8, body_timeout_s=timeout, header_timeout_s=timeout) as (base, server):
        port = int(base.rsplit(":", 1)[1])
        slow = []
        for n in range(1, 8):  # 7 partial bodies: 100 bytes announced, 10 sent
            slow.append(connect(port, HEADERS + b'Content-Length: 100\r\n\r\n{"input": '))
            wait_until(lambda n=n: len(server.server_state.tasks) == n, f"{n} requests were reading their bodies")
        held_since = time.monotonic()
        assert httpx.post(f"{base}/v1/embeddings", json={"input": "a cat"}).status_code == 200  # the 8th: served
        trickler = connect(port, HEADERS + b'Content-Length: 100\r\n\r\n{"input": ')
        slow.append(trickler)
        wait_until(lambda: len(server.server_state.tasks) == 8, "8 requests were reading their bodies")
        refused = httpx.post(f"{base}/v1/embeddings", json={"input": "a cat"})  # a 9th connection: over the limit
        assert refused.status_code == 503, refused.text
        answers = answers_of(slow, trickle=trickler, byte=b" ")  # the trickler sends a byte every 0.2 s
        waited = time.monotonic() - held_since
        for raw, _ in answers.values():
            assert status(raw) == 408 and error_body(raw)["code"] == 408, raw
            assert b"connection: close" in raw.lower()
        assert waited >= 0.9 * timeout  # the timeout bounds the whole body, however slowly it trickles
        assert httpx.post(f"{base}/v1/embeddings", json={"input": "a cat"}).status_code == 200
        assert httpx.get(f"{base}/health").json() == {"status": "ok"}
        metrics = httpx.get(f"{base}/metrics").text
        assert 'nosink_requests_total{code="408",route="/v1/embeddings"} 8.0' in metrics


def test_slow_headers_and_silent_connections_are_closed(encoder: Encoder) -> None:
    """Before: a connection that never finished its headers (or sent nothing) was held open for ever."""
    timeout = 1.5
    with hardened(encoder, max_connections=8, header_timeout_s=timeout) as (base, server):
        port = int(base.rsplit(":", 1)[1])
        opened = time.monotonic()
        partial = [connect(port, HEADERS + b"X-Slow: a") for _ in range(4)]  # headers never finished
        silent = [connect(port) for _ in range(4)]  # nothing sent at all
        wait_until(lambda: len(server.server_state.connections) == 8, "8 connections were open")
        assert httpx.get(f"{base}/health").status_code == 503  # the limit holds while they do
        answers = answers_of(partial + silent, trickle=partial[0], byte=b"a")  # one header grows by a byte / 0.2 s
        for sock in partial:
            raw, _ = answers[sock]
            assert status(raw) == 408 and error_body(raw)["code"] == 408, raw
        assert all(answers[sock][0] == b"" for sock in silent)  # closed without an answer
        assert time.monotonic() - opened >= 0.9 * timeout
        wait_until(lambda: not server.server_state.connections, "every connection was closed")
        assert httpx.post(f"{base}/v1/embeddings", json={"input": "a cat"}).status_code == 200
        with httpx.Client() as client:  # keep-alive: a second request on the same connection is not cut off
            assert client.get(f"{base}/health").status_code == 200
            assert client.get(f"{base}/health").status_code == 200


def test_the_connection_limit_stays_below_the_descriptor_limit() -> None:
    """Before: nothing capped connections, so `ulimit -n 256` ran out of descriptors (Errno 24) first."""
    from nosink.server.serve import connection_limit

    assert connection_limit(1000, descriptor_limit=256) == 192  # 64 descriptors are kept for the model and logs
    assert connection_limit(100, descriptor_limit=256) == 100
    assert connection_limit(1000, descriptor_limit=None) == 1000  # unlimited
    assert connection_limit(1000, descriptor_limit=10) == 1


def test_serve_passes_the_limits_to_uvicorn(tmp_path, monkeypatch) -> None:
    import uvicorn.protocols.http.h11_impl as h11_impl

    from nosink.server import serve

    passed: dict[str, object] = {}
    monkeypatch.setattr(serve, "load_app", lambda settings: "app")
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: passed.update(options, app=app))
    settings = ServerSettings(
        model=str(tmp_path), port=free_port(), max_connections=50, keep_alive_timeout_s=2.5, header_timeout_s=4.0
    )
    serve.run(settings)
    assert passed["app"] == "app" and passed["timeout_keep_alive"] == 2.5
    assert passed["limit_concurrency"] == 51  # uvicorn counts the new connection too: 50 are served, the 51st not
    assert issubclass(passed["http"], h11_impl.H11Protocol) and passed["http"].header_timeout_s == 4.0


# -------------------------------------------------------------------- item 9: protocol-level errors


@pytest.mark.parametrize("garbage", [b"GARBAGE\r\n\r\n", b"GET / HTTP/1.1\r\nbad header line\r\n\r\n"])
def test_a_request_that_is_not_http_gets_a_json_400(encoder: Encoder, garbage: bytes) -> None:
    """Before: uvicorn answered plain text ("Invalid HTTP request received.")."""
    with hardened(encoder) as (base, _):
        port = int(base.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=WAIT_S) as sock:
            sock.sendall(garbage)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 400") and b"content-type: application/json" in head.lower()
        error = json.loads(body)["error"]
        assert error["code"] == 400 and "not a valid HTTP/1.1 request" in error["message"]
        assert httpx.get(f"{base}/health").status_code == 200
