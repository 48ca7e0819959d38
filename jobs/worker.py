"""The Procfile's worker (`python -m jobs.worker`): RQ's SimpleWorker (a job runs in the worker
process, so the runtime and its connections are kept between jobs) on SETTLEMENT_QUEUE, connected
as every client of REDIS_URL is (a redis+sentinel:// URL too, which `rq worker --url` refuses),
that also serves the metrics on METRICS_PORT when set, for machines where no web process sums
them, and outlives Redis outages.

RQ's loop retries only its blocking pop: a Redis error anywhere else in a pass (the suspension
check, a heartbeat, marking the worker idle, recording a job's end) ends the worker. Those steps
wait an outage out here, with the shared backoff (core/backoff.py)."""

from __future__ import annotations

import logging
import time
from contextlib import suppress
from functools import partial
from typing import Any

from rq import Queue
from rq.serializers import JSONSerializer
from rq.worker import SimpleWorker

from core.backoff import OUTAGE_CAP_S, OUTAGE_ERRORS, Outage, ride_out
from core.metrics import serve_metrics
from jobs.queues import JsonJob, rq_connection
from jobs.runtime import runtime

log = logging.getLogger(__name__)


class SettlementWorker(SimpleWorker):
    max_connection_wait_time = OUTAGE_CAP_S  # RQ's own backoff, around its blocking pop

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.outage = Outage("worker's Redis", log)

    def work(self, *args: Any, **kwargs: Any) -> bool:
        settings = runtime().settings
        if settings.metrics_port:
            served = serve_metrics(settings.metrics_host, settings.metrics_port)
            where = f"{settings.metrics_host}:{settings.metrics_port}"
            log.info(
                "metrics on %s" if served else "metrics port %s taken: served by another", where
            )
        return super().work(*args, **kwargs)

    def check_for_suspension(self, burst: bool) -> None:
        ride_out(partial(super().check_for_suspension, burst), self.outage)

    def run_maintenance_tasks(self) -> None:
        ride_out(super().run_maintenance_tasks, self.outage)

    def dequeue_job_and_maintain_ttl(self, *args: Any, **kwargs: Any) -> Any:
        return ride_out(partial(super().dequeue_job_and_maintain_ttl, *args, **kwargs), self.outage)

    def heartbeat(self, *args: Any, **kwargs: Any) -> None:
        ride_out(partial(super().heartbeat, *args, **kwargs), self.outage)

    def execute_job(self, *args: Any, **kwargs: Any) -> None:
        try:
            super().execute_job(*args, **kwargs)
        except OUTAGE_ERRORS as error:
            # The job ran, or not, but its end is not recorded: RQ's registry cleanup fails it
            # later, and the periodic sweep queues settlement again for what is still waiting.
            time.sleep(self.outage.failed(error))

    def register_death(self) -> None:
        with suppress(*OUTAGE_ERRORS):  # the worker's record expires by itself
            super().register_death()


def main() -> None:
    """What `rq worker -w jobs.worker.SettlementWorker --serializer JSONSerializer --job-class
    jobs.queues.JsonJob --url $REDIS_URL $SETTLEMENT_QUEUE` ran, connected from the settings."""
    settings = runtime().settings
    connection = rq_connection(settings.redis_url)
    queue = Queue(
        settings.queue_name, connection=connection, serializer=JSONSerializer, job_class=JsonJob
    )
    worker = SettlementWorker(
        [queue], connection=connection, serializer=JSONSerializer, job_class=JsonJob
    )
    worker.work(logging_level=settings.log_level)


if __name__ == "__main__":
    main()
