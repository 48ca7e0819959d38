"""Periodic jobs: registered under fixed ids, never doubled by restarts, run by real workers."""

from __future__ import annotations

import dataclasses
import json
import zlib

from rq.job import Job

from jobs.queues import JsonJob, rq_connection, settlement_queue
from jobs.scheduler import SettlementScheduler, periodic_jobs, register_periodic_jobs
from tests.helpers import run_workers


def scheduled_ids(scheduler: SettlementScheduler) -> list[str]:
    return sorted(job.id for job in scheduler.get_jobs())


def test_registration_is_idempotent_across_restarts(settings):
    expected = sorted(p.job_id for p in periodic_jobs(settings))
    first = SettlementScheduler(settings)
    register_periodic_jobs(first, settings)
    for _ in range(3):  # three restarts
        restarted = SettlementScheduler(settings)
        assert register_periodic_jobs(restarted, settings) == 0
    assert scheduled_ids(first) == expected


def test_a_changed_interval_replaces_the_schedule(settings):
    scheduler = SettlementScheduler(settings)
    register_periodic_jobs(scheduler, settings)
    slower = dataclasses.replace(
        settings, sweep_interval_seconds=settings.sweep_interval_seconds + 7
    )
    assert register_periodic_jobs(scheduler, slower) == 1
    sweep = JsonJob.fetch("periodic-sweep", connection=scheduler.connection)
    assert sweep.meta["interval"] == slower.sweep_interval_seconds
    assert len(scheduled_ids(scheduler)) == len(periodic_jobs(settings))
    register_periodic_jobs(scheduler, settings)  # back to the session's schedule


def test_schedule_comes_back_after_redis_lost_it(settings):
    scheduler = SettlementScheduler(settings)
    register_periodic_jobs(scheduler, settings)
    connection = rq_connection(settings.redis_url)
    connection.delete(scheduler.scheduled_jobs_key)
    scheduler.enqueue_jobs()  # one pass of the scheduler loop
    assert scheduled_ids(scheduler) == sorted(p.job_id for p in periodic_jobs(settings))


def test_due_periodic_jobs_run_on_a_worker_as_json(settings):
    scheduler = SettlementScheduler(settings)
    register_periodic_jobs(scheduler, settings)
    connection = rq_connection(settings.redis_url)
    for spec in periodic_jobs(settings):
        connection.zadd(scheduler.scheduled_jobs_key, {spec.job_id: 0})  # due now
    scheduler.enqueue_jobs()
    queue = settlement_queue(settings)
    assert set(queue.job_ids) >= {"periodic-sweep", "periodic-reconcile"}
    raw = zlib.decompress(connection.hget(Job.key_for("periodic-sweep"), "data"))
    assert json.loads(raw)[0] == "jobs.maintenance.sweep"  # JSON, not pickle
    run_workers(settings)
    sweep = JsonJob.fetch("periodic-sweep", connection=connection)
    assert sweep.get_status() == "finished"
    assert set(sweep.return_value()) == {"expired_units", "products_waiting", "terms_applied"}
    assert scheduler.count() == len(periodic_jobs(settings))  # rescheduled, not doubled


def test_a_schedule_whose_job_expired_is_registered_again(settings):
    """The scheduler was down longer than the job's result_ttl: its hash is gone, its id is
    still scheduled. A restart used to fail on NoSuchJobError at every start."""
    scheduler = SettlementScheduler(settings)
    register_periodic_jobs(scheduler, settings)
    rq_connection(settings.redis_url).delete(Job.key_for("periodic-sweep"))
    assert register_periodic_jobs(SettlementScheduler(settings), settings) == 1
    assert scheduled_ids(scheduler) == sorted(p.job_id for p in periodic_jobs(settings))
