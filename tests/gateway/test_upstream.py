"""The upstream client against scripted raw HTTP servers: framing, reuse, failures, timeouts, cancellation."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from gateway.upstream import UpstreamClient, UpstreamError

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Server:
    def __init__(self) -> None:
        self.connections = 0
        self.closed = 0
        self.url = ""


@contextlib.asynccontextmanager
async def serve(handler: Handler) -> AsyncIterator[Server]:
    state = Server()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state.connections += 1
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            state.closed += 1
            writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    state.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        yield state
    finally:
        server.close()


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head + await reader.readexactly(length)


def ok(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


def keep_alive(reply: Callable[[bytes], bytes]) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            request = await read_request(reader)
            writer.write(reply(request))
            await writer.drain()

    return handler


H = b"Content-Type: application/json\r\n"


async def test_content_length_and_reuse() -> None:
    async with serve(keep_alive(lambda r: ok(r.split(b"\r\n\r\n", 1)[1]))) as server:
        client = UpstreamClient(1.0)
        for i in range(5):
            response = await client.post(server.url, "/v1/x", b'{"i": %d}' % i, H, 5.0)
            assert response.status == 200
            assert await response.read() == b'{"i": %d}' % i
        assert server.connections == 1
        client.close()


async def test_request_head() -> None:
    seen: list[bytes] = []

    def reply(request: bytes) -> bytes:
        seen.append(request)
        return ok(b"{}")

    async with serve(keep_alive(reply)) as server:
        client = UpstreamClient(1.0)
        await (
            await client.post(server.url + "/prefix/", "/v1/x", b"abc", H + b"Authorization: Bearer k\r\n", 5.0)
        ).read()
        client.close()
    head, body = seen[0].split(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /prefix/v1/x HTTP/1.1"
    assert b"Host: " + server.url.removeprefix("http://").encode() in lines
    assert b"Content-Length: 3" in lines and b"Authorization: Bearer k" in lines
    assert body == b"abc"


async def test_chunked_body() -> None:
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n"
    async with serve(keep_alive(lambda r: chunked)) as server:
        client = UpstreamClient(1.0)
        for _ in range(3):
            assert await (await client.post(server.url, "/", b"", H, 5.0)).read() == b"abcdefg"
        assert server.connections == 1


async def test_body_until_close_and_connection_close() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it")
        await writer.drain()

    async with serve(handler) as server:
        client = UpstreamClient(1.0)
        for _ in range(3):
            assert await (await client.post(server.url, "/", b"", H, 5.0)).read() == b"all of it"
        assert server.connections == 3


async def test_server_closes_idle_connection_then_next_request_uses_a_new_one() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(ok(b"one"))
        await writer.drain()
        writer.close()  # keep-alive timeout of the server

    async with serve(handler) as server:
        client = UpstreamClient(1.0)
        assert await (await client.post(server.url, "/", b"", H, 5.0)).read() == b"one"
        await asyncio.sleep(0.05)
        assert not client._idle  # the closed connection left the pool
        assert await (await client.post(server.url, "/", b"", H, 5.0)).read() == b"one"
        assert server.connections == 2


async def test_stale_connection_race_is_retried_once_on_a_new_connection() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(ok(b"fine"))
        await writer.drain()
        await read_request(reader)  # the next request arrives as the server gives up on the connection
        writer.transport.abort()

    async with serve(handler) as server:
        client = UpstreamClient(1.0)
        for _ in range(3):
            assert await (await client.post(server.url, "/", b"", H, 5.0)).read() == b"fine"
        assert server.connections == 3


async def test_fresh_connection_closed_without_answer_is_an_error() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.transport.abort()

    async with serve(handler) as server:
        client = UpstreamClient(1.0)
        with pytest.raises(UpstreamError, match="closed"):
            await client.post(server.url, "/", b"", H, 5.0)
        assert server.connections == 1


async def test_reset_mid_body_is_an_error() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.transport.abort()

    async with serve(handler) as server:
        client = UpstreamClient(1.0)
        response = await client.post(server.url, "/", b"", H, 5.0)
        with pytest.raises(UpstreamError):
            await response.read()


async def test_invalid_response_is_an_error() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"SPDY/9 what\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(1)

    async with serve(handler) as server:
        with pytest.raises(UpstreamError, match="invalid"):
            await UpstreamClient(1.0).post(server.url, "/", b"", H, 5.0)


async def test_connect_refused_is_an_error() -> None:
    async with serve(keep_alive(lambda r: ok(b""))) as server:
        url = server.url
    with pytest.raises(UpstreamError, match="connect"):
        await UpstreamClient(1.0).post(url, "/", b"", H, 5.0)


async def test_total_timeout() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n12345")
        await asyncio.sleep(5)

    async with serve(handler) as server:
        client = UpstreamClient(1.0)
        started = asyncio.get_running_loop().time()
        response = await client.post(server.url, "/", b"", H, 0.2)
        with pytest.raises(UpstreamError, match="within"):
            await response.read()
        assert asyncio.get_running_loop().time() - started < 1


async def test_per_read_timeout_only_fires_on_silence() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for i in range(8):  # 0.4 s of events, 0.05 s apart, with a 0.15 s per-read timeout
            event = b"data: %d\n\n" % i
            writer.write(b"%x\r\n%s\r\n" % (len(event), event))
            await writer.drain()
            await asyncio.sleep(0.05)
        await asyncio.sleep(5)

    async with serve(handler) as server:
        response = await UpstreamClient(1.0).post(server.url, "/", b"", H, 0.15, per_read=True)
        events = [await response.read_event() for _ in range(8)]
        assert events == [b"data: %d\n\n" % i for i in range(8)]
        with pytest.raises(UpstreamError, match="within"):
            await response.read_event()


async def test_events_split_across_packets_and_release_after_done() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for piece in (b'data: {"a"', b": 1}\n", b"\ndata: [DONE]\n\n"):
                writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                await writer.drain()
                await asyncio.sleep(0.01)
            writer.write(b"0\r\n\r\n")  # the end of the message comes after [DONE]
            await writer.drain()

    async with serve(handler) as server:
        client = UpstreamClient(1.0)
        for _ in range(3):
            response = await client.post(server.url, "/", b"", H, 5.0, per_read=True)
            assert await response.read_event() == b'data: {"a": 1}\n\n'
            assert await response.read_event() == b"data: [DONE]\n\n"
            response.release()
            await asyncio.sleep(0.05)
        assert server.connections == 1


async def test_truncated_stream_returns_the_rest_then_nothing() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\n\r\ndata: 1\n\ndata: 2")
        await writer.drain()

    async with serve(handler) as server:
        response = await UpstreamClient(1.0).post(server.url, "/", b"", H, 5.0, per_read=True)
        assert await response.read_event() == b"data: 1\n\n"
        assert await response.read_event() == b"data: 2"
        assert await response.read_event() == b""


async def test_cancelled_exchange_closes_the_connection() -> None:
    gone = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await writer.drain()
        assert await reader.read() == b""
        gone.set()

    async with serve(handler) as server:
        client = UpstreamClient(1.0)
        response = await client.post(server.url, "/", b"", H, 5.0, per_read=True)
        reading = asyncio.create_task(response.read_event())
        await asyncio.sleep(0.05)
        reading.cancel()
        await asyncio.wait_for(gone.wait(), 2)


async def test_large_bodies() -> None:
    big = bytes(range(256)) * 20000  # 5 MB

    async with serve(keep_alive(lambda r: ok(r.split(b"\r\n\r\n", 1)[1] + big))) as server:
        client = UpstreamClient(1.0)
        request = b"x" * 1_000_000
        body = await (await client.post(server.url, "/", request, H, 10.0)).read()
        assert body == request + big
        assert await (await client.post(server.url, "/", b"", H, 10.0)).read() == big
        assert server.connections == 1


async def test_error_status_with_body() -> None:
    reply = b'HTTP/1.1 404 Not Found\r\nContent-Length: 11\r\n\r\n{"error":1}'
    async with serve(keep_alive(lambda r: reply)) as server:
        client = UpstreamClient(1.0)
        response = await client.post(server.url, "/", b"", H, 5.0)
        assert response.status == 404 and await response.read() == b'{"error":1}'
        response = await client.post(server.url, "/", b"", H, 5.0)
        assert response.status == 404
        assert server.connections == 1


async def test_concurrent_requests_use_separate_connections() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            request = await read_request(reader)
            await asyncio.sleep(0.05)
            writer.write(ok(request.split(b"\r\n\r\n", 1)[1]))
            await writer.drain()

    async with serve(handler) as server:
        client = UpstreamClient(1.0)

        async def one(i: int) -> bytes:
            return await (await client.post(server.url, "/", b"%d" % i, H, 5.0)).read()

        assert await asyncio.gather(*(one(i) for i in range(20))) == [b"%d" % i for i in range(20)]
        assert server.connections == 20
        assert await asyncio.gather(*(one(i) for i in range(20))) == [b"%d" % i for i in range(20)]
        assert server.connections == 20
