"""A real Chroma server (`chroma run`) for the server-mode and team-mode tests, on a free 127.0.0.1 port.

`chroma_server` (session) starts one in a temporary folder and yields a `ChromaProc` (its `port`); the
process is stopped at the end, also when a test fails. Tests keep apart by collection name. It is skipped,
saying why, when the venv has no `chroma` CLI. It does not start a PostgreSQL server (tests/pg_server.py).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

CHROMA = Path(sys.executable).parent / "chroma"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ChromaProc:
    """One `chroma run` process: `port`, `stop()`."""

    proc: subprocess.Popen
    port: int

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_chroma(folder: Path, timeout: float = 60) -> ChromaProc:
    """`chroma run` on a free port with its data in `folder`, once its heartbeat answers."""
    port = free_port()
    proc = subprocess.Popen([str(CHROMA), "run", "--host", "127.0.0.1", "--port", str(port), "--path", str(folder)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = ChromaProc(proc, port)
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/heartbeat", timeout=1)
            return server
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                server.stop()
                raise RuntimeError("chroma run did not start") from None
            time.sleep(0.2)


@pytest.fixture(scope="session")
def chroma_server() -> Iterator[ChromaProc]:
    """A Chroma server for the whole session (skipped where the venv has no chroma CLI)."""
    if not CHROMA.exists():
        pytest.skip("no chroma CLI in the venv")
    folder = Path(tempfile.mkdtemp(prefix="rag-chroma-"))
    try:
        server = start_chroma(folder)
    except RuntimeError as exc:
        shutil.rmtree(folder, ignore_errors=True)
        pytest.fail(str(exc))
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)
