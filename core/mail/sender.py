"""Sending the outbox over SMTP. The messages sent in a pass are marked sent in the pass's one
transaction: a sender that dies after sending and before that commit leaves them pending, so
they go once more, with the same Message-ID (derived from the row), which mail clients use to
show one message. A failure leaves a message pending for a later pass, with a backoff."""

from __future__ import annotations

import json
import smtplib
import ssl
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
from core.models import OutboxMessage, utcnow

SMTP_TIMEOUT_S = 10
MAX_BACKOFF_S = 300
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


def deliver_pending(
    sessions: sessionmaker[Session], settings: Settings, limit: int = 50
) -> DeliveryReport:
    """Sends up to `limit` messages that are due, over one SMTP connection."""
    report = DeliveryReport()
    if not settings.smtp_url:
        return report
    with transaction(sessions) as session:
        query = (
            select(OutboxMessage)
            .where(OutboxMessage.status == "pending", OutboxMessage.next_attempt_at <= utcnow())
            .order_by(OutboxMessage.id)
            .limit(limit)
        )
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)  # two senders never take one row
        rows = list(session.scalars(query))
        if not rows:
            return report
        try:
            smtp = connect(settings.smtp_url)
        except (OSError, smtplib.SMTPException) as error:
            for row in rows:
                _later(row, error, report)
            return report
        with smtp:
            for row in rows:
                try:
                    smtp.send_message(compose(row, settings))
                except (OSError, smtplib.SMTPException) as error:
                    _later(row, error, report)
                    continue
                row.status, row.sent_at = "sent", utcnow()
                report.sent += 1
    return report


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
    message["From"] = settings.mail_from
    message["To"] = row.to_address
    message["Subject"] = subject.format(**context)
    message["Message-ID"] = message_id(row.id, settings.mail_from)
    message.set_content(_templates().get_template("message.txt").render(page))
    message.add_alternative(_templates().get_template("message.html").render(page), subtype="html")
    return message


def message_id(row_id: int, mail_from: str) -> str:
    domain = parseaddr(mail_from)[1].rpartition("@")[2] or "localhost"
    return f"<outbox-{row_id}@{domain}>"


@cache
def _templates() -> Environment:
    folder = Path(__file__).with_name("templates")
    return Environment(loader=FileSystemLoader(folder), autoescape=select_autoescape(["html"]))
