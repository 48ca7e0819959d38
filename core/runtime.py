"""The objects a process needs, built once from Settings: Redis, SQL sessions, inventory,
payment gateway and settler. Web, workers and the scheduler each hold one."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from redis import Redis
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from core.config import Settings
from core.db import make_engine, make_session_factory
from core.inventory import Inventory
from core.payments import PaymentGateway
from core.payments.simulated import SimulatedGateway
from core.payments.stripe_gateway import StripeGateway
from core.settlement import Settler


@dataclass
class Runtime:
    settings: Settings

    @cached_property
    def redis(self) -> Redis:
        return Redis.from_url(self.settings.redis_url, decode_responses=True)

    @cached_property
    def engine(self) -> Engine:
        return make_engine(self.settings.database_url)

    @cached_property
    def sessions(self) -> sessionmaker[Session]:
        return make_session_factory(self.engine)

    @cached_property
    def inventory(self) -> Inventory:
        return Inventory(self.redis, self.settings)

    @cached_property
    def gateways(self) -> dict[str, PaymentGateway]:
        """Every configured gateway: payments stay with the provider that took them."""
        gateways: dict[str, PaymentGateway] = {
            "simulated": SimulatedGateway(
                self.redis, self.settings.key_prefix, self.settings.payment_latency_ms
            )
        }
        if self.settings.stripe_api_key:
            gateways["stripe"] = StripeGateway(
                self.settings.stripe_api_key,
                self.settings.stripe_api_base,
                self.settings.payment_timeout_seconds,
            )
        return gateways

    @property
    def gateway(self) -> PaymentGateway:
        """The gateway new payments go through (PAYMENT_GATEWAY)."""
        return self.gateways[self.settings.payment_gateway]

    @cached_property
    def settler(self) -> Settler:
        return Settler(self.inventory, self.sessions, self.gateways, self.settings)
