"""Calibration text for quantization: short, deterministic samples of local text.

By default the samples come from the CPython standard library's *training* split, the same
files `runtimes.model.train` trained the bundled model on (its held-out files stay unseen, so a
quality evaluation on them is not flattered by calibration). `--calibration FILE/DIR` takes any
local UTF-8 text instead (a directory is read recursively, in sorted order).

A sample is a window of `chars` characters starting at a line boundary of one document; which
document and where are drawn from `random.Random(seed)`, so the same inputs give the same
samples. The worker truncates each sample to the token limit.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CalibrationSet", "calibration_texts", "sample_windows"]

MIN_DOCUMENT_CHARS = 200
STDLIB_HELDOUT_PERCENT = 3.0  # as runtimes.model.train splits it
STDLIB_MAX_FILE_BYTES = 200_000


@dataclass(frozen=True)
class CalibrationSet:
    texts: list[str]
    source: str
    """Where they came from, for the variant's `method`."""


def calibration_texts(source: Path | None, samples: int, seed: int = 0, chars: int = 1536) -> CalibrationSet:
    """`samples` windows from `source` (a file or directory), or from the stdlib training split."""
    if source is None:
        documents = _stdlib_training_documents()
        where = "CPython stdlib (training split)"
    else:
        documents = _read_documents(source)
        where = str(source)
    return CalibrationSet(sample_windows(documents, samples, seed, chars), where)


def sample_windows(documents: Sequence[str], samples: int, seed: int, chars: int) -> list[str]:
    """Deterministic windows of about `chars` characters, each starting at the start of a line."""
    usable = [doc for doc in documents if len(doc.strip()) >= MIN_DOCUMENT_CHARS]
    if not usable:
        raise ValueError(f"no calibration text: no document has at least {MIN_DOCUMENT_CHARS} characters")
    rng = random.Random(seed)
    windows: list[str] = []
    for _ in range(samples):
        doc = rng.choice(usable)
        start = rng.randrange(max(1, len(doc) - chars))
        line_start = doc.rfind("\n", 0, start) + 1
        windows.append(doc[line_start : line_start + chars])
    return windows


def _stdlib_training_documents() -> list[str]:
    from runtimes.model.train import collect_corpus  # imports torch: only when needed

    return collect_corpus(STDLIB_HELDOUT_PERCENT, STDLIB_MAX_FILE_BYTES).train


def _read_documents(source: Path) -> list[str]:
    if not source.exists():
        raise ValueError(f"calibration source {source} does not exist")
    paths = [source] if source.is_file() else sorted(p for p in source.rglob("*") if p.is_file())
    documents = []
    for path in paths:
        try:
            documents.append(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, OSError):
            continue  # binary or unreadable: not text to calibrate on
    return documents
