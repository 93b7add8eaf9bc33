"""The narrow view of OpenAI requests and responses that routing and accounting need.

Only these fields are decoded; the request body itself is forwarded as the client sent it.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from msgspec import Meta

__all__ = [
    "ChatRequestView",
    "CompletionRequestView",
    "ModelCard",
    "ModelList",
    "RequestView",
    "StreamChunkView",
    "Usage",
    "UsageView",
    "decode_request",
]

PositiveInt = Annotated[int, Meta(ge=1)]


class StreamOptions(msgspec.Struct):
    include_usage: bool | None = None


class ChatMessageView(msgspec.Struct):
    role: str
    content: str | list[Any] | None = None


class _RequestView(msgspec.Struct, kw_only=True):
    model: Annotated[str, Meta(min_length=1)]
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    max_tokens: PositiveInt | None = None
    n: PositiveInt | None = 1

    @property
    def streaming(self) -> bool:
        return bool(self.stream)

    @property
    def client_wants_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    @property
    def token_limit(self) -> int | None:
        """The most output tokens the client allows (`gen_ai.request.max_tokens`)."""
        return self.max_tokens


class ChatRequestView(_RequestView):
    messages: Annotated[list[ChatMessageView], Meta(min_length=1)]
    max_completion_tokens: PositiveInt | None = None

    @property
    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class CompletionRequestView(_RequestView):
    prompt: str | list[Any]


RequestView = ChatRequestView | CompletionRequestView

_decoders: dict[type[RequestView], msgspec.json.Decoder[Any]] = {
    ChatRequestView: msgspec.json.Decoder(ChatRequestView),
    CompletionRequestView: msgspec.json.Decoder(CompletionRequestView),
}


def decode_request(body: bytes, view: type[RequestView]) -> RequestView:
    """Decode the routing view; raises msgspec errors that the error mapper turns into 400s."""
    decoded: RequestView = _decoders[view].decode(body)
    return decoded


class Usage(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class UsageView(msgspec.Struct):
    """The only part of a non-streaming response the gateway reads."""

    usage: Usage | None = None


class StreamChunkView(msgspec.Struct):
    """The part of a stream chunk the gateway reads: is it the usage-only chunk?"""

    choices: list[msgspec.Raw] = []
    usage: Usage | None = None


class ModelCard(msgspec.Struct):
    id: str
    object: str = "model"
    created: int = 0
    owned_by: str = "thrifty"


class ModelList(msgspec.Struct):
    data: list[ModelCard]
    object: str = "list"
