"""Held-out evaluation text: stdlib files the bundled model never trained on, cut into token windows.

The split is `runtimes.model.train`'s own (a hash of each file's path), so no training text is
scored. The text is tokenised by the engines themselves; this module only cuts their token ids.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

__all__ = ["heldout_documents", "token_windows"]


def heldout_documents() -> list[str]:
    """The held-out stdlib sources, in the trainer's deterministic (sorted path) order."""
    # Imported here: the trainer pulls in torch and transformers, and only its split is needed.
    from runtimes.model.train import TrainConfig, collect_corpus

    return collect_corpus(TrainConfig.heldout_percent, TrainConfig.max_file_bytes).heldout


def token_windows(documents: Iterable[Sequence[int]], size: int, budget: int) -> Iterator[list[int]]:
    """Windows of at most `size` tokens that together score `budget` tokens (fewer if the text runs out).

    A window's first token has no context in that request and is not scored, so consecutive
    windows of a document overlap by one token: every token after a document's first is scored
    once. A window of n tokens scores n - 1. Windows are taken from each document in turn, so a
    small budget still samples every document rather than only the first few.
    """
    if size < 2:
        raise ValueError(f"a window needs at least 2 tokens, not {size}")
    left = budget
    for window in _round_robin([_document_windows(ids, size) for ids in documents]):
        if left <= 0:
            return
        window = window[: left + 1]
        left -= len(window) - 1
        yield window


def _document_windows(ids: Sequence[int], size: int) -> Iterator[list[int]]:
    for start in range(0, max(len(ids) - 1, 0), size - 1):
        yield list(ids[start : start + size])


def _round_robin(iterators: list[Iterator[list[int]]]) -> Iterator[list[int]]:
    while iterators:
        for iterator in list(iterators):
            window = next(iterator, None)
            if window is None:
                iterators.remove(iterator)
            else:
                yield window
