"""Mail through the outbox, sent to a real SMTP server (aiosmtpd) started by the test: written
with the change it tells of, sent once it can be, the same Message-ID when sent again."""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.message import Message
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import select

from core.mail.sender import deliver_pending, message_id
from core.models import OutboxMessage, Product
from tests.helpers import Account, create_product, make_user
from tests.servers import ROOT, free_port, wait_until
from tests.test_api_errors import assert_error
from tests.test_pipeline import buy, settle_until


class Inbox:
    """An SMTP server keeping what it receives."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(message_from_bytes(envelope.content))
        return "250 OK"

    def to(self, address: str) -> list[Message]:
        return [m for m in self.messages if m["To"] == address]


@pytest.fixture()
def smtp():  # type: ignore[no-untyped-def]
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield inbox, controller
    controller.stop()


def _with_mail(app: Any, email: str) -> Account:
    buyer = make_user(app)
    with app.test_client() as client:
        set_to = client.patch("/auth/me", json={"email": email}, headers=buyer.headers)
        assert set_to.status_code == 200 and set_to.get_json()["email"] == email
    return buyer


def _smtp_settings(settings: Any, controller: Controller) -> Any:
    return dataclasses.replace(settings, smtp_url=f"smtp://127.0.0.1:{controller.port}")


def _outbox(rt: Any, user_id: int) -> list[OutboxMessage]:
    with rt.sessions() as session:
        query = select(OutboxMessage).where(OutboxMessage.user_id == user_id)
        return list(session.scalars(query.order_by(OutboxMessage.id)))


def test_a_confirmed_order_mails_its_buyer_once(client, app, admin, settings, rt, smtp):
    inbox, controller = smtp
    address = f"fan{make_user(app).id}@example.com"
    buyer = _with_mail(app, address)
    product = create_product(client, admin, stock=5, name="Night bus tour")
    order = buy(client, buyer, product["id"], quantity=2).get_json()["ticket_id"]
    settle_until(client, buyer, order, settings, {"confirmed"})
    (row,) = _outbox(rt, buyer.id)  # written with the confirmation
    assert (row.kind, row.status) == ("order_confirmed", "pending")

    sending = _smtp_settings(settings, controller)
    wait_until(lambda: deliver_pending(rt.sessions, sending).sent or inbox.to(address), 10,
               "the mail to be sent")  # fmt: skip
    (mail,) = inbox.to(address)
    assert "Night bus tour" in mail["Subject"] and mail["Message-ID"].startswith("<outbox-")
    assert order in mail.as_string() and "/account/tickets" in mail.as_string()
    assert deliver_pending(rt.sessions, sending).sent == 0  # marked sent: never again
    assert _outbox(rt, buyer.id)[0].status == "sent"


def test_no_confirmation_for_a_declined_payment_and_none_without_an_address(
    client, app, admin, settings, rt
):
    address = f"declined{make_user(app).id}@example.com"
    buyer = _with_mail(app, address)
    product = create_product(client, admin, stock=5)
    order = buy(client, buyer, product["id"], pm="pm_card_chargeDeclined").get_json()["ticket_id"]
    settle_until(client, buyer, order, settings, {"failed"})
    assert [r.kind for r in _outbox(rt, buyer.id)] == ["payment_failed"]

    silent = make_user(app)  # no address: no mail
    order = buy(client, silent, product["id"]).get_json()["ticket_id"]
    settle_until(client, silent, order, settings, {"confirmed"})
    assert _outbox(rt, silent.id) == []


def test_mail_waits_while_the_smtp_server_is_down_and_goes_once_it_is_back(
    client, app, admin, settings, rt
):
    address = f"patient{make_user(app).id}@example.com"
    buyer = _with_mail(app, address)
    product = create_product(client, admin, stock=5)
    order = buy(client, buyer, product["id"]).get_json()["ticket_id"]
    settle_until(client, buyer, order, settings, {"confirmed"})
    port = free_port()
    sending = dataclasses.replace(settings, smtp_url=f"smtp://127.0.0.1:{port}")
    assert deliver_pending(rt.sessions, sending).failed >= 1  # nobody listens
    (row,) = _outbox(rt, buyer.id)
    assert (row.status, row.attempts) == ("pending", 1) and row.last_error

    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        wait_until(lambda: deliver_pending(rt.sessions, sending).sent or inbox.to(address), 15,
                   "the mail once the server is back")  # fmt: skip
    finally:
        controller.stop()
    assert len(inbox.to(address)) == 1


# A sender process that sends its first message and is SIGKILLed before it commits "sent".
_DIES_AFTER_SENDING = """
import os, signal, smtplib
from core.config import Settings
from core.db import make_engine, make_session_factory
from core.mail.sender import deliver_pending

send = smtplib.SMTP.send_message

def send_then_die(self, *args, **kwargs):
    send(self, *args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)

smtplib.SMTP.send_message = send_then_die
settings = Settings.from_env()
deliver_pending(make_session_factory(make_engine(settings.database_url)), settings)
"""


def test_a_sender_killed_before_marking_sends_once_more_with_the_same_message_id(
    client, app, admin, settings, rt, smtp
):
    inbox, controller = smtp
    sending = _smtp_settings(settings, controller)
    wait_until(lambda: deliver_pending(rt.sessions, sending).sent == 0, 10, "an empty outbox")
    address = f"twice{make_user(app).id}@example.com"
    buyer = _with_mail(app, address)
    product = create_product(client, admin, stock=5)
    order = buy(client, buyer, product["id"]).get_json()["ticket_id"]
    settle_until(client, buyer, order, settings, {"confirmed"})

    killed = subprocess.run(
        [sys.executable, "-c", _DIES_AFTER_SENDING],
        cwd=ROOT, env=os.environ | {"SMTP_URL": sending.smtp_url}, timeout=60,
    )  # fmt: skip
    assert killed.returncode == -signal.SIGKILL
    wait_until(lambda: inbox.to(address), 10, "the first sending to arrive")
    assert _outbox(rt, buyer.id)[0].status == "pending"  # its mark died with it
    wait_until(lambda: deliver_pending(rt.sessions, sending).sent, 10, "the second sending")
    first, second = inbox.to(address)
    assert first["Message-ID"] == second["Message-ID"]
    assert deliver_pending(rt.sessions, sending).sent == 0  # and no third


def test_an_address_is_validated(client, buyer):
    assert_error(
        client.patch("/auth/me", json={"email": "not an address"}, headers=buyer.headers),
        400, "invalid_request",
    )  # fmt: skip
    cleared = client.patch("/auth/me", json={"email": None}, headers=buyer.headers)
    assert cleared.status_code == 200 and cleared.get_json()["email"] is None


def test_reminders_go_a_week_and_a_day_before_the_event_once_each(
    client, app, admin, settings, rt, smtp
):
    from core.db import transaction
    from core.mail.outbox import queue_reminders
    from core.models import Event
    from tests.test_seats import _buy as buy_seats
    from tests.test_seats import _on_sale, _settled

    inbox, controller = smtp
    event_id = _on_sale(client, admin)["id"]
    address = f"fan{make_user(app).id}@example.com"
    buyer = _with_mail(app, address)
    order = buy_seats(client, buyer, event_id, ["A-1-5"]).get_json()["ticket_id"]
    assert _settled(client, settings, buyer, order)["status"] == "confirmed"
    with rt.sessions() as session:
        starts = session.get(Event, event_id).starts_at

    def remind(now):  # type: ignore[no-untyped-def]
        with transaction(rt.sessions) as session:
            return queue_reminders(session, now)

    assert remind(starts - timedelta(days=8)) == 0  # not yet
    assert remind(starts - timedelta(days=3)) >= 1
    remind(starts - timedelta(days=2))  # again: nothing more for this ticket
    remind(starts - timedelta(hours=12))
    kinds = [r.kind for r in _outbox(rt, buyer.id)]
    assert kinds.count("reminder_7d") == 1 and kinds.count("reminder_1d") == 1
    sending = _smtp_settings(settings, controller)
    wait_until(lambda: len(inbox.to(address)) >= 3 or (deliver_pending(rt.sessions, sending).sent
               and None), 10, "the mails")  # fmt: skip
    subjects = sorted(m["Subject"] for m in inbox.to(address))
    assert subjects == sorted(
        ["Your order is confirmed: Seated show", "In a week: Seated show", "Tomorrow: Seated show"]
    ), subjects


def _drained(rt: Any, sending: Any) -> None:
    """Every earlier test's mail sent, so a pass reaches the rows a test writes next."""
    wait_until(lambda: deliver_pending(rt.sessions, sending).sent == 0, 10, "an empty outbox")


def _passes(rt: Any, sending: Any, count: int) -> list[Any]:
    """Sender passes as the scheduler runs them: a pass that raises is simply run again."""
    outcomes: list[Any] = []
    for _ in range(count):
        try:
            outcomes.append(deliver_pending(rt.sessions, sending))
        except Exception as error:  # the job fails; the next pass runs anyway
            outcomes.append(error)
    return outcomes


def _stored(rt: Any, user_id: int, address: str, key: str, context: dict[str, Any]) -> int:
    """An order_confirmed row as stored in the outbox (by this code or an earlier one)."""
    from core.db import transaction

    with transaction(rt.sessions) as session:
        row = OutboxMessage(
            key=key, kind="order_confirmed", user_id=user_id, to_address=address,
            context=json.dumps(context), status="pending", attempts=0,
        )  # fmt: skip
        session.add(row)
        session.flush()
        return row.id


def _text(mail: Message) -> str:
    """The plain text part, decoded (a long line may be wrapped in the raw message)."""
    parts = [p for p in mail.walk() if p.get_content_type() == "text/plain"]
    return "".join(p.get_payload(decode=True).decode() for p in parts)


def _ids(inbox: Inbox, address: str) -> list[str]:
    return [m["Message-ID"] for m in inbox.to(address)]


def test_an_uncomposable_message_fails_alone_and_the_others_go_once(app, settings, rt, smtp):
    inbox, controller = smtp
    sending = _smtp_settings(settings, controller)
    _drained(rt, sending)
    address = f"first{make_user(app).id}@example.com"
    buyer = _with_mail(app, address)
    order = {"product": "Night bus tour", "quantity": 1, "order": "t_1", "amount": "25.00 USD"}
    key = secrets.token_hex(4)
    first = _stored(rt, buyer.id, address, f"a:{key}", order)
    broken = _stored(rt, buyer.id, address, f"b:{key}", {"order": "t_2"})  # no product: no subject
    later = _stored(rt, buyer.id, address, f"c:{key}", order | {"order": "t_3"})

    outcomes = _passes(rt, sending, 3)
    first_id, later_id = (message_id(i, sending.mail_from) for i in (first, later))
    assert _ids(inbox, address).count(first_id) == 1, _ids(inbox, address)
    assert _ids(inbox, address).count(later_id) == 1, _ids(inbox, address)
    assert [type(o).__name__ for o in outcomes] == ["DeliveryReport"] * 3, outcomes
    with rt.sessions() as session:
        failed = session.get(OutboxMessage, broken)
        assert failed.status == "failed" and "KeyError" in failed.last_error
        assert session.get(OutboxMessage, first).status == "sent"
        assert session.get(OutboxMessage, later).status == "sent"


def test_a_stored_name_with_a_line_separator_is_sent_without_it(
    client, app, admin, settings, rt, smtp
):
    inbox, controller = smtp
    address = f"separator{make_user(app).id}@example.com"
    buyer = _with_mail(app, address)
    product = create_product(client, admin, stock=5, name="Night bus tour")
    with rt.sessions.begin() as session:  # a name stored before names were checked
        session.get(Product, product["id"]).name = "Night\u2028bus\u2029tour\x85"
    order = buy(client, buyer, product["id"]).get_json()["ticket_id"]
    settle_until(client, buyer, order, settings, {"confirmed"})

    sending = _smtp_settings(settings, controller)
    _drained(rt, sending)
    (mail,) = inbox.to(address)
    assert mail["Subject"] == "Your order is confirmed: Nightbustour", mail["Subject"]
    assert _outbox(rt, buyer.id)[0].status == "sent"


@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\x85", "\r\n"])
def test_names_and_titles_with_a_line_break_are_refused(client, admin, separator):
    name = f"Night{separator}bus"
    body = {"name": name, "price": "25.00", "stock": 10}
    assert_error(client.post("/products", json=body, headers=admin.headers), 400, "invalid_request")
    product = create_product(client, admin)
    renamed = client.patch(f"/products/{product['id']}", json={"name": name}, headers=admin.headers)
    assert_error(renamed, 400, "invalid_request")
    starts = (datetime.now(UTC) + timedelta(days=30)).isoformat()
    for field in ("title", "venue"):
        event = {"title": "Show", "venue": "Hall", "starts_at": starts} | {field: name}
        assert_error(
            client.post("/events", json=event, headers=admin.headers), 400, "invalid_request"
        )
    created = client.post(
        "/events", json={"title": "Show", "venue": "Hall", "starts_at": starts},
        headers=admin.headers,
    )  # fmt: skip
    assert created.status_code == 201, created.get_json()
    retitled = client.patch(
        f"/events/{created.get_json()['id']}", json={"title": name}, headers=admin.headers
    )
    assert_error(retitled, 400, "invalid_request")


def test_a_refund_tells_the_holder_of_a_given_ticket_that_it_is_void(
    client, app, admin, settings, rt, smtp
):
    inbox, controller = smtp
    buyer_address = f"giver{make_user(app).id}@example.com"
    buyer = _with_mail(app, buyer_address)
    holder_address = f"holder{make_user(app).id}@example.com"
    holder = _with_mail(app, holder_address)
    product = create_product(client, admin, stock=5, name="Harbour cruise")
    order = buy(client, buyer, product["id"], quantity=2).get_json()["ticket_id"]
    settle_until(client, buyer, order, settings, {"confirmed"})
    given, kept = client.get("/tickets", headers=buyer.headers).get_json()["tickets"]
    _transfer(client, buyer, given["id"], holder)

    refunded = client.post(f"/orders/{order}/cancel", headers=admin.headers)
    assert refunded.status_code == 200, refunded.get_json()
    sending = _smtp_settings(settings, controller)
    _drained(rt, sending)
    void = [m for m in inbox.to(holder_address) if m["Subject"].startswith("Your ticket is void")]
    assert len(void) == 1, [m["Subject"] for m in inbox.to(holder_address)]
    assert given["id"] in _text(void[0]) and "refunded" in _text(void[0])
    assert kept["id"] not in _text(void[0])
    buyer_subjects = [m["Subject"] for m in inbox.to(buyer_address)]
    assert "Your order is refunded: Harbour cruise" in buyer_subjects  # the buyer's own mail
    assert not any(s.startswith("Your ticket is void") for s in buyer_subjects), buyer_subjects


def test_a_reminder_written_before_a_transfer_goes_to_the_new_holder(
    client, app, admin, settings, rt, smtp
):
    from core.db import transaction
    from core.mail.outbox import queue_reminders
    from core.models import Event
    from tests.test_seats import _buy as buy_seats
    from tests.test_seats import _on_sale, _settled

    inbox, controller = smtp
    event_id = _on_sale(client, admin)["id"]
    old_address = f"old{make_user(app).id}@example.com"
    old = _with_mail(app, old_address)
    new_address = f"new{make_user(app).id}@example.com"
    new = _with_mail(app, new_address)
    order = buy_seats(client, old, event_id, ["A-1-5"]).get_json()["ticket_id"]
    assert _settled(client, settings, old, order)["status"] == "confirmed"
    (ticket,) = client.get("/tickets", headers=old.headers).get_json()["tickets"]
    refunded = buy_seats(client, old, event_id, ["A-1-6"]).get_json()["ticket_id"]
    assert _settled(client, settings, old, refunded)["status"] == "confirmed"
    with rt.sessions() as session:
        starts = session.get(Event, event_id).starts_at
    with transaction(rt.sessions) as session:
        assert queue_reminders(session, starts - timedelta(days=3)) >= 1
    reminder, void = [r for r in _outbox(rt, old.id) if r.kind == "reminder_7d"]
    if ticket["id"] not in reminder.context:
        reminder, void = void, reminder
    assert reminder.to_address == old_address  # written while the old holder held it

    _transfer(client, old, ticket["id"], new)
    assert client.post(f"/orders/{refunded}/cancel", headers=admin.headers).status_code == 200
    _drained(rt, _smtp_settings(settings, controller))
    reminders = [m for m in inbox.messages if m["Subject"] == "In a week: Seated show"]
    assert [m["To"] for m in reminders if ticket["id"] in _text(m)] == [new_address]
    with rt.sessions() as session:
        sent = session.get(OutboxMessage, reminder.id)
        assert (sent.status, sent.user_id, sent.to_address) == ("sent", new.id, new_address)
        assert session.get(OutboxMessage, void.id).status == "dropped"  # its ticket is void
    assert len(reminders) == 1  # none for the void ticket


def _transfer(client: Any, holder: Account, ticket_id: str, to: Account) -> None:
    moved = client.post(
        f"/tickets/{ticket_id}/transfer", json={"to": to.username}, headers=holder.headers
    )
    assert moved.status_code == 200, moved.get_json()
