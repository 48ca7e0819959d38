"""Servers the tests start for themselves (Redis on a free port, gunicorn) and polling."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from scripts.run_stack import RedisProcess, free_port

__all__ = ["Gunicorn", "RedisProcess", "clean_env", "free_port", "wait_until"]

ROOT = Path(__file__).resolve().parent.parent


def wait_until(predicate: Callable[[], object], timeout: float, what: str, every: float = 0.05):
    """Polls `predicate` until it returns something truthy; fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


class Gunicorn:
    """The API served by gunicorn over real HTTP, with the environment the tests run with."""

    def __init__(self, env: dict[str, str], workers: int = 2, threads: int = 8) -> None:
        self.port = free_port()
        self.env = env
        self.workers = workers
        self.threads = threads
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Gunicorn:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "--no-control-socket",
                "-b",
                f"127.0.0.1:{self.port}",
                "-w",
                str(self.workers),
                "-k",
                "gthread",
                "--threads",
                str(self.threads),
                "--backlog",
                "2048",
                "web:create_app()",
            ],
            cwd=ROOT,
            env=self.env,
        )
        wait_until(self._healthy, 30, "gunicorn to answer /health", every=0.1)
        return self

    def _healthy(self) -> bool:
        if self.process and self.process.poll() is not None:
            raise AssertionError("gunicorn exited")
        try:
            return httpx.get(f"{self.url}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()


def clean_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env.update(extra)
    return env
