"""Runs one instance command so that nothing it starts can outlive the gateway.

    python -m runtimes.guard --parent PID --grace 15 -- CMD...

The guard leads its own session (the provider starts it with `start_new_session`), so the
instance and every worker it forks share the guard's process group. The kernel sends the guard
SIGTERM when the gateway dies, even by SIGKILL (PR_SET_PDEATHSIG), and it becomes the reaper of
orphaned descendants (PR_SET_CHILD_SUBREAPER). On SIGTERM, on the parent's death or when the
instance exits, it terminates the whole group: SIGTERM, then SIGKILL after the grace period.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time

__all__ = ["main"]

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != args.parent:  # the gateway died before the line above took effect
        return 1
    libc.prctl(_PR_SET_CHILD_SUBREAPER, 1)

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, lambda *_: stop.set())

    child = subprocess.Popen(args.command)
    while child.poll() is None and not stop.wait(0.2):
        pass
    code = child.poll()
    _terminate_group(args.grace)
    return code if code is not None else 128 + signal.SIGTERM


def _terminate_group(grace_s: float) -> None:
    """SIGTERM to everything in our group but us; SIGKILL whatever is left after the grace period."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    os.killpg(os.getpgrp(), signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and _reap_children():
        time.sleep(0.1)
    if _reap_children():
        for pid in _group_members():
            _kill(pid, signal.SIGKILL)
        while _reap_children():
            time.sleep(0.05)


def _reap_children() -> bool:
    """Reap exited children; True while any child is still alive."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return False
        if pid == 0:
            return True


def _group_members() -> list[int]:
    pgid, me = os.getpgrp(), os.getpid()
    members = []
    for pid in (int(entry) for entry in os.listdir("/proc") if entry.isdigit()):  # noqa: PTH208
        with contextlib.suppress(ProcessLookupError):
            if pid != me and os.getpgid(pid) == pgid:
                members.append(pid)
    return members


def _kill(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m runtimes.guard")
    parser.add_argument("--parent", type=int, required=True, help="pid of the gateway")
    parser.add_argument("--grace", type=float, default=15.0, help="seconds between SIGTERM and SIGKILL")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if args.command[:1] == ["--"]:
        args.command = args.command[1:]
    if not args.command:
        parser.error("no command given")
    return args


if __name__ == "__main__":
    sys.exit(main())
