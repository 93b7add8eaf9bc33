"""Fixtures shared by the runtimes tests: quantized variants of the bundled model, made once a session."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from runtimes.quantize import SCHEMES, quantize_bundled


class LazyCheckpoints(Mapping[str, Path]):
    """`{scheme: checkpoint dir}` of the bundled model; each is quantized the first time it is asked for."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._made: dict[str, Path] = {}

    def __getitem__(self, scheme: str) -> Path:
        if scheme not in SCHEMES:
            raise KeyError(scheme)
        if scheme not in self._made:
            self._made[scheme] = quantize_bundled(scheme, self.root / scheme)
        return self._made[scheme]

    def __iter__(self) -> Iterator[str]:
        return iter(SCHEMES)

    def __len__(self) -> int:
        return len(SCHEMES)


@pytest.fixture(scope="session")
def quantized_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> LazyCheckpoints:
    return LazyCheckpoints(tmp_path_factory.mktemp("quantized"))
