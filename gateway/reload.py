"""Hot reload of the policy: the config file is watched, and a changed file that checks is applied.

What reloads is the policy (the `optimizer` section and each model's SLO and quality budget).
Pools, providers and listen addresses need a restart: a file that changes them is still applied
for its policy, with a warning. A file that does not check changes nothing and says why.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

from gateway.config import Config, ConfigError, load_config

__all__ = ["ConfigWatcher"]

log = logging.getLogger(__name__)


class ConfigWatcher:
    def __init__(self, path: str | Path, apply: Callable[[Config], None], interval_s: float = 2.0) -> None:
        self.path = Path(path)
        self.apply = apply
        self.interval_s = interval_s
        self.last_error: str | None = None
        self._seen = self._stamp()

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            self.check()

    def check(self) -> bool:
        """Reload if the file changed since last seen; True when a new config was applied."""
        stamp = self._stamp()
        if stamp == self._seen:
            return False
        self._seen = stamp
        try:
            config = load_config(self.path)
        except ConfigError as exc:
            self.last_error = str(exc)
            log.error("config reload rejected; the running config stays\n%s", exc)
            return False
        try:
            self.apply(config)
        except Exception as exc:  # a reload must never take the gateway down
            self.last_error = f"{self.path}: could not apply: {exc!r}"
            log.exception("config reload failed; the running config stays")
            return False
        self.last_error = None
        log.info("config reloaded from %s", self.path)
        return True

    def _stamp(self) -> tuple[int, int] | None:
        try:
            stat = self.path.stat()
        except OSError:
            return None
        return stat.st_mtime_ns, stat.st_size
