"""Quality of a model variant against its reference, measured through the engine that serves it.

Both engines score the same held-out text (stdlib files the bundled model never trained on) with
vLLM prompt logprobs; the result is the perplexity of each, their relative increase (the
quality loss that a model's `max_quality_loss` bounds) and a top-K approximation of the mean
per-token KL(reference || variant). `thrifty eval` records it in the variant's `variant.json`.
"""

from runtimes.quality.engine_api import EngineClient, EngineError
from runtimes.quality.evaluate import TokenizationMismatch, evaluate

__all__ = ["EngineClient", "EngineError", "TokenizationMismatch", "evaluate"]
