"""Servers the tests start for themselves (Redis on a free port, gunicorn) and polling."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from scripts.run_stack import RedisClusterProcess, RedisProcess, free_port, stop_process

__all__ = [
    "Gunicorn",
    "RedisClusterProcess",
    "RedisProcess",
    "clean_env",
    "free_port",
    "procfile_command",
    "procfile_entries",
    "wait_until",
]

ROOT = Path(__file__).resolve().parent.parent
# localstripe 1.15 writes its store here, whatever TMPDIR says.
STORE = Path("/tmp") / "localstripe.pickle"


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


def procfile_entries() -> dict[str, str]:
    entries = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, command = line.partition(":")
            entries[name.strip()] = command.strip()
    return entries


def procfile_command(name: str) -> list[str]:
    """A Procfile line without shell variables (`python -m ...`), run by this interpreter: it
    reads its settings from the environment."""
    words = procfile_entries()[name].split()
    assert not any("$" in word for word in words), words
    return [sys.executable if word == "python" else word for word in words]


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
        stop_process(self.process, 15)


def clean_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env.update(extra)
    return env


class LocalStripe:
    """localstripe, a stateful Stripe emulator, on a port of its own. It keeps its state in one
    file shared by every instance on the machine, so a restart (without `from_scratch`) brings
    its objects back; webhook registrations are not kept and are registered again."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.process: subprocess.Popen | None = None
        self.webhooks: dict[str, dict[str, object]] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, from_scratch: bool = False) -> LocalStripe:
        command = [sys.executable, "-m", "localstripe", "--port", str(self.port)]
        if from_scratch:
            command.append("--from-scratch")
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_until(self._answers, 20, "localstripe to start", every=0.1)
        for webhook_id, config in self.webhooks.items():
            self._register(webhook_id, config)
        return self

    def forget_store(self) -> None:
        """localstripe 1.15 keeps its objects in a file at a fixed path, read again when it
        restarts (which the restart tests rely on); the session's end removes it."""
        STORE.unlink(missing_ok=True)

    def _answers(self) -> bool:
        if self.process and self.process.poll() is not None:
            raise AssertionError("localstripe exited")
        try:
            return httpx.get(f"{self.url}/v1/balance", timeout=1).status_code < 500
        except httpx.HTTPError:
            return False

    def register_webhook(self, webhook_id: str, url: str, secret: str, events: list[str]) -> None:
        self.webhooks[webhook_id] = {"url": url, "secret": secret, "events": events}
        self._register(webhook_id, self.webhooks[webhook_id])

    def _register(self, webhook_id: str, config: dict[str, object]) -> None:
        response = httpx.post(f"{self.url}/_config/webhooks/{webhook_id}", json=config, timeout=5)
        response.raise_for_status()

    def stop(self) -> None:
        stop_process(self.process)
