"""Measure a variant against its reference through both running engines, on the same held-out tokens."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from runtimes.quality.divergence import Position, Totals
from runtimes.quality.engine_api import EngineClient
from runtimes.quality.heldout import heldout_documents, token_windows
from runtimes.variants import Quality, now_iso

__all__ = [
    "DEFAULT_CONCURRENCY",
    "DEFAULT_TOKENS",
    "DEFAULT_TOP_K",
    "DEFAULT_WINDOW",
    "TokenizationMismatch",
    "evaluate",
]

log = logging.getLogger(__name__)

DEFAULT_TOKENS = 16_384
"""Tokens scored by default, about a sixth of the held-out stdlib text, drawn from every file."""
DEFAULT_TOP_K = 20
"""vLLM's default `--max-logprobs`; a larger K needs the servers started with a larger limit."""
DEFAULT_WINDOW = 256
"""Tokens per request. The bundled model was trained on 256-token windows: longer ones would measure
it out of its training distribution (its perplexity rises with context beyond that)."""
DEFAULT_CONCURRENCY = 4


class TokenizationMismatch(RuntimeError):
    """The two engines made different tokens of the same text: their scores are not comparable."""


async def evaluate(
    reference_url: str,
    variant_url: str,
    *,
    tokens: int = DEFAULT_TOKENS,
    top_k: int = DEFAULT_TOP_K,
    window: int = DEFAULT_WINDOW,
    concurrency: int = DEFAULT_CONCURRENCY,
    documents: Sequence[str] | None = None,
) -> Quality:
    """Perplexity of both engines and KL(reference || variant) over `tokens` held-out tokens.

    `documents` replaces the held-out stdlib text (tests); each request holds at most `window`
    tokens, fewer if an engine's `max_model_len` demands it.
    """
    async with EngineClient(reference_url) as reference, EngineClient(variant_url) as variant:
        texts = documents if documents is not None else await asyncio.to_thread(heldout_documents)
        tokenized = await _tokenize_alike(reference, variant, texts)
        size = min(window, reference.max_model_len - 1, variant.max_model_len - 1)  # room for 1 output token
        windows = list(token_windows(tokenized, size, tokens))
        log.info("scoring %d windows of up to %d tokens on %s and %s", len(windows), size, reference.url, variant.url)
        totals = await _score(reference, variant, windows, top_k, concurrency)
    if not totals.tokens:
        raise ValueError("no text to score")
    return Quality(
        perplexity=totals.variant_perplexity,
        reference_perplexity=totals.reference_perplexity,
        kl_divergence=totals.mean_kl,
        tokens=totals.tokens,
        method=f"vllm prompt_logprobs top-{top_k}+rest, held-out stdlib text, {size}-token windows",
        measured_at=now_iso(),
    )


async def _tokenize_alike(reference: EngineClient, variant: EngineClient, texts: Sequence[str]) -> list[list[int]]:
    """Each engine's tokens of each text; they must agree token for token."""
    tokenized: list[list[int]] = []
    for index, text in enumerate(texts):
        ours, theirs = await asyncio.gather(reference.tokenize(text), variant.tokenize(text))
        if ours != theirs:
            raise TokenizationMismatch(_describe_mismatch(index, ours, theirs))
        tokenized.append(ours)
    return tokenized


def _describe_mismatch(index: int, reference: list[int], variant: list[int]) -> str:
    at = next((i for i, (a, b) in enumerate(zip(reference, variant, strict=False)) if a != b), None)
    where = f"token {at}: {reference[at]} vs {variant[at]}" if at is not None else "length"
    return (
        f"the reference and the variant tokenise text {index} differently "
        f"({len(reference)} vs {len(variant)} tokens, first difference at {where}); "
        "a variant must keep its reference's tokenizer"
    )


async def _score(
    reference: EngineClient, variant: EngineClient, windows: list[list[int]], top_k: int, concurrency: int
) -> Totals:
    slots = asyncio.Semaphore(concurrency)

    async def both(window: list[int]) -> tuple[list[Position], list[Position]]:
        async with slots:
            return await asyncio.gather(reference.score(window, top_k), variant.score(window, top_k))

    totals = Totals()
    for scored in await asyncio.gather(*(both(window) for window in windows)):
        totals.add(*scored)  # in window order, so that the sums do not depend on timing
    return totals
