"""Redis stalls, restarts and refused connections: no process dies, each carries on by itself
when the server is back, and the answers while it is away are quick 503s."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from redis import Redis

from jobs.scheduler import SettlementScheduler, periodic_jobs
from tests.servers import ROOT, RedisProcess, clean_env, wait_until


class LoggedProcess:
    """A process of the project started by a test, its output kept in a file."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        with open(log, "wb") as out:
            self.process = subprocess.Popen(
                argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
            )

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def running(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"exited with {self.process.returncode}:\n{self.output[-3000:]}")
        return True

    def says(self, text: str) -> bool:
        return self.running() and text in self.output

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def restarted_empty(redis: RedisProcess) -> RedisProcess:
    """A new redis-server on the port of `redis`, which is stopped, without its data."""
    redis.stop()
    restarted = RedisProcess(redis.data_dir)
    restarted.port = redis.port
    return restarted.start()


def test_the_scheduler_carries_on_after_its_redis_refused_connections(tmp_path, settings):
    redis = RedisProcess(tmp_path / "redis").start()
    env = clean_env({"REDIS_URL": redis.url, "SCHEDULER_POLL_SECONDS": "0.2"})
    scheduler = LoggedProcess([sys.executable, "-m", "jobs.scheduler"], env, tmp_path / "log")
    expected = len(periodic_jobs(settings))

    def scheduled(server: RedisProcess) -> bool:
        with Redis(port=server.port) as client:
            return scheduler.running() and client.zcard(SettlementScheduler.scheduled_jobs_key) == (
                expected
            )

    try:
        wait_until(lambda: scheduled(redis), 30, "the schedule in Redis", every=0.1)
        redis.stop()  # connections refused from now on
        wait_until(lambda: scheduler.says("outage began"), 30, "the outage logged", every=0.1)
        wait_until(lambda: scheduler.output.count("ConnectionError") >= 1, 10, "a refusal")
        redis = restarted_empty(redis)
        wait_until(lambda: scheduled(redis), 30, "the schedule in the new Redis", every=0.1)
        wait_until(lambda: scheduler.says("outage ended"), 30, "the end logged", every=0.1)
        assert scheduler.output.count("outage began") == 1, scheduler.output
        assert scheduler.output.count("outage ended") == 1, scheduler.output
    finally:
        scheduler.stop()
        redis.stop()
