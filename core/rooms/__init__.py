"""Waiting rooms in front of a sale: the room's settings from SQL to Redis, where buyers stand
(board.py), and the passes an admitted buyer buys with (passes.py)."""

from __future__ import annotations

from core.inventory import Inventory
from core.models import Product
from core.rooms.board import BOARD_MAX_AGE_S, Board, RoomBoard, RoomPlace
from core.rooms.passes import PASS_SALT, PassRefused, issue_pass, read_pass

__all__ = [
    "BOARD_MAX_AGE_S",
    "PASS_SALT",
    "Board",
    "PassRefused",
    "RoomBoard",
    "RoomPlace",
    "apply_room",
    "issue_pass",
    "read_pass",
]


def apply_room(inventory: Inventory, product: Product) -> str:
    """The product's room settings in Redis (applied, or missing while it has no stock)."""
    return inventory.set_room(
        product.id, product.waiting_room, product.admit_per_second, product.buckets or 1
    )
