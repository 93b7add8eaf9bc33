"""From the config's sections to the tick's `Setup`: each pool's price, bounds, cold start and prior.

A pool's prior comes from the best source there is: its profile (`optimizer.pools.<name>.profile`),
else the roofline of its checkpoint (or a published shape its weights name) on its accelerator,
else a generic guess scaled to the model's SLO.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from optimizer.config import ModelConfig
from optimizer.performance import LatencyPrior, generic_prior, profile_prior, roofline_prior
from optimizer.policy import OptimizerConfig
from optimizer.tick import PoolSpec, Setup
from runtimes.accelerators import Accelerator
from runtimes.config import PoolConfig, VllmEngineConfig, resolve_weights
from runtimes.profile.profile_file import load_profile
from runtimes.profile.roofline import PRESETS, ModelShape, read_checkpoint

__all__ = ["build_setup", "pool_prior"]

log = logging.getLogger(__name__)

_DEFAULT_MAX_NUM_SEQS = 256
"""vLLM's default batch limit."""


def build_setup(
    policy: OptimizerConfig,
    models: Sequence[ModelConfig],
    pools: Sequence[PoolConfig],
    catalog: Mapping[str, Accelerator],
    price_per_hour: Callable[[PoolConfig], float],
    excluded: Mapping[str, str | None] | None = None,
) -> Setup:
    by_name = {model.name: model for model in models}
    specs: dict[str, PoolSpec] = {}
    for pool in pools:
        settings = policy.pools.get(pool.name)
        cold_start = settings.cold_start_s if settings and settings.cold_start_s else policy.cold_start_s
        specs[pool.name] = PoolSpec(
            name=pool.name,
            model=pool.model,
            price_per_hour=price_per_hour(pool),
            min_instances=pool.instances.min,
            max_instances=pool.instances.max,
            cold_start_s=cold_start,
            prior=pool_prior(pool, by_name[pool.model], catalog.get(pool.accelerator), policy),
            weight=pool.weight,
            excluded=(excluded or {}).get(pool.name),
        )
    return Setup(policy=policy, models=by_name, pools=specs)


def pool_prior(
    pool: PoolConfig, model: ModelConfig, accelerator: Accelerator | None, policy: OptimizerConfig
) -> LatencyPrior:
    engine = pool.engine if isinstance(pool.engine, VllmEngineConfig) else None
    max_seqs = engine.max_num_seqs if engine and engine.max_num_seqs else _DEFAULT_MAX_NUM_SEQS
    fallback = generic_prior(model.slo)
    shape = _shape(engine) if engine else None
    if shape is not None and accelerator is not None:
        context = engine.max_model_len // 2 if engine and engine.max_model_len else 1024
        fallback = roofline_prior(shape, accelerator, engine.variant if engine else "bf16",
                                  context_tokens=context, max_num_seqs=max_seqs)  # fmt: skip
    settings = policy.pools.get(pool.name)
    if settings and settings.profile:
        profile = load_profile(settings.profile)
        return profile_prior(profile, max_concurrency=float(max_seqs), fallback=fallback)
    return fallback


def _shape(engine: VllmEngineConfig) -> ModelShape | None:
    """The checkpoint's shape when it is a local directory, or the published shape its hub id names."""
    weights = resolve_weights(engine.weights)
    if Path(weights, "config.json").is_file():
        try:
            return read_checkpoint(weights)
        except (OSError, ValueError, KeyError) as exc:
            log.warning("cannot read the shape of %s (%s): the optimizer starts from a generic prior", weights, exc)
            return None
    name = weights.lower()
    return next((shape for key, shape in PRESETS.items() if key in name), None)
