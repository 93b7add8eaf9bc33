"""Scenario files: the model, its SLO, the pool menu, the workload and the hidden truth of one simulation.

A scenario is YAML decoded with msgspec into the structs below (unknown keys are errors, and every
error names its path, e.g. `$.pools[2].variant`). Checks the types cannot express (a catalog
accelerator, weights that fit in memory, unique names) run after decoding and name their path too.
`load_scenario` takes a shipped scenario's name (`steady-chat`) or a file path.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from optimizer.config import SLOConfig
from optimizer.policy import OptimizerConfig
from runtimes.accelerators import CATALOG
from runtimes.profile.roofline import BYTES_PER_PARAM, PRESETS

__all__ = [
    "EngineSettings",
    "LengthSpec",
    "MixComponent",
    "PoolScenario",
    "Scenario",
    "ScenarioError",
    "TruthSpec",
    "WorkloadSpec",
    "load_scenario",
    "parse_scenario",
    "shipped_scenarios",
    "usable_memory_bytes",
]

PositiveFloat = Annotated[float, Meta(gt=0)]
Efficiency = Annotated[float, Meta(gt=0, le=1)]
Count = Annotated[int, Meta(ge=0)]


class LengthSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A token count drawn lognormal around its median, rounded and clipped: the usual shape of lengths."""

    median: Annotated[int, Meta(ge=1)]
    sigma: Annotated[float, Meta(ge=0)] = 0.6
    """Standard deviation of the log length: 0 gives the median every time."""
    min: Annotated[int, Meta(ge=1)] = 1
    max: Annotated[int, Meta(ge=1)] = 8192


class MixComponent(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One kind of request in a mix (chat turns, documents), drawn with probability proportional to `weight`."""

    name: str
    weight: PositiveFloat = 1.0
    prompt: LengthSpec
    output: LengthSpec


class WorkloadSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """When requests arrive and how long they are."""

    kind: Literal["poisson", "bursty", "diurnal"] = "poisson"
    """`poisson`: a constant rate; `bursty`: on/off Markov-modulated bursts; `diurnal`: a compressed day."""
    rate: PositiveFloat
    """Requests per second: the Poisson rate, the calm rate between bursts, or the night-time trough."""
    peak_rate: PositiveFloat | None = None
    """`bursty`: the rate within a burst; `diurnal`: the midday peak. Required by both."""
    burst_s: PositiveFloat = 60.0
    """`bursty`: mean length of a burst (exponential)."""
    calm_s: PositiveFloat = 600.0
    """`bursty`: mean time between bursts (exponential)."""
    period_s: PositiveFloat | None = None
    """`diurnal`: the length of one day, trough to trough; default the whole run."""
    duration_s: PositiveFloat = 3600.0
    """Arrivals stop here; requests in flight then still finish and count."""
    mix: str | list[MixComponent] = "chat"
    """A named mix (`chat`, `long-docs`, `mixed`) or its components."""


class TruthSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What a pool's engine really reaches: the simulator's hidden truth, never shown to the optimizer.

    Unset fields take the defaults of the accelerator kind and variant (`optimizer.simulate.truth`).
    """

    bandwidth_efficiency: Efficiency | None = None
    """Share of the catalog memory bandwidth a decode step reaches."""
    compute_efficiency: Efficiency | None = None
    """Share of the catalog peak FLOP/s of the variant's compute dtype that matmuls reach."""
    step_overhead_ms: Annotated[float, Meta(ge=0)] | None = None
    """Scheduling, sampling and launch time of each engine step."""


class EngineSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The serving engine's batching limits, as vLLM's flags set them."""

    max_num_seqs: Annotated[int, Meta(ge=1)] | None = None
    """Sequences batched at most; default 256 (vLLM's)."""
    max_num_batched_tokens: Annotated[int, Meta(ge=2)] | None = None
    """Token budget of one step (decodes plus prefill chunks); default as vLLM's server: 8192 on GPUs
    of 70 GiB or more, else 2048."""
    memory_utilization: Annotated[float, Meta(gt=0, le=1)] = 0.9
    """Share of device memory the engine takes (weights plus KV cache): vLLM's `gpu_memory_utilization`."""


class PoolScenario(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One pool on the menu: an accelerator from the catalog serving the model at one precision."""

    name: Annotated[str, Meta(min_length=1)]
    accelerator: str
    """A catalog name (`runtimes.accelerators.CATALOG`)."""
    variant: str
    """The weights' precision: `bf16`, `fp8`, `int8` (W8A8) or `int4` (W4A16)."""
    price_per_hour: Annotated[float, Meta(ge=0)] | None = None
    """USD per instance-hour; default the catalog's price."""
    min_instances: Count = 0
    max_instances: Count = 8
    initial: Count | None = None
    """Instances ready at the start for the adaptive policy; default `min_instances`."""
    cold_start_s: Annotated[float, Meta(ge=0)] = 120.0
    """Time from asking for an instance to its first request (paid for)."""
    truth: TruthSpec = TruthSpec()
    engine: EngineSettings = EngineSettings()


class Scenario(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One simulation: every policy serves the same arrivals of this workload on this pool menu."""

    name: str = ""
    """Default: the file's stem."""
    description: str = ""
    model: str = "llama-3.1-8b"
    """A model shape preset (`runtimes.profile.roofline.PRESETS`)."""
    slo: SLOConfig = SLOConfig()
    pools: list[PoolScenario]
    workload: WorkloadSpec
    interval_s: PositiveFloat | None = None
    """Cadence of the adaptive policies (the optimizer's tick, the oracle's re-plan); default the optimizer's."""
    seed: int = 0
    """Seeds the arrivals, the lengths and the router's random choices."""
    gateway_wait_s: Annotated[float, Meta(ge=0)] = 5.0
    """How long a request waits at the gateway for a routable instance before it fails with 503."""
    optimizer: OptimizerConfig = OptimizerConfig()
    """Policy overrides for the optimizer under test (and the planning headroom of the fixed baselines)."""

    @property
    def cadence_s(self) -> float:
        return self.interval_s if self.interval_s is not None else self.optimizer.interval_s


class ScenarioError(ValueError):
    """A scenario that cannot run; the message names the source and the path of each problem."""

    def __init__(self, source: str, problems: list[tuple[str, str]]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  {path}: {message}" for path, message in problems)
        super().__init__(f"{source}: invalid scenario\n{lines}")


_SHIPPED = "optimizer.simulate.scenarios"


def shipped_scenarios() -> list[str]:
    """Names of the scenarios that ship with thrifty."""
    files = resources.files(_SHIPPED).iterdir()
    return sorted(entry.name.removesuffix(".yaml") for entry in files if entry.name.endswith(".yaml"))


def load_scenario(name_or_path: str | Path) -> Scenario:
    """A shipped scenario by name, else a YAML file by path."""
    text: str | bytes
    if isinstance(name_or_path, str) and name_or_path in shipped_scenarios():
        text = resources.files(_SHIPPED).joinpath(f"{name_or_path}.yaml").read_text()
        return parse_scenario(text, source=name_or_path, default_name=name_or_path)
    path = Path(name_or_path)
    try:
        text = path.read_bytes()
    except OSError as exc:
        known = ", ".join(shipped_scenarios())
        raise ScenarioError(str(path), [("$", f"not a shipped scenario ({known}) nor a readable file: {exc}")]) from exc
    return parse_scenario(text, source=str(path), default_name=path.stem)


def parse_scenario(text: str | bytes, source: str = "<scenario>", default_name: str = "scenario") -> Scenario:
    """Decode and check one YAML document; raises ScenarioError naming each problem's path."""
    try:
        scenario = msgspec.yaml.decode(text, type=Scenario)
    except msgspec.ValidationError as exc:
        message, _, path = str(exc).rpartition(" - at `")
        raise ScenarioError(source, [(path.rstrip("`") if message else "$", message or str(exc))]) from exc
    except msgspec.DecodeError as exc:
        raise ScenarioError(source, [("$", f"not valid YAML: {exc}")]) from exc
    problems = _check(scenario)
    if problems:
        raise ScenarioError(source, problems)
    if not scenario.name:
        scenario = msgspec.structs.replace(scenario, name=default_name)
    return scenario


def usable_memory_bytes(memory_gib: float, settings: EngineSettings) -> float:
    """What the engine may fill with weights and KV cache on a device of `memory_gib`."""
    return memory_gib * 2**30 * settings.memory_utilization


def _check(scenario: Scenario) -> list[tuple[str, str]]:
    """What the struct types cannot say: names that resolve, weights that fit, counts in order."""
    from optimizer.simulate.workloads import MIXES  # the mix names live with the generator

    problems: list[tuple[str, str]] = []
    shape = PRESETS.get(scenario.model)
    if shape is None:
        problems.append(("$.model", f"unknown model shape {scenario.model!r}; known: {', '.join(sorted(PRESETS))}"))
    if not scenario.pools:
        problems.append(("$.pools", "at least one pool is needed"))
    seen: set[str] = set()
    for index, pool in enumerate(scenario.pools):
        at = f"$.pools[{index}]"
        if pool.name in seen:
            problems.append((f"{at}.name", f"pool {pool.name!r} is named twice"))
        seen.add(pool.name)
        if pool.min_instances > pool.max_instances:
            problems.append((f"{at}.min_instances", f"pool {pool.name!r}: min_instances exceeds max_instances"))
        if pool.initial is not None and not pool.min_instances <= pool.initial <= pool.max_instances:
            problems.append((f"{at}.initial", f"pool {pool.name!r}: initial must lie within min..max instances"))
        if pool.variant not in BYTES_PER_PARAM:
            known = ", ".join(sorted(BYTES_PER_PARAM))
            problems.append((f"{at}.variant", f"pool {pool.name!r}: unknown variant {pool.variant!r}; known: {known}"))
        accelerator = CATALOG.get(pool.accelerator)
        if accelerator is None:
            problems.append((f"{at}.accelerator", f"pool {pool.name!r}: {pool.accelerator!r} is not in the catalog"))
        settings = pool.engine
        seqs, budget = settings.max_num_seqs, settings.max_num_batched_tokens
        if seqs is not None and budget is not None and budget <= seqs:
            problems.append((f"{at}.engine.max_num_batched_tokens", "must exceed max_num_seqs"))
        if shape is None or accelerator is None or pool.variant not in BYTES_PER_PARAM:
            continue
        weights = shape.weights_at(pool.variant)
        usable = usable_memory_bytes(accelerator.memory_gib, settings)
        if weights >= usable:
            problems.append((
                at,
                f"pool {pool.name!r} cannot exist: {shape.name} at {pool.variant} needs {weights / 1e9:.1f} GB of "
                f"weights, and {pool.accelerator} leaves {usable / 1e9:.1f} GB "
                f"({accelerator.memory_gib:g} GiB x {settings.memory_utilization:g}) for weights and KV cache",
            ))  # fmt: skip
    workload = scenario.workload
    if workload.kind in ("bursty", "diurnal") and workload.peak_rate is None:
        problems.append(("$.workload.peak_rate", f"a {workload.kind} workload needs peak_rate"))
    if isinstance(workload.mix, str) and workload.mix not in MIXES:
        problems.append(("$.workload.mix", f"unknown mix {workload.mix!r}; known: {', '.join(sorted(MIXES))}"))
    if isinstance(workload.mix, list):
        if not workload.mix:
            problems.append(("$.workload.mix", "a mix needs at least one component"))
        for index, component in enumerate(workload.mix):
            for part in ("prompt", "output"):
                spec: LengthSpec = getattr(component, part)
                if spec.min > spec.max:
                    problems.append((f"$.workload.mix[{index}].{part}", "min exceeds max"))
    return problems
