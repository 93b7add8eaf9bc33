from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from gateway.bench.stub_backend import StubOptions, StubServer, start_stub


@pytest.fixture
async def stub() -> AsyncIterator[StubServer]:
    server = await start_stub(StubOptions())
    try:
        yield server
    finally:
        await server.close()
