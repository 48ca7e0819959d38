"""Redis stalls, restarts and refused connections: no process dies, each carries on by itself
when the server is back, and the answers while it is away are quick 503s."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time
from pathlib import Path

from redis import Redis
from rq import Queue
from rq.serializers import JSONSerializer

from jobs.queues import JsonJob
from jobs.scheduler import SettlementScheduler, periodic_jobs
from tests.servers import ROOT, RedisProcess, clean_env, wait_until
from web.kicker import SettlementKicker

RQ = str(Path(sys.executable).parent / "rq")


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


def wait_for_file(path: str) -> str:
    """A job that runs until the test creates `path`."""
    deadline = time.monotonic() + 60
    while not Path(path).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(path)
        time.sleep(0.05)
    return "done"


def test_a_worker_carries_on_after_its_redis_restarted_under_a_job(tmp_path):
    """The job ends while Redis is away: recording its end fails, which RQ's loop answered by
    quitting; the worker now waits the outage out and takes the next job from the new Redis."""
    redis = RedisProcess(tmp_path / "redis").start()
    queue_name = "resilience"
    argv = [RQ, "worker", "-w", "jobs.worker.SettlementWorker"]
    argv += ["--serializer", "rq.serializers.JSONSerializer", "--job-class", "jobs.queues.JsonJob"]
    argv += ["--url", redis.url, queue_name]
    worker = LoggedProcess(argv, clean_env({"REDIS_URL": redis.url}), tmp_path / "log")
    release = tmp_path / "release"

    def enqueued(server: RedisProcess) -> JsonJob:
        queue = Queue(
            queue_name,
            connection=Redis(port=server.port),
            serializer=JSONSerializer,
            job_class=JsonJob,
        )
        return queue.enqueue(wait_for_file, str(release))

    def status(job: JsonJob) -> str:
        return worker.running() and job.get_status(refresh=True)

    try:
        first = enqueued(redis)
        wait_until(lambda: status(first) == "started", 30, "the first job to start", every=0.1)
        redis.stop()
        release.touch()  # the job ends while Redis is away
        wait_until(lambda: worker.says("outage began"), 30, "the outage logged", every=0.1)
        redis = restarted_empty(redis)
        second = enqueued(redis)
        wait_until(lambda: status(second) == "finished", 30, "the next job done", every=0.1)
        assert worker.says("outage ended")
        assert worker.output.count("outage began") == 1, worker.output
    finally:
        worker.stop()
        redis.stop()


def test_the_settlement_kicker_kicks_again_once_redis_answers(tmp_path, settings, caplog):
    """A kick while the queues' Redis refuses was dropped (left to the periodic sweep); it is
    kept now, and enqueued once Redis is back."""
    redis = RedisProcess(tmp_path / "redis")  # its port, no server on it yet
    kicker = SettlementKicker(dataclasses.replace(settings, redis_url=redis.url))
    kicker.kick(7)
    queue = Queue(settings.queue_name, connection=Redis(port=redis.port))
    refused = lambda: any(r.name == "web.kicker" for r in caplog.records)  # noqa: E731
    wait_until(refused, 10, "the kicker's first try, refused")
    try:
        redis.start()
        drains = wait_until(lambda: queue.job_ids, 30, "the drain job", every=0.1)
        assert [job_id.split("-")[:2] for job_id in drains] == [["drain", "7"]]
    finally:
        redis.stop()
