"""The RQ worker class of the Procfile: RQ's SimpleWorker (a job runs in the worker process, so
the runtime and its connections are kept between jobs) that also serves the metrics on
METRICS_PORT when set, for machines where no web process sums them."""

from __future__ import annotations

import logging
from typing import Any

from rq.worker import SimpleWorker

from core.metrics import serve_metrics
from jobs.runtime import runtime

log = logging.getLogger(__name__)


class SettlementWorker(SimpleWorker):
    def work(self, *args: Any, **kwargs: Any) -> bool:
        settings = runtime().settings
        if settings.metrics_port:
            served = serve_metrics(settings.metrics_host, settings.metrics_port)
            where = f"{settings.metrics_host}:{settings.metrics_port}"
            log.info(
                "metrics on %s" if served else "metrics port %s taken: served by another", where
            )
        return super().work(*args, **kwargs)
