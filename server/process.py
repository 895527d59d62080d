"""`lensframe serve` in a subprocess, for the browser tests and benchmarks/bench_serving.py: a free
port, its log in a file, waiting until it answers HTTP 200, and stopping it however the caller exits."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path


class ServerDidNotStart(RuntimeError):
    """The server exited, or did not answer in time; the message ends with its log."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


class ServeProcess:
    def __init__(self, proc: subprocess.Popen, url: str, log_path: Path):
        self.proc, self.url, self.log_path = proc, url, log_path

    def log(self, last: int = 8000) -> str:
        return self.log_path.read_text(errors="replace")[-last:]

    def wait_until_answering(self, timeout_s: float, poll_s: float = 0.3) -> None:
        deadline = time.monotonic() + timeout_s
        while not answers(self.url):
            if self.proc.poll() is not None:
                raise ServerDidNotStart(f"`lensframe serve` exited with {self.proc.returncode} before answering "
                                        f"on {self.url}:\n{self.log()}")
            if time.monotonic() > deadline:
                raise ServerDidNotStart(f"`lensframe serve` did not answer HTTP 200 on {self.url} in "
                                        f"{timeout_s:.0f}s:\n{self.log()}")
            time.sleep(poll_s)


@contextmanager
def serve_process(spec: Path, *args: str, log_path: Path, threads: int = 2, cwd: Path | None = None,
                  wait_s: float | None = None):
    """`lensframe serve SPEC --port P ARGS` with OMP_NUM_THREADS=threads; yields a ServeProcess, once
    it answers HTTP 200 when wait_s is given (else at once: start several, then wait on each)."""
    port = free_port()
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "lensframe", "serve", str(spec), "--port", str(port), *args]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
    server = ServeProcess(proc, f"http://127.0.0.1:{port}/", Path(log_path))
    try:
        if wait_s is not None:
            server.wait_until_answering(wait_s)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(15)
