"""Every server setting in one place: command-line flags and ``NOSINK_*`` environment variables.

A flag wins over its variable; a variable wins over the default. ``docs/server.md`` lists them all.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class ServerSettings(BaseSettings):
    """Settings of ``nosink serve`` (environment variable = ``NOSINK_`` + the upper-case name)."""

    model_config = SettingsConfigDict(env_prefix="NOSINK_", extra="forbid")

    model: str = Field(description="hub name, local folder or .gguf file of the decoder")
    plan: str | None = Field(
        None, description="conversion plan, e.g. mask0&bidir:k=17,k0=2 (default: a saved folder's, else baseline)"
    )
    recipe: str | None = Field(
        None, description="layer read-out and prompt, e.g. layer=-4 or prompt=prompteol (default: a saved folder's)"
    )
    pooling: Literal["mean", "weighted_mean", "last", "first", "reference_mean"] | None = Field(
        None, description="pooling mode (default: a saved folder's, else mean)"
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field("auto", description="weights dtype")
    device: str | None = Field(None, description="cpu, cuda, cuda:1 … (default: cuda when available)")
    served_model_name: str | None = Field(None, description="model name in responses (default: --model)")
    host: str = Field("127.0.0.1", description="address to bind; 0.0.0.0 exposes the server to the network")
    port: int = Field(8080, ge=0, le=65535, description="TCP port")
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="accepted Bearer keys (comma-separated); none = open"
    )
    max_length: int | None = Field(
        None,
        ge=1,
        description="maximum tokens per input, special and instruction tokens included (default: a saved folder's, "
        "else 512)",
    )
    truncate: bool = Field(False, description="truncate over-long inputs instead of answering 413")
    max_inputs: int = Field(2048, ge=1, description="maximum inputs per request (more: 413)")
    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1024, description="maximum request body size (more: 413)")
    max_batch_tokens: int = Field(
        16384, ge=1, description="input tokens per model batch (without packing, padded ones)"
    )
    max_batch_size: int = Field(64, ge=1, description="inputs per model batch")
    packing: bool = Field(
        True, description="pack short inputs several to a row, each attending only to itself (less padding)"
    )
    batch_wait_ms: float = Field(2.0, ge=0, description="how long a batch waits for concurrent requests to join")
    max_queued_tokens: int = Field(262144, ge=1, description="tokens waiting for the model before new work is refused")
    overload_status: Literal[429, 503] = Field(429, description="status when the queue is full")
    retry_after_s: int = Field(1, ge=0, description="Retry-After seconds sent with the overload status")
    max_connections: int = Field(
        1000, ge=1, description="open connections served at once (at most the open-file limit - 64); one more: 503"
    )
    header_timeout_s: float = Field(
        10.0, gt=0, description="seconds a connection has to send a request's headers (then 408 and closed)"
    )
    body_timeout_s: float = Field(
        30.0, gt=0, description="seconds a request has for its whole body after its headers (then 408 and closed)"
    )
    keep_alive_timeout_s: float = Field(5.0, gt=0, description="seconds an idle connection stays open between requests")
    graceful_timeout_s: float = Field(30.0, ge=0, description="how long shutdown waits for in-flight requests")
    torch_threads: int | None = Field(
        None, ge=1, description="torch intra-op threads (default: torch's); on a small CPU box, leave a core for HTTP"
    )

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        """A comma-separated string or a list; given but holding no key ("", " , ") is refused, not left open."""
        keys = value.split(",") if isinstance(value, str) else value
        if not isinstance(keys, list) or value == []:
            return keys  # [] is the default: no keys, an open server
        kept = [key.strip() if isinstance(key, str) else key for key in keys]
        kept = [key for key in kept if key != ""]
        if not kept:
            raise ValueError(  # an empty list would leave the server open while the user meant to close it
                "the API key list is empty; give at least one key, or leave api keys unset for an open server"
            )
        return kept


def settings_table() -> list[tuple[str, str, str, str]]:
    """(flag, variable, default, meaning) for every setting, for ``--help`` and the docs."""
    rows = []
    for name, field in ServerSettings.model_fields.items():
        default = "required" if field.is_required() else repr(field.get_default(call_default_factory=True))
        flag = "--" + name.replace("_", "-")
        rows.append((flag, "NOSINK_" + name.upper(), default, field.description or ""))
    return rows
