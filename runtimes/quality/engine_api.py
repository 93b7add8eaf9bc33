"""A running engine's OpenAI-compatible API, as the evaluation uses it: tokenise and score prompts.

Scoring is `POST /v1/completions` with token ids as the prompt, `max_tokens: 1` (vLLM generates
at least one token) and vLLM's `prompt_logprobs: K` extension. Each choice then carries
`prompt_logprobs`: one entry per prompt token, the first `null` (nothing precedes it), the others
`{"<token id>": {"logprob": float, "rank": int, "decoded_token": str}, ...}` holding the K most
likely tokens plus the prompt's actual token. Requests with prompt logprobs bypass vLLM's prefix
cache, so every position is computed. K may not exceed the server's `--max-logprobs` (default 20).
"""

from __future__ import annotations

import logging
from typing import Any, Self

import aiohttp
import msgspec

from runtimes.quality.divergence import Position

__all__ = ["EngineClient", "EngineError"]

log = logging.getLogger(__name__)

_TIMEOUT = aiohttp.ClientTimeout(total=600, sock_connect=10)
_JSON = {"Content-Type": "application/json"}


class EngineError(RuntimeError):
    """The engine refused or failed a request, or answered something unexpected."""


class _Model(msgspec.Struct):
    id: str
    max_model_len: int


class _Models(msgspec.Struct):
    data: list[_Model]


class _Tokenized(msgspec.Struct):
    tokens: list[int]


class _Logprob(msgspec.Struct):
    logprob: float


class _Choice(msgspec.Struct):
    prompt_logprobs: list[dict[int, _Logprob] | None] | None = None


class _Completion(msgspec.Struct):
    choices: list[_Choice]


class _ErrorBody(msgspec.Struct):
    message: str


class _ErrorEnvelope(msgspec.Struct):
    error: _ErrorBody


class EngineClient:
    """One engine's base URL (e.g. `http://127.0.0.1:8000`) and the model it serves."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.model = ""
        self.max_model_len = 0
        """Longest sequence (prompt and output) the engine accepts."""
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        self._session = aiohttp.ClientSession(timeout=_TIMEOUT)
        models = await self._get("/v1/models", _Models)
        if not models.data:
            raise EngineError(f"{self.url} serves no model")
        self.model, self.max_model_len = models.data[0].id, models.data[0].max_model_len
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def tokenize(self, text: str) -> list[int]:
        """The token ids the engine makes of `text`, as it would for a completion prompt."""
        tokenized: _Tokenized = await self._post("/tokenize", {"model": self.model, "prompt": text}, _Tokenized)
        return tokenized.tokens

    async def score(self, tokens: list[int], top_k: int) -> list[Position]:
        """What the engine predicted for each token after the first, given the tokens before it."""
        body = {"model": self.model, "prompt": tokens, "max_tokens": 1, "prompt_logprobs": top_k}
        completion: _Completion = await self._post("/v1/completions", body, _Completion)
        reported = completion.choices[0].prompt_logprobs if completion.choices else None
        if reported is None or len(reported) != len(tokens):
            raise EngineError(f"{self.url} did not return prompt_logprobs for each of the {len(tokens)} tokens")
        return [_position(self.url, token, entry) for token, entry in zip(tokens[1:], reported[1:], strict=True)]

    async def _get(self, path: str, into: type[Any]) -> Any:
        assert self._session is not None, "use the client as an async context manager"
        try:
            async with self._session.get(self.url + path) as response:
                return _decode(self.url + path, response.status, await response.read(), into)
        except aiohttp.ClientError as exc:
            raise EngineError(f"{self.url}{path}: {exc}") from exc

    async def _post(self, path: str, body: dict[str, object], into: type[Any]) -> Any:
        assert self._session is not None, "use the client as an async context manager"
        log.debug("POST %s%s", self.url, path)  # never the body: it is the evaluation text
        try:
            async with self._session.post(self.url + path, data=msgspec.json.encode(body), headers=_JSON) as response:
                return _decode(self.url + path, response.status, await response.read(), into)
        except aiohttp.ClientError as exc:
            raise EngineError(f"{self.url}{path}: {exc}") from exc


def _decode(where: str, status: int, payload: bytes, into: type[Any]) -> Any:
    if status != 200:
        raise EngineError(f"{where}: HTTP {status}: {_error_message(payload)}")
    try:
        return msgspec.json.decode(payload, type=into)
    except msgspec.DecodeError as exc:
        raise EngineError(f"{where}: unexpected answer: {exc}") from exc


def _error_message(payload: bytes) -> str:
    try:
        return msgspec.json.decode(payload, type=_ErrorEnvelope).error.message
    except msgspec.DecodeError:
        return payload[:200].decode(errors="replace")


def _position(url: str, token: int, entry: dict[int, _Logprob] | None) -> Position:
    if entry is None or token not in entry:
        raise EngineError(f"{url}: prompt_logprobs lack the logprob of prompt token {token}")
    return Position(token=token, logprobs={token_id: value.logprob for token_id, value in entry.items()})
