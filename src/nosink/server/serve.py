"""Load the model and run the server under uvicorn (``nosink serve``)."""

from __future__ import annotations

import logging
import socket

from nosink.cli_args import check_model_path
from nosink.errors import NosinkError
from nosink.server.settings import ServerSettings


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


def load_app(settings: ServerSettings):
    """The application for ``settings``: the model is loaded once, here."""
    from nosink.encoder import Encoder
    from nosink.server.app import create_app

    encoder = Encoder.from_pretrained(
        settings.model,
        plan=settings.plan,
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
        logging.getLogger("nosink.server").warning(
            "binding %s without API keys: anyone who can reach it can use it", settings.host
        )
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        timeout_graceful_shutdown=settings.graceful_timeout_s,
        log_level="info",
        access_log=False,
    )
