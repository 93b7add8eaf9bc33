"""The instance guard: nothing an instance starts outlives the gateway, however the gateway ends."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import psutil

from tests.support import wait_for

GATEWAY_STAND_IN = """
import os, subprocess, sys, time
guard = subprocess.Popen(
    [sys.executable, "-m", "runtimes.guard", "--parent", str(os.getpid()), "--grace", "1", "--", *sys.argv[1:]],
    start_new_session=True,
)
print(guard.pid, flush=True)
time.sleep(300)
"""


def gone(process: psutil.Process) -> bool:
    try:
        return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def start_guarded(*command: str) -> tuple[subprocess.Popen[str], list[psutil.Process]]:
    """A stand-in gateway running `command` under the guard; returns it and the guard's whole tree."""
    parent = subprocess.Popen([sys.executable, "-c", GATEWAY_STAND_IN, *command], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    guard = psutil.Process(int(parent.stdout.readline()))
    wait_for(lambda: len(guard.children(recursive=True)) >= 2, 10, "the instance and its worker")
    return parent, [guard, *guard.children(recursive=True)]


def test_killing_the_gateway_takes_down_the_instance_and_its_workers() -> None:
    parent, tree = start_guarded("sh", "-c", "sleep 300 & sleep 300")
    parent.kill()  # SIGKILL: the gateway gets no chance to clean up
    parent.wait(10)
    wait_for(lambda: all(gone(p) for p in tree), 15, "every guarded process to exit")


def test_stop_escalates_to_sigkill_after_the_grace_period() -> None:
    parent, tree = start_guarded("sh", "-c", "trap '' TERM; sleep 300 & sleep 300")
    started = time.monotonic()
    tree[0].send_signal(signal.SIGTERM)
    wait_for(lambda: all(gone(p) for p in tree), 15, "SIGTERM-ignoring processes to be killed")
    assert time.monotonic() - started >= 0.9  # they were given the grace period first
    parent.kill()
    parent.wait(10)


def test_guard_exits_with_the_instance_and_cleans_up_its_workers() -> None:
    parent, tree = start_guarded("sh", "-c", "sleep 300 & sleep 0.5; exit 3")
    wait_for(lambda: all(gone(p) for p in tree), 15, "the guard to follow its instance out")
    parent.kill()
    parent.wait(10)
