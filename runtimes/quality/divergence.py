"""The maths of a quality measurement: perplexity and an approximate KL divergence per token.

An engine reports, at each prompt position, the log-probabilities of its top-K next tokens and of
the token that actually follows (vLLM `prompt_logprobs`). The full next-token distributions are
not available, so KL(reference || variant) is computed on a coarse-grained distribution: one
bucket for each token of the reference's report that the variant also reported, plus one "rest"
bucket holding each distribution's remaining probability mass. Merging tokens into buckets can
only lose divergence (the data-processing inequality), so this is a lower bound on the true KL,
it is never negative, it is 0 for identical distributions, and a reference top-K token that the
variant ranked below its own top-K is not guessed at: it falls into the rest bucket of both.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["Position", "Totals", "kl_top_k_rest", "perplexity"]

_MIN_MASS = 1e-12
"""Floor for a bucket's probability, so that a rest mass rounded to 0 keeps the KL finite."""


@dataclass(frozen=True)
class Position:
    """What an engine reported for one prompt position."""

    token: int
    """The token that actually comes next in the text."""
    logprobs: Mapping[int, float]
    """Token id -> natural-log probability: the engine's top-K plus `token`."""

    @property
    def token_logprob(self) -> float:
        return self.logprobs[self.token]


def perplexity(total_nll: float, tokens: int) -> float:
    """exp of the mean negative log-likelihood of the actual next tokens."""
    return math.exp(total_nll / tokens)


def kl_top_k_rest(reference: Position, variant: Position) -> float:
    """KL(reference || variant) in nats on the reference's reported tokens plus a rest bucket."""
    support = [token for token in reference.logprobs if token in variant.logprobs]
    p = _with_rest([math.exp(reference.logprobs[token]) for token in support])
    q = _with_rest([math.exp(variant.logprobs[token]) for token in support])
    divergence = sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True) if pi > _MIN_MASS)
    return max(divergence, 0.0)  # a rounding error below zero is still zero


def _with_rest(probabilities: Sequence[float]) -> list[float]:
    """The buckets' probabilities plus the rest, floored and renormalised to sum to 1."""
    rest = max(1.0 - math.fsum(probabilities), 0.0)
    buckets = [max(value, _MIN_MASS) for value in (*probabilities, rest)]
    total = math.fsum(buckets)
    return [value / total for value in buckets]


@dataclass
class Totals:
    """Running sums over every scored position of both engines."""

    tokens: int = 0
    reference_nll: float = 0.0
    variant_nll: float = 0.0
    kl: float = 0.0

    def add(self, reference: Sequence[Position], variant: Sequence[Position]) -> None:
        """Add one window's positions; both engines must have scored the same tokens."""
        for ref, var in zip(reference, variant, strict=True):
            if ref.token != var.token:
                raise ValueError(f"the engines scored different tokens ({ref.token} vs {var.token})")
            self.tokens += 1
            self.reference_nll -= ref.token_logprob
            self.variant_nll -= var.token_logprob
            self.kl += kl_top_k_rest(ref, var)

    @property
    def reference_perplexity(self) -> float:
        return perplexity(self.reference_nll, self.tokens)

    @property
    def variant_perplexity(self) -> float:
        return perplexity(self.variant_nll, self.tokens)

    @property
    def mean_kl(self) -> float:
        return self.kl / self.tokens
