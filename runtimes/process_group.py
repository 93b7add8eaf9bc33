"""Signalling a whole process group: an engine and every worker it spawned (vLLM's EngineCore)."""

from __future__ import annotations

import contextlib
import os

__all__ = ["group_alive", "signal_group"]


def group_alive(pgid: int) -> bool:
    """Whether any process of the group still exists."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def signal_group(pgid: int, signum: int) -> None:
    """Send `signum` to the group; a group already gone is not an error."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signum)
