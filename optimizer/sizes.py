"""Request-size classes: prompt-length x output-length buckets with stable, readable names.

A pool's capacity differs by request size (long prompts load prefill, long outputs decode), so
demand, capacity and traffic shares are all kept per class.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

from optimizer.policy import SizeClassConfig

__all__ = ["SizeClasses"]


class SizeClasses:
    def __init__(self, config: SizeClassConfig) -> None:
        self.input_edges = sorted(config.input_edges)
        self.output_edges = sorted(config.output_edges)
        self.input_names = _bucket_names("in", self.input_edges)
        self.output_names = _bucket_names("out", self.output_edges)
        self.names = [f"{i}/{o}" for i in self.input_names for o in self.output_names]

    def classify(self, input_tokens: int, output_tokens: int | None) -> str:
        """The class of a request; an unknown output length gives the input bucket alone (see `input_class`)."""
        in_name = self.input_class(input_tokens)
        if output_tokens is None:
            return in_name
        return f"{in_name}/{self.output_names[bisect.bisect_left(self.output_edges, output_tokens)]}"

    def input_class(self, input_tokens: int) -> str:
        return self.input_names[bisect.bisect_left(self.input_edges, input_tokens)]

    def input_of(self, size_class: str) -> str:
        return size_class.partition("/")[0]


def _bucket_names(prefix: str, edges: Sequence[int]) -> list[str]:
    """`in<=1024`, `in>1024` for one edge; `in<=512`, `in<=4096`, `in>4096` for two."""
    if not edges:
        return [f"{prefix}:any"]
    return [f"{prefix}<={edge}" for edge in edges] + [f"{prefix}>{edges[-1]}"]
