"""Devices and dtypes: what ``device=`` and ``dtype=`` accept, resolved once for every loader."""

from __future__ import annotations

import torch

from nosink.errors import NosinkError

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DTYPE_CHOICES = ("auto", *_DTYPES)  # what `dtype=` accepts as a string

__all__ = ["DTYPE_CHOICES", "check_available", "resolve_device", "resolve_dtype"]


def resolve_device(device: torch.device | str | None) -> torch.device:
    """A torch device from a name; None picks CUDA when available, else the CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise NosinkError(f"unknown device {device!r}: {error}") from None


def check_available(device: torch.device) -> torch.device:
    """``device`` if this process can load weights onto it; NosinkError for CUDA without CUDA, and for meta."""
    if device.type == "cuda" and not torch.cuda.is_available():
        why = "is a CPU-only build" if torch.version.cuda is None else "sees no CUDA device"
        raise NosinkError(f"device {str(device)!r} was asked for, but torch {torch.__version__} {why}; use cpu")
    if device.type == "meta":
        raise NosinkError("device 'meta' holds no weights, so it cannot encode; use cpu or cuda")
    return device


def resolve_dtype(dtype: torch.dtype | str, device: torch.device) -> torch.dtype:
    """``auto`` is float32 off CUDA and bfloat16 on CUDA (float16 where bf16 is unsupported)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        if device.type != "cuda":
            return torch.float32  # bf16 matmuls are far slower than fp32 on most CPUs
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if dtype not in _DTYPES:
        raise NosinkError(f"unknown dtype {dtype!r}; use auto, {', '.join(_DTYPES)}")
    return _DTYPES[dtype]
