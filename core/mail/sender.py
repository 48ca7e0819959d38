"""Sending the outbox over SMTP, one message at a time: each is taken (FOR UPDATE SKIP LOCKED on
PostgreSQL), sent and marked sent in its own transaction, so a message sent is marked before
the next is tried. A sender that dies after sending and before that commit leaves it pending,
so it goes once more, with the same Message-ID (derived from the row), which mail clients use
to show one message. An SMTP failure leaves a message pending for a later pass, with a
backoff; a message that cannot be composed is marked failed, for good."""

from __future__ import annotations

import json
import logging
import smtplib
import ssl
import unicodedata
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import timedelta
from email.message import EmailMessage
from email.utils import parseaddr
from functools import cache
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from core.config import Settings
from core.db import transaction
from core.mail.outbox import address_to_current_holder
from core.models import OutboxMessage, utcnow

log = logging.getLogger(__name__)

SMTP_TIMEOUT_S = 10
MAX_BACKOFF_S = 300
# A row whose context does not make a message (a missing field, a header that cannot be
# written): trying again would fail again.
UNCOMPOSABLE = (ValueError, KeyError, IndexError, TypeError)
# What each kind of mail says: its subject and its text, from the row's context.
MESSAGES = {
    "order_confirmed": (
        "Your order is confirmed: {product}",
        "Your order {order} for {quantity} x {product} ({amount}) is confirmed. Your entry "
        "tickets are ready.",
    ),
    "payment_failed": (
        "Your payment did not go through: {product}",
        "The payment for your order {order} ({quantity} x {product}) failed; nothing was charged "
        "and the units went back on sale.",
    ),
    "hold_expired": (
        "Your hold expired: {product}",
        "Your order {order} ({quantity} x {product}) was not paid in time and has expired.",
    ),
    "order_cancelled": (
        "Your order is cancelled: {product}",
        "Your order {order} ({quantity} x {product}) is cancelled.",
    ),
    "order_refunded": (
        "Your order is refunded: {product}",
        "Your order {order} ({quantity} x {product}) is refunded: {amount} goes back to you; its "
        "tickets no longer admit anyone.",
    ),
    "ticket_given": (
        "You gave a ticket for {product}",
        "Your ticket {ticket} for {product} now belongs to {to}; its old codes no longer work.",
    ),
    "ticket_received": (
        "You received a ticket for {product}",
        "{from} gave you the ticket {ticket} for {product}.",
    ),
    "ticket_void": (
        "Your ticket is void: {product}",
        "The ticket {ticket} for {product} that you were given no longer admits anyone: its "
        "order was {order_status}.",
    ),
    "reminder_7d": (
        "In a week: {event}",
        "{event} at {venue} starts {starts} (UTC). Your ticket {ticket}, seat: {seat}.",
    ),
    "reminder_1d": (
        "Tomorrow: {event}",
        "{event} at {venue} starts {starts} (UTC). Your ticket {ticket}, seat: {seat}. The code "
        "at the gate is on your tickets page and changes every 15 seconds.",
    ),
}


@dataclass
class DeliveryReport:
    sent: int = 0
    failed: int = 0
    dropped: int = 0  # reminders of tickets no longer valid, or whose holder has no address


def deliver_pending(
    sessions: sessionmaker[Session], settings: Settings, limit: int = 50
) -> DeliveryReport:
    """Sends up to `limit` messages that are due, over one SMTP connection, each committed as
    sent before the next is taken."""
    report = DeliveryReport()
    if not settings.smtp_url:
        return report
    smtp: smtplib.SMTP | Exception | None = None  # connected on the first row, once a pass
    after = 0  # rows are taken in id order, each once a pass
    with ExitStack() as connection:
        for _ in range(limit):
            with transaction(sessions) as session:
                row = _next_due(session, after)
                if row is None:
                    break
                after = row.id
                smtp = smtp or _connect(connection, settings.smtp_url)
                if isinstance(smtp, Exception):
                    _later(row, smtp, report)  # no server: each due row waits its backoff
                else:
                    _send(session, smtp, row, settings, report)
    return report


def _connect(connection: ExitStack, smtp_url: str) -> smtplib.SMTP | Exception:
    try:
        return connection.enter_context(connect(smtp_url))
    except (OSError, smtplib.SMTPException) as error:
        return error


def _next_due(session: Session, after: int) -> OutboxMessage | None:
    query = (
        select(OutboxMessage)
        .where(
            OutboxMessage.status == "pending",
            OutboxMessage.next_attempt_at <= utcnow(),
            OutboxMessage.id > after,
        )
        .order_by(OutboxMessage.id)
        .limit(1)
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)  # two senders never take one row
    return session.scalar(query)


def _send(
    session: Session,
    smtp: smtplib.SMTP,
    row: OutboxMessage,
    settings: Settings,
    report: DeliveryReport,
) -> None:
    try:
        if not address_to_current_holder(session, row):
            log.info("mail: outbox row %s (%s) dropped: no one to remind", row.id, row.kind)
            row.status = "dropped"
            report.dropped += 1
            return
        message = compose(row, settings)
    except UNCOMPOSABLE as error:
        reason = f"{type(error).__name__}: {error}"
        log.error("mail: outbox row %s (%s) cannot be composed: %s", row.id, row.kind, reason)
        row.status, row.last_error = "failed", reason[:300]
        report.failed += 1
        return
    try:
        smtp.send_message(message)
    except (OSError, smtplib.SMTPException) as error:
        _later(row, error, report)
        return
    row.status, row.sent_at = "sent", utcnow()
    report.sent += 1


def _later(row: OutboxMessage, error: Exception, report: DeliveryReport) -> None:
    row.attempts += 1
    row.next_attempt_at = utcnow() + timedelta(seconds=min(MAX_BACKOFF_S, 2**row.attempts))
    row.last_error = f"{type(error).__name__}: {error}"[:300]
    report.failed += 1


def connect(smtp_url: str) -> smtplib.SMTP:
    """smtp://user:password@host:port (?starttls=true), or smtps:// for TLS from the start."""
    url = urlsplit(smtp_url)
    if url.scheme == "smtps":
        smtp: smtplib.SMTP = smtplib.SMTP_SSL(
            url.hostname or "localhost", url.port or 465, timeout=SMTP_TIMEOUT_S,
            context=ssl.create_default_context(),
        )  # fmt: skip
    else:
        smtp = smtplib.SMTP(url.hostname or "localhost", url.port or 25, timeout=SMTP_TIMEOUT_S)
        if parse_qs(url.query).get("starttls", ["false"])[0].lower() == "true":
            smtp.starttls(context=ssl.create_default_context())
    if url.username:
        smtp.login(unquote(url.username), unquote(url.password or ""))
    return smtp


def compose(row: OutboxMessage, settings: Settings) -> EmailMessage:
    context = json.loads(row.context)
    subject, text = MESSAGES[row.kind]
    page = {"body": text.format(**context), "tickets_url": f"{settings.public_url}/account/tickets"}
    message = EmailMessage()
    message["From"] = one_line(settings.mail_from)
    message["To"] = one_line(row.to_address)
    message["Subject"] = one_line(subject.format(**context))
    message["Message-ID"] = message_id(row.id, settings.mail_from)
    message.set_content(_templates().get_template("message.txt").render(page))
    message.add_alternative(_templates().get_template("message.html").render(page), subtype="html")
    return message


def one_line(value: str) -> str:
    """A header's value without the characters that would break its line (CR, LF, U+2028,
    U+2029 and every other control character): rows written before names were checked."""
    return "".join(c for c in value if unicodedata.category(c) not in ("Cc", "Zl", "Zp"))


def message_id(row_id: int, mail_from: str) -> str:
    domain = parseaddr(mail_from)[1].rpartition("@")[2] or "localhost"
    return f"<outbox-{row_id}@{domain}>"


@cache
def _templates() -> Environment:
    folder = Path(__file__).with_name("templates")
    return Environment(loader=FileSystemLoader(folder), autoescape=select_autoescape(["html"]))
