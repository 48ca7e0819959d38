"""Logs as JSON, one event a line, from every process kind (structlog over the standard
library's logging, so the modules' `logging.getLogger` lines come out the same way). Each line
carries the process kind, and what the context bound: a web request's `request_id`, a ticket's
`ticket_id` where one is at stake, so one grep finds a ticket's whole life across web and
workers. Fields are named by the code that logs them: no request bodies, headers or tokens."""

from __future__ import annotations

import logging
import sys

import structlog

_CONFIGURED: list[str] = []


def configure_logging(process: str, level: str = "INFO") -> None:
    """Once per process: JSON lines on stderr, tagged with `process` (web, worker, scheduler)."""
    if _CONFIGURED:
        return
    _CONFIGURED.append(process)
    shared = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _tagged(process),
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                structlog.processors.JSONRenderer(),
            ],
        )
    )
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("rq").propagate = False  # RQ prints its own lines
    for chatty in ("httpx", "httpcore"):  # a line a request made (Stripe's SDK, health checks)
        logging.getLogger(chatty).setLevel(logging.WARNING)


def _tagged(process: str):  # type: ignore[no-untyped-def]
    def tag(_logger: object, _name: str, event: dict) -> dict:
        event.setdefault("process", process)
        return event

    return tag
