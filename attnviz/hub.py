"""Whether the Hugging Face hub can be reached now, decided in seconds.

Hub clients retry for minutes before giving up; attnviz asks first so that offline use of an
online-only model or corpus fails at once with a message naming the offline default.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

_TRUE = {"1", "true", "yes", "on"}


def offline_reason() -> str | None:
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in _TRUE:
            return f"{var} is set"
    return None


def hub_reachable(timeout: float = 3.0) -> bool:
    """A quick TCP connect to the Hub (or the HTTPS proxy), so that offline fails in seconds
    instead of after the HTTP client's retries."""
    return reachable(os.environ.get("HF_ENDPOINT", "https://huggingface.co"), timeout)


def reachable(url: str, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to `url`'s host (or to the HTTPS proxy) opens within `timeout`."""
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    target = urlparse(proxy or url)
    host, port = target.hostname, target.port or (443 if target.scheme != "http" else 80)
    if not host:
        return True  # cannot tell; let the client try
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def ndif_problem(timeout: float = 3.0) -> str | None:
    """Why nnsight's remote execution (NDIF) cannot be used from here, or None when it can."""
    from nnsight import CONFIG

    host = CONFIG.API.HOST
    if not reachable(host, timeout):
        return f"NDIF ({host}) cannot be reached from this machine"
    if not CONFIG.API.APIKEY:
        return "no NDIF API key is set (nnsight.CONFIG.set_default_api_key('...'), from ndif.us)"
    return None
