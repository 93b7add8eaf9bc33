"""Logging setup shared by every `thrifty` command."""

from __future__ import annotations

import logging

__all__ = ["configure_logging"]


def configure_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    # Access logs and client internals are noise at info level (and must never carry bodies).
    for noisy in ("uvicorn.access", "aiohttp.access", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
