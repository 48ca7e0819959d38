"""The processes a benchmark run starts and stops: Redis (when REDIS_URL is unset), gunicorn with
a chosen app, RQ workers and the scheduler. Loopback only; every process is stopped at the end."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx

from scripts.run_stack import RedisProcess, free_port, stop_process

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def wait_for(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout}s")


class Processes:
    """Owns every process it starts."""

    def __init__(self, env: dict[str, str], workdir: Path) -> None:
        self.env = env
        self.workdir = workdir
        self.redis: RedisProcess | None = None
        self.children: list[subprocess.Popen] = []

    def start_redis_if_needed(self) -> None:
        if not self.env.get("REDIS_URL"):
            self.redis = RedisProcess(self.workdir / "redis").start()
            self.env["REDIS_URL"] = self.redis.url

    def run(self, *argv: str) -> None:
        subprocess.run(argv, cwd=ROOT, env=self.env, check=True, stdout=subprocess.DEVNULL)

    def spawn(self, *argv: str, extra_env: dict[str, str] | None = None) -> subprocess.Popen:
        log = open(self.workdir / f"{Path(argv[0]).name}-{len(self.children)}.log", "ab")  # noqa: SIM115
        child = subprocess.Popen(
            argv, cwd=ROOT, env=self.env | (extra_env or {}), stdout=log, stderr=log
        )
        self.children.append(child)
        return child

    def gunicorn(self, target: str, workers: int, worker_class: str, threads: int) -> str:
        port = free_port()
        argv = [str(BIN / "gunicorn"), "--no-control-socket", "-b", f"127.0.0.1:{port}"]
        argv += ["-w", str(workers), "-k", worker_class, "--backlog", "4096"]
        if worker_class == "gthread":
            argv += ["--threads", str(threads)]
        elif worker_class == "gevent":
            argv += ["--worker-connections", "1000"]
        self.spawn(*argv, target)
        url = f"http://127.0.0.1:{port}"
        wait_for(f"{url}/health")
        return url

    def rq_workers(
        self,
        count: int,
        extra_env: dict[str, str] | None = None,
        worker_class: str = "rq.worker.SimpleWorker",
    ) -> None:
        for _ in range(count):
            self.spawn(
                str(BIN / "rq"), "worker", "-w", worker_class,
                "--serializer", "rq.serializers.JSONSerializer",
                "--job-class", "jobs.queues.JsonJob", "--url", self.env["REDIS_URL"],
                self.env["SETTLEMENT_QUEUE"], extra_env=extra_env,
            )  # fmt: skip

    def scheduler(self) -> None:
        self.spawn(sys.executable, "-m", "jobs.scheduler")

    def stop(self, child: subprocess.Popen) -> None:
        stop_process(child, 15)
        if child in self.children:
            self.children.remove(child)

    def stop_all_but_redis(self) -> None:
        for child in list(reversed(self.children)):
            self.stop(child)

    def stop_all(self) -> None:
        for child in list(reversed(self.children)):
            self.stop(child)
        if self.redis is not None:
            self.redis.stop()


def wrk_binary() -> str:
    found = shutil.which("wrk")
    if not found:
        raise SystemExit("wrk is needed: apt-get install wrk (or `make bench`, which installs it)")
    return found


def environment(workdir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("DATABASE_URL", f"sqlite:///{workdir / 'bench.db'}")
    env.update(
        {
            "APP_ENV": "development",
            "JWT_SECRET_KEY": os.urandom(32).hex(),
            "BCRYPT_ROUNDS": "4",
            "REDIS_KEY_PREFIX": f"bench{os.getpid()}",
            "SETTLEMENT_QUEUE": f"bench-{os.getpid()}",
            "PYTHONPATH": str(ROOT),
        }
    )
    env.setdefault("RATELIMIT_ENABLED", "true")
    return env
