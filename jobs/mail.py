"""Mail jobs (core/mail/): the outbox's sender, run by the scheduler every
MAIL_INTERVAL_SECONDS, and the reminders before events, every REMINDER_INTERVAL_SECONDS."""

from __future__ import annotations

import logging
from dataclasses import asdict

from core.backoff import OUTAGE_ERRORS, Outage
from core.db import transaction
from core.mail.outbox import queue_reminders
from core.mail.sender import DeliveryReport, deliver_pending
from jobs.runtime import runtime

log = logging.getLogger(__name__)
_database = Outage("mail delivery's database", log)  # one per worker process


def deliver_mail() -> dict[str, int]:
    """Sends what is due. While the database does not answer, the runs in between the backoff's
    waits do nothing, and the outage is logged once (not a failed job every interval)."""
    if not _database.due():
        return asdict(DeliveryReport())
    rt = runtime()
    try:
        report = deliver_pending(rt.sessions, rt.settings)
    except OUTAGE_ERRORS as error:
        _database.failed(error)
        return asdict(DeliveryReport())
    _database.recovered()
    return asdict(report)


def remind() -> int:
    """The reminders due before events (each once per ticket and reminder)."""
    with transaction(runtime().sessions) as session:
        return queue_reminders(session)
