"""The HTTP application: OpenAI's ``/v1/embeddings``, TEI-like ``/embed`` and ``/tokenize``, and operations routes.

Every error body has OpenAI's shape ``{"error": {"message", "type", "param", "code"}}``; no body
carries a stack trace or a local path.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from nosink import __version__
from nosink.encoder import Encoder
from nosink.errors import NosinkError
from nosink.inputs import TextTokenizer, TokenizedText, check_unicode
from nosink.server.batcher import BatchFailed, MicroBatcher, Overloaded, TooLarge
from nosink.server.metrics import ServerMetrics
from nosink.server.settings import ServerSettings

log = logging.getLogger("nosink.server")
OPEN_ROUTES = ("/health", "/ready", "/metrics")  # reachable without an API key (probes and scrapers)
READY_TIMEOUT_S = 10.0  # how long /ready's forward pass may take (it jumps the queue, but waits for the running batch)


class ApiError(Exception):
    """An error answered with ``status`` and OpenAI's error body."""

    def __init__(self, status: int, message: str, *, kind: str = "invalid_request_error", headers=None) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.headers = status, message, kind, headers or {}


# -------------------------------------------------------------------- request bodies


class EmbeddingsRequest(BaseModel):
    """OpenAI's embeddings request."""

    model_config = ConfigDict(extra="forbid")
    input: StrictStr | list[StrictStr] | list[StrictInt] | list[list[StrictInt]]
    model: StrictStr | None = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: StrictInt | None = Field(None, ge=1)
    user: StrictStr | None = None


class EmbedRequest(BaseModel):
    """text-embeddings-inference's ``/embed`` request."""

    model_config = ConfigDict(extra="forbid")
    inputs: StrictStr | list[StrictStr]
    normalize: StrictBool = True
    instruction: StrictStr | None = None
    truncate: StrictBool | None = None


class TokenizeRequest(BaseModel):
    """text-embeddings-inference's ``/tokenize`` request."""

    model_config = ConfigDict(extra="forbid")
    inputs: StrictStr | list[StrictStr]
    add_special_tokens: StrictBool = True


# -------------------------------------------------------------------- the application


def create_app(encoder: Encoder, settings: ServerSettings) -> FastAPI:
    """The FastAPI application serving ``encoder`` under ``settings``.

    ``max_length`` is the smaller of the setting and the encoder's own (capped at the model's positions); without
    the setting, the encoder's own.
    """
    limit = encoder.max_length if settings.max_length is None else min(settings.max_length, encoder.max_length)
    settings = settings.model_copy(update={"max_length": limit})
    metrics = ServerMetrics()
    batcher = MicroBatcher(
        lambda rows: encoder.pool_rows(  # one vector per row; a text's prompt rows are averaged per request
            rows,
            batch_size=settings.max_batch_size,
            max_tokens_per_batch=settings.max_batch_tokens,
            packing=settings.packing,
        ),
        max_batch_size=settings.max_batch_size,
        max_batch_tokens=settings.max_batch_tokens,
        wait_s=settings.batch_wait_ms / 1000,
        max_queued_tokens=settings.max_queued_tokens,
        observe=metrics.observe_batch,
        observe_drop=metrics.observe_drop,
    )
    service = EmbeddingService(encoder, settings, batcher)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await batcher.start()
        yield
        await batcher.stop()  # after uvicorn has let in-flight requests finish

    app = FastAPI(
        title="nosink", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None
    )
    app.state.service, app.state.metrics = service, metrics
    _install_middleware(app, settings, metrics, batcher)
    _install_error_handlers(app)
    _install_routes(app, service, metrics)
    return app


class EmbeddingService:
    """Turns validated requests into rows, vectors and usage counts."""

    def __init__(self, encoder: Encoder, settings: ServerSettings, batcher: MicroBatcher) -> None:
        self.encoder, self.settings, self.batcher = encoder, settings, batcher
        self.model_name = settings.served_model_name or public_name(settings.model)
        self.started = time.time()
        self.vocab_size = int(encoder.base.config.vocab_size)
        # No token covers more characters than the longest vocabulary entry (its raw form is at least as long as
        # the text it stands for), so a text longer than this cannot fit in max_length tokens: refused (or cut,
        # with truncation) before any tokenizing.
        longest = max((len(piece) for piece in encoder.tokenizer.get_vocab()), default=1)
        self.max_chars = settings.max_length * max(longest, 1)

    def check_length(self, inputs: list[str], *, truncate: bool) -> list[str]:
        """The inputs, each checked as text and against ``max_chars``: 413 over it, or cut to it with ``truncate``."""
        for index, text in enumerate(inputs):
            try:
                check_unicode(text, f"input {index}")
            except NosinkError as error:
                raise ApiError(400, str(error)) from None
            if len(text) > self.max_chars and not truncate:
                raise ApiError(
                    413,
                    f"input {index} has {len(text)} characters, more than can fit in {self.settings.max_length} "
                    f"tokens ({self.max_chars}); shorten it, or ask for truncation",
                )
        return [text[: self.max_chars] for text in inputs]

    async def vectors(
        self, inputs: list[str] | list[list[int]], *, instruction: str | None, truncate: bool
    ) -> tuple[np.ndarray, int]:
        """Raw pooled vectors [N, D] and the number of tokens fed to the model."""
        if not inputs:
            raise ApiError(400, "input must not be empty")
        if len(inputs) > self.settings.max_inputs:
            raise ApiError(413, f"{len(inputs)} inputs exceed the maximum of {self.settings.max_inputs} per request")
        if inputs and isinstance(inputs[0], str):
            inputs = self.check_length(inputs, truncate=truncate)  # type: ignore[arg-type]
        rows = await run_in_threadpool(self._rows, inputs, instruction, truncate)
        try:
            vectors = self.encoder.average_prompts(await self.batcher.embed(rows))  # [N * K, D] -> [N, D]
        except TooLarge as error:
            raise ApiError(413, f"{error}; send fewer or shorter inputs per request") from None
        except Overloaded:
            headers = {"Retry-After": str(self.settings.retry_after_s)}
            raise ApiError(
                self.settings.overload_status, "the server is busy; retry later", kind="overloaded", headers=headers
            ) from None
        except BatchFailed:
            raise ApiError(500, "the model failed on this request's batch", kind="server_error") from None
        return vectors, sum(len(row.ids) for row in rows)

    def _rows(
        self, inputs: list[str] | list[list[int]], instruction: str | None, truncate: bool
    ) -> list[TokenizedText]:
        instruction, prompt = self.encoder.resolve_prompt(instruction)  # a saved folder's default prompt, if any
        tokenizer = self.encoder.text_tokenizer(instruction, prompt=prompt, max_length=self.settings.max_length)
        if inputs and isinstance(inputs[0], list):
            rows = [self._row_from_ids(tokenizer, ids, i) for i, ids in enumerate(inputs)]
        else:
            rows = tokenizer(list(inputs))
        too_long = next((i // tokenizer.rows_per_text for i, row in enumerate(rows) if row.truncated), None)
        if too_long is not None and not truncate:
            raise ApiError(
                413,
                f"input {too_long} is longer than the maximum of {self.settings.max_length} tokens; "
                "shorten it, or ask for truncation",
            )
        return rows

    def _row_from_ids(self, tokenizer: TextTokenizer, ids: list[int], index: int) -> TokenizedText:
        if not ids:
            raise ApiError(400, f"input {index} is an empty token list")
        bad = next((t for t in ids if not 0 <= t < self.vocab_size), None)
        if bad is not None:
            raise ApiError(400, f"input {index} has token id {bad}, outside the vocabulary 0..{self.vocab_size - 1}")
        return tokenizer.from_ids(ids, index=index)

    def tokens(self, inputs: list[str], add_special_tokens: bool) -> list[list[dict[str, Any]]]:
        """TEI's /tokenize answer: id, text, special flag and character span of every token."""
        tokenizer = self.encoder.tokenizer
        encoded = tokenizer(
            inputs,
            add_special_tokens=add_special_tokens,
            split_special_tokens=True,  # as /embed sees them: special-token strings in user text stay text
            return_special_tokens_mask=True,
            return_offsets_mapping=True,
        )
        answer = []
        for ids, special, spans in zip(
            encoded["input_ids"], encoded["special_tokens_mask"], encoded["offset_mapping"], strict=True
        ):
            pieces = tokenizer.convert_ids_to_tokens(ids)
            answer.append(
                [
                    {"id": i, "text": piece, "special": bool(s), "start": None if s else a, "stop": None if s else b}
                    for i, piece, s, (a, b) in zip(ids, pieces, special, spans, strict=True)
                ]
            )
        return answer


def _normalized(vectors: np.ndarray, dimensions: int | None = None) -> np.ndarray:
    """[N, D] -> [N, d] unit rows: truncate to ``dimensions`` first (Matryoshka-style), then renormalise."""
    if dimensions is not None:
        vectors = vectors[:, :dimensions]
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)  # [N, 1]
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


def _encoded(vector: np.ndarray, encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    return vector.tolist()


# -------------------------------------------------------------------- routes


def _install_routes(app: FastAPI, service: EmbeddingService, metrics: ServerMetrics) -> None:
    settings, encoder = service.settings, service.encoder

    @app.post("/v1/embeddings")
    async def embeddings(body: EmbeddingsRequest) -> dict[str, Any]:
        inputs = [body.input] if isinstance(body.input, str) else body.input
        if inputs and isinstance(inputs[0], int):
            inputs = [inputs]  # one token array
        if body.dimensions is not None and body.dimensions > encoder.dim:
            raise ApiError(400, f"dimensions={body.dimensions} is more than the model's {encoder.dim}")
        vectors, tokens = await service.vectors(inputs, instruction=None, truncate=settings.truncate)
        vectors = _normalized(vectors, body.dimensions)
        data = [
            {"object": "embedding", "index": i, "embedding": _encoded(v, body.encoding_format)}
            for i, v in enumerate(vectors)
        ]
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        return {"object": "list", "data": data, "model": service.model_name, "usage": usage}

    @app.post("/embed")
    async def embed(body: EmbedRequest) -> list[list[float]]:
        inputs = [body.inputs] if isinstance(body.inputs, str) else body.inputs
        truncate = settings.truncate if body.truncate is None else body.truncate
        vectors, _ = await service.vectors(inputs, instruction=body.instruction, truncate=truncate)
        return (_normalized(vectors) if body.normalize else vectors).tolist()

    @app.post("/tokenize")
    async def tokenize(body: TokenizeRequest) -> list[list[dict[str, Any]]]:
        inputs = [body.inputs] if isinstance(body.inputs, str) else body.inputs
        if not inputs:
            raise ApiError(400, "inputs must not be empty")
        if len(inputs) > settings.max_inputs:
            raise ApiError(413, f"{len(inputs)} inputs exceed the maximum of {settings.max_inputs} per request")
        inputs = service.check_length(inputs, truncate=False)
        return await run_in_threadpool(service.tokens, inputs, body.add_special_tokens)

    @app.get("/health")
    async def health() -> JSONResponse:
        """Liveness: answers at once, without the model queue; 503 only when the batching loop has died."""
        alive = service.batcher.alive
        return JSONResponse({"status": "ok" if alive else "unhealthy"}, status_code=200 if alive else 503)

    @app.get("/ready")
    async def ready() -> JSONResponse:
        """Readiness: a real forward pass on a tiny input, ahead of the queue, within READY_TIMEOUT_S."""
        start = time.perf_counter()
        try:
            rows = await run_in_threadpool(service._rows, ["health"], None, True)
            vector = (await asyncio.wait_for(service.batcher.embed(rows, force=True), READY_TIMEOUT_S))[0]
            healthy = bool(np.isfinite(vector).all())
        except Exception:
            log.exception("readiness check failed")
            healthy = False
        status = {
            "status": "ok" if healthy else "unhealthy",
            "latency_ms": round((time.perf_counter() - start) * 1e3, 2),
        }
        return JSONResponse(status, status_code=200 if healthy else 503)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        """OpenAI's model list: the one served model."""
        entry = {"id": service.model_name, "object": "model", "created": int(service.started), "owned_by": "nosink"}
        return {"object": "list", "data": [entry]}

    @app.get("/info")
    async def info() -> dict[str, Any]:
        return {
            "model": service.model_name,
            "plan": str(encoder.plan),
            "recipe": str(encoder.recipe),
            "pooling": encoder.pooling.value,
            "dimension": encoder.dim,
            "max_length": settings.max_length,
            "dtype": encoder.dtype_name,
            "layers": encoder.num_layers,
            "max_inputs": settings.max_inputs,
            "max_batch_tokens": settings.max_batch_tokens,
            "version": __version__,
        }

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=metrics.content_type)


# -------------------------------------------------------------------- middleware and errors


def _install_middleware(app: FastAPI, settings: ServerSettings, metrics: ServerMetrics, batcher: MicroBatcher) -> None:
    keys = [key.encode() for key in settings.api_keys]
    # inner: its 413s, 408s and 499s pass through `guard`, which counts them
    app.add_middleware(_BodyGuard, limit=settings.max_body_bytes, timeout_s=settings.body_timeout_s)

    @app.middleware("http")
    async def guard(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        start = time.perf_counter()
        route = request.url.path if request.url.path in _ROUTES else "other"
        response = _refused(request, keys, settings.max_body_bytes)
        if response is None:
            try:
                response = await call_next(request)
            except Exception:  # answered 500 by the outermost middleware; counted here first
                metrics.observe_request(route, 500, time.perf_counter() - start)
                raise
        metrics.observe_request(route, response.status_code, time.perf_counter() - start)
        metrics.set_queue(batcher.queued_rows, batcher.queued_tokens)
        return response


_ROUTES = ("/v1/embeddings", "/v1/models", "/embed", "/tokenize", "/health", "/ready", "/info", "/metrics")


def public_name(model: str) -> str:
    """The name answers show for ``--model``: a hub name as given, a local path without its folders (no local paths)."""
    path = Path(model).expanduser()
    return path.name or model if path.exists() or model.startswith((".", "/", "~")) else model


def _refused(request: Request, keys: list[bytes], limit: int) -> Response | None:
    """401 for a missing or wrong key, 413 for a declared body over the limit; None to go on."""
    if keys and request.url.path not in OPEN_ROUTES:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        given = token.strip().encode()
        matched = False
        for key in keys:  # every key is compared: no early exit that timing could reveal
            matched |= hmac.compare_digest(given, key)
        if scheme.lower() != "bearer" or not matched:
            return _error(401, "a valid API key is required (Authorization: Bearer KEY)", "authentication_error")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return _error(413, f"the request body is larger than {limit} bytes")
    return None


class _BodyTooLarge(Exception):
    """The body grew past the limit while it was read."""


@dataclass
class _Exchange:
    """What the watcher of one request needs to know: whether its answer has started, whether the client left."""

    started: bool = False
    gone: asyncio.Event = field(default_factory=asyncio.Event)


class _BodyGuard:
    """ASGI middleware: reads the whole body first, then runs the request while it watches the client.

    The body (chunked ones too) must stay within ``limit`` bytes (413 at once past it) and arrive within
    ``timeout_s`` seconds of the headers (408 at once past it, and the connection is closed). A client that
    goes away before its answer starts has its request cancelled: its inputs leave the batcher's queue. It is
    answered, and counted, as 499 (nginx's "client closed request"), although nothing reaches it.
    """

    def __init__(self, app: Any, *, limit: int, timeout_s: float) -> None:
        self.app, self.limit, self.timeout_s = app, limit, timeout_s

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            messages = await self._read_body(receive)
        except _BodyTooLarge:
            response = _error(413, f"the request body is larger than {self.limit} bytes")
        except asyncio.TimeoutError:  # Python 3.10: not the builtin TimeoutError
            message = f"the request body did not arrive within {self.timeout_s:g} s"
            response = _error(408, message, headers={"Connection": "close"})
        else:
            if messages[-1]["type"] == "http.disconnect":
                response = _client_gone()
            else:
                await self._run_watched(scope, messages, receive, send)
                return
        await response(scope, receive, send)

    async def _read_body(self, receive: Callable) -> list[dict]:
        """The messages up to the body's last (or a disconnect); _BodyTooLarge or TimeoutError past a limit."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        messages, size = [], 0
        while True:
            message = await asyncio.wait_for(receive(), max(deadline - loop.time(), 0))
            messages.append(message)
            size += len(message.get("body", b""))
            if size > self.limit:
                raise _BodyTooLarge
            if message["type"] != "http.request" or not message.get("more_body", False):
                return messages

    async def _run_watched(self, scope: dict, messages: list[dict], receive: Callable, send: Callable) -> None:
        """Run the application on the read body; cancel it (and answer 499) if the client leaves before its answer."""
        exchange, replay = _Exchange(), iter(messages)

        async def replayed_receive() -> dict:
            message = next(replay, None)
            if message is not None:
                return message
            await exchange.gone.wait()  # after the body, the only message left is the disconnect
            return {"type": "http.disconnect"}

        async def watched_send(message: dict) -> None:
            exchange.started = True
            await send(message)

        request = asyncio.ensure_future(self.app(scope, replayed_receive, watched_send))
        watcher = asyncio.ensure_future(_watch(receive, request, exchange))
        try:
            await asyncio.wait({request})
        except asyncio.CancelledError:  # this request itself is cancelled (shutdown): so is the application
            request.cancel()
            raise
        finally:
            watcher.cancel()
        if request.cancelled():  # only the watcher cancels it
            await _client_gone()(scope, receive, send)
            return
        request.result()  # the application's own exception, if any, goes on to `guard`


async def _watch(receive: Callable, request: asyncio.Task, exchange: _Exchange) -> None:
    """Wait for the client's disconnect; cancel ``request`` if no answer has started by then."""
    message = await receive()
    if message["type"] == "http.disconnect":
        exchange.gone.set()
        if not exchange.started:
            request.cancel()


def _client_gone() -> JSONResponse:
    return _error(499, "the client closed the connection before its answer", "client_closed")


def _error(status: int, message: str, kind: str = "invalid_request_error", headers=None) -> JSONResponse:
    body = {"error": {"message": message, "type": kind, "param": None, "code": status}}
    return JSONResponse(body, status_code=status, headers=headers)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> JSONResponse:
        return _error(error.status, error.message, error.kind, error.headers)

    @app.exception_handler(NosinkError)
    async def user_error(request: Request, error: NosinkError) -> JSONResponse:
        return _error(400, str(error))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        return _error(400, _validation_message(error))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        return _error(error.status_code, str(error.detail), headers=getattr(error, "headers", None))

    @app.exception_handler(Exception)
    async def crash(request: Request, error: Exception) -> JSONResponse:
        log.exception("unhandled error on %s", request.url.path)
        return _error(500, "internal server error", "server_error")


def _validation_message(error: RequestValidationError) -> str:
    """A short message from pydantic's errors: where and what, never the (possibly huge) input."""
    problems = []
    for item in error.errors()[:3]:
        if item.get("type") == "json_invalid":
            return "the request body is not valid JSON"
        where = ".".join(str(part) for part in item.get("loc", ()) if part != "body") or "body"
        problems.append(f"{where}: {item.get('msg', 'invalid')}")
    return "invalid request: " + "; ".join(problems)
