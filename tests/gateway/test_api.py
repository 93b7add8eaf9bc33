"""The gateway over real HTTP against stub backends, driven by the official openai SDK."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import openai
import pytest

from gateway.bench.stub_backend import StubOptions, StubServer, start_stub
from gateway.config import parse_config
from gateway.service import Gateway
from runtimes.fleet import Fleet
from runtimes.instance import InstanceState
from tests.support import free_port, running_gateway, static_config, wait_for_async

MESSAGES = [{"role": "user", "content": "say something"}]


def client(url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=30)


async def test_chat_and_completions_with_the_openai_sdk(stub: StubServer) -> None:
    async with running_gateway(static_config({"a": [stub.url]})) as url:
        sdk = client(url)
        chat = await sdk.chat.completions.create(model="stub", messages=MESSAGES, max_tokens=4)  # type: ignore[arg-type]
        assert chat.choices[0].message.content == "tok tok tok tok"
        assert chat.usage is not None and chat.usage.completion_tokens == 4

        completion = await sdk.completions.create(model="stub", prompt="def f():", max_tokens=3)
        assert completion.choices[0].text == "tok tok tok"
        assert completion.usage is not None and completion.usage.completion_tokens == 3

        models = await sdk.models.list()
        assert [m.id for m in models.data] == ["stub"]


async def test_stream_hides_usage_unless_asked(stub: StubServer) -> None:
    async with running_gateway(static_config({"a": [stub.url]})) as url:
        sdk = client(url)
        stream = await sdk.chat.completions.create(model="stub", messages=MESSAGES, max_tokens=3, stream=True)  # type: ignore[arg-type]
        chunks = [chunk async for chunk in stream]
        assert "".join(c.choices[0].delta.content or "" for c in chunks) == "tok tok tok"
        assert all(c.usage is None for c in chunks)
        # The upstream was still asked for usage, so the gateway can account for the tokens.
        assert json.loads(stub.state.last_body or b"{}")["stream_options"] == {"include_usage": True}

        stream = await sdk.completions.create(
            model="stub", prompt="x", max_tokens=2, stream=True, stream_options={"include_usage": True}
        )
        chunks = [chunk async for chunk in stream]
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 2
        assert "".join(c.choices[0].text for c in chunks if c.choices) == "tok tok"


async def test_non_streaming_body_is_forwarded_byte_for_byte(stub: StubServer) -> None:
    body = b'{"model": "stub",  "prompt": "x", "max_tokens": 2, "unknown_extension": {"kept": [1, 2]}}'
    async with running_gateway(static_config({"a": [stub.url]})) as url, aiohttp.ClientSession() as http:
        async with http.post(url + "/v1/completions", data=body) as response:
            assert response.status == 200
    assert stub.state.last_body == body


async def test_retries_on_another_pool_when_an_instance_fails() -> None:
    async with (
        await start_stub(StubOptions(fail_status=500)) as broken,
        await start_stub(StubOptions()) as healthy,
    ):
        config = static_config({"broken": [broken.url], "healthy": [healthy.url]})
        async with running_gateway(config) as url:
            sdk = client(url)
            for _ in range(10):
                chat = await sdk.chat.completions.create(model="stub", messages=MESSAGES, max_tokens=2)  # type: ignore[arg-type]
                assert chat.choices[0].message.content == "tok tok"
                stream = await sdk.completions.create(model="stub", prompt="x", max_tokens=2, stream=True)
                assert "".join([c.choices[0].text async for c in stream]) == "tok tok"
        assert healthy.state.success_total == 20
        assert broken.state.requests_total >= 1


async def test_upstream_failure_everywhere_is_a_502_envelope() -> None:
    async with await start_stub(StubOptions(fail_status=503)) as broken:
        async with running_gateway(static_config({"a": [broken.url]})) as url:
            with pytest.raises(openai.APIStatusError) as caught:
                await client(url).chat.completions.create(model="stub", messages=MESSAGES)  # type: ignore[arg-type]
    assert caught.value.status_code == 502
    assert caught.value.body["type"] == "upstream_error"  # type: ignore[index]


async def test_upstream_client_errors_pass_through(stub: StubServer) -> None:
    config = parse_config(
        f"""
        models: [{{name: renamed}}]
        pools:
          - {{name: a, model: renamed, engine: {{kind: openai, upstream_model: nope}}, provider: static,
              urls: ["{stub.url}"], accelerator: cpu-2c}}
        gateway: {{listen: "127.0.0.1:{free_port()}"}}
        """
    )
    async with running_gateway(config) as url:
        with pytest.raises(openai.NotFoundError):  # the stub knows no model `nope`
            await client(url).completions.create(model="renamed", prompt="x", max_tokens=1)
    assert json.loads(stub.state.last_body or b"{}")["model"] == "nope"


async def test_failure_mid_stream_ends_with_an_error_frame_and_done() -> None:
    async with await start_stub(StubOptions(die_after_chunks=2)) as dying:
        async with running_gateway(static_config({"a": [dying.url]})) as url, aiohttp.ClientSession() as http:
            body = {"model": "stub", "prompt": "x", "max_tokens": 8, "stream": True}
            async with http.post(url + "/v1/completions", json=body) as response:
                assert response.status == 200
                events = [e for e in (await response.read()).split(b"\n\n") if e]
    assert len(events) == 4
    error = json.loads(events[2].removeprefix(b"data: "))
    assert error["error"]["type"] == "upstream_error"
    assert events[3] == b"data: [DONE]"


async def test_client_disconnect_cancels_the_upstream_request() -> None:
    async with await start_stub(StubOptions(itl_ms=50, max_tokens=400)) as slow:
        config = static_config({"a": [slow.url]})
        fleet = Fleet(config.pools, config.providers)
        async with running_gateway(config, fleet) as url:
            instance = fleet.instances("a")[0]
            for stream in (True, False):
                async with aiohttp.ClientSession() as http:
                    body = {"model": "stub", "prompt": "x", "max_tokens": 400, "stream": stream}
                    request = asyncio.create_task(http.post(url + "/v1/completions", json=body))
                    await wait_for_async(lambda: slow.state.running == 1, 5, "the upstream to start")
                    if stream:
                        response = await request
                        await response.content.readuntil(b"\n\n")
                    request.cancel()
                # Closing the client's connection ends the upstream request well before its 20 s.
                await wait_for_async(lambda: slow.state.running == 0, 5, "the upstream request to be cancelled")
                await wait_for_async(lambda: instance.in_flight == 0, 5, "the gateway to release the instance")


async def test_no_ready_instance_is_a_503_with_retry_after(stub: StubServer) -> None:
    config = static_config({"a": [stub.url]})
    fleet = Fleet(config.pools, config.providers)
    async with running_gateway(config, fleet) as url, aiohttp.ClientSession() as http:
        fleet.instances("a")[0].state = InstanceState.STARTING
        async with http.post(url + "/v1/completions", json={"model": "stub", "prompt": "x"}) as response:
            assert response.status == 503
            assert response.headers["Retry-After"] == "5"
            assert (await response.json())["error"]["code"] == "no_capacity"
        async with http.get(url + "/ready") as response:
            assert response.status == 503
        fleet.instances("a")[0].state = InstanceState.READY
        async with http.get(url + "/ready") as response:
            assert response.status == 200


BAD_REQUESTS = [
    # (path, body, status, param)
    ("/v1/chat/completions", b"{not json", 400, None),
    ("/v1/chat/completions", b"[]", 400, None),
    ("/v1/chat/completions", b'{"messages": [{"role": "user", "content": "x"}]}', 400, None),
    ("/v1/chat/completions", b'{"model": "stub"}', 400, None),
    ("/v1/chat/completions", b'{"model": "stub", "messages": []}', 400, "messages"),
    ("/v1/chat/completions", b'{"model": "stub", "messages": [{"content": "x"}]}', 400, "messages[0]"),
    ("/v1/chat/completions", b'{"model": "stub", "messages": [{"role": 1}]}', 400, "messages[0].role"),
    ("/v1/chat/completions", b'{"model": "stub", "messages": [{"role": "user"}], "stream": "yes"}', 400, "stream"),
    ("/v1/completions", b'{"model": "stub", "prompt": "x", "max_tokens": 0}', 400, "max_tokens"),
    ("/v1/completions", b'{"model": "stub", "prompt": 5}', 400, "prompt"),
    ("/v1/completions", b'{"model": "other", "prompt": "x"}', 404, "model"),
    ("/v1/completions", b'{"model": "stub", "prompt": "' + b"x" * 20000 + b'"}', 413, None),
    ("/v1/embeddings", b'{"model": "stub", "input": "x"}', 404, None),
]


async def test_bad_requests_get_the_right_status_and_envelope(stub: StubServer) -> None:
    async with (
        running_gateway(static_config({"a": [stub.url]}, max_body_bytes=16384)) as url,
        aiohttp.ClientSession() as http,
    ):
        for path, body, status, param in BAD_REQUESTS:
            async with http.post(url + path, data=body) as response:
                envelope = await response.json()
            assert response.status == status, (path, body[:60], envelope)
            assert set(envelope["error"]) == {"message", "type", "param", "code"}, envelope
            assert envelope["error"]["message"]
            if param is not None:
                assert envelope["error"]["param"] == param, envelope
        async with http.get(url + "/v1/chat/completions") as response:
            assert response.status == 405
            assert "error" in await response.json()
    assert stub.state.requests_total == 0  # nothing bad reached the upstream


def test_gateway_routes_only_configured_models(stub: StubServer) -> None:
    gateway = Gateway(static_config({"a": [stub.url]}))
    assert gateway.router.serves("stub") and not gateway.router.serves("other")
