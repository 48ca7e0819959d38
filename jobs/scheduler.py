"""The periodic schedule, registered idempotently: each schedule has a fixed job id, so
restarting the scheduler (or running several) never doubles a job.

Run with `python -m jobs.scheduler`.
"""

from __future__ import annotations

import logging
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial

from rq.exceptions import NoSuchJobError
from rq_scheduler import Scheduler

from core.backoff import OUTAGE_ERRORS, Outage, ride_out
from core.config import Settings
from core.logs import configure_logging
from core.metrics import serve_metrics
from jobs.queues import MAINTENANCE_TIMEOUT_S, JsonJob, rq_connection

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Periodic:
    job_id: str
    func: str
    interval_s: int


def periodic_jobs(settings: Settings) -> list[Periodic]:
    return [
        Periodic("periodic-sweep", "jobs.maintenance.sweep", settings.sweep_interval_seconds),
        Periodic(
            "periodic-reconcile",
            "jobs.maintenance.reconcile_all",
            settings.reconcile_interval_seconds,
        ),
        Periodic("periodic-mail", "jobs.mail.deliver_mail", settings.mail_interval_seconds),
        Periodic("periodic-reminders", "jobs.mail.remind", settings.reminder_interval_seconds),
    ]


def register_periodic_jobs(scheduler: Scheduler, settings: Settings) -> int:
    """Adds missing schedules and replaces changed ones; answers how many it (re)created."""
    created = 0
    for spec in periodic_jobs(settings):
        if spec.job_id in scheduler:
            try:
                job = JsonJob.fetch(spec.job_id, connection=scheduler.connection)
            except NoSuchJobError:
                # Scheduled, but the job's hash expired (its result_ttl ran out while no
                # scheduler ran): schedule it again instead of failing on every start.
                scheduler.cancel(spec.job_id)
            else:
                if job.meta.get("interval") == spec.interval_s and job.func_name == spec.func:
                    continue
                scheduler.cancel(spec.job_id)
                job.delete()
        scheduler.schedule(
            scheduled_time=datetime.now(UTC).replace(tzinfo=None),
            func=spec.func,
            interval=spec.interval_s,
            repeat=None,
            id=spec.job_id,
            timeout=MAINTENANCE_TIMEOUT_S,
            result_ttl=-1,  # a periodic job must outlive any pause of the scheduler
            queue_name=settings.queue_name,
        )
        created += 1
    return created


class SettlementScheduler(Scheduler):
    """Re-checks the schedule on every pass, so it comes back by itself if Redis lost its data;
    rides out a Redis that stalls, restarts or refuses (rq-scheduler's loop ends on the first
    error, and its `finally` raises again while Redis is away)."""

    job_class = JsonJob

    def __init__(self, settings: Settings, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(
            queue_name=settings.queue_name,
            connection=rq_connection(settings.redis_url),
            interval=settings.scheduler_poll_seconds,
            job_class=JsonJob,
            **kwargs,
        )
        self.settings = settings
        self.outage = Outage("scheduler's Redis", log)

    def enqueue_jobs(self):  # type: ignore[no-untyped-def]
        register_periodic_jobs(self, self.settings)
        return super().enqueue_jobs()

    def run(self, burst: bool = False) -> None:
        """rq-scheduler's loop, started again after each outage error."""
        ride_out(partial(super().run, burst), self.outage)

    def heartbeat(self) -> None:
        super().heartbeat()
        self.outage.recovered()  # the first pass that reaches Redis again ends the outage

    def register_birth(self) -> None:
        # This process's own record, left alive by an outage that kept its death from Redis.
        self.connection.delete(self.key)
        super().register_birth()

    def register_death(self) -> None:
        with suppress(*OUTAGE_ERRORS):  # the record expires by itself
            super().register_death()

    def remove_lock(self) -> None:
        with suppress(*OUTAGE_ERRORS):  # the lock expires by itself
            super().remove_lock()


def main() -> None:
    settings = Settings.from_env()
    configure_logging("scheduler", settings.log_level)
    if settings.metrics_port:
        served = serve_metrics(settings.metrics_host, settings.metrics_port)
        log.info("metrics on port %s: %s", settings.metrics_port, "served" if served else "taken")
    scheduler = SettlementScheduler(settings)
    created = ride_out(lambda: register_periodic_jobs(scheduler, settings), scheduler.outage)
    log.info("registered %s periodic jobs", created)
    scheduler.run()


if __name__ == "__main__":
    main()
