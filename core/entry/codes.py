"""A ticket's code, as its QR carries it: `<ticket id>.<time step>.<TOTP>`. The ticket id is
the bearer part (random, unguessable); the TOTP (RFC 6238, pyotp) is made from the ticket's
own secret for a 15-second step, so a copy of a code stops working within a step or two, and
a transfer (a new secret) kills every code made before it."""

from __future__ import annotations

import hmac
import re
import time
from dataclasses import dataclass

import pyotp

STEP_S = 15
DIGITS = 8
WINDOW_STEPS = 1  # a code is good for its own step and one either side, never later
_CODE = re.compile(rf"(tk_[A-Za-z0-9_-]{{16,40}})\.(\d{{1,12}})\.(\d{{{DIGITS}}})")


def new_secret() -> str:
    return pyotp.random_base32(32)


def current_step(now: float | None = None) -> int:
    return int((time.time() if now is None else now) // STEP_S)


def make_code(ticket_id: str, secret: str, step: int | None = None) -> str:
    step = current_step() if step is None else step
    return f"{ticket_id}.{step}.{_otp(secret, step)}"


def seconds_left(now: float | None = None) -> int:
    """Until the current step ends (the page redraws the code then)."""
    now = time.time() if now is None else now
    return STEP_S - int(now % STEP_S)


@dataclass(frozen=True)
class Code:
    ticket_id: str
    step: int
    otp: str

    @classmethod
    def parse(cls, text: str) -> Code | None:
        match = _CODE.fullmatch(text.strip())
        return cls(match[1], int(match[2]), match[3]) if match else None

    def signed_by(self, secret: str) -> bool:
        return hmac.compare_digest(_otp(secret, self.step), self.otp)

    def in_time(self, now: float | None = None) -> bool:
        return abs(current_step(now) - self.step) <= WINDOW_STEPS


def _otp(secret: str, step: int) -> str:
    return pyotp.TOTP(secret, digits=DIGITS, interval=STEP_S).generate_otp(step)
