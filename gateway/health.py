"""Active health probes: eject instances that stop answering, bring back ejected ones that answer."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable

import aiohttp

from gateway.router import Router
from runtimes.instance import Instance, InstanceState

__all__ = ["HealthProber"]

log = logging.getLogger(__name__)


class HealthProber:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        router: Router,
        instances: Callable[[], Iterable[Instance]],
        interval_s: float,
    ) -> None:
        self.session = session
        self.router = router
        self.instances = instances
        self.interval_s = interval_s
        self.timeout = aiohttp.ClientTimeout(total=min(interval_s, 5.0))

    async def run(self) -> None:
        while True:
            try:
                await self.probe_all()
            except Exception:  # the prober must outlive any one bad round
                log.exception("health probe round failed")
            await asyncio.sleep(self.interval_s)

    async def probe_all(self) -> None:
        ready = [i for i in self.instances() if i.state is InstanceState.READY]
        await asyncio.gather(*(self.probe(instance) for instance in ready))

    async def probe(self, instance: Instance) -> None:
        try:
            async with self.session.get(instance.url + instance.health_path, timeout=self.timeout) as response:
                healthy = response.status == 200
        except (aiohttp.ClientError, TimeoutError):
            healthy = False
        now = time.monotonic()
        if healthy and (instance.ejected_until > now or instance.failures):
            log.info("%s: health probe passed; back in rotation", instance.id)
            instance.failures, instance.ejected_until = 0, 0.0
        elif not healthy and instance.ejected_until <= now:
            log.warning("%s: health probe failed; ejected", instance.id)
            self.router.failed(instance, now)
