"""Benchmark tools: a fast fake OpenAI backend and the gateway overhead benchmark."""

__all__: list[str] = []
