"""Mail jobs (core/mail/): the outbox's sender, run by the scheduler every
MAIL_INTERVAL_SECONDS, and the reminders before events, every REMINDER_INTERVAL_SECONDS."""

from __future__ import annotations

from dataclasses import asdict

from core.db import transaction
from core.mail.outbox import queue_reminders
from core.mail.sender import deliver_pending
from jobs.runtime import runtime


def deliver_mail() -> dict[str, int]:
    rt = runtime()
    return asdict(deliver_pending(rt.sessions, rt.settings))


def remind() -> int:
    """The reminders due before events (each once per ticket and reminder)."""
    with transaction(runtime().sessions) as session:
        return queue_reminders(session)
