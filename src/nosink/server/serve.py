"""Load the model and run the server under uvicorn (``nosink serve``)."""

from __future__ import annotations

import logging

from nosink.errors import NosinkError
from nosink.server.settings import ServerSettings


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
