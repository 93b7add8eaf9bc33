"""The optimizer inside the gateway: plan and decisions over HTTP, the OTLP receiver, policy hot reload."""

from __future__ import annotations

from pathlib import Path

import httpx
import msgspec
import openai
from google.protobuf.json_format import MessageToJson
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from gateway.bench.stub_backend import StubOptions, start_stub
from gateway.config import load_config
from gateway.service import Gateway
from tests.support import running_gateway, static_config, wait_for_async

OPTIMIZER = "{interval_s: 0.3, window_s: 10, learning: {min_requests: 3}}"


async def _stream(client: openai.AsyncOpenAI, n: int) -> None:
    for _ in range(n):
        stream = await client.completions.create(model="stub", prompt="hi", max_tokens=8, stream=True)
        async for _chunk in stream:
            pass


async def test_plan_and_decisions_move_traffic_to_the_cheaper_pool() -> None:
    async with (
        await start_stub(StubOptions(ttft_ms=5, itl_ms=2)) as a,
        await start_stub(StubOptions(ttft_ms=5, itl_ms=2)) as b,
    ):
        config = static_config(
            {"dear": [a.url], "cheap": [b.url]},
            pool_settings={"dear": {"price_per_hour": 2.0}, "cheap": {"price_per_hour": 0.5}},
            optimizer=OPTIMIZER,
        )
        async with running_gateway(config) as url, httpx.AsyncClient(base_url=url) as http:
            client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)

            async def cheap_wins() -> bool:
                await _stream(client, 4)
                plan = (await http.get("/admin/plan")).json()["plan"]
                return plan is not None and plan["weights"]["cheap"] > 0.9

            await wait_for_async(cheap_wins, 60, "the weight to move to the cheaper pool")
            plan = (await http.get("/admin/plan")).json()
            assert plan["enabled"] and plan["plan"]["targets"] == {"dear": 1, "cheap": 1}
            assert set(plan["plan"]["class_weights"]) >= {"in<=1024/out<=256", "in<=1024"}
            decisions = (await http.get("/admin/decisions", params={"limit": 100})).json()
            assert decisions[0]["at"] >= decisions[-1]["at"]  # newest first
            moves = [c for d in decisions for c in d["changes"] if c["pool"] == "cheap" and c["what"] == "weight"]
            assert moves and moves[0]["after"] - moves[-1]["before"] > 0.4  # newest first; learning may wobble
            assert all(c["reason"] for c in moves)
            latest = decisions[0]
            assert {p["pool"] for p in latest["pools"]} == {"dear", "cheap"}
            assert all(p["capacity"]["in<=1024/out<=256"] > 0 for p in latest["pools"])
            assert latest["demand"][0]["rate"] > 0
            metrics = (await http.get("/metrics")).text
            assert 'thrifty_optimizer_changes_total{pool="cheap",what="weight"}' in metrics
            assert 'thrifty_pool_weight{pool="cheap"}' in metrics


def _export(records: int) -> tuple[bytes, bytes]:
    """A real SDK trace export of request spans as the gateway writes them, as protobuf and as JSON."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")

    for i in range(records):
        attributes: dict[str, str | int | float | bool] = {
            "gen_ai.operation.name": "text_completion",
            "gen_ai.request.model": "stub",
            "thrifty.pool": "remote",
            "thrifty.instance": f"remote-{i % 2}",
            "http.response.status_code": 200,
            "gen_ai.usage.input_tokens": 20,
            "gen_ai.usage.output_tokens": 30,
            "thrifty.stream": True,
            "thrifty.ttft_s": 0.05,
            "thrifty.tpot_s": 0.01,
        }
        with tracer.start_as_current_span("request", kind=SpanKind.SERVER, attributes=attributes):
            pass
    spans: list[ReadableSpan] = list(exporter.get_finished_spans())
    message = encode_spans(spans)
    return message.SerializeToString(), MessageToJson(message).encode()


async def test_otlp_receiver_feeds_the_optimizer_and_rejects_garbage() -> None:
    async with await start_stub(StubOptions()) as stub:
        config = static_config({"remote": [stub.url]}, optimizer=OPTIMIZER)
        async with running_gateway(config) as url, httpx.AsyncClient(base_url=url) as http:
            protobuf, json = _export(6)
            answer = await http.post("/v1/traces", content=protobuf, headers={"content-type": "application/x-protobuf"})
            assert answer.status_code == 200
            answer = await http.post("/v1/traces", content=json, headers={"content-type": "application/json"})
            assert answer.status_code == 200 and answer.json() == {}

            async def demand_seen() -> bool:
                decisions = (await http.get("/admin/decisions")).json()
                return bool(decisions and decisions[0]["demand"])

            await wait_for_async(demand_seen, 20, "the exported requests to reach the optimizer")
            latest = (await http.get("/admin/decisions")).json()[0]
            # The same six spans came twice (protobuf, then JSON): they count once.
            (demand,) = latest["demand"]
            assert demand["output_tokens"] == 30
            # Planned demand is the pace of the window's last quarter, at most 6 spans in 1/4 s: 48 if counted twice.
            assert 0 < demand["rate"] <= 24.0 + 1e-9

            garbage = {"content-type": "application/x-protobuf"}
            bad = await http.post("/v1/traces", content=b"\xffnot protobuf", headers=garbage)
            assert bad.status_code == 400
            assert bad.json()["error"]["code"] == "invalid_otlp"


def test_policy_hot_reload_applies_good_files_and_keeps_the_running_one_on_bad(tmp_path: Path) -> None:
    path = tmp_path / "thrifty.yaml"
    document = msgspec.yaml.encode(static_config({"p": ["http://127.0.0.1:9"]}, optimizer="{interval_s: 15}"))
    path.write_bytes(document)
    gateway = Gateway(load_config(path), config_path=path)
    assert gateway.watcher is not None
    assert not gateway.watcher.check()  # unchanged

    reloaded = document.replace(b"interval_s: 15.0", b"interval_s: 5.0").replace(
        b"ttft_p95_ms: 1000.0", b"ttft_p95_ms: 300.0"
    )
    path.write_bytes(reloaded)
    assert gateway.watcher.check()
    assert gateway.optimizer.setup.policy.interval_s == 5.0
    assert gateway.optimizer.setup.models["stub"].slo.ttft_p95_ms == 300.0
    assert gateway.optimizer.decisions[-1].outcome == "reloaded"

    path.write_bytes(document.replace(b"interval_s: 15.0", b"interval_s: -1"))
    assert not gateway.watcher.check()
    assert gateway.optimizer.setup.policy.interval_s == 5.0  # the running policy stays
    assert gateway.watcher.last_error is not None and "$.optimizer.interval_s" in gateway.watcher.last_error
