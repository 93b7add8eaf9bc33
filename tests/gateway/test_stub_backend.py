"""The stub backend, driven by the official openai SDK and by raw HTTP where the SDK would hide things."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from gateway.bench.stub_backend import StubOptions, StubServer, start_stub

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Say hello to the test suite"}]
"""27 characters: 7 prompt tokens."""

StubFactory = Callable[..., Awaitable[StubServer]]


@pytest.fixture
async def make_stub() -> AsyncIterator[StubFactory]:
    """Starts stubs with the given options; closes them all at the end of the test."""
    started: list[StubServer] = []

    async def make(**options: object) -> StubServer:
        stub = await start_stub(StubOptions(**options))  # type: ignore[arg-type]
        started.append(stub)
        return stub

    yield make
    for stub in started:
        await stub.close()


def sdk(stub: StubServer) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=stub.url + "/v1", api_key="unused", max_retries=0)


async def test_chat_non_stream(make_stub: StubFactory) -> None:
    stub = await make_stub()
    chat = await sdk(stub).chat.completions.create(model="stub", messages=MESSAGES, max_tokens=3)
    assert chat.object == "chat.completion"
    assert chat.model == "stub"
    assert chat.choices[0].message.content == "tok tok tok"
    assert chat.choices[0].finish_reason == "length"
    assert chat.usage is not None
    assert (chat.usage.prompt_tokens, chat.usage.completion_tokens, chat.usage.total_tokens) == (7, 3, 10)


async def test_completion_non_stream_is_capped_by_the_option(make_stub: StubFactory) -> None:
    stub = await make_stub(max_tokens=4)
    completion = await sdk(stub).completions.create(model="stub", prompt="12345678", max_tokens=100)
    assert completion.object == "text_completion"
    assert completion.choices[0].text == "tok tok tok tok"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (2, 4)
    unasked = await sdk(stub).chat.completions.create(model="stub", messages=MESSAGES)
    assert unasked.usage is not None and unasked.usage.completion_tokens == 4


async def test_max_completion_tokens_wins(make_stub: StubFactory) -> None:
    stub = await make_stub()
    chat = await sdk(stub).chat.completions.create(
        model="stub",
        messages=MESSAGES,
        max_tokens=9,
        max_completion_tokens=2,
    )
    assert chat.choices[0].message.content == "tok tok"


async def test_chat_stream_without_usage(make_stub: StubFactory) -> None:
    stub = await make_stub()
    stream = await sdk(stub).chat.completions.create(model="stub", messages=MESSAGES, max_tokens=3, stream=True)
    chunks = [chunk async for chunk in stream]
    assert all(chunk.object == "chat.completion.chunk" and chunk.usage is None for chunk in chunks)
    assert "".join(chunk.choices[0].delta.content or "" for chunk in chunks) == "tok tok tok"
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [chunk.choices[0].finish_reason for chunk in chunks] == [None, None, "length"]


async def test_chat_stream_with_usage_ends_with_a_usage_chunk(make_stub: StubFactory) -> None:
    stub = await make_stub()
    stream = await sdk(stub).chat.completions.create(
        model="stub",
        messages=MESSAGES,
        max_tokens=2,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    assert len(chunks) == 3
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert (chunks[-1].usage.completion_tokens, chunks[-1].usage.total_tokens) == (2, 9)


async def test_completion_stream_with_usage(make_stub: StubFactory) -> None:
    stub = await make_stub()
    stream = await sdk(stub).completions.create(
        model="stub", prompt="x", max_tokens=3, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    assert "".join(chunk.choices[0].text for chunk in chunks if chunk.choices) == "tok tok tok"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 3


async def test_raw_stream_framing_ends_with_done(make_stub: StubFactory) -> None:
    stub = await make_stub()
    body = {"model": "stub", "prompt": "x", "max_tokens": 2, "stream": True}
    async with aiohttp.ClientSession() as http, http.post(stub.url + "/v1/completions", json=body) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        text = (await response.read()).decode()
    events = text.split("\n\n")
    assert events[-2:] == ["data: [DONE]", ""]
    assert [json.loads(event.removeprefix("data: "))["choices"][0]["text"] for event in events[:-2]] == ["tok", " tok"]


async def test_fail_status_sends_the_openai_error_envelope(make_stub: StubFactory) -> None:
    stub = await make_stub(fail_status=503)
    with pytest.raises(openai.APIStatusError) as caught:
        await sdk(stub).chat.completions.create(model="stub", messages=MESSAGES)
    assert caught.value.status_code == 503
    assert caught.value.body == {
        "message": "stub: injected failure",
        "type": "ServiceUnavailableError",
        "param": None,
        "code": 503,
    }
    assert stub.state.requests_total == 1


async def test_die_after_chunks_cuts_the_stream_without_done(make_stub: StubFactory) -> None:
    stub = await make_stub(die_after_chunks=2)
    stream = await sdk(stub).chat.completions.create(model="stub", messages=MESSAGES, max_tokens=8, stream=True)
    received: list[str] = []
    with pytest.raises(openai.APIConnectionError):
        async for chunk in stream:
            received.append(chunk.choices[0].delta.content or "")
    assert received == ["tok", " tok"]


async def test_die_after_chunks_is_an_incomplete_chunked_body(make_stub: StubFactory) -> None:
    stub = await make_stub(die_after_chunks=1)
    body = {"model": "stub", "prompt": "x", "max_tokens": 4, "stream": True}
    async with aiohttp.ClientSession() as http, http.post(stub.url + "/v1/completions", json=body) as response:
        assert response.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()
    non_stream = await sdk(stub).completions.create(model="stub", prompt="x", max_tokens=4)
    assert non_stream.choices[0].text == "tok tok tok tok"


async def test_echo_headers_and_last_request(make_stub: StubFactory) -> None:
    stub = await make_stub(echo_headers=True)
    body = b'{"model": "stub",   "prompt": "x", "max_tokens": 1, "extension": {"kept": [1, 2]}}'
    headers = {"content-type": "application/json", "x-request-id": "abc-123"}
    async with aiohttp.ClientSession() as http:
        async with http.post(stub.url + "/v1/completions", data=body, headers=headers) as response:
            echoed = (await response.json())["received_headers"]
        async with http.get(stub.url + "/_last_request") as response:
            last = await response.read()
    assert echoed["x-request-id"] == "abc-123"
    assert echoed["content-length"] == str(len(body))
    assert last == body == stub.state.last_body
    assert stub.state.last_headers["x-request-id"] == "abc-123"


async def test_headers_are_not_echoed_by_default(make_stub: StubFactory) -> None:
    stub = await make_stub()
    async with aiohttp.ClientSession() as http:
        async with http.get(stub.url + "/_last_request") as response:
            assert response.status == 404
        body = {"model": "stub", "prompt": "x"}
        async with http.post(stub.url + "/v1/completions", json=body) as response:
            assert "received_headers" not in await response.json()


async def test_models_health_and_metrics(make_stub: StubFactory) -> None:
    stub = await make_stub(model="tiny")
    models = await sdk(stub).models.list()
    assert [model.id for model in models.data] == ["tiny"]
    await sdk(stub).completions.create(model="tiny", prompt="abcd", max_tokens=5)
    async with aiohttp.ClientSession() as http:
        async with http.get(stub.url + "/health") as response:
            assert response.status == 200
        async with http.get(stub.url + "/metrics") as response:
            metrics = await response.text()
    assert 'vllm:num_requests_running{model_name="tiny"} 0.0' in metrics
    assert 'vllm:generation_tokens_total{model_name="tiny"} 5.0' in metrics
    assert 'vllm:prompt_tokens_total{model_name="tiny"} 1.0' in metrics


@pytest.mark.parametrize(
    ("path", "body", "status", "param"),
    [
        ("/v1/completions", b'{"model": "other", "prompt": "x"}', 404, "model"),
        ("/v1/completions", b'{"prompt": "x", "max_tokens": "many"}', 400, "max_tokens"),
        ("/v1/completions", b"{not json", 400, None),
        ("/v1/completions", b'{"model": "stub"}', 400, "prompt"),
        ("/v1/chat/completions", b'{"model": "stub", "messages": []}', 400, "messages"),
        ("/v1/nope", b"{}", 404, None),
    ],
)
async def test_bad_requests_get_error_envelopes(
    make_stub: StubFactory, path: str, body: bytes, status: int, param: str | None
) -> None:
    stub = await make_stub()
    async with aiohttp.ClientSession() as http, http.post(stub.url + path, data=body) as response:
        assert response.status == status
        error = (await response.json())["error"]
    assert error["code"] == status
    assert error["param"] == param
    assert set(error) == {"message", "type", "param", "code"}


async def test_ttft_and_itl_delay_the_stream(make_stub: StubFactory) -> None:
    stub = await make_stub(ttft_ms=40, itl_ms=20)
    started = time.perf_counter()
    stream = await sdk(stub).completions.create(model="stub", prompt="x", max_tokens=3, stream=True)
    arrivals = [time.perf_counter() - started async for _ in stream]
    assert arrivals[0] >= 0.040
    assert arrivals[-1] >= 0.080
    assert stub.state.running == 0


async def test_pipelined_requests_are_answered_in_order(make_stub: StubFactory) -> None:
    stub = await make_stub(ttft_ms=20)
    body = b'{"prompt": "x", "max_tokens": 1}'
    post = b"POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
    get = b"GET /v1/models HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    reader, writer = await asyncio.open_connection("127.0.0.1", stub.port)
    writer.write(post + get)
    raw = await asyncio.wait_for(reader.read(), timeout=5)
    writer.close()
    first, second = raw.index(b'"text_completion"'), raw.index(b'"object":"list"')
    assert raw.count(b"HTTP/1.1 200 OK") == 2
    assert first < second


async def test_close_cuts_open_streams(make_stub: StubFactory) -> None:
    stub = await make_stub(itl_ms=1000)
    stream = await sdk(stub).completions.create(model="stub", prompt="x", max_tokens=5, stream=True)
    first = await stream.__anext__()
    assert first.choices[0].text == "tok"
    assert stub.state.running == 1
    await asyncio.wait_for(stub.close(), timeout=5)
    with pytest.raises(openai.APIConnectionError):
        await stream.__anext__()


@pytest.mark.timeout(30)
def test_runs_as_a_process() -> None:
    argv = [sys.executable, "-m", "gateway.bench.stub_backend", "--port", "0", "--model", "m", "--itl-ms", "1"]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) as process:
        try:
            assert process.stdout is not None
            line = process.stdout.readline()  # the process prints it once it accepts connections
            assert line.startswith("stub listening on http://127.0.0.1:")
            url = line.split()[-1]
            with urllib.request.urlopen(url + "/v1/models", timeout=5) as response:
                assert json.load(response)["data"][0]["id"] == "m"
        finally:
            process.terminate()
            assert process.wait(timeout=10) == 0


def test_invalid_flags_are_rejected() -> None:
    argv = [sys.executable, "-m", "gateway.bench.stub_backend", "--fail-status", "200"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 2
    assert "fail_status" in result.stderr
