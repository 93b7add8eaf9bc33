"""Recorded traces: request records appended to a JSON-lines file, read back for replay.

A line is either one `RequestRecord` as JSON (what `optimizer.record_path` writes) or one OTLP
JSON export (`{"resourceSpans": ...}`, what an OpenTelemetry collector's file exporter writes);
both become the same records the live loop sees.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import msgspec

from observability.otlp import OTLPDecodeError, decode_export, request_records
from observability.records import RequestRecord

__all__ = ["RecordWriter", "TraceFileError", "read_records"]

log = logging.getLogger(__name__)

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(RequestRecord)


class TraceFileError(ValueError):
    """A line of a trace file that is neither a record nor an OTLP export; names the file and line."""


class RecordWriter:
    """Appends records as JSON lines; a failing disk is logged once and recording stops, serving does not."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[bytes] | None = self.path.open("ab")

    def __call__(self, record: RequestRecord) -> None:
        if self._file is None:
            return
        try:
            self._file.write(_encoder.encode(record) + b"\n")
        except OSError as exc:
            log.error("recording to %s stopped: %s", self.path, exc)
            self.close()

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def read_records(path: str | Path) -> Iterator[RequestRecord]:
    """Every record in the file, in file order."""
    with Path(path).open("rb") as lines:
        for number, line in enumerate(lines, 1):
            line = line.strip()
            if not line:
                continue
            try:
                if line.startswith(b'{"resourceSpans"') or b'"resourceSpans"' in line[:64]:
                    yield from request_records(decode_export(line, "application/json"))
                else:
                    yield _decoder.decode(line)
            except (msgspec.DecodeError, OTLPDecodeError) as exc:
                raise TraceFileError(f"{path}:{number}: neither a request record nor an OTLP export: {exc}") from exc
