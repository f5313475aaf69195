"""Load the model and run the server under uvicorn (``nosink serve``)."""

from __future__ import annotations

import logging
import socket
from typing import Any

from nosink.cli_args import check_model_path
from nosink.errors import NosinkError
from nosink.server.settings import ServerSettings

DESCRIPTOR_RESERVE = 64  # open files kept for the model, the listening socket, logs and libraries
log = logging.getLogger("nosink.server")


def check_port_free(host: str, port: int) -> None:
    """NosinkError when ``host:port`` cannot be bound (in use, or not an address of this machine); 0 = any port."""
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: TIME_WAIT is no conflict
        try:
            probe.bind((host, port))
        except OSError as error:
            raise NosinkError(
                f"cannot listen on {host}:{port}: {error.strerror or error}; pick another --port"
            ) from None


def descriptor_limit() -> int | None:
    """This process's soft limit on open files (``ulimit -n``); None when unlimited or unknown."""
    try:
        import resource
    except ImportError:  # not a Unix system
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else soft


def connection_limit(max_connections: int, *, descriptor_limit: int | None) -> int:
    """``max_connections``, lowered so that DESCRIPTOR_RESERVE of ``descriptor_limit`` open files stay free."""
    if descriptor_limit is None:
        return max_connections
    return max(1, min(max_connections, descriptor_limit - DESCRIPTOR_RESERVE))


def uvicorn_options(settings: ServerSettings) -> dict[str, Any]:
    """``uvicorn.run``'s options for ``settings``: the address, the timeouts and the connection limit."""
    from nosink.server.protocol import h11_with_header_timeout

    limit = connection_limit(settings.max_connections, descriptor_limit=descriptor_limit())
    if limit < settings.max_connections:
        log.warning(
            "serving at most %d connections, not %d: the open-file limit (ulimit -n) is %s",
            limit,
            settings.max_connections,
            descriptor_limit(),
        )
    return {
        "host": settings.host,
        "port": settings.port,
        "http": h11_with_header_timeout(settings.header_timeout_s),
        "limit_concurrency": limit + 1,  # uvicorn counts the new request's own connection: `limit` are served
        "timeout_keep_alive": settings.keep_alive_timeout_s,
        "timeout_graceful_shutdown": settings.graceful_timeout_s,
        "log_level": "info",
        "access_log": False,
    }


def load_app(settings: ServerSettings):
    """The application for ``settings``: the model is loaded once, here."""
    from nosink.encoder import Encoder
    from nosink.server.app import create_app

    encoder = Encoder.from_pretrained(
        settings.model,
        plan=settings.plan,
        recipe=settings.recipe,
        pooling=settings.pooling,
        dtype=settings.dtype,
        device=settings.device,
        max_length=settings.max_length,
    )
    return create_app(encoder, settings)


def run(settings: ServerSettings) -> None:
    """Serve until SIGINT/SIGTERM; in-flight requests finish (up to ``graceful_timeout_s``)."""
    try:
        import uvicorn
    except ImportError:
        raise NosinkError('the server needs its extra: pip install "nosink[server]"') from None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    check_model_path(settings.model)  # the same message as encode's, not a hub-name error
    check_port_free(settings.host, settings.port)  # before the model loads, not after
    if settings.torch_threads is not None:
        import torch

        torch.set_num_threads(settings.torch_threads)
    app = load_app(settings)
    if settings.host not in ("127.0.0.1", "localhost", "::1") and not settings.api_keys:
        log.warning("binding %s without API keys: anyone who can reach it can use it", settings.host)
    uvicorn.run(app, **uvicorn_options(settings))
