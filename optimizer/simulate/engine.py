"""One instance's serving engine as a discrete-event model of vLLM-style continuous batching.

Capacity within an SLO comes from queueing, batching and KV-cache pressure together, which no
closed formula captures; this model plays them out. Each engine step runs every decoding
sequence one token and fills the rest of the step's token budget with prompt chunks (chunked
prefill), oldest first; new sequences are admitted first come, first served while the batch has
a free slot (`max_num_seqs`) and the KV cache has room for its prompt. The cache is then taken as
vLLM takes it: a decoding sequence's grows by one token a step, and when the next step has no room
the sequence admitted last is preempted (vLLM's recompute mode): it frees its cache, goes back to
the head of the queue, and on readmission prefills its prompt plus the tokens it had generated
before it goes on decoding. A step costs

    overhead + max(bytes / bandwidth, flops / compute)
    bytes = weights + kv * (context read by every token of the step)
    flops = 2 * params * tokens + 4 * layers * heads * head_dim * (positions attended)

with bandwidth and compute the accelerator's peaks times the pool's true efficiencies (the
simulator's hidden truth). The per-token coefficients come from `ModelShape`.

Speed: the batch changes only at admissions, prefill ends and finishes. Between them every step
is a decode-only step whose time grows linearly with the context (a max of two lines), so n steps
sum in closed form and the engine jumps over them; only steps that carry prompt chunks run one
by one. The engine is lazy: `advance(t)` plays it up to time t, and a request submitted at its
arrival joins at the first step boundary after it.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

__all__ = ["Completion", "EngineSpec", "InstanceEngine", "serve_alone"]


@dataclass(frozen=True)
class EngineSpec:
    """The true cost model and limits of one pool's engine (all in bytes, flops and seconds)."""

    weight_bytes: float
    kv_bytes_per_token: float
    flops_per_token: float
    """Matmul flops of one token: 2 x parameters."""
    attention_flops: float
    """Attention flops of one token per position of context it attends to."""
    bandwidth: float
    """Bytes per second a step really reads at."""
    compute: float
    """Flops per second the matmuls really reach."""
    step_overhead_s: float
    kv_capacity_tokens: int
    max_num_seqs: int
    max_num_batched_tokens: int

    def step_s(self, tokens: int, context: float, attended: float) -> float:
        """One step computing `tokens`, reading `context` cached positions, attending `attended` in all."""
        memory = (self.weight_bytes + self.kv_bytes_per_token * context) / self.bandwidth
        compute = (self.flops_per_token * tokens + self.attention_flops * attended) / self.compute
        return self.step_overhead_s + max(memory, compute)

    def fits(self, prompt: int, output: int) -> bool:
        """Whether one sequence of this size fits the KV cache at all."""
        return prompt + output <= self.kv_capacity_tokens


class Completion(NamedTuple):
    """A finished request: when its first token and its last came, and its processor-sharing seconds."""

    rid: int
    first_token: float
    end: float
    shared_s: float
    """Integral of 1 / (requests in flight on the instance) over its time there: its share of the instance."""


class _Seq:
    __slots__ = ("admitted", "arrival", "done", "first_token", "output", "prompt", "rid", "share_start")

    def __init__(self, rid: int, arrival: float, prompt: int, output: int) -> None:
        self.rid = rid
        self.arrival = arrival
        self.prompt = prompt
        """Tokens to prefill: the prompt, plus the tokens generated before a preemption."""
        self.output = output
        """Tokens still to generate, the one its prefill ends with included."""
        self.done = 0
        """Prompt tokens prefilled so far."""
        self.first_token = math.nan
        self.share_start = 0.0
        self.admitted = 0
        """Order of its last admission: a preemption takes the sequence admitted last."""


class InstanceEngine:
    """The engine of one instance; `finished` collects completions until the owner takes them."""

    def __init__(self, spec: EngineSpec, clock: float = 0.0) -> None:
        self.spec = spec
        self.clock = clock
        """End of the last step (or the start, before any): a request joins at the first boundary after it."""
        self.steps = 0
        self.finished: list[Completion] = []
        self._waiting: deque[_Seq] = deque()
        self._prefilling: list[_Seq] = []
        self._decoding: list[tuple[int, int, _Seq]] = []
        """Heap of (step of the last token, rid, sequence)."""
        self._context_base = 0
        """Sum over decoding sequences of (prompt - step of their first token): context at step k is this + n k,
        which is also the KV cache they hold while step k runs."""
        self._kv_prefilling = 0
        """KV cache held by sequences still prefilling: their whole prompts, taken at admission."""
        self._admissions = 0
        self.preemptions = 0
        """Sequences preempted so far (each recomputes its context when readmitted)."""
        self._share = 0.0
        """Processor-sharing virtual time: integral of 1 / (requests present) while any is."""
        self._share_at = clock
        self._present = 0
        """Requests arrived (by `_share_at`) and not finished."""
        self._arrivals: deque[_Seq] = deque()
        """Submitted requests whose arrival the share clock has not passed yet."""

    @property
    def in_flight(self) -> int:
        return len(self._waiting) + len(self._prefilling) + len(self._decoding)

    def submit(self, rid: int, arrival: float, prompt: int, output: int) -> None:
        """Queue a request that arrived at `arrival` (not before the last `advance`)."""
        if not self.spec.fits(prompt, output):
            raise ValueError(f"{prompt} + {output} tokens exceed the KV cache ({self.spec.kv_capacity_tokens})")
        if arrival < self.clock:
            raise ValueError(f"a request at {arrival} s came after the engine reached {self.clock} s")
        seq = _Seq(rid, arrival, prompt, max(1, output))
        self._waiting.append(seq)
        self._arrivals.append(seq)

    def advance(self, until: float) -> None:
        """Play the engine up to `until`: every step that ends by then runs, completions go to `finished`."""
        while True:
            if not self._decoding and not self._prefilling:  # idle: the next step starts with the next arrival
                if not self._waiting or self._waiting[0].arrival > until:
                    return
                self.clock = max(self.clock, self._waiting[0].arrival)
            self._make_room()
            planned = self._plan()
            if planned is not None:
                chunks, admitted, step_s = planned
                if self.clock + step_s > until:
                    return
                self._run_step(chunks, admitted, step_s)
                continue
            count = self._decode_stretch(until)
            if count == 0:
                return

    # -- steps with prompt chunks, one at a time ---------------------------------------------------

    def _plan(self) -> tuple[list[tuple[_Seq, int]], int, float] | None:
        """The next step if it carries prompt work: (chunks, sequences admitted from the queue, its time)."""
        spec = self.spec
        decoding = len(self._decoding)
        budget = spec.max_num_batched_tokens - decoding
        chunks: list[tuple[_Seq, int]] = []
        for seq in self._prefilling:
            if budget <= 0:
                break
            take = min(seq.prompt - seq.done, budget)
            chunks.append((seq, take))
            budget -= take
        admitted = 0
        running = decoding + len(self._prefilling)
        kv = self._kv_next()
        for seq in self._waiting:
            if budget <= 0 or seq.arrival > self.clock or running >= spec.max_num_seqs:
                break
            if kv + seq.prompt > spec.kv_capacity_tokens:
                break
            take = min(seq.prompt, budget)
            chunks.append((seq, take))
            budget -= take
            admitted += 1
            running += 1
            kv += seq.prompt
        if not chunks:
            return None
        context = float(self._context_base + decoding * (self.steps + 1))
        attended = context
        tokens = decoding
        for seq, take in chunks:
            tokens += take
            context += seq.done + take
            attended += take * (seq.done + (take + 1) / 2)
        return chunks, admitted, spec.step_s(tokens, context, attended)

    def _run_step(self, chunks: list[tuple[_Seq, int]], admitted: int, step_s: float) -> None:
        for _ in range(admitted):
            seq = self._waiting.popleft()
            self._kv_prefilling += seq.prompt
            self._admissions += 1
            seq.admitted = self._admissions
            self._prefilling.append(seq)
        self.clock += step_s
        self.steps += 1
        self._account(self.clock)
        self._finish_due()
        for seq, take in chunks:
            seq.done += take
            if seq.done < seq.prompt:
                continue
            self._kv_prefilling -= seq.prompt
            if math.isnan(seq.first_token):  # a preempted sequence's first token came before
                seq.first_token = self.clock
            if seq.output <= 1:
                self._complete(seq)
                continue
            heapq.heappush(self._decoding, (self.steps + seq.output - 1, seq.rid, seq))
            self._context_base += seq.prompt - self.steps
        self._prefilling = [seq for seq in self._prefilling if seq.done < seq.prompt]

    # -- decode-only stretches, many steps at once ---------------------------------------------------

    def _decode_stretch(self, until: float) -> int:
        """Run decode-only steps up to the next finish, the next admissible arrival or `until`; how many ran."""
        spec = self.spec
        n = len(self._decoding)
        first = self.steps + 1
        # Up to the next finish, and no further than the last step whose context the cache holds.
        limit = min(self._decoding[0][0] - self.steps, (spec.kv_capacity_tokens - self._context_base) // n - self.steps)
        lines = self._lines(n)
        if self._waiting:
            head = self._waiting[0]
            room = n < spec.max_num_seqs and self._kv_next() + head.prompt <= spec.kv_capacity_tokens
            if room and head.arrival > self.clock:  # it joins at the first boundary at or after its arrival
                limit = min(limit, 1 + _steps_within(lines, first, head.arrival - self.clock, limit, strict=True))
        count = _steps_within(lines, first, until - self.clock, limit, strict=False)
        if count == 0:
            return 0
        self.clock += _stretch_s(lines, first, count)
        self.steps += count
        self._account(self.clock)
        self._finish_due()
        return count

    def _lines(self, n: int) -> tuple[float, float, float, float, float]:
        """Step time of decode step k as overhead + max(m0 + m1 k, c0 + c1 k)."""
        spec = self.spec
        base = self._context_base
        return (
            spec.step_overhead_s,
            (spec.weight_bytes + spec.kv_bytes_per_token * base) / spec.bandwidth,
            spec.kv_bytes_per_token * n / spec.bandwidth,
            (spec.flops_per_token * n + spec.attention_flops * base) / spec.compute,
            spec.attention_flops * n / spec.compute,
        )

    # -- the KV cache ----------------------------------------------------------------------------------

    def _kv_next(self) -> int:
        """KV cache the running sequences hold while the next step runs."""
        return self._context_base + len(self._decoding) * (self.steps + 1) + self._kv_prefilling

    def _make_room(self) -> None:
        """Preempt the sequences admitted last until the next step's cache fits (vLLM's recompute mode)."""
        while self._kv_next() > self.spec.kv_capacity_tokens:
            running = [seq for _, _, seq in self._decoding] + self._prefilling
            victim = max(running, key=lambda seq: seq.admitted)
            if victim.done < victim.prompt:
                self._prefilling.remove(victim)
                self._kv_prefilling -= victim.prompt
            else:
                entry = next(entry for entry in self._decoding if entry[2] is victim)
                self._decoding.remove(entry)
                heapq.heapify(self._decoding)
                last = entry[0]
                first = last - victim.output + 1
                self._context_base -= victim.prompt - first
                generated = self.steps - first + 1
                victim.prompt += generated
                victim.output -= generated
            victim.done = 0
            self._waiting.appendleft(victim)
            self.preemptions += 1

    # -- bookkeeping ---------------------------------------------------------------------------------

    def _finish_due(self) -> None:
        while self._decoding and self._decoding[0][0] <= self.steps:
            last, _, seq = heapq.heappop(self._decoding)
            self._context_base -= seq.prompt - (last - seq.output + 1)
            self._complete(seq)

    def _complete(self, seq: _Seq) -> None:
        """Hand a sequence back (the share clock was brought to this boundary before anything left)."""
        self._present -= 1
        self.finished.append(Completion(seq.rid, seq.first_token, self.clock, self._share - seq.share_start))

    def _account(self, now: float) -> None:
        """Advance the processor-sharing clock to `now`, counting each request from its arrival."""
        while self._arrivals and self._arrivals[0].arrival <= now:
            seq = self._arrivals.popleft()
            self._integrate(seq.arrival)
            seq.share_start = self._share
            self._present += 1
        self._integrate(now)

    def _integrate(self, now: float) -> None:
        if now > self._share_at:
            if self._present:
                self._share += (now - self._share_at) / self._present
            self._share_at = now


def _stretch_s(lines: tuple[float, float, float, float, float], first: int, count: int) -> float:
    """Time of decode steps first .. first + count - 1."""
    overhead, m0, m1, c0, c1 = lines
    return overhead * count + _sum_max(m0, m1, c0, c1, first, first + count - 1)


def _sum_max(x0: float, x1: float, y0: float, y1: float, low: int, high: int) -> float:
    """Sum over k = low..high of max(x0 + x1 k, y0 + y1 k): two lines cross at most once."""
    if high < low:
        return 0.0
    x_wins_low = x0 + x1 * low >= y0 + y1 * low
    x_wins_high = x0 + x1 * high >= y0 + y1 * high
    if x_wins_low == x_wins_high:
        a, b = (x0, x1) if x_wins_low else (y0, y1)
        count = high - low + 1
        return a * count + b * (low + high) * count / 2
    cross = math.floor((y0 - x0) / (x1 - y1))
    cross = min(max(cross, low), high - 1)
    return _sum_max(x0, x1, y0, y1, low, cross) + _sum_max(x0, x1, y0, y1, cross + 1, high)


def _steps_within(
    lines: tuple[float, float, float, float, float], first: int, budget_s: float, limit: int, *, strict: bool
) -> int:
    """The most steps (at most `limit`) whose total time is within `budget_s` (below it when `strict`)."""
    if budget_s <= 0:
        return 0

    def inside(count: int) -> bool:
        total = _stretch_s(lines, first, count)
        return total < budget_s if strict else total <= budget_s

    if inside(limit):
        return limit
    overhead, m0, m1, c0, c1 = lines
    # Guess from the steeper bound's quadratic, then correct: the sum is increasing in the count.
    a0, a1 = (m0, m1) if m0 + m1 * first >= c0 + c1 * first else (c0, c1)
    step = overhead + a0 + a1 * first
    if a1 > 0:
        half = step - a1 / 2
        guess = int((-half + math.sqrt(half * half + 2 * a1 * budget_s)) / a1)
    else:
        guess = int(budget_s / step)
    low, high = 0, limit  # invariant: inside(low), not inside(high)
    guess = min(max(guess, 0), limit - 1)
    if inside(guess):
        if not inside(guess + 1):
            return guess
        low = guess + 1
    else:
        high = guess
    while high - low > 1:
        middle = (low + high) // 2
        if inside(middle):
            low = middle
        else:
            high = middle
    return low


def serve_alone(spec: EngineSpec, arrivals: Sequence[float], sizes: Sequence[tuple[int, int]]) -> list[Completion]:
    """Play requests (arrival times in order, (prompt, output) sizes) through one fresh instance to the end."""
    engine = InstanceEngine(spec)
    for rid, (time, (prompt, output)) in enumerate(zip(arrivals, sizes, strict=True)):
        engine.submit(rid, float(time), prompt, output)
    engine.advance(math.inf)
    return engine.finished
