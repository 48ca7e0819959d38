"""Hands reserved tickets to the workers off the request path: products that took reservations
are collected and one drain job per product is enqueued at most every `interval` seconds; while
the queues' Redis does not answer, they are kept and kicked again after a backoff."""

from __future__ import annotations

import logging
import os
import threading
import time

from core.backoff import OUTAGE_ERRORS, Outage
from core.config import Settings
from jobs.queues import enqueue_drains

log = logging.getLogger(__name__)


class SettlementKicker:
    def __init__(self, settings: Settings, interval: float = 0.05) -> None:
        self.settings = settings
        self.interval = interval
        self._dirty: set[int] = set()
        self._guard = threading.Lock()
        self._wake = threading.Event()
        self._owner_pid: int | None = None

    def kick(self, product_id: int) -> None:
        with self._guard:
            self._dirty.add(product_id)
            if self._owner_pid != os.getpid():  # first use in this (possibly forked) process
                self._owner_pid = os.getpid()
                threading.Thread(target=self._run, name="settlement-kicker", daemon=True).start()
        self._wake.set()

    def _run(self) -> None:
        outage = Outage("settlement kicker's Redis", log)
        while True:
            self._wake.wait()
            time.sleep(self.interval)  # gather the burst into one enqueue per product
            self._wake.clear()
            with self._guard:
                batch = sorted(self._dirty)
                self._dirty.clear()
            try:
                enqueue_drains(self.settings, batch)
            except OUTAGE_ERRORS as error:
                with self._guard:  # kicked again once Redis answers
                    self._dirty.update(batch)
                self._wake.set()
                time.sleep(outage.failed(error))
                continue
            except Exception:
                # The periodic sweep queues settlement for any product with waiting tickets.
                log.exception("could not enqueue settlement for products %s", batch)
            outage.recovered()
