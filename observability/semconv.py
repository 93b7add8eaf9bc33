"""Span names and attribute keys, defined once.

Where the OpenTelemetry semantic conventions have a key (GenAI, HTTP, server, error) it is used
as the spec spells it; everything thrifty-specific lives under `thrifty.`. Durations are in
seconds and money in US dollars, like the Prometheus metrics. The gateway writes these keys,
`observability.records` reads them back: nothing else spells them out.
"""

from __future__ import annotations

__all__ = [
    "ATTEMPT",
    "ERROR_TYPE",
    "GEN_AI_OPERATION_NAME",
    "GEN_AI_PROVIDER_NAME",
    "GEN_AI_REQUEST_MAX_TOKENS",
    "GEN_AI_REQUEST_MODEL",
    "GEN_AI_USAGE_INPUT_TOKENS",
    "GEN_AI_USAGE_OUTPUT_TOKENS",
    "HTTP_REQUEST_METHOD",
    "HTTP_RESPONSE_STATUS_CODE",
    "HTTP_ROUTE",
    "SERVER_ADDRESS",
    "SERVER_PORT",
    "THRIFTY_ACCELERATOR",
    "THRIFTY_ATTEMPTS",
    "THRIFTY_COST_USD",
    "THRIFTY_DURATION_S",
    "THRIFTY_INSTANCE",
    "THRIFTY_POOL",
    "THRIFTY_PRICE_USD_PER_HOUR",
    "THRIFTY_QUANTIZATION",
    "THRIFTY_QUEUE_WAIT_S",
    "THRIFTY_RETRIES",
    "THRIFTY_STREAM",
    "THRIFTY_TPOT_S",
    "THRIFTY_TTFT_S",
    "span_name",
]

# GenAI semantic conventions (https://opentelemetry.io/docs/specs/semconv/gen-ai/gen-ai-spans/).
GEN_AI_OPERATION_NAME = "gen_ai.operation.name"
"""`chat` or `text_completion`."""
GEN_AI_PROVIDER_NAME = "gen_ai.provider.name"
"""The engine behind the pool: `vllm`, or `openai` for an external OpenAI-compatible server."""
GEN_AI_REQUEST_MODEL = "gen_ai.request.model"
GEN_AI_REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
GEN_AI_USAGE_INPUT_TOKENS = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"

# HTTP, server and error conventions.
HTTP_REQUEST_METHOD = "http.request.method"
HTTP_ROUTE = "http.route"
HTTP_RESPONSE_STATUS_CODE = "http.response.status_code"
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
ERROR_TYPE = "error.type"

# thrifty's own.
THRIFTY_POOL = "thrifty.pool"
THRIFTY_INSTANCE = "thrifty.instance"
THRIFTY_ACCELERATOR = "thrifty.accelerator"
THRIFTY_QUANTIZATION = "thrifty.quantization"
"""The variant: `bf16`, `fp8`, `int8-w8a8`, ... (the engine's quantization, or its dtype when unquantized)."""
THRIFTY_PRICE_USD_PER_HOUR = "thrifty.price_usd_per_hour"
THRIFTY_STREAM = "thrifty.stream"
THRIFTY_TTFT_S = "thrifty.ttft_s"
"""Arrival at the gateway to the first token relayed (streams only)."""
THRIFTY_TPOT_S = "thrifty.tpot_s"
"""(last token - first token) / (output tokens - 1), vLLM's definition (streams with 2+ tokens)."""
THRIFTY_DURATION_S = "thrifty.duration_s"
"""Arrival to the last byte, measured on the gateway's monotonic clock."""
THRIFTY_QUEUE_WAIT_S = "thrifty.queue_wait_s"
"""Arrival to the first dispatch to an instance: time spent in the gateway before any engine sees it."""
THRIFTY_ATTEMPTS = "thrifty.attempts"
THRIFTY_RETRIES = "thrifty.retries"
THRIFTY_COST_USD = "thrifty.cost_usd"
"""Instance cost attributed to this request (or attempt): see `observability.cost`."""

ATTEMPT = "upstream"
"""Name prefix of the child span of each attempt on an instance."""


def span_name(operation: str, model: str) -> str:
    """The GenAI convention for a request span: `{operation} {model}`."""
    return f"{operation} {model}"
