"""The one place that knows a ticket: its statuses, the view every status answer is built
from, who may see it, and cancelling it."""

from core.tickets.status import OPEN_STATUSES, OrderStatus

__all__ = ["OPEN_STATUSES", "OrderStatus"]
