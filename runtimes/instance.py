"""An instance: one running runtime server, as the provider and the router both see it."""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field

__all__ = ["Instance", "InstanceState"]


class InstanceState(enum.StrEnum):
    STARTING = "starting"
    READY = "ready"
    DRAINING = "draining"
    FAILED = "failed"
    STOPPED = "stopped"


@dataclass(eq=False)
class Instance:
    """One OpenAI-compatible endpoint of a pool.

    The provider owns the lifecycle (`state`, `url`); the gateway owns the traffic view
    (`in_flight`, `ejected_until`, `failures`), which it updates on the request path.
    """

    id: str
    pool: str
    url: str = ""
    state: InstanceState = InstanceState.STARTING
    health_path: str = "/health"
    started_at: float = field(default_factory=time.monotonic)
    in_flight: int = 0
    failures: int = 0
    """Request failures in a row; reset by a success or a passing health probe."""
    ejected_until: float = 0.0
    """Monotonic time until which the router skips this instance after a failure."""

    def routable(self, now: float) -> bool:
        return self.state is InstanceState.READY and now >= self.ejected_until
