"""Whether the Hugging Face hub can be reached, asked once and quickly, so that offline runs fail at once.

transformers retries an unreachable hub several times (about 27 s) before it gives up; a name
that is neither a local folder nor reachable deserves one clear line instead.
"""

from __future__ import annotations

import os

HUB_CHECK_TIMEOUT_S = 5.0
_OFFLINE_FLAGS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
_TRUE = {"1", "ON", "YES", "TRUE"}


def hub_unreachable_reason(*, timeout: float = HUB_CHECK_TIMEOUT_S) -> str | None:
    """Why the Hugging Face hub cannot be reached from here, or None when it answers.

    An offline flag (``HF_HUB_OFFLINE``, ``HF_DATASETS_OFFLINE``, ``TRANSFORMERS_OFFLINE``) counts
    as unreachable without any network call; otherwise one HEAD request with ``timeout`` seconds.

    Args:
        timeout: Seconds to wait for the hub.

    Returns:
        A short reason, or None.
    """
    for flag in _OFFLINE_FLAGS:
        value = os.environ.get(flag, "")
        if value.strip().upper() in _TRUE:
            return f"{flag}={value} is set"
    try:
        from huggingface_hub import constants, is_offline_mode
        from huggingface_hub.utils import get_session
    except ImportError as error:
        return f"huggingface_hub is not installed: {error}"
    if is_offline_mode():
        return "huggingface_hub is in offline mode"
    try:
        response = get_session().head(constants.ENDPOINT, timeout=timeout, follow_redirects=True)
    except Exception as error:  # any transport failure means "unreachable"
        return f"{constants.ENDPOINT}: {type(error).__name__}: {error}"
    if response.status_code >= 500:
        return f"{constants.ENDPOINT} answered HTTP {response.status_code}"
    return None


def is_cached(repo_id: str) -> bool:
    """True when the hub model ``repo_id`` has a ``config.json`` in the local Hugging Face cache."""
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:  # a name that is no valid repo id is simply not cached
        return False
