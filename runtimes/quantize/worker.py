# mypy: disable-error-code="import-not-found,import-untyped,no-untyped-call,unused-ignore"
"""The quantization worker: runs inside the quantization environment, never in the project's own.

    <quantize-venv>/bin/python -I worker.py REQUEST.json RESULT.json

It imports only the standard library, torch, transformers and llmcompressor (with `datasets`,
which llmcompressor brings): the project's packages need the main environment, which cannot hold
llmcompressor. The request names the model, the output directory, the recipe (modifier classes
and their arguments, as data: `runtimes.quantize.schemes`) and a JSON file of calibration texts.
The result file gets what was done.

Progress goes to stdout, one JSON object per line: `{"event": "phase", "phase": ...}` as each step
starts, `{"event": "layer", "index", "total", "calls"}` on each forward of a decoder layer during
calibration. Everything else that prints (llmcompressor, transformers, tqdm, C code) is sent to
stderr, which the parent keeps as the log.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any, TextIO

__all__ = ["Events", "main"]

PACKAGES = ("torch", "transformers", "compressed-tensors", "llmcompressor")


class Events:
    """The progress channel: the process's original stdout; fd 1 is pointed at stderr for the rest."""

    def __init__(self) -> None:
        self._out: TextIO = os.fdopen(os.dup(1), "w", encoding="utf-8")
        os.dup2(2, 1)
        sys.stdout = sys.stderr
        self._started = time.monotonic()

    def emit(self, event: str, **fields: Any) -> None:
        record = {"event": event, "t": round(time.monotonic() - self._started, 2), **fields}
        self._out.write(json.dumps(record) + "\n")
        self._out.flush()


def build_modifiers(recipe: list[dict[str, Any]]) -> list[Any]:
    """Instantiate `{"class": "package.module.Name", "args": {...}}` entries."""
    modifiers = []
    for entry in recipe:
        module_name, _, class_name = entry["class"].rpartition(".")
        cls = getattr(importlib.import_module(module_name), class_name)
        modifiers.append(cls(**entry.get("args", {})))
    return modifiers


def calibration_dataset(tokenizer: Any, texts: list[str], max_seq_len: int) -> Any:
    """Tokenized samples, truncated to `max_seq_len`, unpadded (batch size 1), as a `datasets.Dataset`."""
    from datasets import Dataset

    rows: dict[str, list[list[int]]] = {"input_ids": [], "attention_mask": []}
    for text in texts:
        ids = list(tokenizer(text, add_special_tokens=False, truncation=True, max_length=max_seq_len)["input_ids"])
        if len(ids) >= 2:
            rows["input_ids"].append(ids)
            rows["attention_mask"].append([1] * len(ids))
    return Dataset.from_dict(rows)


def decoder_layers(model: Any) -> list[Any]:
    layers = getattr(getattr(model, "model", None), "layers", None)
    return list(layers) if layers is not None else []


def report_layers(model: Any, events: Events) -> list[Any]:
    """Emit a `layer` event on each forward of a decoder layer; returns the hook handles.

    llmcompressor's sequential pipeline calibrates layer by layer: each layer runs once per
    sample to calibrate and once more to pass its quantized outputs on, so `calls` counts
    towards twice the number of samples.
    """
    layers = decoder_layers(model)
    calls = [0] * len(layers)
    handles = []
    for index, layer in enumerate(layers):

        def hook(*_: Any, index: int = index) -> None:
            calls[index] += 1
            events.emit("layer", index=index, total=len(layers), calls=calls[index])

        handles.append(layer.register_forward_pre_hook(hook))
    return handles


def quantize(request: dict[str, Any], events: Events) -> dict[str, Any]:
    import torch
    from llmcompressor import oneshot
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.monotonic()
    torch.manual_seed(int(request["seed"]))
    if request.get("threads"):
        torch.set_num_threads(int(request["threads"]))

    events.emit("phase", phase="load", detail=request["model"])
    model = AutoModelForCausalLM.from_pretrained(request["model"], dtype=torch.bfloat16)
    tokenizer = AutoTokenizer.from_pretrained(request["model"])

    calibration: dict[str, Any] = {}
    samples = tokens = 0
    if request.get("calibration"):
        texts = json.loads(Path(request["calibration"]).read_text(encoding="utf-8"))
        dataset = calibration_dataset(tokenizer, texts, int(request["max_seq_len"]))
        samples = len(dataset)
        tokens = sum(len(ids) for ids in dataset["input_ids"])
        calibration = {
            "dataset": dataset,
            "num_calibration_samples": samples,
            "max_seq_length": int(request["max_seq_len"]),
            "shuffle_calibration_samples": False,
        }

    events.emit("phase", phase="quantize", layers=len(decoder_layers(model)), samples=samples, tokens=tokens)
    handles = report_layers(model, events)
    oneshot(model=model, recipe=build_modifiers(request["recipe"]), **calibration)
    for handle in handles:
        handle.remove()

    events.emit("phase", phase="save", detail=request["output"])
    model.save_pretrained(request["output"], save_compressed=True)  # the tokenizer is the parent's to copy
    return {
        "calibration_samples": samples,
        "calibration_tokens": tokens,
        "seconds": round(time.monotonic() - started, 1),
        "versions": {name: version(name) for name in PACKAGES},
    }


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: worker.py REQUEST.json RESULT.json", file=sys.stderr)
        return 2
    events = Events()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    request = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    result = quantize(request, events)
    Path(argv[1]).write_text(json.dumps(result), encoding="utf-8")
    events.emit("done", **result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
